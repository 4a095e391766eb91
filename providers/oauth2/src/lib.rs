//! grantry-oauth2: any standards-following OAuth 2.0 / OpenID Connect provider, from configuration.

use std::sync::Arc;

use grantry_core::{ConfigError, Provider, ProviderFactory, ProvidersConfig};

/// The factory id; instances take the ids of their configuration sections.
pub const FACTORY_ID: &str = "oauth2";

fn build(_config: &ProvidersConfig) -> Result<Vec<Arc<dyn Provider>>, ConfigError> {
    Ok(Vec::new())
}

grantry_core::register_provider!(ProviderFactory {
    id: FACTORY_ID,
    name: "OAuth 2.0 / OpenID Connect",
    build,
});
