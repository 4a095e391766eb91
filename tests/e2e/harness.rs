//! An in-process grantry (real router, real database, real HTTP) against the fake Atlassian.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use grantry::core::keyring::KeyRing;
use grantry::core::provider::build_providers;
use grantry::core::refresh::RefreshSettings;
use grantry::core::vault::Vault;
use grantry_atlassian_fake::{FakeAtlassian, FakeConfig, RunningFake};
use grantry_server::testing::TestDatabase;
use grantry_server::{AppState, Config, JwtAuthenticator, SqlStore, router};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::Value;

pub(crate) const REDIRECT: &str = "http://localhost:3000/settings/connections";

/// A running grantry with Atlassian enabled against a fake.
pub(crate) struct Harness {
    pub(crate) base: String,
    pub(crate) fake: RunningFake,
    pub(crate) store: SqlStore,
    pub(crate) vault: Vault,
    pub(crate) state: AppState,
    pub(crate) http: reqwest::Client,
    /// The encryption key (base64) the vault seals with.
    pub(crate) key: String,
    jwt: SecretString,
    server: tokio::task::JoinHandle<()>,
}

/// Serves `state` on a free loopback port; returns the base URL and the server task.
pub(crate) async fn spawn_server(state: AppState) -> (String, tokio::task::JoinHandle<()>) {
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

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub(crate) fn fake_config() -> FakeConfig {
    FakeConfig {
        redirect_uri: REDIRECT.into(),
        ..FakeConfig::default()
    }
}

impl Harness {
    pub(crate) async fn start(db: &TestDatabase, fake: FakeConfig, enable: bool) -> Self {
        Self::start_with(db, fake, enable, RefreshSettings::default()).await
    }

    /// Like `start`, with the given refresh tuning.
    pub(crate) async fn start_with(
        db: &TestDatabase,
        fake: FakeConfig,
        enable: bool,
        refresh: RefreshSettings,
    ) -> Self {
        Self::start_full(
            db,
            fake,
            enable,
            refresh,
            grantry::atlassian::CONTENT_SCOPES,
            Vec::new(),
            Vec::new(),
        )
        .await
    }

    /// Like `start_with`, asking Atlassian for `scope` (`ATLASSIAN_OAUTH_SCOPE`).
    pub(crate) async fn start_scoped(
        db: &TestDatabase,
        fake: FakeConfig,
        enable: bool,
        refresh: RefreshSettings,
        scope: &str,
    ) -> Self {
        Self::start_full(db, fake, enable, refresh, scope, Vec::new(), Vec::new()).await
    }

    /// Like `start`, with more variables (other providers' instances, say).
    pub(crate) async fn start_with_env(
        db: &TestDatabase,
        fake: FakeConfig,
        extra: Vec<(String, String)>,
    ) -> Self {
        Self::start_full(
            db,
            fake,
            true,
            RefreshSettings::default(),
            grantry::atlassian::CONTENT_SCOPES,
            Vec::new(),
            extra,
        )
        .await
    }

    /// Like `start_with`, the store recording every event for `endpoints` (none: no event;
    /// nothing delivers them, they stay in the outbox for the test to read).
    pub(crate) async fn start_recording(
        db: &TestDatabase,
        fake: FakeConfig,
        enable: bool,
        refresh: RefreshSettings,
        endpoints: Vec<String>,
    ) -> Self {
        Self::start_full(
            db,
            fake,
            enable,
            refresh,
            grantry::atlassian::CONTENT_SCOPES,
            endpoints,
            Vec::new(),
        )
        .await
    }

    async fn start_full(
        db: &TestDatabase,
        fake: FakeConfig,
        enable: bool,
        refresh: RefreshSettings,
        scope: &str,
        endpoints: Vec<String>,
        extra: Vec<(String, String)>,
    ) -> Self {
        let fake = FakeAtlassian::start(fake).await.expect("fake atlassian");
        let mut env = BTreeMap::new();
        let cfg = fake.fake.config();
        for (k, v) in [
            (
                "ENABLE_ATLASSIAN_INTEGRATION",
                if enable { "true" } else { "false" }.to_owned(),
            ),
            ("ATLASSIAN_CLIENT_ID", cfg.client_id.clone()),
            ("ATLASSIAN_CLIENT_SECRET", cfg.client_secret.clone()),
            ("ATLASSIAN_REDIRECT_URI", REDIRECT.to_owned()),
            ("ATLASSIAN_AUTH_URL", fake.base_url.clone()),
            ("ATLASSIAN_API_URL", fake.base_url.clone()),
            ("ATLASSIAN_OAUTH_SCOPE", scope.to_owned()),
        ] {
            env.insert(k.to_owned(), v);
        }
        env.extend(extra);
        let kinds: Vec<&str> = grantry::core::provider::factories()
            .expect("factories")
            .iter()
            .map(|f| f.id)
            .collect();
        let config = Config::load_from(env, &kinds).expect("config");
        let providers = build_providers(&config.providers).expect("providers");
        let store = db.store().await.with_event_endpoints(endpoints);
        let key = KeyRing::generate_key_base64();
        let keys = KeyRing::from_base64(&SecretString::from(key.clone()), None).expect("key");
        let vault = Vault::new(Arc::new(store.clone()), Arc::new(keys));
        let jwt = SecretString::from("e2e-jwt-secret".to_owned());
        let state = AppState::new(
            vault.clone(),
            providers,
            Arc::new(JwtAuthenticator::new(&jwt)),
            refresh,
        );
        let (base, server) = spawn_server(state.clone()).await;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Self {
            base,
            fake,
            store,
            vault,
            state,
            http,
            key,
            jwt,
            server,
        }
    }

    /// Another replica over the same database and providers, with its own refresher.
    pub(crate) fn replica_state(&self, refresh: RefreshSettings) -> AppState {
        AppState::new(
            self.vault.clone(),
            self.state.providers().to_vec(),
            Arc::new(JwtAuthenticator::new(&self.jwt)),
            refresh,
        )
    }

    pub(crate) fn token(&self, user: &str, role: &str) -> String {
        JwtAuthenticator::issue(&self.jwt, user, role, Duration::from_secs(600)).expect("sign")
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request as `user` (no Authorization header when `None`); returns status and JSON body.
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        user: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, self.url(path));
        if let Some(user) = user {
            let role = if user.starts_with("admin") {
                "admin"
            } else {
                "user"
            };
            req = req.bearer_auth(self.token(user, role));
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json)
    }

    /// Asks for an authorization URL as `user`; returns (authorization_url, state).
    pub(crate) async fn authorize(&self, user: &str) -> (String, String) {
        let (status, body) = self
            .call(
                "POST",
                "/api/v1/atlassian/connection/authorize",
                Some(user),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["expires_in"], 600);
        (
            body["authorization_url"].as_str().expect("url").to_owned(),
            body["state"].as_str().expect("state").to_owned(),
        )
    }

    /// Opens the consent page and clicks Accept or Decline; returns the redirect's query pairs.
    pub(crate) async fn consent(
        &self,
        authorization_url: &str,
        accept: bool,
    ) -> BTreeMap<String, String> {
        let page = self
            .http
            .get(authorization_url)
            .send()
            .await
            .expect("consent page");
        assert_eq!(page.status(), 200);
        let url = url::Url::parse(authorization_url).expect("url");
        let q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        let form = [
            ("client_id", q["client_id"].as_str()),
            ("redirect_uri", q["redirect_uri"].as_str()),
            ("scope", q["scope"].as_str()),
            ("state", q["state"].as_str()),
            ("decision", if accept { "accept" } else { "decline" }),
        ];
        let resp = self
            .http
            .post(self.fake.url("/authorize/decision"))
            .form(&form)
            .send()
            .await
            .expect("decision");
        assert_eq!(resp.status(), 302);
        let location = resp.headers()["location"]
            .to_str()
            .expect("location")
            .to_owned();
        assert!(location.starts_with(REDIRECT), "{location}");
        url::Url::parse(&location)
            .expect("redirect")
            .query_pairs()
            .into_owned()
            .collect()
    }

    /// The whole dance for `user`; returns the callback's status object.
    pub(crate) async fn connect(&self, user: &str) -> Value {
        let (url, state) = self.authorize(user).await;
        let back = self.consent(&url, true).await;
        assert_eq!(back["state"], state);
        let (status, body) = self
            .call(
                "POST",
                "/api/v1/atlassian/connection/callback",
                Some(user),
                Some(serde_json::json!({"code": back["code"], "state": back["state"]})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Sleeps until `user`'s stored Atlassian access token is due for refresh: past half the
    /// lifetime it was granted (the refresh margin is capped there), for tokens shorter than
    /// twice the default five-minute margin.
    pub(crate) async fn wait_until_due(&self, user: &str) {
        use grantry::core::store::TokenStore;
        let row = self
            .store
            .connection(user, "atlassian")
            .await
            .expect("db")
            .expect("row");
        let expires = row.access_expires_at.expect("expiry");
        let issued = row.access_issued_at.expect("issued");
        let due = expires - (expires - issued) / 2;
        let wait = (due - chrono::Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait + Duration::from_millis(100)).await;
    }
}
