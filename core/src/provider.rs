//! The provider model: the `Provider` trait, its configuration and its registration.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use url::Url;

use crate::error::{ConfigError, ProviderError};
use crate::http::ProviderContext;
use crate::scope::{ScopeInfo, ScopeSet};
use crate::secret::{
    AccessToken, AuthorizationCode, ClientSecret, PkceVerifier, RefreshToken, StateToken,
};
use crate::store::ConnectionRecord;
use crate::token::{AccountDetails, TokenSet};

/// How a provider's refresh tokens behave, and when grantry refreshes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// Every refresh returns a new refresh token and disables the one used.
    pub rotates: bool,
    /// How long a rotated-out refresh token still works.
    pub reuse_leeway: Duration,
    /// A refresh token dies after this long without use.
    pub idle_expiry: Option<Duration>,
    /// A grant dies this long after the first consent, whatever happens.
    pub absolute_expiry: Option<Duration>,
    /// Refresh when the access token expires within this margin.
    pub refresh_margin: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            rotates: false,
            reuse_leeway: Duration::ZERO,
            idle_expiry: None,
            absolute_expiry: None,
            refresh_margin: Duration::from_secs(300),
        }
    }
}

/// How a token-endpoint failure is to be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenErrorKind {
    /// The grant is dead (`invalid_grant`): mark the connection for re-consent, never retry.
    Terminal,
    /// It may pass: retry with backoff.
    Transient,
    /// The request itself was refused (bad client, bad code): report, do not retry.
    Rejected,
}

/// Classifies a token-endpoint answer by the rules of RFC 6749 section 5.2.
pub fn classify_token_error(status: u16, error_code: Option<&str>) -> TokenErrorKind {
    match (status, error_code) {
        (_, Some("invalid_grant")) => TokenErrorKind::Terminal,
        (408 | 425 | 429 | 500..=599, _) => TokenErrorKind::Transient,
        (_, Some("temporarily_unavailable" | "server_error")) => TokenErrorKind::Transient,
        _ => TokenErrorKind::Rejected,
    }
}

/// The parameters of an authorization URL.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest<'a> {
    /// The single-use state bound to the user.
    pub state: &'a StateToken,
    /// The scopes to ask for.
    pub scopes: &'a ScopeSet,
    /// The PKCE verifier, when the provider uses PKCE (send its S256 challenge).
    pub pkce: Option<&'a PkceVerifier>,
}

/// What the callback brought back besides the code, for the code exchange.
#[derive(Debug, Clone, Default)]
pub struct CallbackContext<'a> {
    /// The PKCE verifier stored with the state, when the provider uses PKCE.
    pub pkce: Option<&'a PkceVerifier>,
    /// The `iss` parameter of the authorization response (RFC 9207), when the server sent one.
    pub issuer: Option<&'a str>,
}

/// What a provider may say about revocation on disconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// The upstream revoked the grant.
    Revoked,
    /// The provider has no revocation endpoint.
    Unsupported,
}

