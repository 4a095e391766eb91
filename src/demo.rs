//! `grantry demo`: the fake Atlassian and the server on a throw-away SQLite database.

use std::collections::BTreeMap;
use std::time::Duration;

use grantry_atlassian::fake::{FakeAtlassian, FakeConfig};
use grantry_core::KeyRing;
use grantry_server::{Config, JwtAuthenticator, ServerError};
use secrecy::SecretString;

const DEMO_USER: &str = "demo-user";
const DEMO_ADMIN: &str = "demo-admin";

fn io_error(what: &str, e: std::io::Error) -> ServerError {
    ServerError::Io {
        addr: what.to_owned(),
        source: e,
    }
}

/// Runs the demo until Ctrl-C. Real credentials are never read: every setting is generated here.
pub(crate) async fn run() -> Result<(), ServerError> {
    let bind = std::env::var("GRANTRY_BIND")
        .unwrap_or_else(|_| grantry_server::config::DEFAULT_BIND.into());
    let log_level = std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into());
    let scratch = tempfile::tempdir().map_err(|e| io_error("a temporary folder", e))?;
    let empty_toml = scratch.path().join("demo.toml");
    std::fs::write(&empty_toml, "").map_err(|e| io_error("a temporary file", e))?;
    let redirect_uri = format!("http://{bind}/settings/connections");

    let fake_config = FakeConfig {
        redirect_uri: redirect_uri.clone(),
        ..FakeConfig::default()
    };
    let client_id = fake_config.client_id.clone();
    let client_secret = fake_config.client_secret.clone();
    let fake = FakeAtlassian::start(fake_config)
        .await
        .map_err(|e| io_error("the fake Atlassian", e))?;

    let jwt_secret = KeyRing::generate_key_base64();
    let mut env = BTreeMap::new();
    for (k, v) in [
        ("GRANTRY_CONFIG", empty_toml.display().to_string()),
        ("GRANTRY_BIND", bind.clone()),
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
    ] {
        env.insert(k.to_owned(), v);
    }
    let config = Config::load_from(env, &["atlassian"])?;
    grantry_server::logging::init(&config.log_level)?;
    let state = grantry_server::prepare(&config).await?;

    let secret = SecretString::from(jwt_secret);
    let day = Duration::from_secs(24 * 3600);
    let sign = |user: &str, role: &str| {
        JwtAuthenticator::issue(&secret, user, role, day).map_err(|e| {
            ServerError::Config(grantry_core::ConfigError::Invalid {
                variable: "GRANTRY_JWT_SECRET".into(),
                reason: e.to_string(),
            })
        })
    };
    let user_token = sign(DEMO_USER, "user")?;
    let admin_token = sign(DEMO_ADMIN, "admin")?;
    let base = format!("http://{bind}");
    println!(
        "\ngrantry demo — a fake Atlassian at {fake_url}, the server at {base}, a throw-away SQLite database.\n\
         Nothing here talks to Atlassian; no real credential is read.\n\n\
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
         Ctrl-C stops the demo and deletes its database.\n",
        fake_url = fake.base_url,
        scope = grantry_atlassian::DEFAULT_SCOPES,
    );
    let result = grantry_server::serve(&config, state, grantry_server::shutdown_signal()).await;
    drop(fake);
    drop(scratch);
    result
}
