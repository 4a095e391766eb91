//! The whole flow through grantry's routes against a real OpenID provider, on every database.

use grantry_server::testing::{TestDatabase, make_access_token_due};
use serde_json::{Value, json};

use grantry_core::refresh::RefreshSettings;

use crate::harness::Grantry;
use crate::idp::{self, BASIC_CLIENT, Idp, POST_CLIENT, REDIRECT};

/// `corp-sso`: `kind = oauth2`, endpoints discovered from the issuer, `client_secret_post`.
fn corp_sso(idp: &Idp) -> Vec<(&'static str, String)> {
    vec![
        ("ENABLE_CORP_SSO_INTEGRATION", "true".into()),
        ("CORP_SSO_KIND", "oauth2".into()),
        ("CORP_SSO_NAME", "Corp SSO".into()),
        ("CORP_SSO_ISSUER", idp.issuer.clone()),
        ("CORP_SSO_CLIENT_ID", POST_CLIENT.0.into()),
        ("CORP_SSO_CLIENT_SECRET", POST_CLIENT.1.into()),
        ("CORP_SSO_REDIRECT_URI", REDIRECT.into()),
        (
            "CORP_SSO_OAUTH_SCOPE",
            "openid profile email offline_access".into(),
        ),
        ("CORP_SSO_AUTHORIZE_PARAMS_PROMPT", "consent".into()),
        ("CORP_SSO_ROTATES_REFRESH_TOKENS", "true".into()),
    ]
}

/// `corp-basic`: explicit endpoints (no discovery), `client_secret_basic`.
fn corp_basic(idp: &Idp) -> Vec<(&'static str, String)> {
    let at = |path: &str| format!("{}{path}", idp.issuer);
    vec![
        ("ENABLE_CORP_BASIC_INTEGRATION", "true".into()),
        ("CORP_BASIC_KIND", "oauth2".into()),
        ("CORP_BASIC_AUTHORIZATION_URL", at("/auth")),
        ("CORP_BASIC_TOKEN_URL", at("/token")),
        ("CORP_BASIC_USERINFO_URL", at("/me")),
        ("CORP_BASIC_REVOCATION_URL", at("/token/revocation")),
        ("CORP_BASIC_TOKEN_AUTH_METHOD", "client_secret_basic".into()),
        ("CORP_BASIC_CLIENT_ID", BASIC_CLIENT.0.into()),
        ("CORP_BASIC_CLIENT_SECRET", BASIC_CLIENT.1.into()),
        ("CORP_BASIC_REDIRECT_URI", REDIRECT.into()),
        (
            "CORP_BASIC_OAUTH_SCOPE",
            "openid email offline_access".into(),
        ),
        ("CORP_BASIC_AUTHORIZE_PARAMS_PROMPT", "consent".into()),
    ]
}

/// authorize → sign-in and consent at the provider → callback (with the response's `iss` when
/// `with_iss`); the callback's status and body.
async fn connect(
    g: &Grantry,
    provider: &str,
    user: &str,
    with_iss: bool,
) -> (reqwest::StatusCode, Value) {
    let (url, state) = g.authorize(provider, user).await;
    let back = idp::consent(&url, user).await;
    assert_eq!(back["state"], state);
    let mut body = json!({"code": back["code"], "state": back["state"]});
    if with_iss {
        body["iss"] = json!(back["iss"]);
    }
    g.callback(provider, user, body).await
}