/// An OAuth provider: the protocol steps grantry drives for it.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Stable id, used in routes (`/api/v1/{id}`) and storage.
    fn id(&self) -> &str;

    /// Human name, e.g. `Atlassian`.
    fn display_name(&self) -> &str;

    /// The scopes this provider knows, with descriptions.
    fn scope_catalogue(&self) -> &[ScopeInfo];

    /// The scopes requested at consent, from configuration.
    fn requested_scopes(&self) -> &ScopeSet;

    /// The URL the user is sent to for consent.
    fn authorize_url(&self, request: &AuthorizeRequest<'_>) -> Result<Url, ProviderError>;

    /// Whether authorizations use PKCE (RFC 7636); grantry then keeps a verifier with the state.
    fn uses_pkce(&self) -> bool {
        false
    }

    /// Exchanges an authorization code for tokens.
    async fn exchange_code(
        &self,
        code: &AuthorizationCode,
        callback: &CallbackContext<'_>,
    ) -> Result<TokenSet, ProviderError>;

    /// Redeems a refresh token for a new token set.
    async fn refresh(&self, refresh_token: &RefreshToken) -> Result<TokenSet, ProviderError>;

    /// Looks up who the grant belongs to and what it reaches.
    async fn account(&self, access_token: &AccessToken) -> Result<AccountDetails, ProviderError>;

    /// Revokes the grant upstream, when the provider supports it.
    async fn revoke(&self, _tokens: &TokenSet) -> Result<RevokeOutcome, ProviderError> {
        Ok(RevokeOutcome::Unsupported)
    }

    /// Where users revoke the app themselves when [`revoke`](Provider::revoke) cannot; none by
    /// default.
    fn revocation_hint(&self) -> Option<&str> {
        None
    }

    /// How this provider's refresh tokens behave.
    fn refresh_policy(&self) -> RefreshPolicy {
        RefreshPolicy::default()
    }

    /// Classifies a token-endpoint failure.
    fn classify_token_error(&self, status: u16, error_code: Option<&str>) -> TokenErrorKind {
        classify_token_error(status, error_code)
    }

    /// Extra routes mounted under `/api/v1/{id}` beside the generic ones; their state provides
    /// `context` (`FromRef`) to the [`Principal`](crate::http::Principal) and
    /// [`FreshToken`](crate::http::FreshToken) extractors.
    fn routes(&self, _context: &ProviderContext) -> Option<axum::Router> {
        None
    }

    /// The OpenAPI description of [`routes`](Provider::routes), paths relative to `/api/v1/{id}`.
    fn openapi(&self) -> Option<utoipa::openapi::OpenApi> {
        None
    }

    /// Called after a user's grant was stored (a new connection or a reconnect), off the
    /// request's path: sets up what the connection needs upstream (webhooks, say). Best effort:
    /// the connection stands whatever happens here.
    async fn connected(&self, _context: &ProviderContext, _connection: &ConnectionRecord) {}

    /// Called before a connection is deleted, while its tokens are still stored: undoes what
    /// [`connected`](Provider::connected) set up. Best effort: the deletion goes ahead.
    async fn disconnecting(&self, _context: &ProviderContext, _connection: &ConnectionRecord) {}

    /// Called by each maintenance pass (on one replica at a time): renews what the provider
    /// keeps upstream before it expires.
    async fn maintain(&self, _context: &ProviderContext, _now: chrono::DateTime<chrono::Utc>) {}
}

/// The configuration of one provider id: `[providers.foo]` merged with `FOO_*` variables.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProviderSettings {
    id: String,
    values: BTreeMap<String, String>,
}

