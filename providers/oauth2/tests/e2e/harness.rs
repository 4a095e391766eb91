//! An in-process grantry: configuration from variables, the real router on a loopback port, a
//! real database.

use std::sync::Arc;
use std::time::Duration;

use grantry_core::TokenSet;
use grantry_core::keyring::KeyRing;
use grantry_core::provider::build_providers;
use grantry_core::refresh::RefreshSettings;
use grantry_core::vault::Vault;
use grantry_server::testing::TestDatabase;
use grantry_server::{AppState, Config, JwtAuthenticator, router};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use secrecy::SecretString;
use serde_json::Value;

/// A running grantry.
pub(crate) struct Grantry {
    /// The server's base URL, `http://127.0.0.1:PORT`.
    pub(crate) base: String,
    state: AppState,
    vault: Vault,
    http: reqwest::Client,
    jwt: SecretString,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Grantry {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Grantry {
    /// Loads the configuration from `env` exactly as `grantry serve` would, and serves it.
    pub(crate) async fn start(
        db: &TestDatabase,
        env: &[(&str, String)],
        refresh: RefreshSettings,
    ) -> Self {
        let mut vars: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        vars.push(("GRANTRY_CONFIG".into(), String::new()));
        let config = Config::load_from(vars, &[grantry_oauth2::FACTORY_ID]).expect("config");
        let providers = build_providers(&config.providers).expect("providers");
        let store = db.store().await;
        let keys = KeyRing::from_base64(&SecretString::from(KeyRing::generate_key_base64()), None)
            .expect("key");
        let vault = Vault::new(Arc::new(store), Arc::new(keys));
        let jwt = SecretString::from("oauth2-e2e-jwt-secret".to_owned());
        let state = AppState::new(
            vault.clone(),
            providers,
            Arc::new(JwtAuthenticator::new(&jwt)),
            refresh,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let app = router(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Self {
            base,
            state,
            vault,
            http,
            jwt,
            server,
        }
    }

    /// Serves another replica over the same database and providers, with its own refresher;
    /// its base URL and server task.
    pub(crate) async fn replica(&self) -> (String, tokio::task::JoinHandle<()>) {
        let state = AppState::new(
            self.vault.clone(),
            self.state.providers().to_vec(),
            Arc::new(JwtAuthenticator::new(&self.jwt)),
            RefreshSettings::default(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let app = router(state);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (base, server)
    }

    /// A bearer token of `user` with `role`.
    pub(crate) fn token(&self, user: &str, role: &str) -> String {
        JwtAuthenticator::issue(&self.jwt, user, role, Duration::from_secs(600)).expect("sign")
    }

    /// The HTTP client of the tests.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends a request as `user` (admin when the id starts with `admin`); status, headers, JSON.
    pub(crate) async fn send(
        &self,
        method: &str,
        path: &str,
        user: &str,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let role = if user.starts_with("admin") {
            "admin"
        } else {
            "user"
        };
        let token =
            JwtAuthenticator::issue(&self.jwt, user, role, Duration::from_secs(600)).expect("sign");
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, json)
    }

    /// Like [`Grantry::send`], without the headers.
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        user: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, _, json) = self.send(method, path, user, body).await;
        (status, json)
    }

    /// Asks `provider` for an authorization URL as `user`: (authorization_url, state).
    pub(crate) async fn authorize(&self, provider: &str, user: &str) -> (String, String) {
        let path = format!("/api/v1/{provider}/connection/authorize");
        let (status, body) = self.call("POST", &path, user, None).await;
        assert_eq!(status, 200, "{body}");
        (
            body["authorization_url"].as_str().expect("url").to_owned(),
            body["state"].as_str().expect("state").to_owned(),
        )
    }

    /// Posts the callback; status and body.
    pub(crate) async fn callback(
        &self,
        provider: &str,
        user: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let path = format!("/api/v1/{provider}/connection/callback");
        self.call("POST", &path, user, Some(body)).await
    }

    /// The tokens grantry stores for (`user`, `provider`), opened from the database.
    pub(crate) async fn stored_tokens(&self, user: &str, provider: &str) -> TokenSet {
        let record = self
            .vault
            .store()
            .connection(user, provider)
            .await
            .expect("store")
            .expect("a stored connection");
        self.vault.open_tokens(&record).expect("tokens open")
    }

    /// Sleeps until the stored access token of (`user`, `provider`) is due for refresh: past
    /// half the lifetime it was granted (the margin is capped there for short-lived tokens).
    pub(crate) async fn wait_until_due(&self, user: &str, provider: &str) {
        let record = self
            .vault
            .store()
            .connection(user, provider)
            .await
            .expect("store")
            .expect("a stored connection");
        let expires = record.access_expires_at.expect("an expiry");
        let issued = record.access_issued_at.expect("an issue time");
        let due = expires - (expires - issued) / 2;
        let wait = (due - chrono::Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait + Duration::from_millis(100)).await;
    }
}
