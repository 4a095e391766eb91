//! grantry-atlassian: the Atlassian Cloud provider (OAuth 2.0 3LO for Jira and Confluence).
//!
//! Linking this crate registers the `atlassian` provider; `ENABLE_ATLASSIAN_INTEGRATION=true`
//! enables it. It speaks Atlassian's 3LO: the authorize URL (audience, `prompt=consent`, state),
//! the JSON code exchange, rotating refresh, `/me` and the user's sites (accessible-resources).

mod client;
mod config;
mod content;
#[cfg(feature = "fake")]
pub mod fake;
pub mod markdown;
mod routes;
mod scopes;

use std::sync::Arc;

use async_trait::async_trait;
use grantry_core::{
    AccessToken, AccountDetails, AuthorizationCode, AuthorizeRequest, CallbackContext, ConfigError,
    Provider, ProviderError, ProviderFactory, ProvidersConfig, RefreshPolicy, RefreshToken,
    ScopeInfo, ScopeSet, TokenSet,
};
use url::Url;

pub use client::parse_token_response;
pub use config::{
    AtlassianConfig, DEFAULT_API_URL, DEFAULT_AUTH_URL, DEFAULT_HTTP_TIMEOUT_SECS, DEFAULT_SCOPES,
};
pub use scopes::SCOPES;

/// The provider id, also the route prefix `/api/v1/atlassian`.
pub const ID: &str = "atlassian";

/// The Atlassian Cloud provider.
#[derive(Debug, Clone)]
pub struct Atlassian {
    config: AtlassianConfig,
    http: reqwest::Client,
}

impl Atlassian {
    /// A provider from validated configuration.
    pub fn new(config: AtlassianConfig) -> Result<Self, ConfigError> {
        let http = client::http_client(config.http_timeout).map_err(|e| ConfigError::Invalid {
            variable: "ATLASSIAN_API_URL".into(),
            reason: format!("cannot build the HTTP client: {e}"),
        })?;
        Ok(Self { config, http })
    }

    /// The live list of sites a token reaches, duplicate cloud ids merged.
    pub async fn sites(
        &self,
        token: &AccessToken,
    ) -> Result<Vec<grantry_core::Resource>, ProviderError> {
        client::sites(&self.http, &self.config.api_url, token).await
    }

    /// The configuration in use.
    pub fn config(&self) -> &AtlassianConfig {
        &self.config
    }
}

fn build(config: &ProvidersConfig) -> Result<Vec<Arc<dyn Provider>>, ConfigError> {
    let section = config.section(ID);
    if !section.enabled()? {
        return Ok(Vec::new());
    }
    let config = AtlassianConfig::from_settings(&section)?;
    if !config.scopes.yields_refresh_token(SCOPES) {
        tracing::warn!(
            "ATLASSIAN_OAUTH_SCOPE lacks offline_access: Atlassian will issue no refresh token and connections will need re-consent every hour"
        );
    }
    Ok(vec![Arc::new(Atlassian::new(config)?)])
}

grantry_core::register_provider!(ProviderFactory {
    id: ID,
    name: "Atlassian",
    build,
});

#[async_trait]
impl Provider for Atlassian {
    fn id(&self) -> &str {
        ID
    }

    fn display_name(&self) -> &str {
        "Atlassian"
    }

    fn scope_catalogue(&self) -> &[ScopeInfo] {
        SCOPES
    }

    fn requested_scopes(&self) -> &ScopeSet {
        &self.config.scopes
    }

    fn authorize_url(&self, request: &AuthorizeRequest<'_>) -> Result<Url, ProviderError> {
        let mut url = self.config.auth_url.clone();
        url.set_path("/authorize");
        url.query_pairs_mut()
            .append_pair("audience", "api.atlassian.com")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("scope", &request.scopes.to_string())
            .append_pair("redirect_uri", self.config.redirect_uri.as_str())
            .append_pair("state", request.state.secret())
            .append_pair("response_type", "code")
            .append_pair("prompt", "consent");
        Ok(url)
    }

