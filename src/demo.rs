//! `grantry demo`: the fake Atlassian and the server on a throw-away SQLite database, with a demo
//! user and a demo admin who sign in through a cookie, so the settings page works in a browser.
//!
//! The demo never runs with real credentials by accident: it reads only `GRANTRY_BIND` and
//! `LOG_LEVEL` from the environment and builds every other setting itself (generated keys, the
//! fake's client id and secret, a temporary database), with `GRANTRY_CONFIG` pointing at an empty
//! file, so `ATLASSIAN_*` variables and a `grantry.toml` in the working folder are ignored.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use grantry_atlassian_fake::{DcConfig, FakeAtlassian, FakeConfig, FakeDataCenter};
use grantry_core::ConfigError;
use grantry_core::keyring::KeyRing;
use grantry_server::{Config, JwtAuthenticator, ServerError};
use secrecy::SecretString;

const DEMO_USER: &str = "demo-user";
const DEMO_ADMIN: &str = "demo-admin";
/// How long a demo sign-in (cookie and printed tokens) lasts.
const SESSION: Duration = Duration::from_secs(24 * 3600);
/// Where the demo sends a signed-in person.
const PAGE: &str = "/settings/connections";

fn io_error(what: &str, e: std::io::Error) -> ServerError {
    ServerError::Io {
        addr: what.to_owned(),
        source: e,
    }
}

/// The address people open: the bound one, with a wildcard IP replaced by loopback. The fake's
/// redirect URI uses it too, so the cookie set at sign-in comes back with the callback.
fn public_addr(local: SocketAddr) -> SocketAddr {
    match local {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), a.port())
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), a.port())
        }
        other => other,
    }
}

