//! The settings of one instance: preset defaults < discovered metadata < configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use grantry_core::{ClientSecret, ConfigError, ProviderSettings, ScopeSet};
use url::Url;

use crate::{discovery, presets};

/// The `kind` that makes a provider section an instance of this crate.
pub const KIND: &str = "oauth2";
/// Scopes asked for when neither the configuration nor a preset names any.
pub const DEFAULT_SCOPES: &str = "openid profile email";
/// Default timeout of one upstream call (and of discovery), in seconds.
pub const DEFAULT_HTTP_TIMEOUT_SECS: u64 = 15;

/// The settings that locate the authorization server.
const ENDPOINT_KEYS: &[&str] = &[
    "issuer",
    "authorization_url",
    "token_url",
    "revocation_url",
    "userinfo_url",
];

/// Parameters the protocol sets itself; `authorize_params.*` may not override them.
const RESERVED_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
];

/// How the client authenticates at the token and revocation endpoints (RFC 6749 section 2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAuthMethod {
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// HTTP Basic with the form-encoded `client_id` and `client_secret`.
    ClientSecretBasic,
    /// A public client: `client_id` in the body, no secret (use PKCE).
    None,
}

impl TokenAuthMethod {
    /// The registration name of the method.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretPost => "client_secret_post",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::None => "none",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::ClientSecretPost, Self::ClientSecretBasic, Self::None]
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(text))
    }
}

/// Where the account's id, name and email are found in the userinfo document: each a list of
/// member names, the first present one wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFields {
    /// Members holding the stable account id (`sub`).
    pub id: Vec<String>,
    /// Members holding the display name (`name`).
    pub name: Vec<String>,
    /// Members holding the email address (`email`).
    pub email: Vec<String>,
}

/// The validated configuration of one OAuth 2.0 / OpenID Connect instance.
#[derive(Debug, Clone)]
pub struct OAuth2Config {
    /// Provider id, the route prefix `/api/v1/{id}`.
    pub id: String,
    /// Display name (`name`).
    pub name: String,
    /// The client's id (`client_id`).
    pub client_id: String,
    /// The client's secret (`client_secret`); absent for public clients.
    pub client_secret: Option<ClientSecret>,
    /// Client authentication at the token and revocation endpoints (`token_auth_method`).
    pub auth_method: TokenAuthMethod,
    /// The callback registered with the provider (`redirect_uri`).
    pub redirect_uri: Url,
    /// Scopes requested (`oauth_scope`).
    pub scopes: ScopeSet,
    /// The issuer identifier the `iss` of authorization responses must equal (RFC 9207).
    pub issuer: Option<String>,
    /// Refuse authorization responses without `iss` (`require_iss`, off by default: the callback
    /// body's `iss` is optional); always on when the discovered metadata advertises
    /// `authorization_response_iss_parameter_supported` (RFC 9207).
    pub require_iss: bool,
    /// Authorization endpoint (`authorization_url`).
    pub authorization_url: Url,
    /// Token endpoint (`token_url`).
    pub token_url: Url,
    /// RFC 7009 revocation endpoint (`revocation_url`), if the provider has one.
    pub revocation_url: Option<Url>,
    /// Userinfo endpoint (`userinfo_url`), read for the account behind a grant.
    pub userinfo_url: Url,
    /// Extra authorization parameters (`authorize_params.NAME`), sorted by name.
    pub authorize_params: Vec<(String, String)>,
    /// PKCE with S256 (`pkce`, on by default).
    pub pkce: bool,
    /// Whether each refresh returns a new refresh token and disables the old one.
    pub rotates_refresh_tokens: bool,
    /// A refresh token dies after this long unused (`refresh_idle_expiry`, seconds).
    pub refresh_idle_expiry: Option<Duration>,
    /// A grant dies this long after consent (`refresh_absolute_expiry`, seconds).
    pub refresh_absolute_expiry: Option<Duration>,
    /// Where the account is found in the userinfo document.
    pub account_fields: AccountFields,
    /// Token-endpoint error codes that, like `invalid_grant`, end the grant (`terminal_errors`).
    pub terminal_errors: Vec<String>,
    /// Longest an upstream call may take (`http_timeout`, seconds).
    pub http_timeout: Duration,
}

