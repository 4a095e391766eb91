//! Configuration of the Atlassian provider (`ATLASSIAN_*`, `[providers.atlassian]`).

use grantry_core::{ClientSecret, ConfigError, ProviderSettings, ScopeSet};
use std::time::Duration;

use url::Url;

/// Default authorization host.
pub const DEFAULT_AUTH_URL: &str = "https://auth.atlassian.com";
/// Default API gateway.
pub const DEFAULT_API_URL: &str = "https://api.atlassian.com";
/// Scopes asked for when `ATLASSIAN_OAUTH_SCOPE` is unset.
pub const DEFAULT_SCOPES: &str =
    "read:me read:jira-user read:jira-work read:confluence-content.all offline_access";

/// Default timeout of one upstream call, in seconds.
pub const DEFAULT_HTTP_TIMEOUT_SECS: u64 = 15;

/// Validated settings of the Atlassian provider.
#[derive(Debug, Clone)]
pub struct AtlassianConfig {
    /// The app's client id.
    pub client_id: String,
    /// The app's client secret.
    pub client_secret: ClientSecret,
    /// Scopes to request.
    pub scopes: ScopeSet,
    /// The callback registered in the developer console.
    pub redirect_uri: Url,
    /// Authorization host (`ATLASSIAN_AUTH_URL`).
    pub auth_url: Url,
    /// API gateway (`ATLASSIAN_API_URL`).
    pub api_url: Url,
    /// Longest an upstream call may take (`ATLASSIAN_HTTP_TIMEOUT`, seconds).
    pub http_timeout: Duration,
}

impl AtlassianConfig {
    /// Reads and validates the settings; errors name the variable.
    pub fn from_settings(s: &ProviderSettings) -> Result<Self, ConfigError> {
        let client_id = s.require("client_id")?.to_owned();
        let client_secret = s.require_secret("client_secret")?;
        let redirect_uri = s.url("redirect_uri", None)?;
        let scopes = ScopeSet::parse(s.get("oauth_scope").unwrap_or(DEFAULT_SCOPES));
        if scopes.is_empty() {
            return Err(ConfigError::Invalid {
                variable: s.variable("oauth_scope"),
                reason: "no scope given".into(),
            });
        }
        Ok(Self {
            client_id,
            client_secret,
            scopes,
            redirect_uri,
            auth_url: s.url("auth_url", Some(DEFAULT_AUTH_URL))?,
            api_url: s.url("api_url", Some(DEFAULT_API_URL))?,
            http_timeout: Duration::from_secs(match s.get("http_timeout") {
                None => DEFAULT_HTTP_TIMEOUT_SECS,
                Some(v) => v
                    .parse()
                    .ok()
                    .filter(|n| (1..=300).contains(n))
                    .ok_or_else(|| ConfigError::Invalid {
                        variable: s.variable("http_timeout"),
                        reason: format!("expected whole seconds between 1 and 300, got `{v}`"),
                    })?,
            }),
        })
    }
}