/// Runs the demo until Ctrl-C; a bind address off loopback only with `allow_remote`.
pub(crate) async fn run(allow_remote: bool) -> Result<(), ServerError> {
    let bind_text = std::env::var("GRANTRY_BIND")
        .unwrap_or_else(|_| grantry_server::config::DEFAULT_BIND.into());
    let bind: SocketAddr = bind_text.trim().parse().map_err(|_| {
        ServerError::Config(ConfigError::Invalid {
            variable: "GRANTRY_BIND".into(),
            reason: format!("`{bind_text}` is not an address such as 127.0.0.1:8080"),
        })
    })?;
    if !bind.ip().is_loopback() && !allow_remote {
        return Err(ServerError::Config(ConfigError::Invalid {
            variable: "GRANTRY_BIND".into(),
            reason: format!(
                "the demo listens on loopback only (127.0.0.1 or [::1]), not on {bind}: anyone \
                 who reaches it can sign in as its admin at /demo/login. Start it with \
                 `grantry demo --allow-remote` if you mean it"
            ),
        }));
    }
    if !bind.ip().is_loopback() {
        eprintln!(
            "warning: the demo listens on {bind}, not on loopback: anyone who reaches it can sign in \
             as its admin at /demo/login (its data is fake). Use 127.0.0.1 unless you mean it."
        );
    }
    let log_level = std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into());
    // Bound first, so a port of 0 works and the redirect URI names the real port.
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| io_error(&bind.to_string(), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| io_error(&bind.to_string(), e))?;
    let public = public_addr(local);
    let base = format!("http://{public}");

    let scratch = tempfile::tempdir().map_err(|e| io_error("a temporary folder", e))?;
    let empty_toml = scratch.path().join("demo.toml");
    std::fs::write(&empty_toml, "").map_err(|e| io_error("a temporary file", e))?;
    let redirect_uri = format!("{base}{PAGE}");

    let fake_config = FakeConfig {
        redirect_uri: redirect_uri.clone(),
        ..FakeConfig::default()
    };
    let client_id = fake_config.client_id.clone();
    let client_secret = fake_config.client_secret.clone();
    let fake = FakeAtlassian::start(fake_config)
        .await
        .map_err(|e| io_error("the fake Atlassian", e))?;
    let jira_dc = FakeDataCenter::start(DcConfig {
        redirect_uri: redirect_uri.clone(),
        ..DcConfig::default()
    })
    .await
    .map_err(|e| io_error("the fake Jira Data Center", e))?;
    let jira_dc_config = jira_dc.fake.config().clone();

    let jwt_secret = KeyRing::generate_key_base64();
    let mut env = BTreeMap::new();
    for (k, v) in [
        ("GRANTRY_CONFIG", empty_toml.display().to_string()),
        ("GRANTRY_BIND", local.to_string()),
        ("LOG_LEVEL", log_level),
        (
            "DATABASE_URL",
            format!(
                "sqlite://{}",
                scratch.path().join("grantry-demo.db").display()
            ),
        ),
        ("GRANTRY_ENCRYPTION_KEY", KeyRing::generate_key_base64()),
        ("GRANTRY_JWT_SECRET", jwt_secret.clone()),
        ("ENABLE_ATLASSIAN_INTEGRATION", "true".into()),
        ("ATLASSIAN_CLIENT_ID", client_id.clone()),
        ("ATLASSIAN_CLIENT_SECRET", client_secret),
        ("ATLASSIAN_REDIRECT_URI", redirect_uri.clone()),
        ("ATLASSIAN_AUTH_URL", fake.base_url.clone()),
        ("ATLASSIAN_API_URL", fake.base_url.clone()),
        (
            "ATLASSIAN_OAUTH_SCOPE",
            grantry_atlassian::CONTENT_SCOPES.into(),
        ),
        ("JIRA_DC_KIND", "atlassian-dc".into()),
        ("JIRA_DC_BASE_URL", jira_dc.base_url.clone()),
        ("JIRA_DC_PRODUCT", "jira".into()),
        ("JIRA_DC_CLIENT_ID", jira_dc_config.client_id.clone()),
        (
            "JIRA_DC_CLIENT_SECRET",
            jira_dc_config.client_secret.clone(),
        ),
        ("JIRA_DC_REDIRECT_URI", redirect_uri.clone()),
    ] {
        env.insert(k.to_owned(), v);
    }
    let kinds: Vec<&str> = grantry_core::provider::factories()?
        .iter()
        .map(|f| f.id)
        .collect();
    let config = Config::load_from(env, &kinds)?;
    grantry_server::logging::init(&config.log_level)?;
    let state = grantry_server::prepare(&config).await?;

    let secret = Arc::new(SecretString::from(jwt_secret));
    let user_token = sign(&secret, DEMO_USER, "user")?;
    let admin_token = sign(&secret, DEMO_ADMIN, "admin")?;
    println!(
        "\ngrantry demo — a fake Atlassian at {fake_url}, a fake Jira Data Center at {jira_dc_url}, the server at {base},\n\
         a throw-away SQLite database.\n\
         Nothing here talks to Atlassian: ATLASSIAN_* variables and grantry.toml are ignored, every setting is generated.\n\n\
         In a browser, open\n   \
            {base}/demo/login?as=user    to sign in as the demo user, then click \"Connect Atlassian\" or \"Connect Jira Data Center\"\n   \
            {base}/demo/login?as=admin   to sign in as the demo admin, who also sees everyone's connections\n\
         The fake's consent page has Accept and Decline buttons; you come back to {base}{PAGE}.\n\n\
         Or with curl, as the demo user and the demo admin:\n\n\
         USER={user_token}\n\
         ADMIN={admin_token}\n\n\
         1. Ask for the consent URL:\n   \
            curl -s -X POST -H \"Authorization: Bearer $USER\" {base}/api/v1/atlassian/connection/authorize\n\
         2. Open authorization_url in a browser and click Accept, or accept with curl\n   \
            (STATE is the \"state\" of step 1):\n   \
            curl -si -X POST {fake_url}/authorize/decision -d decision=accept -d client_id={client_id} \\\n     \
            --data-urlencode redirect_uri={redirect_uri} --data-urlencode 'scope={scope}' -d state=$STATE | grep -i location\n\
         3. Complete the connection with the code and state of that redirect:\n   \
            curl -s -X POST -H \"Authorization: Bearer $USER\" -H 'Content-Type: application/json' \\\n     \
            -d '{{\"code\":\"CODE\",\"state\":\"STATE\"}}' {base}/api/v1/atlassian/connection/callback\n\
         4. Look around:\n   \
            curl -s -H \"Authorization: Bearer $USER\" {base}/api/v1/atlassian/connection/status\n   \
            curl -s -H \"Authorization: Bearer $USER\" {base}/api/v1/atlassian/sites\n   \
            curl -s -H \"Authorization: Bearer $ADMIN\" {base}/api/v1/atlassian/admin/connections\n   \
            curl -s -X DELETE -H \"Authorization: Bearer $USER\" {base}/api/v1/atlassian/connection\n\n\
         The Jira Data Center instance is mounted at {base}/api/v1/jira-dc with the same routes (its site is the\n\
         instance itself: see its status object), e.g. after connecting it:\n   \
            curl -s -H \"Authorization: Bearer $USER\" '{base}/api/v1/jira-dc/search?q=payments'\n\n\
         Ctrl-C stops the demo and deletes its database.\n",
        fake_url = fake.base_url,
        jira_dc_url = jira_dc.base_url,
        scope = grantry_atlassian::CONTENT_SCOPES,
    );

    let app = grantry_server::router(state.clone()).merge(demo_routes(DemoLogin {
        secret,
        host: public.to_string(),
    }));
    tracing::info!(%local, providers = ?state.provider_ids(), "grantry demo listening");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let maintenance = tokio::spawn(grantry_server::maintain(
        state,
        config.maintenance_interval,
        stop_rx,
    ));
    grantry_server::serve_router(
        listener,
        app,
        config.http,
        grantry_server::shutdown_signal(),
    )
    .await;
    let _ = stop_tx.send(true);
    if let Err(e) = maintenance.await {
        tracing::warn!(error = %e, "maintenance task ended abnormally");
    }
    drop(fake);
    drop(jira_dc);
    drop(scratch);
    Ok(())
}

