//! grantry with Atlassian, enabled purely by configuration: environment variables, or the same
//! keys in `grantry.toml` (`[providers.atlassian]`), loaded the way `grantry serve` loads them.
//!
//! ```sh
//! export GRANTRY_ENCRYPTION_KEY=$(cargo run -q -- keygen)   # keep it: tokens open only with it
//! export GRANTRY_JWT_SECRET=…                               # your product signs users' JWTs with it
//! export ENABLE_ATLASSIAN_INTEGRATION=true
//! export ATLASSIAN_CLIENT_ID=… ATLASSIAN_CLIENT_SECRET=…
//! export ATLASSIAN_REDIRECT_URI=http://127.0.0.1:8080/settings/connections
//! cargo run --example atlassian
//! ```
//!
//! Register `ATLASSIAN_REDIRECT_URI` as the callback URL of your app in Atlassian's developer
//! console: it is grantry's settings page, which completes the connection itself. Your product
//! signs each user's JWT (HS256, claims `sub`, `exp`, `role`) with `GRANTRY_JWT_SECRET` and sets
//! it as the `token` cookie for the page, or sends it as `Authorization: Bearer` to the API.

use std::process::ExitCode;

use grantry_core::ConfigError;
use grantry_core::provider::build_providers;
use grantry_server::{Config, ServerError};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), ServerError> {
    // Naming the provider crate links it, and linking it registers it.
    let atlassian = grantry::atlassian::ID;
    let config = Config::load()?;
    grantry_server::logging::init(&config.log_level)?;
    if !build_providers(&config.providers)?
        .iter()
        .any(|p| p.id() == atlassian)
    {
        return Err(ConfigError::Missing {
            variable: "ENABLE_ATLASSIAN_INTEGRATION".into(),
            context: " (=true, with ATLASSIAN_CLIENT_ID, ATLASSIAN_CLIENT_SECRET and \
                      ATLASSIAN_REDIRECT_URI) for this example"
                .into(),
        }
        .into());
    }
    let state = grantry_server::prepare(&config).await?;
    println!(
        "Atlassian is enabled. The settings page: http://{}/settings/connections",
        config.bind
    );
    grantry_server::serve(&config, state, grantry_server::shutdown_signal()).await
}
