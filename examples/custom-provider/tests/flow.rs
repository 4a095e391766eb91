//! The example provider inside a real grantry router, against a fake of the "Example" service:
//! connect (with PKCE), read the status, call the provider's own route (which refreshes),
//! lose the grant upstream (needs re-consent), connect again, disconnect (which revokes).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use grantry_core::PkceVerifier;
use grantry_core::keyring::KeyRing;
use grantry_core::provider::build_providers;
use grantry_core::refresh::RefreshSettings;
use grantry_core::vault::Vault;
use grantry_server::testing::TestDatabase;
use grantry_server::{AppState, Config, JwtAuthenticator, router};
use secrecy::SecretString;
use serde_json::{Value, json};

/// The lifetime of the fake's access tokens, in seconds.
const TOKEN_SECS: u64 = 2;
/// A little more than half that lifetime: a token this old is due for refresh.
const HALF_LIFE: Duration = Duration::from_millis(TOKEN_SECS * 500 + 100);

const CLIENT_ID: &str = "example-client";
const CLIENT_SECRET: &str = "example-secret";
const REDIRECT: &str = "http://127.0.0.1:3000/settings/connections";

/// The fake "Example" service: what the provider talks to, in a few dozen lines.
#[derive(Default)]
struct Upstream {
    /// code → (PKCE challenge, redirect URI)
    codes: HashMap<String, (String, String)>,
    access: HashSet<String>,
    refresh: HashSet<String>,
    exchanges: u32,
    refreshes: u32,
    revocations: u32,
    next: u32,
}

type Fake = Arc<Mutex<Upstream>>;

fn lock(fake: &Fake) -> std::sync::MutexGuard<'_, Upstream> {
    fake.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Upstream {
    fn mint(&mut self, kind: &str) -> String {
        self.next += 1;
        format!("{kind}-{}", self.next)
    }
}

fn oauth_error(status: StatusCode, error: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": error})),
    )
        .into_response()
}

async fn authorize(State(fake): State<Fake>, Query(q): Query<HashMap<String, String>>) -> Response {
    let ok = q.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && q.get("response_type").map(String::as_str) == Some("code")
        && q.get("code_challenge_method").map(String::as_str) == Some("S256");
    let (Some(redirect), Some(state), Some(challenge), true) = (
        q.get("redirect_uri"),
        q.get("state"),
        q.get("code_challenge"),
        ok,
    ) else {
        return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
    };
    let code = {
        let mut up = lock(&fake);
        let code = up.mint("code");
        up.codes
            .insert(code.clone(), (challenge.clone(), redirect.clone()));
        code
    };
    // The person says yes at once: this fake has no consent page.
    let mut location = url::Url::parse(redirect).expect("redirect URI");
    location
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", state);
    (
        StatusCode::FOUND,
        [(header::LOCATION, location.to_string())],
    )
        .into_response()
}

async fn token(State(fake): State<Fake>, Form(f): Form<HashMap<String, String>>) -> Response {
    let get = |k: &str| f.get(k).map(String::as_str);
    if get("client_id") != Some(CLIENT_ID) || get("client_secret") != Some(CLIENT_SECRET) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let mut up = lock(&fake);
    match get("grant_type") {
        Some("authorization_code") => {
            up.exchanges += 1;
            let Some((challenge, redirect)) = get("code").and_then(|c| up.codes.remove(c)) else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            };
            let verifier = PkceVerifier::new(get("code_verifier").unwrap_or_default());
            if verifier.challenge_s256() != challenge || get("redirect_uri") != Some(&redirect) {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            let (access, refresh) = (up.mint("access"), up.mint("refresh"));
            up.access.insert(access.clone());
            up.refresh.insert(refresh.clone());
            // Two-second tokens: due for refresh once half their lifetime has passed.
            Json(
                json!({"access_token": access, "refresh_token": refresh, "token_type": "Bearer",
                "expires_in": TOKEN_SECS, "scope": "profile tasks:read offline"}),
            )
            .into_response()
        }
        Some("refresh_token") => {
            up.refreshes += 1;
            if !get("refresh_token").is_some_and(|r| up.refresh.contains(r)) {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            let access = up.mint("access");
            up.access.insert(access.clone());
            // No new refresh token: grantry keeps the old one.
            Json(json!({"access_token": access, "token_type": "Bearer", "expires_in": TOKEN_SECS}))
                .into_response()
        }
        _ => oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    }
}

async fn revoke(State(fake): State<Fake>, Form(f): Form<HashMap<String, String>>) -> StatusCode {
    let mut up = lock(&fake);
    up.revocations += 1;
    if let Some(token) = f.get("token") {
        up.refresh.remove(token);
    }
    StatusCode::OK
}

fn authorised(fake: &Fake, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| lock(fake).access.contains(t))
}

