//! The paged admin list over HTTP: `limit`, `status`, `cursor` and the RFC 8288 `Link` header,
//! on the real router against a real database, with connections sealed through the vault.

use chrono::{Duration, Utc};
use grantry::core::events::{ReauthReason, StatusChange};
use grantry::core::store::TokenStore;
use grantry::core::{
    AccessToken, Account, AccountDetails, RefreshToken, Resource, ScopeSet, TokenSet,
};
use grantry_server::testing::TestDatabase;
use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{Harness, fake_config, spawn_server};

const LIST: &str = "/api/v1/atlassian/admin/connections";

/// Seeds `n` connections sealed through the vault, users `user-000`… inserted out of order;
/// every fifth needs re-consent. Returns the user ids in order and those needing re-consent.
pub(crate) async fn seed(h: &Harness, n: usize) -> (Vec<String>, Vec<String>) {
    let policy = h.state.providers()[0].refresh_policy();
    let mut users = Vec::new();
    let mut reauth = Vec::new();
    for i in 0..n {
        // A permutation of 0..n for any n coprime to 7919.
        let k = (i * 7919) % n;
        let user = format!("user-{k:03}");
        let tokens = TokenSet {
            access_token: AccessToken::new(format!("seed-access-{k}")),
            refresh_token: Some(RefreshToken::new(format!("seed-refresh-{k}"))),
            token_type: "Bearer".into(),
            expires_at: Some(Utc::now() + Duration::hours(1)),
            scopes: Some(ScopeSet::parse("read:me offline_access")),
        };
        let details = AccountDetails {
            account: Account {
                id: format!("acc-{k}"),
                name: Some(format!("Person {k}")),
                email: None,
            },
            resources: (0..k % 3)
                .map(|s| Resource {
                    id: format!("site-{k}-{s}"),
                    name: format!("Site {s}"),
                    url: Some(format!("https://site-{k}-{s}.example")),
                    scopes: vec!["read:jira-work".into()],
                    avatar_url: None,
                })
                .collect(),
        };
        let record = h
            .vault
            .save_grant(&user, "atlassian", &tokens, &details, &policy, Utc::now())
            .await
            .expect("seed");
        if k.is_multiple_of(5) {
            h.store
                .set_status(
                    &record.id,
                    StatusChange::NeedsReauth {
                        reason: ReauthReason::InvalidGrant,
                        failure: "invalid_grant",
                    },
                )
                .await
                .expect("status");
            reauth.push(user.clone());
        }
        users.push(user);
    }
    users.sort();
    reauth.sort();
    (users, reauth)
}

/// GET `url` (an absolute path on `base`) as `user`: status, JSON body and the `Link` header.
async fn get(
    h: &Harness,
    base: &str,
    path: &str,
    user: &str,
) -> (StatusCode, Value, Option<String>) {
    let role = if user.starts_with("admin") {
        "admin"
    } else {
        "user"
    };
    let resp = h
        .http
        .get(format!("{base}{path}"))
        .bearer_auth(h.token(user, role))
        .send()
        .await
        .expect("request");
    let status = resp.status();
    let link = resp
        .headers()
        .get_all(reqwest::header::LINK)
        .iter()
        .map(|v| v.to_str().expect("ascii link").to_owned())
        .reduce(|a, b| format!("{a}, {b}"));
    let body = resp.json().await.expect("json body");
    (status, body, link)
}

/// The target of a `Link: <…>; rel="next"` header.
fn next_target(link: &str) -> String {
    let (target, params) = link
        .strip_prefix('<')
        .and_then(|rest| rest.split_once('>'))
        .unwrap_or_else(|| panic!("not a link: {link}"));
    assert_eq!(params.trim(), "; rel=\"next\"", "{link}");
    target.to_owned()
}

/// Follows `Link: rel="next"` from `first` until a page has none; returns the pages and links.
async fn walk(h: &Harness, base: &str, first: &str) -> (Vec<Vec<Value>>, Vec<String>) {
    let mut pages = Vec::new();
    let mut links = Vec::new();
    let mut path = first.to_owned();
    loop {
        let (status, body, link) = get(h, base, &path, "admin-1").await;
        assert_eq!(status, 200, "{path}: {body}");
        pages.push(body.as_array().expect("a JSON array").clone());
        let Some(link) = link else {
            return (pages, links);
        };
        path = next_target(&link);
        links.push(path.clone());
        assert!(pages.len() <= 1000, "the walk does not end");
    }
}

