//! No token or secret in the database file, the logs at trace level, or any response but the
//! admin access-token route.

use std::sync::Arc;

use grantry::core::keyring::KeyRing;
use grantry::core::store::TokenStore;
use grantry::core::vault::Vault;
use grantry_atlassian_fake::FakeAtlassian;
use grantry_server::SqlStore;
use secrecy::SecretString;
use serde_json::Value;

use crate::harness::fake_config;
use crate::helpers::{Scratch, db_file};
use crate::process::{alice_and_admin, atlassian_env, connect_alice};

#[tokio::test]
async fn tokens_never_leak_into_the_database_file_logs_or_responses() {
    let fake = FakeAtlassian::start(fake_config()).await.expect("fake");
    let cfg = fake.fake.config().clone();
    let key = KeyRing::generate_key_base64();
    let jwt = "secrets-test-jwt-secret";
    let mut scratch = atlassian_env(Scratch::new(), &fake, &key, jwt).with("LOG_LEVEL", "trace");
    let server = scratch.serve().await;
    let (user, admin) = alice_and_admin(jwt);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut responses: Vec<String> = Vec::new();

    responses.push(connect_alice(&http, &server, &server, &fake, &user).await);
    for (path, token) in [
        ("/api/v1/atlassian/connection/status", &user),
        ("/api/v1/atlassian/sites", &user),
        ("/api/v1/atlassian/admin/connections", &admin),
        ("/api/v1/providers", &user),
    ] {
        let resp = http
            .get(server.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), 200, "{path}");
        responses.push(resp.text().await.expect("body"));
    }
    let handed: Value = http
        .get(server.url("/api/v1/atlassian/admin/connections/alice/access-token"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("access token")
        .json()
        .await
        .expect("json");
    let access = handed["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();

    let store = SqlStore::connect(&format!("sqlite://{}", db_file(scratch.path()).display()))
        .await
        .expect("db");
    let ring = KeyRing::from_base64(&SecretString::from(key.clone()), None).expect("key");
    let vault = Vault::new(Arc::new(store.clone()), Arc::new(ring));
    let row = store
        .connection("alice", "atlassian")
        .await
        .expect("read")
        .expect("row");
    let tokens = vault.open_tokens(&row).expect("open");
    assert_eq!(tokens.access_token.secret(), access);
    let refresh = tokens
        .refresh_token
        .expect("refresh token")
        .secret()
        .to_owned();
    store.close().await;
    server.stop();

    let mut stored = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", db_file(scratch.path()).display());
        if let Ok(bytes) = std::fs::read(&path) {
            stored.extend(bytes);
        }
    }
    assert!(stored.len() > 1000, "the database was read");
    let log = std::fs::read_to_string(scratch.log_path()).expect("log");
    assert!(log.contains("TRACE"), "trace level was on");
    let secrets = [
        ("access token", access.as_str()),
        ("refresh token", refresh.as_str()),
        ("client secret", cfg.client_secret.as_str()),
        ("encryption key", key.as_str()),
        ("JWT secret", jwt),
    ];
    for (what, value) in secrets {
        assert!(
            !stored.windows(value.len()).any(|w| w == value.as_bytes()),
            "{what} found in the database file"
        );
        assert!(!log.contains(value), "{what} found in the logs");
        for body in &responses {
            assert!(!body.contains(value), "{what} found in a response: {body}");
        }
    }
}
