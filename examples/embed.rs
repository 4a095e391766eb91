//! grantry inside an existing axum app, behind the app's own sign-in.
//!
//! ```sh
//! cargo run --example embed        # then open http://127.0.0.1:3000
//! ```
//!
//! The "existing app" has a home page and its own sessions (an in-memory map from a random
//! session id, kept in the `app_session` cookie, to a user). grantry does not issue or check
//! JWTs here: the app hands it an [`Authenticator`] that resolves the app's session, and nests
//! grantry's router under `/integrations`, settings page included
//! (`/integrations/settings/connections`, which finds its API beside itself).
//!
//! So that it runs with no account anywhere, the example starts the in-process fake Atlassian
//! (the one `grantry demo` uses) and keeps its tokens in a temporary SQLite database under a
//! generated key. A real app builds the same pieces from its configuration instead:
//! `Config::load()`, `grantry_server::open_vault(&config)` and
//! `build_providers(&config.providers)`, with the variables of README.md.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use grantry_atlassian_fake::{FakeAtlassian, FakeConfig};
use grantry_core::{ApiError, StateToken};
use grantry_server::{
    AppState, Authenticator, Config, Credential, KeyRing, Principal, RefreshSettings, Role,
    SqlStore, Vault, build_providers,
};
use secrecy::SecretString;

const ADDR: &str = "127.0.0.1:3000";
/// Where the app mounts grantry.
const PREFIX: &str = "/integrations";
const SESSION_COOKIE: &str = "app_session";

/// The app's sessions: session id → (user id, is admin). A stand-in for a real session store.
#[derive(Clone, Default)]
struct Sessions(Arc<Mutex<HashMap<String, (String, bool)>>>);

impl Sessions {
    fn user(&self, headers: &HeaderMap) -> Option<(String, bool)> {
        let id = cookie(headers, SESSION_COOKIE)?;
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }
}

/// The value of cookie `name` (the app's own sessions use plain ids, so a simple split will do).
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// How grantry learns who makes a request: from the app's session, not from a JWT.
#[grantry_core::async_trait]
impl Authenticator for Sessions {
    async fn authenticate(&self, parts: &Parts) -> Result<Principal, ApiError> {
        let (user_id, admin) = self
            .user(&parts.headers)
            .ok_or_else(|| ApiError::unauthorized("sign in to the app first"))?;
        Ok(Principal {
            user_id,
            role: if admin { Role::Admin } else { Role::User },
            // The session cookie: grantry refuses its writes from other sites.
            credential: Credential::Cookie,
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Name the provider crates (Atlassian, its content routes, OAuth 2.0) so the linker keeps them.
    grantry::link_providers();
    grantry_server::logging::init("info")?;
    let base = format!("http://{ADDR}");
    let redirect_uri = format!("{base}{PREFIX}/settings/connections");

    // ---- grantry's pieces (from the fake and generated values here; see the module docs) ----
    let fake = FakeAtlassian::start(FakeConfig {
        redirect_uri: redirect_uri.clone(),
        ..FakeConfig::default()
    })
    .await?;
    let settings = fake.fake.config();
    let env: BTreeMap<String, String> = [
        ("ENABLE_ATLASSIAN_INTEGRATION", "true"),
        ("ATLASSIAN_CLIENT_ID", settings.client_id.as_str()),
        ("ATLASSIAN_CLIENT_SECRET", settings.client_secret.as_str()),
        ("ATLASSIAN_REDIRECT_URI", redirect_uri.as_str()),
        ("ATLASSIAN_AUTH_URL", fake.base_url.as_str()),
        ("ATLASSIAN_API_URL", fake.base_url.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = Config::load_from(env, &["atlassian"])?;
    let providers = build_providers(&config.providers)?;

    let scratch = tempfile::tempdir()?;
    let store = SqlStore::connect(&format!(
        "sqlite://{}",
        scratch.path().join("embed.db").display()
    ))
    .await?;
    store.migrate().await?;
    let keys = KeyRing::from_base64(&SecretString::from(KeyRing::generate_key_base64()), None)?;
    let vault = Vault::new(Arc::new(store), Arc::new(keys));

    let sessions = Sessions::default();
    let state = AppState::new(
        vault,
        providers,
        Arc::new(sessions.clone()),
        RefreshSettings::default(),
    );

    // ---- the existing app, with grantry nested under a prefix ----
    let app = Router::new()
        .route("/", get(home))
        .route("/login", get(login))
        .route("/logout", get(logout))
        .with_state(sessions)
        .nest(PREFIX, grantry_server::router(state.clone()));

    // grantry's background work: keep idle grants alive, purge expired states.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let maintenance = tokio::spawn(grantry_server::maintain(
        state,
        Duration::from_secs(3600),
        stop_rx,
    ));

    let listener = tokio::net::TcpListener::bind(ADDR).await?;
    println!(
        "The app: {base}  (sign in, then Settings → Connections at {base}{PREFIX}/settings/connections)\n\
         Atlassian here is a fake at {}; Ctrl-C stops everything.",
        fake.base_url
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(grantry_server::shutdown_signal())
        .await?;
    let _ = stop_tx.send(true);
    let _ = maintenance.await;
    Ok(())
}

async fn home(State(sessions): State<Sessions>, headers: HeaderMap) -> Html<String> {
    let body = match sessions.user(&headers) {
        Some((user, admin)) => format!(
            "<p>Signed in as <strong>{}</strong>{}.</p>\
             <p><a href=\"{PREFIX}/settings/connections\">Settings → Connections</a> · \
             <a href=\"/logout\">Sign out</a></p>",
            escape(&user),
            if admin { " (admin)" } else { "" }
        ),
        None => "<p>You are not signed in. Sign in as \
                 <a href=\"/login?user=alice\">alice</a> or as \
                 <a href=\"/login?user=root&amp;admin=true\">root, an admin</a>.</p>"
            .to_owned(),
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>My app</title>\
         </head><body style=\"font-family: system-ui; max-width: 40rem; margin: 3rem auto\">\
         <h1>My app</h1>{body}</body></html>"
    ))
}

/// `GET /login?user=NAME[&admin=true]`: the app's (fake) sign-in.
async fn login(
    State(sessions): State<Sessions>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(user) = query
        .get("user")
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
    else {
        return (StatusCode::BAD_REQUEST, "which user? /login?user=alice").into_response();
    };
    let admin = query.get("admin").is_some_and(|a| a == "true");
    let id = StateToken::generate().secret().to_owned();
    sessions
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id.clone(), (user, admin));
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Lax; Path=/"
    )) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout(State(sessions): State<Sessions>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        sessions
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("app_session=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0"),
    );
    response
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