fn users_of(pages: &[Vec<Value>]) -> Vec<String> {
    pages
        .iter()
        .flatten()
        .map(|c| c["user_id"].as_str().expect("user_id").to_owned())
        .collect()
}

#[tokio::test]
async fn the_admin_list_pages_through_every_connection_once_in_order() {
    for db in TestDatabase::all().await {
        let h = Harness::start(&db, fake_config(), true).await;
        let (mut users, reauth) = seed(&h, 250).await;
        // One connected through the real consent dance: its sites come from the fake.
        h.connect("alice").await;
        users.insert(0, "alice".to_owned());
        let base = h.base.clone();

        // Default limit 100: 100, 100, 51, each page after the last user of the one before.
        let (pages, links) = walk(&h, &base, LIST).await;
        assert_eq!(
            pages.iter().map(Vec::len).collect::<Vec<_>>(),
            [100, 100, 51],
            "{}",
            db.kind
        );
        assert_eq!(
            users_of(&pages),
            users,
            "{}: every user once, in order",
            db.kind
        );
        for link in &links {
            assert!(
                link.starts_with(&format!("{LIST}?limit=100&cursor=")),
                "{}: an absolute path keeping the limit: {link}",
                db.kind
            );
        }
        let all: Vec<&Value> = pages.iter().flatten().collect();
        for c in &all {
            assert_eq!(c["provider"], "atlassian");
            assert!(
                c["connection_id"].as_str().is_some_and(|id| !id.is_empty()),
                "{c}"
            );
            assert!(c["sites"].is_array() && c["account"].is_object(), "{c}");
        }
        let ids: std::collections::HashSet<&str> = all
            .iter()
            .filter_map(|c| c["connection_id"].as_str())
            .collect();
        assert_eq!(ids.len(), all.len(), "{}: distinct connection ids", db.kind);
        assert_eq!(
            all[0]["sites"].as_array().map(Vec::len),
            Some(2),
            "alice's sites"
        );
        let text = serde_json::to_string(&pages).expect("json");
        assert!(
            !text.contains("seed-access") && !text.contains("seed-refresh"),
            "{}: no token in a summary",
            db.kind
        );
        // The connection id is the one the status object shows.
        let (_, status) = h
            .call(
                "GET",
                "/api/v1/atlassian/connection/status",
                Some("alice"),
                None,
            )
            .await;
        assert_eq!(status["connection_id"], all[0]["connection_id"]);

        // A status filter in pages of 7 keeps the filter and the limit in every link.
        let (pages, links) = walk(&h, &base, &format!("{LIST}?status=needs_reauth&limit=7")).await;
        assert_eq!(users_of(&pages), reauth, "{}: needs_reauth only", db.kind);
        assert!(pages.iter().all(|p| p.len() <= 7));
        assert!(
            pages
                .iter()
                .flatten()
                .all(|c| c["status"] == "needs_reauth" && c["last_failure"] == "invalid_grant")
        );
        for link in &links {
            assert!(
                link.starts_with(&format!("{LIST}?limit=7&status=needs_reauth&cursor=")),
                "{link}"
            );
        }
        let (pages, _) = walk(&h, &base, &format!("{LIST}?status=active&limit=1000")).await;
        assert_eq!(pages.len(), 1, "{}: one page of up to 1000", db.kind);
        let active = users_of(&pages);
        assert_eq!(active.len() + reauth.len(), users.len());
        assert!(active.iter().all(|u| !reauth.contains(u)));

        // A last page exactly full has no link: nothing was left to show.
        let exact = format!("{LIST}?status=needs_reauth&limit={}", reauth.len());
        let (status, body, link) = get(&h, &base, &exact, "admin-1").await;
        assert_eq!(status, 200);
        assert_eq!(body.as_array().map(Vec::len), Some(reauth.len()));
        assert_eq!(link, None, "{}: no next page after the last row", db.kind);

        // A connection removed between two pages does not shift the next one.
        let (_, first, link) = get(&h, &base, &format!("{LIST}?limit=10"), "admin-1").await;
        let next = next_target(&link.expect("a next page"));
        let tenth = first[9]["user_id"].as_str().expect("user").to_owned();
        let (status, _) = h
            .call("DELETE", &format!("{LIST}/{tenth}"), Some("admin-1"), None)
            .await;
        assert_eq!(status, 204);
        let (_, second, _) = get(&h, &base, &next, "admin-1").await;
        assert_eq!(second[0]["user_id"].as_str(), Some(users[10].as_str()));

        h.store.close().await;
        db.cleanup().await;
    }
}

