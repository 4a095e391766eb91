//! The settings of one instance: preset defaults < discovered metadata < configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use grantry_core::{ConfigError, ProviderSettings, RefreshPolicy, ScopeSet};
use grantry_protocol::authorize::RESERVED_PARAMS;
use grantry_protocol::{AccountFields, Client, Endpoints, OAuthSpec, TokenAuthMethod};
use url::Url;

use crate::{SCOPES, discovery, presets};

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

/// Reads and validates one instance into its spec; errors name the variable. When `issuer` is
/// configured (and `discovery` is not `false`), OpenID discovery runs now, blocking, bounded by
/// `http_timeout`.
pub fn from_settings(section: &ProviderSettings) -> Result<OAuthSpec, ConfigError> {
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
    validate(&s, http_timeout)
}

fn validate(s: &ProviderSettings, http_timeout: Duration) -> Result<OAuthSpec, ConfigError> {
    let auth_method = match s.get("token_auth_method") {
        None => TokenAuthMethod::ClientSecretPost,
        Some(text) => TokenAuthMethod::parse(text).ok_or_else(|| {
            invalid(
                s,
                "token_auth_method",
                format!("expected client_secret_post, client_secret_basic or none, got `{text}`"),
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
        let single = ProviderSettings::new(s.id(), BTreeMap::from([(key.to_owned(), expanded)]));
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
    let client = Client {
        id: client_id,
        secret: client_secret,
        redirect_uri: s.url("redirect_uri", None)?,
    };
    let scopes = ScopeSet::parse(s.get("oauth_scope").unwrap_or(DEFAULT_SCOPES));
    // RFC 9207: a server that advertises `iss` in its metadata always sends it, so a
    // response without one is refused whatever `require_iss` says.
    let require_iss = s.flag("require_iss", false)? || s.flag(discovery::ISS_ADVERTISED, false)?;
    let endpoints = Endpoints {
        authorization: url("authorization_url")?,
        token: url("token_url")?,
        revocation: optional_url("revocation_url")?,
        account: url("userinfo_url")?,
    };
    let mut spec = OAuthSpec::new(s.id(), s.get("name").unwrap_or(s.id()), client, endpoints);
    spec.scope_catalogue = SCOPES;
    spec.scopes = scopes;
    spec.auth_method = auth_method;
    spec.issuer = issuer;
    spec.require_iss = require_iss;
    spec.authorize_params = authorize_params.into_iter().collect();
    spec.pkce = s.flag("pkce", true)?;
    spec.refresh_policy = RefreshPolicy {
        rotates: s.flag("rotates_refresh_tokens", false)?,
        idle_expiry: seconds(s, "refresh_idle_expiry", 60..=10 * 365 * 86_400)?,
        absolute_expiry: seconds(s, "refresh_absolute_expiry", 60..=10 * 365 * 86_400)?,
        ..RefreshPolicy::default()
    };
    spec.account_fields = AccountFields {
        id: words(s, "account_id_field", "sub"),
        name: words(s, "account_name_field", "name"),
        email: words(s, "account_email_field", "email"),
    };
    spec.terminal_errors = words(s, "terminal_errors", "");
    spec.http_timeout = http_timeout;
    Ok(spec)
}
