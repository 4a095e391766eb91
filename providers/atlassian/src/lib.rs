//! grantry-atlassian: the Atlassian Cloud provider (OAuth 2.0 3LO for Jira and Confluence).
//!
//! Linking this crate registers the `atlassian` provider; `ENABLE_ATLASSIAN_INTEGRATION=true`
//! enables it. It speaks Atlassian's 3LO: the authorize URL (audience, `prompt=consent`, state),
//! the JSON code exchange, rotating refresh, `/me` and the user's sites (accessible-resources).
//! With `ATLASSIAN_WEBHOOK_EVENTS` set it also keeps Jira dynamic webhooks for every Jira site of
//! a connection and records their deliveries as `atlassian.jira.*` events (see [`webhooks`]).
//! Maintenance also runs Atlassian's personal data reporting cycle for the stored accounts (see
//! [`personal_data`]).

mod config;
pub mod personal_data;
mod routes;
mod scopes;
pub mod webhooks;

use std::sync::Arc;

use async_trait::async_trait;
use grantry_core::{
    AccessToken, ConfigError, Provider, ProviderContext, ProviderError, ProviderFactory,
    ProvidersConfig, RefreshPolicy, Resource,
};
use grantry_protocol::{
    AccountCall, AccountFields, BodyEncoding, Client, ConnectionCall, Endpoints, Hooks,
    OAuthProvider, OAuthSpec,
};
use serde::Deserialize;

pub use config::{
    AtlassianConfig, CONTENT_SCOPES, DEFAULT_API_URL, DEFAULT_AUTH_URL, DEFAULT_HTTP_TIMEOUT_SECS,
    DEFAULT_SCOPES, JIRA_WEBHOOK_EVENTS, JiraWebhookConfig, WEBHOOK_SCOPES,
};
pub use routes::{RouteExtension, Routes};
pub use scopes::SCOPES;

/// The provider id, also the route prefix `/api/v1/atlassian`.
pub const ID: &str = "atlassian";

/// The Atlassian Cloud provider: Atlassian's spec with [`Atlassian`] as its hooks.
pub type AtlassianProvider = OAuthProvider<Atlassian>;

/// Atlassian's hooks and the state of its own routes: the configuration, the Jira webhooks'
/// configuration when they are on, and the HTTP client.
#[derive(Debug, Clone)]
pub struct Atlassian {
    config: AtlassianConfig,
    webhooks: Option<JiraWebhookConfig>,
    http: reqwest::Client,
}

/// One entry of accessible-resources.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Site {
    id: String,
    name: Option<String>,
    url: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    avatar_url: Option<String>,
}

impl Atlassian {
    /// The hooks from validated configuration.
    pub fn new(config: AtlassianConfig) -> Result<Self, ConfigError> {
        let http = grantry_protocol::http::client(config.http_timeout).map_err(|e| {
            ConfigError::Invalid {
                variable: "ATLASSIAN_API_URL".into(),
                reason: format!("cannot build the HTTP client: {e}"),
            }
        })?;
        Ok(Self {
            config,
            webhooks: None,
            http,
        })
    }

    /// These hooks keeping Jira dynamic webhooks per `webhooks` (none when `None`).
    #[must_use]
    pub fn with_jira_webhooks(mut self, webhooks: Option<JiraWebhookConfig>) -> Self {
        self.webhooks = webhooks;
        self
    }

    /// The Jira webhooks' configuration, when they are on.
    pub fn webhooks(&self) -> Option<&JiraWebhookConfig> {
        self.webhooks.as_ref()
    }

