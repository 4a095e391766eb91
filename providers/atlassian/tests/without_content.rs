//! The provider on its own, as a deployment that leaves grantry-atlassian-content out builds it:
//! `/sites` works, the content routes are not mounted and not documented.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use grantry_atlassian_fake::{ACME_SITE_ID, FakeAtlassian, FakeConfig};
use grantry_core::keyring::KeyRing;
use grantry_core::provider::build_providers;
use grantry_core::refresh::RefreshSettings;
use grantry_core::vault::Vault;
use grantry_server::testing::TestDatabase;
use grantry_server::{AppState, Config, JwtAuthenticator, router};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};

const REDIRECT: &str = "http://localhost:3000/settings/connections";

#[tokio::test]
async fn sites_work_and_content_routes_are_absent() {
    let fake = FakeAtlassian::start(FakeConfig {
        redirect_uri: REDIRECT.into(),
        ..FakeConfig::default()
    })
    .await
    .expect("fake atlassian");
    let cfg = fake.fake.config();
    let env: BTreeMap<String, String> = [
        ("ENABLE_ATLASSIAN_INTEGRATION", "true"),
        ("ATLASSIAN_CLIENT_ID", cfg.client_id.as_str()),
        ("ATLASSIAN_CLIENT_SECRET", cfg.client_secret.as_str()),
        ("ATLASSIAN_REDIRECT_URI", REDIRECT),
        ("ATLASSIAN_AUTH_URL", fake.base_url.as_str()),
        ("ATLASSIAN_API_URL", fake.base_url.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(grantry_atlassian::ID, "atlassian");
    let config = Config::load_from(env, &[grantry_atlassian::ID]).expect("config");
    let providers = build_providers(&config.providers).expect("providers");
    assert_eq!(providers.len(), 1);

    let db = TestDatabase::sqlite();
    let store = db.store().await;
    let key = SecretString::from(KeyRing::generate_key_base64());
    let vault = Vault::new(
        Arc::new(store),
        Arc::new(KeyRing::from_base64(&key, None).expect("key")),
    );
    let jwt = SecretString::from("without-content-jwt-secret".to_owned());
    let state = AppState::new(
        vault,
        providers,
        Arc::new(JwtAuthenticator::new(&jwt)),
        RefreshSettings::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router(state)).await;
    });

    let http = reqwest::Client::new();
    let bearer =
        JwtAuthenticator::issue(&jwt, "alice", "user", Duration::from_secs(600)).expect("sign");
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut request = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(&bearer);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.expect("request");
            let status = response.status();
            let text = response.text().await.expect("body");
            (status, text)
        }
    };

    let (status, text) = call(
        reqwest::Method::POST,
        "/api/v1/atlassian/connection/authorize",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let authorize: Value = serde_json::from_str(&text).expect("json");
    let code = fake.fake.issue_code(grantry_atlassian::DEFAULT_SCOPES);
    let (status, text) = call(
        reqwest::Method::POST,
        "/api/v1/atlassian/connection/callback",
        Some(json!({"code": code, "state": authorize["state"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");

    let (status, text) = call(reqwest::Method::GET, "/api/v1/atlassian/sites", None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let sites: Value = serde_json::from_str(&text).expect("json");
    let ids: Vec<&str> = sites
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|site| site["id"].as_str())
        .collect();
    assert!(ids.contains(&ACME_SITE_ID), "{sites}");

    for path in [
        format!("/api/v1/atlassian/jira/{ACME_SITE_ID}/projects"),
        format!("/api/v1/atlassian/jira/{ACME_SITE_ID}/issues/ACME-1"),
        format!("/api/v1/atlassian/confluence/{ACME_SITE_ID}/spaces"),
        format!("/api/v1/atlassian/confluence/{ACME_SITE_ID}/pages/123456"),
        "/api/v1/atlassian/search?q=payments".to_owned(),
        format!("/api/v1/atlassian/proxy/jira/{ACME_SITE_ID}/rest/api/3/myself"),
    ] {
        let (status, text) = call(reqwest::Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {text}");
        assert!(text.contains("no such route"), "{path}: {text}");
    }

    let (status, text) = call(reqwest::Method::GET, "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let doc: Value = serde_json::from_str(&text).expect("json");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.contains_key("/api/v1/atlassian/sites"), "{doc}");
    let content: Vec<&String> = paths
        .keys()
        .filter(|p| {
            ["/jira/", "/confluence/", "/search", "/proxy/"]
                .iter()
                .any(|part| p.contains(part))
        })
        .collect();
    assert!(content.is_empty(), "{content:?}");

    server.abort();
    db.cleanup().await;
}