impl std::fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("id", &self.id)
            .field("keys", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ProviderSettings {
    /// Settings for `id` from lower-case keys such as `client_id`.
    pub fn new(id: impl Into<String>, values: BTreeMap<String, String>) -> Self {
        Self {
            id: id.into(),
            values,
        }
    }

    /// The provider id these settings belong to.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The prefix of this provider's environment variables, e.g. `ATLASSIAN`.
    pub fn env_prefix(&self) -> String {
        env_prefix(&self.id)
    }

    /// The environment variable that sets `key`, e.g. `ATLASSIAN_CLIENT_ID`.
    pub fn variable(&self, key: &str) -> String {
        if key == "enabled" {
            format!("ENABLE_{}_INTEGRATION", self.env_prefix())
        } else {
            format!("{}_{}", self.env_prefix(), key.to_ascii_uppercase())
        }
    }

    /// A value, trimmed; blank counts as absent.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// All keys that are set.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// A value that must be present when the provider is enabled.
    pub fn require(&self, key: &str) -> Result<&str, ConfigError> {
        self.get(key).ok_or_else(|| self.missing(key))
    }

    fn missing(&self, key: &str) -> ConfigError {
        ConfigError::Missing {
            variable: self.variable(key),
            context: format!(" when {}=true", self.variable("enabled")),
        }
    }

    /// A required secret, wrapped so it never prints.
    pub fn require_secret(&self, key: &str) -> Result<ClientSecret, ConfigError> {
        self.require(key).map(ClientSecret::new)
    }

    /// A boolean (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`, any case).
    pub fn flag(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => parse_bool(v).ok_or_else(|| ConfigError::Invalid {
                variable: self.variable(key),
                reason: format!("expected true or false, got `{v}`"),
            }),
        }
    }

    /// Whether `ENABLE_{ID}_INTEGRATION` (or `enabled` in TOML) is on.
    pub fn enabled(&self) -> Result<bool, ConfigError> {
        self.flag("enabled", false)
    }

    /// An absolute http(s) URL, or `default` when unset.
    pub fn url(&self, key: &str, default: Option<&str>) -> Result<Url, ConfigError> {
        let text = match self.get(key).or(default) {
            Some(text) => text,
            None => return Err(self.missing(key)),
        };
        let url = Url::parse(text).map_err(|e| ConfigError::Invalid {
            variable: self.variable(key),
            reason: format!("not a URL ({e})"),
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(ConfigError::Invalid {
                variable: self.variable(key),
                reason: "must be an absolute http or https URL".into(),
            });
        }
        Ok(url)
    }
}

/// Parses the boolean spellings accepted in configuration.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// The environment prefix of a provider id: upper case, `-` and `.` as `_`.
pub fn env_prefix(id: &str) -> String {
    id.chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// The configuration of every provider section found, keyed by id.
#[derive(Debug, Clone, Default)]
pub struct ProvidersConfig {
    sections: BTreeMap<String, ProviderSettings>,
    public_url: Option<Url>,
    event_delivery: bool,
}

impl ProvidersConfig {
    /// Builds the set from sections.
    pub fn new(sections: impl IntoIterator<Item = ProviderSettings>) -> Self {
        Self {
            sections: sections.into_iter().map(|s| (s.id.clone(), s)).collect(),
            public_url: None,
            event_delivery: false,
        }
    }

    /// This set, with the address where upstream services reach this server
    /// (`GRANTRY_PUBLIC_URL`), for callbacks such as webhooks.
    #[must_use]
    pub fn with_public_url(mut self, url: Option<Url>) -> Self {
        self.public_url = url;
        self
    }

    /// Where upstream services reach this server (`GRANTRY_PUBLIC_URL`), when configured.
    pub fn public_url(&self) -> Option<&Url> {
        self.public_url.as_ref()
    }

    /// This set, saying whether recorded events are delivered anywhere (`GRANTRY_WEBHOOK_URL`).
    #[must_use]
    pub fn with_event_delivery(mut self, delivered: bool) -> Self {
        self.event_delivery = delivered;
        self
    }

    /// Whether recorded events are delivered anywhere (`GRANTRY_WEBHOOK_URL` is set): a feature
    /// whose only output is events can serve nothing without it.
    pub fn event_delivery(&self) -> bool {
        self.event_delivery
    }

    /// The section of `id`; an empty one when nothing was configured.
    pub fn section(&self, id: &str) -> ProviderSettings {
        self.sections
            .get(id)
            .cloned()
            .unwrap_or_else(|| ProviderSettings::new(id, BTreeMap::new()))
    }

    /// Every configured section.
    pub fn sections(&self) -> impl Iterator<Item = &ProviderSettings> {
        self.sections.values()
    }
}

/// The signature of a provider factory: builds zero, one or several providers from configuration.
pub type BuildFn = fn(&ProvidersConfig) -> Result<Vec<Arc<dyn Provider>>, ConfigError>;

/// A provider crate's registration, submitted with [`register_provider!`](crate::register_provider).
#[derive(Debug)]
pub struct ProviderFactory {
    /// The id of the factory (the provider id for single-instance providers).
    pub id: &'static str,
    /// Human name.
    pub name: &'static str,
    /// Builds the enabled providers from configuration.
    pub build: BuildFn,
}

inventory::collect!(ProviderFactory);

/// Every factory linked into the binary, sorted by id; duplicate ids are an error.
pub fn factories() -> Result<Vec<&'static ProviderFactory>, ConfigError> {
    let mut list: Vec<&'static ProviderFactory> =
        inventory::iter::<ProviderFactory>.into_iter().collect();
    list.sort_by_key(|f| f.id);
    if let Some(pair) = list.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(ConfigError::DuplicateProvider(pair[0].id.to_owned()));
    }
    Ok(list)
}

/// Builds every enabled provider of every linked factory, sorted by id; duplicate ids are an
/// error, and so is an enabled section that no linked factory serves.
pub fn build_providers(config: &ProvidersConfig) -> Result<Vec<Arc<dyn Provider>>, ConfigError> {
    let mut all = Vec::new();
    for factory in factories()? {
        all.extend((factory.build)(config)?);
    }
    all.sort_by(|a, b| a.id().cmp(b.id()));
    let ids: Vec<&str> = all.iter().map(|p| p.id()).collect();
    check_built(config, &ids)?;
    Ok(all)
}

/// Checks the ids of the providers built from `config`: no id twice, and every enabled section
/// served by one of them.
pub fn check_built(config: &ProvidersConfig, ids: &[&str]) -> Result<(), ConfigError> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    if let Some(pair) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(ConfigError::DuplicateProvider(pair[0].to_owned()));
    }
    let known: Vec<&str> = factories()?.iter().map(|f| f.id).collect();
    check_served(config, &sorted, &known)
}