    /// The provider: Atlassian's 3LO as data (JSON token bodies, the client secret in the body,
    /// `audience` and `prompt=consent`, rotating refresh tokens, `/me`) plus these hooks.
    pub fn provider(self) -> AtlassianProvider {
        const DAY: u64 = 24 * 60 * 60;
        let c = &self.config;
        let at = |base: &url::Url, path: &str| {
            let mut url = base.clone();
            url.set_path(path);
            url
        };
        let client = Client {
            id: c.client_id.clone(),
            secret: Some(c.client_secret.clone()),
            redirect_uri: c.redirect_uri.clone(),
        };
        let endpoints = Endpoints {
            authorization: at(&c.auth_url, "/authorize"),
            token: at(&c.auth_url, "/oauth/token"),
            revocation: None,
            account: self.me_url(),
        };
        let mut spec = OAuthSpec::new(ID, "Atlassian", client, endpoints);
        spec.scope_catalogue = SCOPES;
        spec.scopes = c.scopes.clone();
        spec.body = BodyEncoding::Json;
        spec.pkce = false;
        spec.authorize_params = vec![
            ("audience".into(), "api.atlassian.com".into()),
            ("prompt".into(), "consent".into()),
        ];
        spec.refresh_policy = RefreshPolicy {
            rotates: true,
            reuse_leeway: std::time::Duration::ZERO,
            idle_expiry: Some(std::time::Duration::from_secs(90 * DAY)),
            absolute_expiry: Some(std::time::Duration::from_secs(365 * DAY)),
            refresh_margin: std::time::Duration::from_secs(300),
        };
        spec.account_fields = account_fields();
        spec.http_timeout = c.http_timeout;
        spec.revocation_hint = Some(
            "in your Atlassian account settings, open Connected apps and remove the app.".into(),
        );
        let http = self.http.clone();
        OAuthProvider::with_http(spec, self, http)
    }

    /// Where the account is read: `{ATLASSIAN_API_URL}/me`.
    pub(crate) fn me_url(&self) -> url::Url {
        let mut url = self.config.api_url.clone();
        url.set_path("/me");
        url
    }

    /// The live list of sites a token reaches, duplicate cloud ids merged.
    pub async fn sites(&self, token: &AccessToken) -> Result<Vec<Resource>, ProviderError> {
        let mut url = self.config.api_url.clone();
        url.set_path("/oauth/token/accessible-resources");
        let what = "accessible-resources";
        let list: Vec<Site> =
            grantry_protocol::http::get_json(&self.http, url, token, what).await?;
        Ok(merge_sites(list))
    }

    /// The configuration in use.
    pub fn config(&self) -> &AtlassianConfig {
        &self.config
    }

    /// The upstream HTTP client (timeouts, no redirects), shared with the provider.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

#[async_trait]
impl Hooks for Atlassian {
    /// The grant's sites: accessible-resources, duplicate cloud ids merged.
    async fn resources(&self, call: AccountCall<'_>) -> Result<Vec<Resource>, ProviderError> {
        self.sites(call.token).await
    }

    fn routes(&self, context: &ProviderContext, _http: &reqwest::Client) -> Option<axum::Router> {
        Some(routes::router(Arc::new(self.clone()), context.clone()))
    }

    fn openapi(&self) -> Option<utoipa::openapi::OpenApi> {
        Some(routes::openapi(self.webhooks.is_some()))
    }

    /// Registers a Jira webhook for every Jira site of the grant (when the webhooks are on).
    async fn connected(&self, call: ConnectionCall<'_>) {
        webhooks::connected(self, call).await;
    }

    /// Deletes the connection's Jira webhooks upstream and its subscriptions.
    async fn disconnecting(&self, call: ConnectionCall<'_>) {
        webhooks::disconnecting(self, call).await;
    }

    /// Renews the Jira webhooks that expire within ten days, then reports the stored accounts
    /// to Atlassian when a personal data reporting cycle is due.
    async fn maintain(
        &self,
        context: &ProviderContext,
        _http: &reqwest::Client,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        webhooks::maintain(self, context, now).await;
        personal_data::maintain(self, context, now).await;
    }
}

/// Where `/me` holds the account: `account_id`, `name`, `email`.
pub(crate) fn account_fields() -> AccountFields {
    AccountFields::new("account_id", "name", "email")
}

/// Merges entries that share a cloud id (Jira and Confluence of one site), keeping every site.
fn merge_sites(list: Vec<Site>) -> Vec<Resource> {
    let mut merged: Vec<Resource> = Vec::new();
    for site in list {
        if let Some(existing) = merged.iter_mut().find(|r| r.id == site.id) {
            for scope in site.scopes {
                if !existing.scopes.contains(&scope) {
                    existing.scopes.push(scope);
                }
            }
            if existing.url.is_none() {
                existing.url = site.url;
            }
            if existing.avatar_url.is_none() {
                existing.avatar_url = site.avatar_url;
            }
            if existing.name.is_empty() {
                existing.name = site.name.unwrap_or_default();
            }
        } else {
            merged.push(Resource {
                name: site.name.unwrap_or_default(),
                id: site.id,
                url: site.url,
                scopes: site.scopes,
                avatar_url: site.avatar_url,
            });
        }
    }
    merged.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    merged
}

fn build(providers: &ProvidersConfig) -> Result<Vec<Arc<dyn Provider>>, ConfigError> {
    let section = providers.section(ID);
    if !section.enabled()? {
        return Ok(Vec::new());
    }
    let config = AtlassianConfig::from_settings(&section)?;
    let webhooks = JiraWebhookConfig::from_settings(&section, providers)?;
    if !config.scopes.yields_refresh_token(SCOPES) {
        tracing::warn!(
            "ATLASSIAN_OAUTH_SCOPE lacks offline_access: Atlassian will issue no refresh token and connections will need re-consent every hour"
        );
    }
    Ok(vec![Arc::new(
        Atlassian::new(config)?
            .with_jira_webhooks(webhooks)
            .provider(),
    )])
}

grantry_core::register_provider!(ProviderFactory {
    id: ID,
    name: "Atlassian",
    build,
});

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use grantry_core::{AuthorizeRequest, ProviderSettings, ScopeSet, StateToken};