/// The refresh tokens presented at the token endpoint, in order.
fn presented_refresh_tokens(log: &[Value]) -> Vec<String> {
    log.iter()
        .filter(|e| e["grant_type"] == "refresh_token")
        .map(|e| {
            e["refresh_token"]
                .as_str()
                .expect("refresh token")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn connect_refresh_with_rotation_and_disconnect_with_revocation() {
    for db in TestDatabase::all().await {
        let idp = Idp::start_with_ttl(4);
        let g = Grantry::start(&db, &corp_sso(&idp), RefreshSettings::default()).await;

        let (url, state) = g.authorize("corp-sso", "alice").await;
        assert!(url.starts_with(&format!("{}/auth?", idp.issuer)), "{url}");
        let q: std::collections::BTreeMap<String, String> = url::Url::parse(&url)
            .expect("url")
            .query_pairs()
            .into_owned()
            .collect();
        assert_eq!(q["client_id"], POST_CLIENT.0);
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["code_challenge"].len(), 43);
        assert_eq!(q["prompt"], "consent");
        assert_eq!(q["state"], state);
        let back = idp::consent(&url, "alice").await;
        assert_eq!(back["iss"], idp.issuer, "the server sends iss (RFC 9207)");
        let (status, connected) = g
            .callback(
                "corp-sso",
                "alice",
                json!({"code": back["code"], "state": state, "iss": back["iss"]}),
            )
            .await;
        assert_eq!(status, 200, "{}: {connected}\n{}", db.kind, idp.log());
        assert_eq!(connected["provider"], "corp-sso");
        assert_eq!(connected["status"], "active");
        assert_eq!(
            connected["account"],
            json!({"id": "alice", "name": "User alice", "email": "alice@example.test"})
        );
        assert!(
            connected["scopes"]
                .as_array()
                .expect("scopes")
                .contains(&json!("offline_access")),
            "{connected}"
        );

        let (status, body) = g
            .call("GET", "/api/v1/corp-sso/connection/status", "alice", None)
            .await;
        assert_eq!((status.as_u16(), &body["connected"]), (200, &json!(true)));
        let (_, providers) = g.call("GET", "/api/v1/providers", "alice", None).await;
        assert_eq!(providers[0]["id"], "corp-sso");
        assert_eq!(providers[0]["name"], "Corp SSO");

        let first = g.stored_tokens("alice", "corp-sso").await;
        let first_refresh = first.refresh_token.clone().expect("a refresh token");
        assert!(idp.active(first.access_token.secret()).await);

        // Four-second access tokens: a request past half the lifetime refreshes, rotating the pair.
        let mut handed_out = vec![first.access_token.secret().to_owned()];
        let mut refresh_tokens = vec![first_refresh.secret().to_owned()];
        for _ in 0..2 {
            g.wait_until_due("alice", "corp-sso").await;
            let (status, token) = g
                .call(
                    "GET",
                    "/api/v1/corp-sso/admin/connections/alice/access-token",
                    "admin-1",
                    None,
                )
                .await;
            assert_eq!(status, 200, "{token}\n{}", idp.log());
            let access = token["access_token"].as_str().expect("token").to_owned();
            assert!(!handed_out.contains(&access), "a refreshed access token");
            assert_eq!(token["token_type"], "Bearer");
            let stored = g.stored_tokens("alice", "corp-sso").await;
            assert_eq!(stored.access_token.secret(), access);
            let rotated = stored
                .refresh_token
                .expect("refresh token")
                .secret()
                .to_owned();
            assert!(
                !refresh_tokens.contains(&rotated),
                "the refresh token rotated"
            );
            handed_out.push(access);
            refresh_tokens.push(rotated);
        }

        // No refresh token was ever presented twice, each was the newest at the time, and every
        // token request was form-encoded with the client in the body.
        let log = idp.token_log().await;
        assert_eq!(
            presented_refresh_tokens(&log),
            refresh_tokens[..2].to_vec(),
            "{log:#?}"
        );
        for entry in &log {
            assert_eq!(entry["content_type"], "application/x-www-form-urlencoded");
            assert_eq!(entry["client_auth"], "body");
            assert_eq!(entry["status"], 200, "{entry}");
        }
        assert!(!idp.active(&refresh_tokens[0]).await, "rotated out");
        assert!(!idp.active(&refresh_tokens[1]).await, "rotated out");
        assert!(idp.active(&refresh_tokens[2]).await, "the grant is alive");
        assert!(idp.active(&handed_out[2]).await);

        let (status, headers, _) = g
            .send("DELETE", "/api/v1/corp-sso/connection", "alice", None)
            .await;
        assert_eq!(status, 204);
        assert_eq!(headers["grantry-revocation"], "revoked");
        assert!(!idp.active(&refresh_tokens[2]).await, "revoked upstream");
        assert!(!idp.active(&handed_out[2]).await, "revoked upstream");
        let (_, body) = g
            .call("GET", "/api/v1/corp-sso/connection/status", "alice", None)
            .await;
        assert_eq!(body, json!({"provider": "corp-sso", "connected": false}));
        drop(g);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn a_wrong_pkce_verifier_or_a_foreign_iss_is_refused() {
    for db in TestDatabase::all().await {
        let idp = Idp::start();
        let mut env = corp_sso(&idp);
        env.push(("CORP_SSO_REQUIRE_ISS", "true".into()));
        let g = Grantry::start(&db, &env, RefreshSettings::default()).await;
        let refused = |status: reqwest::StatusCode, body: &Value| {
            assert_eq!(
                (status.as_u16(), body["error"].as_str()),
                (400, Some("authorization_failed")),
                "{body}"
            );
        };

        // The code of one authorization redeemed with another state's verifier.
        let (url_a, _) = g.authorize("corp-sso", "alice").await;
        let back_a = idp::consent(&url_a, "alice").await;
        let (_, state_b) = g.authorize("corp-sso", "alice").await;
        let (status, body) = g
            .callback(
                "corp-sso",
                "alice",
                json!({"code": back_a["code"], "state": state_b, "iss": back_a["iss"]}),
            )
            .await;
        refused(status, &body);
        let log = idp.token_log().await;
        assert_eq!(log.len(), 1, "{log:#?}");
        assert_eq!(log[0]["grant_type"], "authorization_code");
        assert_eq!(log[0]["error"], "invalid_grant", "PKCE verification failed");

        // An authorization response that names another issuer: refused, the code never sent.
        let (url, state) = g.authorize("corp-sso", "alice").await;
        let back = idp::consent(&url, "alice").await;
        let foreign = json!({"code": back["code"], "state": state, "iss": "http://127.0.0.1:9"});
        let (status, body) = g.callback("corp-sso", "alice", foreign).await;
        refused(status, &body);
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("issuer")),
            "{body}"
        );
        // With `require_iss`, a response without `iss` is refused too.
        let (url, state) = g.authorize("corp-sso", "alice").await;
        let back = idp::consent(&url, "alice").await;
        let (status, body) = g
            .callback(
                "corp-sso",
                "alice",
                json!({"code": back["code"], "state": state}),
            )
            .await;
        refused(status, &body);
        assert_eq!(
            idp.token_log().await.len(),
            1,
            "no code left after an iss refusal"
        );
        let (_, body) = g
            .call("GET", "/api/v1/corp-sso/connection/status", "alice", None)
            .await;
        assert_eq!(body["connected"], false);

        let (status, body) = connect(&g, "corp-sso", "alice", true).await;
        assert_eq!(status, 200, "{body}");
        drop(g);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn instances_mount_side_by_side() {
    for db in TestDatabase::all().await {
        let idp = Idp::start_with_ttl(4);
        let mut env = corp_sso(&idp);
        env.extend(corp_basic(&idp));
        env.extend([
            ("ENABLE_GITLAB_INTEGRATION", "true".to_owned()),
            ("GITLAB_CLIENT_ID", "gitlab-app".to_owned()),
            ("GITLAB_CLIENT_SECRET", "gitlab-secret".to_owned()),
            ("GITLAB_REDIRECT_URI", REDIRECT.to_owned()),
        ]);
        let g = Grantry::start(&db, &env, RefreshSettings::default()).await;

        let (status, providers) = g.call("GET", "/api/v1/providers", "alice", None).await;
        assert_eq!(status, 200);
        let listed: Vec<(&str, &str)> = providers
            .as_array()
            .expect("list")
            .iter()
            .map(|p| {
                (
                    p["id"].as_str().unwrap_or(""),
                    p["name"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                ("corp-basic", "corp-basic"),
                ("corp-sso", "Corp SSO"),
                ("gitlab", "GitLab")
            ]
        );

        let (gitlab_url, _) = g.authorize("gitlab", "alice").await;
        assert!(
            gitlab_url.starts_with("https://gitlab.com/oauth/authorize?"),
            "{gitlab_url}"
        );
        assert!(gitlab_url.contains("client_id=gitlab-app"));

        // Without discovery nothing advertises `iss`: it is optional unless `require_iss` is set.
        let (status, body) = connect(&g, "corp-basic", "alice", false).await;
        assert_eq!(status, 200, "{body}\n{}", idp.log());
        assert_eq!(body["account"]["email"], "alice@example.test");
        // corp-sso's metadata advertises `authorization_response_iss_parameter_supported`
        // (RFC 9207): a callback without `iss` is refused before the code is redeemed.
        let redeemed = idp.token_log().await.len();
        let (status, body) = connect(&g, "corp-sso", "bob", false).await;
        assert_eq!(
            (status.as_u16(), body["error"].as_str()),
            (400, Some("authorization_failed")),
            "{body}"
        );
        assert!(
            body["message"].as_str().is_some_and(|m| m.contains("iss")),
            "{body}"
        );
        assert_eq!(idp.token_log().await.len(), redeemed, "the code never left");
        let (status, body) = connect(&g, "corp-sso", "bob", true).await;
        assert_eq!(status, 200, "{body}");
        for (path, connected) in [
            ("/api/v1/corp-basic/connection/status", true),
            ("/api/v1/corp-sso/connection/status", false),
            ("/api/v1/gitlab/connection/status", false),
        ] {
            let (_, body) = g.call("GET", path, "alice", None).await;
            assert_eq!(body["connected"], connected, "{path}: {body}");
        }
        let (_, list) = g
            .call("GET", "/api/v1/corp-sso/admin/connections", "admin-1", None)
            .await;
        assert_eq!(list.as_array().map(Vec::len), Some(1));
        assert_eq!(list[0]["user_id"], "bob");

        // The basic client refreshes and revokes with HTTP Basic.
        g.wait_until_due("alice", "corp-basic").await;
        let (status, _) = g
            .call(
                "GET",
                "/api/v1/corp-basic/admin/connections/alice/access-token",
                "admin-1",
                None,
            )
            .await;
        assert_eq!(status, 200);
        let tokens = g.stored_tokens("alice", "corp-basic").await;
        let access = tokens.access_token.secret();
        assert!(idp.active_as(access, BASIC_CLIENT, true).await);
        let (status, headers, _) = g
            .send("DELETE", "/api/v1/corp-basic/connection", "alice", None)
            .await;
        assert_eq!(status, 204);
        assert_eq!(headers["grantry-revocation"], "revoked");
        assert!(
            !idp.active_as(access, BASIC_CLIENT, true).await,
            "revoked upstream"
        );
        let log = idp.token_log().await;
        let basic: Vec<&Value> = log.iter().filter(|e| e["client_auth"] == "basic").collect();
        assert_eq!(basic.len(), 2, "code and refresh of corp-basic: {log:#?}");
        assert!(basic.iter().all(|e| e["status"] == 200), "{log:#?}");

        // bob's corp-sso connection is untouched by alice's corp-basic disconnect.
        let (_, body) = g
            .call("GET", "/api/v1/corp-sso/connection/status", "bob", None)
            .await;
        assert_eq!(body["status"], "active");
        drop(g);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn short_lived_tokens_refresh_once_for_a_crowd_in_one_replica_and_two() {
    const ROUTE: &str = "/api/v1/corp-sso/admin/connections/alice/access-token";
    for db in TestDatabase::all().await {
        // One-minute access tokens: below the five-minute default margin, so before the margin
        // was capped at half the lifetime every use refreshed.
        let idp = Idp::start_with_ttl(60);
        let g = Grantry::start(&db, &corp_sso(&idp), RefreshSettings::default()).await;
        let (status, body) = connect(&g, "corp-sso", "alice", true).await;
        assert_eq!(status, 200, "{body}");
        let admin = g.token("admin-1", "admin");
        for replicas in [1, 2] {
            let mut bases = vec![g.base.clone()];
            let mut servers = Vec::new();
            if replicas == 2 {
                let (base, server) = g.replica().await;
                bases.push(base);
                servers.push(server);
            }
            let store = db.store().await;
            make_access_token_due(&store, "alice", "corp-sso").await;
            store.close().await;
            let refreshes = |log: &[Value]| {
                log.iter()
                    .filter(|e| e["grant_type"] == "refresh_token")
                    .count()
            };
            let before = refreshes(&idp.token_log().await);
            let fetch = |base: String| {
                let (http, admin) = (g.http().clone(), admin.clone());
                async move {
                    let resp = http
                        .get(format!("{base}{ROUTE}"))
                        .bearer_auth(admin)
                        .send()
                        .await
                        .expect("request");
                    let status = resp.status().as_u16();
                    let body: Value = resp.json().await.unwrap_or(Value::Null);
                    (
                        status,
                        body["access_token"].as_str().unwrap_or("").to_owned(),
                    )
                }
            };
            let mut calls = tokio::task::JoinSet::new();
            for i in 0..100 {
                calls.spawn(fetch(bases[i % bases.len()].clone()));
            }
            let mut tokens = std::collections::BTreeSet::new();
            while let Some(done) = calls.join_next().await {
                let (status, token) = done.expect("join");
                assert_eq!(status, 200, "{} x{replicas}: {}", db.kind, idp.log());
                tokens.insert(token);
            }
            for i in 0..20 {
                let (status, token) = fetch(bases[i % bases.len()].clone()).await;
                assert_eq!(status, 200);
                tokens.insert(token);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            let log = idp.token_log().await;
            assert_eq!(
                refreshes(&log),
                before + 1,
                "{} x{replicas}: one refresh for 120 calls: {log:#?}",
                db.kind
            );
            assert_eq!(
                tokens.len(),
                1,
                "{} x{replicas}: one token for all",
                db.kind
            );
            for server in servers {
                server.abort();
            }
        }
        drop(g);
        db.cleanup().await;
    }
}