#[tokio::test]
async fn the_next_link_carries_the_prefix_the_router_is_nested_under() {
    let db = TestDatabase::sqlite();
    let h = Harness::start(&db, fake_config(), true).await;
    let (users, _) = seed(&h, 5).await;
    let app = axum::Router::new().nest("/integrations", grantry_server::router(h.state.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let (pages, links) = walk(&h, &base, &format!("/integrations{LIST}?limit=2")).await;
    assert_eq!(users_of(&pages), users);
    assert_eq!(links.len(), 2);
    assert!(
        links
            .iter()
            .all(|l| l.starts_with(&format!("/integrations{LIST}?limit=2&cursor="))),
        "{links:?}"
    );
    server.abort();
    // The same state unnested still pages from its own path.
    let (plain, _plain_server) = spawn_server(h.state.clone()).await;
    let (pages, _) = walk(&h, &plain, &format!("{LIST}?limit=4")).await;
    assert_eq!(users_of(&pages), users);
}

#[tokio::test]
async fn bad_paging_parameters_are_400_and_only_admins_list() {
    for db in TestDatabase::all().await {
        let h = Harness::start(&db, fake_config(), true).await;
        let (users, _) = seed(&h, 3).await;
        let base = h.base.clone();
        let (_, _, link) = get(&h, &base, &format!("{LIST}?limit=1"), "admin-1").await;
        let cursor = next_target(&link.expect("link"))
            .split("cursor=")
            .nth(1)
            .expect("cursor")
            .to_owned();

        use base64::Engine;
        let b64 = |raw: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let mut tampered = cursor.clone().into_bytes();
        tampered[2] ^= 0x01;
        let tampered = String::from_utf8(tampered).expect("ascii");
        for query in [
            "limit=0".to_owned(),
            "limit=1001".to_owned(),
            "limit=-1".to_owned(),
            "limit=abc".to_owned(),
            "limit=".to_owned(),
            "limit=2.5".to_owned(),
            "limit=99999999999999999999".to_owned(),
            "limit=1&limit=2".to_owned(),
            "status=ACTIVE".to_owned(),
            "status=deleted".to_owned(),
            "status=".to_owned(),
            "cursor=".to_owned(),
            "cursor=%21%21%21".to_owned(),
            format!("cursor={tampered}"),
            format!("cursor={cursor}%3D%3D"),
            format!("cursor={}", b64(b"alice")),
            format!("cursor={}", b64(br#"{"after":"user-000","more":1}"#)),
            format!("cursor={}", b64(b"{\"after\":\"user\\u0000\"}")),
            format!("cursor={}", "A".repeat(4001)),
        ] {
            let (status, body, link) = get(&h, &base, &format!("{LIST}?{query}"), "admin-1").await;
            assert_eq!(status, 400, "{}: {query}: {body}", db.kind);
            assert_eq!(body["error"], "invalid_request", "{query}: {body}");
            assert!(
                body["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{query}: {body}"
            );
            assert_eq!(link, None);
        }

        // The bounds themselves, the cursor as written, unknown parameters ignored.
        for (query, want) in [
            ("limit=1", &users[..1]),
            ("limit=1000", &users[..]),
            (&*format!("limit=1&cursor={cursor}"), &users[1..2]),
            ("limit=2&sort=desc", &users[..2]),
        ] {
            let (status, body, _) = get(&h, &base, &format!("{LIST}?{query}"), "admin-1").await;
            assert_eq!(status, 200, "{}: {query}: {body}", db.kind);
            let got: Vec<&str> = body
                .as_array()
                .expect("array")
                .iter()
                .filter_map(|c| c["user_id"].as_str())
                .collect();
            assert_eq!(got, want, "{query}");
        }

        // Only admins list, whatever the parameters.
        for query in ["", "?limit=1", "?limit=0"] {
            let (status, body, _) = get(&h, &base, &format!("{LIST}{query}"), "bob").await;
            assert_eq!(status, 403, "{query}: {body}");
            assert_eq!(body["error"], "forbidden");
            let (status, body) = h.call("GET", &format!("{LIST}{query}"), None, None).await;
            assert_eq!(status, 401, "{query}: {body}");
            assert_eq!(body["error"], "unauthorized");
        }
        h.store.close().await;
        db.cleanup().await;
    }
}