    use super::*;

    #[test]
    fn duplicate_cloud_ids_merge_and_every_site_is_kept() {
        let list: Vec<Site> = serde_json::from_str(
            r#"[{"id":"a","name":"Acme","url":"https://acme.atlassian.net","scopes":["read:jira-work"],"avatarUrl":"https://x/1.png"},
                {"id":"b","name":"Beta","url":"https://beta.atlassian.net","scopes":["read:jira-work"]},
                {"id":"a","name":"Acme","url":"https://acme.atlassian.net","scopes":["read:confluence-content.all","read:jira-work"]}]"#,
        )
        .expect("json");
        let merged = merge_sites(list);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].id, "a");
        assert_eq!(
            merged[0].scopes,
            ["read:jira-work", "read:confluence-content.all"]
        );
        assert_eq!(merged[0].avatar_url.as_deref(), Some("https://x/1.png"));
        assert_eq!(merged[1].id, "b");
    }

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
    fn jira_webhooks_are_checked_when_the_provider_is_built() {
        let base = [
            ("enabled", "true"),
            ("client_id", "cid"),
            ("client_secret", "sec"),
            ("redirect_uri", "http://localhost:3000/settings/connections"),
            ("webhook_events", "jira:issue_updated,comment_created"),
        ];
        let err = build(&providers(&base)).err().expect("no jql");
        assert!(
            err.to_string()
                .starts_with("ATLASSIAN_WEBHOOK_JQL is required"),
            "{err}"
        );
        let with_jql: Vec<(&str, &str)> = base
            .iter()
            .copied()
            .chain([("webhook_jql", "project = ACME")])
            .collect();
        let err = build(&providers(&with_jql)).err().expect("no public url");
        assert!(
            err.to_string()
                .starts_with("GRANTRY_PUBLIC_URL is required"),
            "{err}"
        );
        let public = url::Url::parse("https://grantry.example.com").expect("url");
        let built = build(
            &providers(&with_jql)
                .with_public_url(Some(public.clone()))
                .with_event_delivery(true),
        )
        .expect("built");
        assert!(built[0].requested_scopes().contains("manage:jira-webhook"));
        let paths = serde_json::to_value(built[0].openapi().expect("openapi")).expect("json");
        assert!(
            paths["paths"]["/webhooks/jira/{secret}"].is_object(),
            "{paths}"
        );
        let narrow: Vec<(&str, &str)> = with_jql
            .iter()
            .copied()
            .chain([("oauth_scope", "read:me read:jira-work offline_access")])
            .collect();
        let err = build(
            &providers(&narrow)
                .with_public_url(Some(public.clone()))
                .with_event_delivery(true),
        )
        .err()
        .expect("scope missing");
        assert!(
            err.to_string()
                .starts_with("ATLASSIAN_OAUTH_SCOPE is invalid"),
            "{err}"
        );
        let off = build(&providers(&base[..4])).expect("feature off");
        assert!(!off[0].requested_scopes().contains("manage:jira-webhook"));
        let paths = serde_json::to_value(off[0].openapi().expect("openapi")).expect("json");
        assert!(paths["paths"].get("/webhooks/jira/{secret}").is_none());
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