/// Whether a section asks for a provider: `enabled = true`, or a `kind` without `enabled = false`.
pub fn section_enabled(section: &ProviderSettings) -> Result<bool, ConfigError> {
    section.flag("enabled", section.get("kind").is_some())
}

/// Fails on the first enabled section whose id is not among `served` (the built providers),
/// naming it and the `known` factory ids.
fn check_served(
    config: &ProvidersConfig,
    served: &[&str],
    known: &[&str],
) -> Result<(), ConfigError> {
    for section in config.sections() {
        if section_enabled(section)? && !served.contains(&section.id()) {
            let setting = match (section.get("enabled"), section.get("kind")) {
                (None, Some(kind)) => format!("{}={kind}", section.variable("kind")),
                _ => format!("{}=true", section.variable("enabled")),
            };
            return Err(ConfigError::Unserved {
                setting,
                section: section.id().to_owned(),
                kind: section
                    .get("kind")
                    .map(|k| format!(" (kind `{k}`)"))
                    .unwrap_or_default(),
                known: if known.is_empty() {
                    "no provider".to_owned()
                } else {
                    known.join(", ")
                },
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> ProviderSettings {
        ProviderSettings::new(
            "corp-sso",
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn variables_follow_the_naming_rule() {
        let s = settings(&[]);
        assert_eq!(s.variable("enabled"), "ENABLE_CORP_SSO_INTEGRATION");
        assert_eq!(s.variable("client_id"), "CORP_SSO_CLIENT_ID");
        let err = s.require("client_id").expect_err("missing");
        assert_eq!(
            err.to_string(),
            "CORP_SSO_CLIENT_ID is required when ENABLE_CORP_SSO_INTEGRATION=true"
        );
    }

    #[test]
    fn flags_and_urls_are_validated() {
        let s = settings(&[
            ("enabled", "TRUE"),
            ("bad", "maybe"),
            ("url", "ftp://x"),
            ("blank", "  "),
        ]);
        assert_eq!(s.enabled(), Ok(true));
        assert!(s.flag("bad", false).is_err());
        assert!(s.url("url", None).is_err());
        assert!(s.url("blank", None).is_err());
        assert_eq!(
            s.url("other", Some("https://a.example/"))
                .map(|u| u.to_string()),
            Ok("https://a.example/".into())
        );
        assert_eq!(s.get("blank"), None);
    }

    #[test]
    fn an_enabled_section_nothing_serves_is_named_with_the_known_kinds() {
        let config = ProvidersConfig::new([
            ProviderSettings::new(
                "jira-dc",
                [("kind", "atlassian-dc"), ("enabled", "true")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            ),
            settings(&[("client_id", "only-configured")]),
        ]);
        let err = check_served(&config, &[], &["atlassian", "oauth2"]).expect_err("unserved");
        assert_eq!(
            err.to_string(),
            "ENABLE_JIRA_DC_INTEGRATION=true but no provider linked into this binary serves \
             `jira-dc` (kind `atlassian-dc`); this binary knows the kinds: atlassian, oauth2"
        );
        let by_kind = ProvidersConfig::new([ProviderSettings::new(
            "corp",
            [("kind".to_owned(), "saml".to_owned())]
                .into_iter()
                .collect(),
        )]);
        let err = check_served(&by_kind, &[], &["oauth2"]).expect_err("unserved");
        assert!(
            err.to_string()
                .starts_with("CORP_KIND=saml but no provider"),
            "{err}"
        );
        assert_eq!(
            check_served(&config, &["jira-dc"], &["atlassian-dc"]),
            Ok(())
        );
        let off = ProvidersConfig::new([ProviderSettings::new(
            "jira-dc",
            [("kind", "atlassian-dc"), ("enabled", "false")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )]);
        assert_eq!(check_served(&off, &[], &[]), Ok(()));
        let bad = ProvidersConfig::new([settings(&[("enabled", "maybe")])]);
        assert!(check_served(&bad, &[], &[]).is_err());
    }

    #[test]
    fn token_errors_are_classified() {
        assert_eq!(
            classify_token_error(403, Some("invalid_grant")),
            TokenErrorKind::Terminal
        );
        assert_eq!(
            classify_token_error(400, Some("invalid_grant")),
            TokenErrorKind::Terminal
        );
        assert_eq!(classify_token_error(503, None), TokenErrorKind::Transient);
        assert_eq!(classify_token_error(429, None), TokenErrorKind::Transient);
        assert_eq!(
            classify_token_error(401, Some("invalid_client")),
            TokenErrorKind::Rejected
        );
    }
}