fn invalid(s: &ProviderSettings, key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        variable: s.variable(key),
        reason: reason.into(),
    }
}

fn seconds(
    s: &ProviderSettings,
    key: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<Duration>, ConfigError> {
    let Some(text) = s.get(key) else {
        return Ok(None);
    };
    match text.parse::<u64>().ok().filter(|n| range.contains(n)) {
        Some(n) => Ok(Some(Duration::from_secs(n))),
        None => Err(invalid(
            s,
            key,
            format!(
                "expected whole seconds from {} to {}, got `{text}`",
                range.start(),
                range.end()
            ),
        )),
    }
}

fn words(s: &ProviderSettings, key: &str, default: &str) -> Vec<String> {
    s.get(key)
        .unwrap_or(default)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Replaces `{name}` in `value` by the setting `name` (a URL template of a preset).
fn expand(s: &ProviderSettings, value: &str) -> Result<String, ConfigError> {
    let mut out = value.to_owned();
    while let Some(start) = out.find('{') {
        let Some(len) = out[start..].find('}') else {
            break;
        };
        let name = out[start + 1..start + len].to_owned();
        let with = s.require(&name)?;
        if !with
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(invalid(
                s,
                &name,
                "only letters, digits, '.', '-' and '_' are allowed",
            ));
        }
        out.replace_range(start..=start + len, with);
    }
    Ok(out)
}

impl OAuth2Config {
    /// Whether `section` asks for an enabled instance of this crate: `kind = "oauth2"` (enabled
    /// unless `enabled = false`), or a preset's id or `preset` with `enabled = true`.
    pub fn selects(section: &ProviderSettings) -> Result<bool, ConfigError> {
        match section.get("kind") {
            Some(kind) if kind.eq_ignore_ascii_case(KIND) => section.flag("enabled", true),
            Some(_) => Ok(false),
            None if section.get("preset").is_some() || presets::find(section.id()).is_some() => {
                section.enabled()
            }
            None => Ok(false),
        }
    }

    /// Reads and validates one instance; errors name the variable. When `issuer` is configured
    /// (and `discovery` is not `false`), OpenID discovery runs now, blocking, bounded by
    /// `http_timeout`.
    pub fn from_settings(section: &ProviderSettings) -> Result<Self, ConfigError> {
        let id = section.id();
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'))
        {
            return Err(ConfigError::Invalid {
                variable: format!("[providers.{id}]"),
                reason: "a provider id is lower-case letters, digits, '-' and '_'".into(),
            });
        }
        let preset = match section.get("preset") {
            Some(name) => Some(presets::find(name).ok_or_else(|| {
                let known: Vec<&str> = presets::PRESETS.iter().map(|p| p.id).collect();
                invalid(
                    section,
                    "preset",
                    format!("unknown preset `{name}` (known: {})", known.join(", ")),
                )
            })?),
            None => presets::find(id),
        };
        let http_timeout = seconds(section, "http_timeout", 1..=300)?
            .unwrap_or(Duration::from_secs(DEFAULT_HTTP_TIMEOUT_SECS));

        // A preset's endpoints come as a set: configuring any endpoint replaces all of them.
        let own_endpoints = ENDPOINT_KEYS.iter().any(|k| section.get(k).is_some());
        let mut values: BTreeMap<String, String> = preset
            .map(|p| p.defaults)
            .unwrap_or_default()
            .iter()
            .filter(|(k, _)| !(own_endpoints && ENDPOINT_KEYS.contains(k)))
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let discovered = match section.get("issuer") {
            Some(_) if section.flag("discovery", true)? => {
                let issuer = section.url("issuer", None)?;
                Some(
                    discovery::discover(&issuer, http_timeout)
                        .map_err(|reason| invalid(section, "issuer", reason))?,
                )
            }
            _ => None,
        };
        for (key, value) in discovered.iter().flatten() {
            values.insert((*key).to_owned(), value.clone());
        }
        for key in section.keys() {
            if key == "issuer" && discovered.is_some() {
                continue; // the discovered spelling is the one `iss` is compared with
            }
            match section.get(key) {
                Some(value) => values.insert(key.to_owned(), value.to_owned()),
                None => values.remove(key),
            };
        }
        let s = ProviderSettings::new(id, values);
        Self::validate(&s, http_timeout)
    }

    fn validate(s: &ProviderSettings, http_timeout: Duration) -> Result<Self, ConfigError> {
        let auth_method = match s.get("token_auth_method") {
            None => TokenAuthMethod::ClientSecretPost,
            Some(text) => TokenAuthMethod::parse(text).ok_or_else(|| {
                invalid(
                    s,
                    "token_auth_method",
                    format!(
                        "expected client_secret_post, client_secret_basic or none, got `{text}`"
                    ),
                )
            })?,
        };
        let client_id = s.require("client_id")?.to_owned();
        let client_secret = match auth_method {
            TokenAuthMethod::None => None,
            _ => Some(s.require_secret("client_secret")?),
        };
        if s.get("authorization_url").is_none() && s.get("issuer").is_none() {
            return Err(ConfigError::Missing {
                variable: s.variable("issuer"),
                context: format!(
                    " (or {} and {}) when {}=true",
                    s.variable("authorization_url"),
                    s.variable("token_url"),
                    s.variable("enabled")
                ),
            });
        }
        let url = |key: &str| -> Result<Url, ConfigError> {
            let text = s.require(key)?;
            let expanded = expand(s, text)?;
            let single =
                ProviderSettings::new(s.id(), BTreeMap::from([(key.to_owned(), expanded)]));
            single.url(key, None)
        };
        let optional_url = |key: &str| s.get(key).map(|_| url(key)).transpose();
        let issuer = match s.get("issuer") {
            Some(text) => {
                s.url("issuer", None)?;
                Some(text.to_owned())
            }
            None => None,
        };
        let mut authorize_params = BTreeMap::new();
        for key in s.keys() {
            let Some(name) = key
                .strip_prefix("authorize_params.")
                .or_else(|| key.strip_prefix("authorize_params_"))
            else {
                continue;
            };
            if name.is_empty() || RESERVED_PARAMS.contains(&name) {
                return Err(invalid(
                    s,
                    key,
                    format!("`{name}` is not an extra parameter grantry may send"),
                ));
            }
            if let Some(value) = s.get(key) {
                authorize_params.insert(name.to_owned(), value.to_owned());
            }
        }
        Ok(Self {
            id: s.id().to_owned(),
            name: s.get("name").unwrap_or(s.id()).to_owned(),
            client_id,
            client_secret,
            auth_method,
            redirect_uri: s.url("redirect_uri", None)?,
            scopes: ScopeSet::parse(s.get("oauth_scope").unwrap_or(DEFAULT_SCOPES)),
            // RFC 9207: a server that advertises `iss` in its metadata always sends it, so a
            // response without one is refused whatever `require_iss` says.
            require_iss: s.flag("require_iss", false)?
                || s.flag(discovery::ISS_ADVERTISED, false)?,
            issuer,
            authorization_url: url("authorization_url")?,
            token_url: url("token_url")?,
            revocation_url: optional_url("revocation_url")?,
            userinfo_url: url("userinfo_url")?,
            authorize_params: authorize_params.into_iter().collect(),
            pkce: s.flag("pkce", true)?,
            rotates_refresh_tokens: s.flag("rotates_refresh_tokens", false)?,
            refresh_idle_expiry: seconds(s, "refresh_idle_expiry", 60..=10 * 365 * 86_400)?,
            refresh_absolute_expiry: seconds(s, "refresh_absolute_expiry", 60..=10 * 365 * 86_400)?,
            account_fields: AccountFields {
                id: words(s, "account_id_field", "sub"),
                name: words(s, "account_name_field", "name"),
                email: words(s, "account_email_field", "email"),
            },
            terminal_errors: words(s, "terminal_errors", ""),
            http_timeout,
        })
    }
}
