//! Atlassian 3LO end to end: the real router over HTTP, a real database, the fake Atlassian.

use grantry::core::store::{ConnectionStatus, TokenStore};
use grantry_atlassian_fake::{ACME_SITE_ID, BETA_SITE_ID, Failure};
use grantry_server::testing::TestDatabase;
use serde_json::json;

use crate::harness::{Harness, fake_config};

#[tokio::test]
async fn connect_inspect_and_disconnect() {
    for db in TestDatabase::all().await {
        let h = Harness::start(&db, fake_config(), true).await;
        let (url, state) = h.authorize("alice").await;
        let q: std::collections::BTreeMap<String, String> = url::Url::parse(&url)
            .expect("url")
            .query_pairs()
            .into_owned()
            .collect();
        assert_eq!(q["audience"], "api.atlassian.com");
        assert_eq!(q["prompt"], "consent");
        assert_eq!(q["state"], state);
        assert!(q["scope"].contains("offline_access"));

        let back = h.consent(&url, true).await;
        let (status, connected) = h
            .call(
                "POST",
                "/api/v1/atlassian/connection/callback",
                Some("alice"),
                Some(json!({"code": back["code"], "state": back["state"]})),
            )
            .await;
        assert_eq!(status, 200, "{}: {connected}", db.kind);
        assert_eq!(connected["connected"], true);
        assert_eq!(connected["status"], "active");
        assert_eq!(connected["account"]["id"], "fake-account-1");
        assert_eq!(connected["account"]["email"], "ada@example.com");

        let (status, body) = h
            .call(
                "GET",
                "/api/v1/atlassian/connection/status",
                Some("alice"),
                None,
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["provider"], "atlassian");
        assert_eq!(body["account"]["name"], "Ada Lovelace");
        let scopes: Vec<&str> = body["scopes"]
            .as_array()
            .expect("scopes")
            .iter()
            .filter_map(|s| s.as_str())
            .collect();
        assert!(
            scopes.contains(&"offline_access") && scopes.contains(&"read:jira-work"),
            "{scopes:?}"
        );
        let sites = body["sites"].as_array().expect("sites");
        assert_eq!(
            sites.len(),
            2,
            "duplicate cloud ids merged, every site kept: {body}"
        );
        let acme = sites
            .iter()
            .find(|s| s["id"] == ACME_SITE_ID)
            .expect("acme");
        let acme_scopes = acme["scopes"].as_array().expect("scopes");
        assert!(
            acme_scopes.contains(&json!("read:jira-work"))
                && acme_scopes.contains(&json!("read:confluence-content.all"))
        );
        assert!(
            acme["avatar_url"]
                .as_str()
                .is_some_and(|u| u.starts_with("https://"))
        );
        assert!(sites.iter().any(|s| s["id"] == BETA_SITE_ID));
        for key in [
            "connected_at",
            "access_token_expires_at",
            "refresh_token_expires_at",
        ] {
            let text = body[key]
                .as_str()
                .unwrap_or_else(|| panic!("{key} missing: {body}"));
            assert!(
                chrono::DateTime::parse_from_rfc3339(text).is_ok(),
                "{key} = {text}"
            );
            assert!(text.ends_with('Z'), "{key} in UTC: {text}");
        }

        let (status, live) = h
            .call("GET", "/api/v1/atlassian/sites", Some("alice"), None)
            .await;
        assert_eq!(status, 200, "{live}");
        assert_eq!(live.as_array().map(Vec::len), Some(2));

        let (status, list) = h
            .call(
                "GET",
                "/api/v1/atlassian/admin/connections",
                Some("admin-1"),
                None,
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(list.as_array().map(Vec::len), Some(1));
        assert_eq!(list[0]["user_id"], "alice");
        assert_eq!(list[0]["sites"].as_array().map(Vec::len), Some(2));

        let (status, token) = h
            .call(
                "GET",
                "/api/v1/atlassian/admin/connections/alice/access-token",
                Some("admin-1"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{token}");
        let access = token["access_token"].as_str().expect("token").to_owned();
        assert_eq!(token["token_type"], "Bearer");
        assert!(access.len() >= 20);
        for shown in [&connected, &body, &live, &list] {
            assert!(
                !shown.to_string().contains(&access),
                "token leaked: {shown}"
            );
        }

        let (status, providers) = h
            .call("GET", "/api/v1/providers", Some("alice"), None)
            .await;
        assert_eq!(status, 200);
        assert_eq!(providers[0]["id"], "atlassian");
        assert_eq!(providers[0]["name"], "Atlassian");

        let (status, _) = h
            .call(
                "DELETE",
                "/api/v1/atlassian/connection",
                Some("alice"),
                None,
            )
            .await;
        assert_eq!(status, 204);
        let (status, body) = h
            .call(
                "GET",
                "/api/v1/atlassian/connection/status",
                Some("alice"),
                None,
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(body, json!({"provider": "atlassian", "connected": false}));
        let (status, body) = h
            .call(
                "DELETE",
                "/api/v1/atlassian/connection",
                Some("alice"),
                None,
            )
            .await;
        assert_eq!(
            (status.as_u16(), body["error"].as_str()),
            (404, Some("not_connected"))
        );
        let (status, body) = h
            .call("GET", "/api/v1/atlassian/sites", Some("alice"), None)
            .await;
        assert_eq!(
            (status.as_u16(), body["error"].as_str()),
            (404, Some("not_connected"))
        );
        drop(h);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn bad_states_and_denials_write_nothing() {
    for db in TestDatabase::all().await {
        let h = Harness::start(&db, fake_config(), true).await;
        let callback = "/api/v1/atlassian/connection/callback";

        // Another user's state: refused, and it stays usable by its owner.
        let (url, state) = h.authorize("alice").await;
        let back = h.consent(&url, true).await;
        let body = json!({"code": back["code"], "state": state});
        let (status, err) = h
            .call("POST", callback, Some("mallory"), Some(body.clone()))
            .await;
        assert_eq!(
            (status.as_u16(), err["error"].as_str()),
            (400, Some("invalid_state")),
            "{}",
            db.kind
        );
        assert!(
            h.store
                .connection("mallory", "atlassian")
                .await
                .expect("db")
                .is_none()
        );

        // Unknown state.
        let (status, err) = h
            .call(
                "POST",
                callback,
                Some("alice"),
                Some(json!({"code": "x", "state": "never-issued"})),
            )
            .await;
        assert_eq!(
            (status.as_u16(), err["error"].as_str()),
            (400, Some("invalid_state"))
        );

        // Used twice: the second is refused.
        let (status, _) = h
            .call("POST", callback, Some("alice"), Some(body.clone()))
            .await;
        assert_eq!(status, 200);
        let (status, err) = h.call("POST", callback, Some("alice"), Some(body)).await;
        assert_eq!(
            (status.as_u16(), err["error"].as_str()),
            (400, Some("invalid_state"))
        );
        assert_eq!(
            h.fake.fake.counters().token_exchange,
            1,
            "a used state never reaches the token endpoint"
        );

        // Declined consent.
        let (url, _) = h.authorize("bob").await;
        let back = h.consent(&url, false).await;
        assert_eq!(back["error"], "access_denied");
        let (status, err) = h
            .call(
                "POST",
                callback,
                Some("bob"),
                Some(json!({"error": back["error"], "state": back["state"]})),
            )
            .await;
        assert_eq!(
            (status.as_u16(), err["error"].as_str()),
            (400, Some("access_denied"))
        );

        // A code the upstream refuses, and an upstream that is down.
        let (_, state) = h.authorize("bob").await;
        let (status, err) = h
            .call(
                "POST",
                callback,
                Some("bob"),
                Some(json!({"code": "forged-code", "state": state})),
            )
            .await;
        assert_eq!(
            (status.as_u16(), err["error"].as_str()),
            (400, Some("authorization_failed")),
            "{err}"
        );
        let (url, _) = h.authorize("bob").await;
        let back = h.consent(&url, true).await;
        h.fake.fake.fail_next_token_calls(1, Failure::Status(503));
        let (status, err) = h
            .call(
                "POST",
                callback,
                Some("bob"),
                Some(json!({"code": back["code"], "state": back["state"]})),
            )
            .await;
        assert_eq!(
            (status.as_u16(), err["error"].as_str()),
            (502, Some("upstream_unavailable")),
            "{err}"
        );
        let (_, state) = h.authorize("bob").await;
        h.fake.fake.fail_next_token_calls(1, Failure::Malformed);
        let (status, _) = h
            .call("POST", callback, Some("bob"), Some(json!({"code": h.fake.fake.issue_code("read:me offline_access"), "state": state})))
            .await;
        assert_eq!(status, 502);

        // Malformed bodies.
        let resp = h
            .http
            .post(h.url(callback))
            .bearer_auth(h.token("bob", "user"))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 400);
        let err: serde_json::Value = resp.json().await.expect("json error");
        assert_eq!(err["error"], "invalid_request");
        let (status, _) = h
            .call(
                "POST",
                callback,
                Some("bob"),
                Some(json!({"state": "only"})),
            )
            .await;
        assert_eq!(status, 400);

        assert!(
            h.store
                .connection("bob", "atlassian")
                .await
                .expect("db")
                .is_none(),
            "nothing written for bob"
        );
        assert_eq!(
            h.store.list_connections(None).await.expect("list").len(),
            1,
            "only alice's"
        );
        drop(h);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn users_and_admins() {
    let db = TestDatabase::sqlite();
    let h = Harness::start(&db, fake_config(), true).await;
    for (method, path) in [
        ("POST", "/api/v1/atlassian/connection/authorize"),
        ("POST", "/api/v1/atlassian/connection/callback"),
        ("GET", "/api/v1/atlassian/connection/status"),
        ("DELETE", "/api/v1/atlassian/connection"),
        ("GET", "/api/v1/atlassian/admin/connections"),
        ("GET", "/api/v1/atlassian/sites"),
        ("GET", "/api/v1/providers"),
    ] {
        let (status, err) = h.call(method, path, None, None).await;
        assert_eq!(
            (status.as_u16(), err["error"].as_str()),
            (401, Some("unauthorized")),
            "{method} {path}"
        );
    }
    let resp = h
        .http
        .get(h.url("/api/v1/atlassian/connection/status"))
        .bearer_auth("garbage")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401);
    let resp = h
        .http
        .get(h.url("/api/v1/atlassian/connection/status"))
        .header("cookie", format!("token={}", h.token("carol", "user")))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200, "the token cookie is accepted");
    for (method, path) in [
        ("GET", "/api/v1/atlassian/admin/connections"),
        ("DELETE", "/api/v1/atlassian/admin/connections/alice"),
        (
            "GET",
            "/api/v1/atlassian/admin/connections/alice/access-token",
        ),
    ] {
        let (status, err) = h.call(method, path, Some("carol"), None).await;
        assert_eq!(
            (status.as_u16(), err["error"].as_str()),
            (403, Some("forbidden")),
            "{method} {path}"
        );
    }
    h.connect("alice").await;
    let (status, _) = h
        .call(
            "DELETE",
            "/api/v1/atlassian/admin/connections/alice",
            Some("admin-1"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, err) = h
        .call(
            "DELETE",
            "/api/v1/atlassian/admin/connections/alice",
            Some("admin-1"),
            None,
        )
        .await;
    assert_eq!(
        (status.as_u16(), err["error"].as_str()),
        (404, Some("not_connected"))
    );
    let (status, err) = h
        .call(
            "GET",
            "/api/v1/atlassian/admin/connections/alice/access-token",
            Some("admin-1"),
            None,
        )
        .await;
    assert_eq!(
        (status.as_u16(), err["error"].as_str()),
        (404, Some("not_connected"))
    );
}

#[tokio::test]
async fn disabled_provider_mounts_nothing() {
    let db = TestDatabase::sqlite();
    let h = Harness::start(&db, fake_config(), false).await;
    for (method, path) in [
        ("GET", "/api/v1/atlassian/connection/status"),
        ("POST", "/api/v1/atlassian/connection/authorize"),
        ("GET", "/api/v1/atlassian/sites"),
    ] {
        let (status, _) = h.call(method, path, Some("alice"), None).await;
        assert_eq!(status, 404, "{method} {path}");
    }
    let (status, body) = h
        .call("GET", "/api/v1/providers", Some("alice"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!([]));
}

#[tokio::test]
async fn revoked_grant_needs_reauth_and_reconnecting_restores_it() {
    for db in TestDatabase::all().await {
        // Two-second access tokens: due once half their lifetime has passed.
        let mut config = fake_config();
        config.access_ttl = std::time::Duration::from_secs(2);
        let h = Harness::start(&db, config, true).await;
        h.connect("alice").await;
        h.wait_until_due("alice").await;
        let (status, _) = h
            .call("GET", "/api/v1/atlassian/sites", Some("alice"), None)
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            h.fake.fake.counters().token_refresh,
            1,
            "{}: refreshed on the way in",
            db.kind
        );
        let row = h
            .store
            .connection("alice", "atlassian")
            .await
            .expect("db")
            .expect("row");
        assert_eq!(row.version, 1);

        h.fake.fake.revoke_all();
        h.wait_until_due("alice").await;
        let (status, err) = h
            .call("GET", "/api/v1/atlassian/sites", Some("alice"), None)
            .await;
        assert_eq!(
            (status.as_u16(), err["error"].as_str()),
            (409, Some("needs_reauth")),
            "{err}"
        );
        let (status, body) = h
            .call(
                "GET",
                "/api/v1/atlassian/connection/status",
                Some("alice"),
                None,
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["status"], "needs_reauth");
        let refreshes = h.fake.fake.counters().token_refresh;
        let (status, _) = h
            .call("GET", "/api/v1/atlassian/sites", Some("alice"), None)
            .await;
        assert_eq!(status, 409);
        assert_eq!(
            h.fake.fake.counters().token_refresh,
            refreshes,
            "invalid_grant is never retried"
        );
        let row = h
            .store
            .connection("alice", "atlassian")
            .await
            .expect("db")
            .expect("row kept");
        assert_eq!(row.status, ConnectionStatus::NeedsReauth);
        assert!(h.vault.open_tokens(&row).is_ok(), "tokens kept");

        let again = h.connect("alice").await;
        assert_eq!(again["status"], "active");
        let (status, _) = h
            .call("GET", "/api/v1/atlassian/sites", Some("alice"), None)
            .await;
        assert_eq!(status, 200);
        drop(h);
        db.cleanup().await;
    }
}