fn sign(secret: &SecretString, user: &str, role: &str) -> Result<String, ServerError> {
    JwtAuthenticator::issue(secret, user, role, SESSION).map_err(|e| {
        ServerError::Config(ConfigError::Invalid {
            variable: "GRANTRY_JWT_SECRET".into(),
            reason: e.to_string(),
        })
    })
}

/// What the demo's sign-in routes need.
#[derive(Clone)]
struct DemoLogin {
    /// The generated JWT secret the server verifies with.
    secret: Arc<SecretString>,
    /// `host:port` people open; sign-in happens there so the cookie matches the redirect URI.
    host: String,
}

/// The demo's own routes, beside grantry's: sign in as the demo user or admin, sign out.
fn demo_routes(login: DemoLogin) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/demo/login", get(sign_in))
        .route("/demo/logout", get(sign_out))
        .with_state(login)
}

async fn home() -> Response {
    see_other("/demo/login", None)
}

/// A 303 to `location`, optionally setting a cookie; never cached.
fn see_other(location: &str, cookie: Option<String>) -> Response {
    let mut response =
        (StatusCode::SEE_OTHER, [(header::CACHE_CONTROL, "no-store")]).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, value);
    }
    if let Some(value) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(header::SET_COOKIE, value);
    }
    response
}

/// `GET /demo/login?as=user|admin`: sets the `token` cookie (HttpOnly, SameSite=Lax, Path=/) to
/// a fresh JWT of the demo user or admin and goes to the settings page; without `as`, a page
/// to choose.
async fn sign_in(
    State(login): State<DemoLogin>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let who = match query.get("as").map(String::as_str) {
        Some("user") => ("user", DEMO_USER, "user"),
        Some("admin") => ("admin", DEMO_ADMIN, "admin"),
        _ => return Html(CHOOSER).into_response(),
    };
    // Opened as localhost while the redirect URI says 127.0.0.1 (or the reverse)? Sign in on the
    // host of the redirect URI, or the cookie would not come back with the callback.
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if host != Some(login.host.as_str()) {
        return see_other(
            &format!("http://{}/demo/login?as={}", login.host, who.0),
            None,
        );
    }
    match sign(&login.secret, who.1, who.2) {
        Ok(token) => see_other(
            PAGE,
            Some(format!(
                "token={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={}",
                SESSION.as_secs()
            )),
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot sign a demo token");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot sign a demo token",
            )
                .into_response()
        }
    }
}

/// `GET /demo/logout`: clears the cookie.
async fn sign_out() -> Response {
    see_other(
        "/demo/login",
        Some("token=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0".to_owned()),
    )
}

/// The demo's sign-in chooser.
const CHOOSER: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>grantry demo: sign in</title>
<style>
body { font: 15px/1.5 system-ui, sans-serif; max-width: 34rem; margin: 3rem auto; padding: 0 1rem; color: #172b4d; }
a.button { display: inline-block; margin: .25rem .5rem .25rem 0; padding: .5rem 1.1rem; border-radius: 6px;
  background: #0052cc; color: #fff; text-decoration: none; }
a.button.secondary { background: #fff; color: #0052cc; border: 1px solid #0052cc; }
.note { background: #fffae6; padding: .5rem 1rem; border-radius: 6px; }
</style>
</head>
<body>
<h1>grantry demo</h1>
<p class="note">This stands in for your product's sign-in. Everything here is made up: a fake
Atlassian, generated keys and a database that is deleted when the demo stops.</p>
<p>Sign in as</p>
<p><a class="button" href="/demo/login?as=user">the demo user</a>
<a class="button secondary" href="/demo/login?as=admin">the demo admin</a></p>
<p>Then open Settings → Connections and click <strong>Connect Atlassian</strong>.</p>
</body>
</html>
"#;