async fn me(State(fake): State<Fake>, headers: HeaderMap) -> Response {
    if !authorised(&fake, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    Json(
        json!({"id": "u-42", "name": "Grace Hopper", "email": "grace@example.com",
        "workspaces": [
            {"id": "w-1", "name": "Home", "url": "https://tasks.example.com/w/home",
             "avatar_url": "https://tasks.example.com/avatars/home.png"},
            {"id": "w-2", "name": "Work", "url": "https://tasks.example.com/w/work"}
        ]}),
    )
    .into_response()
}

async fn tasks(State(fake): State<Fake>, headers: HeaderMap) -> Response {
    if !authorised(&fake, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    Json(json!([{"id": 1, "title": "Write the provider guide", "done": true}])).into_response()
}

async fn start_fake() -> (String, Fake) {
    let fake: Fake = Arc::default();
    let app = Router::new()
        .route("/oauth/authorize", get(authorize))
        .route("/oauth/token", post(token))
        .route("/oauth/revoke", post(revoke))
        .route("/api/me", get(me))
        .route("/api/tasks", get(tasks))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, fake)
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

struct Grantry {
    base: String,
    http: reqwest::Client,
    user: String,
}

impl Grantry {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.user);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Authorize, follow the consent URL (the fake agrees at once), complete the callback.
    async fn connect(&self) -> Value {
        let (status, auth) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/example/connection/authorize",
                None,
            )
            .await;
        assert_eq!(status, 200, "{auth}");
        let url = auth["authorization_url"].as_str().expect("url");
        assert!(url.contains("code_challenge="), "PKCE is sent: {url}");
        let back = self.http.get(url).send().await.expect("authorize");
        assert_eq!(back.status(), 302);
        let location =
            url::Url::parse(back.headers()[header::LOCATION].to_str().expect("location"))
                .expect("redirect");
        assert!(location.as_str().starts_with(REDIRECT));
        let q: HashMap<String, String> = location.query_pairs().into_owned().collect();
        assert_eq!(q["state"], auth["state"].as_str().expect("state"));
        let (status, connected) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/example/connection/callback",
                Some(json!({"code": q["code"], "state": q["state"]})),
            )
            .await;
        assert_eq!(status, 200, "{connected}");
        connected
    }
}

async fn flow(db: &TestDatabase) {
    grantry_provider_example::link();
    let (upstream, fake) = start_fake().await;
    let config = Config::load_from(
        env(&[
            ("ENABLE_EXAMPLE_INTEGRATION", "true"),
            ("EXAMPLE_CLIENT_ID", CLIENT_ID),
            ("EXAMPLE_CLIENT_SECRET", CLIENT_SECRET),
            ("EXAMPLE_REDIRECT_URI", REDIRECT),
            ("EXAMPLE_BASE_URL", &upstream),
        ]),
        &["example"],
    )
    .expect("config");
    let providers = build_providers(&config.providers).expect("providers");
    assert_eq!(
        providers.iter().map(|p| p.id()).collect::<Vec<_>>(),
        ["example"],
        "registered by linking the crate, enabled by ENABLE_EXAMPLE_INTEGRATION"
    );
    let keys = KeyRing::from_base64(&SecretString::from(KeyRing::generate_key_base64()), None)
        .expect("key");
    let vault = Vault::new(Arc::new(db.store().await), Arc::new(keys));
    let jwt = SecretString::from("example-jwt-secret".to_owned());
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
    let grantry = Grantry {
        base,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        user: JwtAuthenticator::issue(&jwt, "u-1", "user", Duration::from_secs(600)).expect("sign"),
    };

    let (status, list) = grantry
        .call(reqwest::Method::GET, "/api/v1/providers", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["id"], "example");
    assert_eq!(list[0]["name"], "Example");

    let connected = grantry.connect().await;
    assert_eq!(connected["status"], "active");
    assert_eq!(connected["account"]["name"], "Grace Hopper");
    let sites: Vec<&str> = connected["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(sites, ["Home", "Work"]);
    assert_eq!(lock(&fake).exchanges, 1);

    // The provider's own route: past half its lifetime the access token is refreshed before the
    // call, and the old refresh token is kept (none came back).
    tokio::time::sleep(HALF_LIFE).await;
    let (status, tasks) = grantry
        .call(reqwest::Method::GET, "/api/v1/example/tasks", None)
        .await;
    assert_eq!(status, 200, "{tasks}");
    assert_eq!(tasks[0]["title"], "Write the provider guide");
    tokio::time::sleep(HALF_LIFE).await;
    let (status, _) = grantry
        .call(reqwest::Method::GET, "/api/v1/example/tasks", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(lock(&fake).refreshes, 2);

    // The grant dies upstream: invalid_grant → needs re-consent, nothing deleted.
    lock(&fake).refresh.clear();
    tokio::time::sleep(HALF_LIFE).await;
    let (status, body) = grantry
        .call(reqwest::Method::GET, "/api/v1/example/tasks", None)
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("needs_reauth"))
    );
    let (_, status_body) = grantry
        .call(
            reqwest::Method::GET,
            "/api/v1/example/connection/status",
            None,
        )
        .await;
    assert_eq!(status_body["status"], "needs_reauth");

    // Connecting again makes it active; disconnecting revokes upstream.
    assert_eq!(grantry.connect().await["status"], "active");
    let response = grantry
        .http
        .delete(format!("{}/api/v1/example/connection", grantry.base))
        .bearer_auth(&grantry.user)
        .send()
        .await
        .expect("disconnect");
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["grantry-revocation"], "revoked");
    assert_eq!(lock(&fake).revocations, 1);
    let (_, status_body) = grantry
        .call(
            reqwest::Method::GET,
            "/api/v1/example/connection/status",
            None,
        )
        .await;
    assert_eq!(
        status_body,
        json!({"provider": "example", "connected": false})
    );
    server.abort();
}

#[tokio::test]
async fn the_example_provider_connects_refreshes_and_disconnects_against_a_fake() {
    for db in TestDatabase::all().await {
        flow(&db).await;
        db.cleanup().await;
    }
}

#[test]
fn enabling_without_credentials_names_the_missing_variable() {
    grantry_provider_example::link();
    let config = Config::load_from(env(&[("ENABLE_EXAMPLE_INTEGRATION", "true")]), &["example"])
        .expect("config");
    let error = build_providers(&config.providers)
        .err()
        .expect("refused")
        .to_string();
    assert_eq!(
        error,
        "EXAMPLE_CLIENT_ID is required when ENABLE_EXAMPLE_INTEGRATION=true"
    );
    let disabled = Config::load_from(env(&[]), &["example"]).expect("config");
    assert!(
        build_providers(&disabled.providers)
            .expect("providers")
            .is_empty()
    );
}