    async fn exchange_code(
        &self,
        code: &AuthorizationCode,
        _callback: &CallbackContext<'_>,
    ) -> Result<TokenSet, ProviderError> {
        let body = serde_json::json!({
            "grant_type": "authorization_code",
            "client_id": self.config.client_id,
            "client_secret": self.config.client_secret.secret(),
            "code": code.secret(),
            "redirect_uri": self.config.redirect_uri.as_str(),
        });
        client::post_token(&self.http, &self.config.auth_url, &body, None).await
    }

    async fn refresh(&self, refresh_token: &RefreshToken) -> Result<TokenSet, ProviderError> {
        let body = serde_json::json!({
            "grant_type": "refresh_token",
            "client_id": self.config.client_id,
            "client_secret": self.config.client_secret.secret(),
            "refresh_token": refresh_token.secret(),
        });
        client::post_token(
            &self.http,
            &self.config.auth_url,
            &body,
            Some(refresh_token),
        )
        .await
    }

    async fn account(&self, access_token: &AccessToken) -> Result<AccountDetails, ProviderError> {
        let account = client::me(&self.http, &self.config.api_url, access_token).await?;
        let resources = self.sites(access_token).await?;
        Ok(AccountDetails { account, resources })
    }

    fn routes(&self, context: &grantry_core::ProviderContext) -> Option<axum::Router> {
        Some(routes::router(Arc::new(self.clone()), context.clone()))
    }

    fn openapi(&self) -> Option<utoipa::openapi::OpenApi> {
        Some(routes::openapi())
    }

    fn refresh_policy(&self) -> RefreshPolicy {
        const DAY: u64 = 24 * 60 * 60;
        RefreshPolicy {
            rotates: true,
            reuse_leeway: std::time::Duration::ZERO,
            idle_expiry: Some(std::time::Duration::from_secs(90 * DAY)),
            absolute_expiry: Some(std::time::Duration::from_secs(365 * DAY)),
            refresh_margin: std::time::Duration::from_secs(300),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use grantry_core::{ProviderSettings, StateToken};

    use super::*;

    fn providers(pairs: &[(&str, &str)]) -> ProvidersConfig {
        let values: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ProvidersConfig::new([ProviderSettings::new(ID, values)])
    }

    #[test]
    fn disabled_builds_nothing() {
        assert!(build(&providers(&[])).expect("ok").is_empty());
        assert!(
            build(&providers(&[("enabled", "false")]))
                .expect("ok")
                .is_empty()
        );
    }

    #[test]
    fn enabled_requires_credentials() {
        let err = build(&providers(&[("enabled", "true")]))
            .err()
            .expect("missing client id");
        assert_eq!(
            err.to_string(),
            "ATLASSIAN_CLIENT_ID is required when ENABLE_ATLASSIAN_INTEGRATION=true"
        );
        let err = build(&providers(&[
            ("enabled", "true"),
            ("client_id", "c"),
            ("client_secret", "s"),
        ]))
        .err()
        .expect("missing redirect");
        assert!(err.to_string().starts_with("ATLASSIAN_REDIRECT_URI"));
    }

    #[test]
    fn authorize_url_carries_every_required_parameter() {
        let built = build(&providers(&[
            ("enabled", "true"),
            ("client_id", "cid"),
            ("client_secret", "sec"),
            ("redirect_uri", "http://localhost:3000/settings/connections"),
            ("auth_url", "http://127.0.0.1:9/"),
        ]))
        .expect("built");
        let provider = &built[0];
        let state = StateToken::new("st4te");
        let url = provider
            .authorize_url(&AuthorizeRequest {
                state: &state,
                scopes: provider.requested_scopes(),
                pkce: None,
            })
            .expect("url");
        assert_eq!(url.path(), "/authorize");
        let q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["audience"], "api.atlassian.com");
        assert_eq!(q["client_id"], "cid");
        assert_eq!(q["state"], "st4te");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["prompt"], "consent");
        assert_eq!(
            q["redirect_uri"],
            "http://localhost:3000/settings/connections"
        );
        assert_eq!(
            ScopeSet::parse(&q["scope"]),
            ScopeSet::parse(DEFAULT_SCOPES)
        );
        assert!(!url.as_str().contains("sec"));
    }
}
