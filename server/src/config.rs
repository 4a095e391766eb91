//! Configuration: defaults < `grantry.toml` (or `GRANTRY_CONFIG`) < environment, through figment.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use grantry_core::error::CryptoError;
use grantry_core::keyring::KeyRing;
use grantry_core::provider::env_prefix;
use grantry_core::{ConfigError, ProviderSettings, ProvidersConfig};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::CrossSitePolicy;
use crate::http_server::HttpLimits;
use crate::metrics::MetricsToken;
use crate::webhooks::{WebhookSecret, WebhookSettings};

/// Settings of the HTTP API beyond who a user is: cross-site writes, the token hand-out, `/metrics`.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Origins besides the server's own that may send cookie-authenticated writes.
    pub cross_site: CrossSitePolicy,
    /// Whether admins may take a user's access token (`GRANTRY_ACCESS_TOKEN_ROUTE`).
    pub access_token_route: bool,
    /// The bearer token `/metrics` requires, when set (`GRANTRY_METRICS_TOKEN`).
    pub metrics_token: Option<MetricsToken>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            cross_site: CrossSitePolicy::default(),
            access_token_route: true,
            metrics_token: None,
        }
    }
}

/// Default listen address.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
/// Default database.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://grantry.db";
/// Default configuration file, read when present.
pub const DEFAULT_CONFIG_FILE: &str = "grantry.toml";

/// Top-level settings and the environment variable of each.
const VARIABLES: &[(&str, &str)] = &[
    ("bind", "GRANTRY_BIND"),
    ("database_url", "DATABASE_URL"),
    ("encryption_key", "GRANTRY_ENCRYPTION_KEY"),
    ("encryption_old_keys", "GRANTRY_ENCRYPTION_OLD_KEYS"),
    ("jwt_secret", "GRANTRY_JWT_SECRET"),
    ("log_level", "LOG_LEVEL"),
    ("refresh_margin", "GRANTRY_REFRESH_MARGIN"),
    ("refresh_lease", "GRANTRY_REFRESH_LEASE"),
    ("maintenance_interval", "GRANTRY_MAINTENANCE_INTERVAL"),
    ("cache_ttl", "GRANTRY_CACHE_TTL"),
    ("header_read_timeout", "GRANTRY_HEADER_READ_TIMEOUT"),
    ("request_timeout", "GRANTRY_REQUEST_TIMEOUT"),
    ("keep_alive_timeout", "GRANTRY_KEEP_ALIVE_TIMEOUT"),
    ("max_connections", "GRANTRY_MAX_CONNECTIONS"),
    ("csrf_allowed_origins", "GRANTRY_CSRF_ALLOWED_ORIGINS"),
    ("access_token_route", "GRANTRY_ACCESS_TOKEN_ROUTE"),
    ("metrics_token", "GRANTRY_METRICS_TOKEN"),
    ("maintenance_concurrency", "GRANTRY_MAINTENANCE_CONCURRENCY"),
    ("maintenance_batch", "GRANTRY_MAINTENANCE_BATCH"),
    ("metrics_counts_ttl", "GRANTRY_METRICS_COUNTS_TTL"),
    ("jwt_issuer", "GRANTRY_JWT_ISSUER"),
    ("jwt_audience", "GRANTRY_JWT_AUDIENCE"),
    ("max_pending_states", "GRANTRY_MAX_PENDING_STATES"),
    ("db_max_connections", "GRANTRY_DB_MAX_CONNECTIONS"),
    ("public_url", "GRANTRY_PUBLIC_URL"),
];

/// The keys of the `[webhooks]` table and the environment variable of each.
const WEBHOOK_VARIABLES: &[(&str, &str)] = &[
    ("url", "GRANTRY_WEBHOOK_URL"),
    ("secret", "GRANTRY_WEBHOOK_SECRET"),
    ("timeout", "GRANTRY_WEBHOOK_TIMEOUT"),
];

/// Default number of pending authorizations kept per user and provider.
pub const DEFAULT_MAX_PENDING_STATES: usize = 10;

/// Fewest characters of `GRANTRY_METRICS_TOKEN`.
pub const MIN_METRICS_TOKEN_LEN: usize = 16;

/// Default time a process may serve a connection from memory, seconds.
pub const DEFAULT_CACHE_TTL_SECS: u64 = 1;

/// Default refresh lease, seconds.
pub const DEFAULT_REFRESH_LEASE_SECS: u64 = 30;
/// Default interval of the maintenance task, seconds.
pub const DEFAULT_MAINTENANCE_INTERVAL_SECS: u64 = 3600;
/// Default number of keep-alive refreshes a maintenance pass runs at once.
pub const DEFAULT_MAINTENANCE_CONCURRENCY: u64 = 8;
/// Default number of rows a maintenance pass reads per batch.
pub const DEFAULT_MAINTENANCE_BATCH: u64 = 500;
/// Default time `/metrics` reuses the connection counts, seconds.
pub const DEFAULT_METRICS_COUNTS_TTL_SECS: u64 = 60;

fn variable_of(key: &str) -> &str {
    if let Some(key) = key.strip_prefix("webhooks.") {
        return WEBHOOK_VARIABLES
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(key, |(_, v)| *v);
    }
    VARIABLES
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v)
        .unwrap_or(key)
}

/// A database URL whose `Debug` and `Display` hide any password.
#[derive(Clone)]
pub struct DatabaseUrl(SecretString);

impl DatabaseUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(SecretString::from(url.into()))
    }

    /// The full URL, password included.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.expose().starts_with("sqlite:") {
            return f.write_str(self.expose());
        }
        let Ok(mut u) = url::Url::parse(self.expose()) else {
            return f.write_str("[a database URL that does not parse]");
        };
        if u.password().is_some() {
            let _ = u.set_password(Some("redacted"));
        }
        if u.query().is_some() {
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let secret = k.to_ascii_lowercase().contains("password");
                    (
                        k.into_owned(),
                        if secret {
                            "redacted".into()
                        } else {
                            v.into_owned()
                        },
                    )
                })
                .collect();
            u.query_pairs_mut().clear().extend_pairs(pairs);
        }
        f.write_str(u.as_str())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

#[derive(Debug, Deserialize, Serialize, Default)]
struct Raw {
    bind: Option<String>,
    database_url: Option<String>,
    encryption_key: Option<String>,
    encryption_old_keys: Option<String>,
    jwt_secret: Option<String>,
    log_level: Option<String>,
    refresh_margin: Option<Value>,
    refresh_lease: Option<Value>,
    maintenance_interval: Option<Value>,
    cache_ttl: Option<Value>,
    header_read_timeout: Option<Value>,
    request_timeout: Option<Value>,
    keep_alive_timeout: Option<Value>,
    max_connections: Option<Value>,
    csrf_allowed_origins: Option<Value>,
    access_token_route: Option<Value>,
    metrics_token: Option<String>,
    maintenance_concurrency: Option<Value>,
    maintenance_batch: Option<Value>,
    metrics_counts_ttl: Option<Value>,
    jwt_issuer: Option<String>,
    jwt_audience: Option<String>,
    max_pending_states: Option<Value>,
    db_max_connections: Option<Value>,
    public_url: Option<String>,
    #[serde(default)]
    webhooks: BTreeMap<String, Value>,
    #[serde(default)]
    providers: BTreeMap<String, Map<String, Value>>,
}

/// A list from a TOML array or a string split at `separator`, items trimmed, empty ones dropped.
fn list(value: Option<&Value>, separator: char) -> Vec<String> {
    let items: Vec<String> = match value {
        None => Vec::new(),
        Some(Value::String(s)) => s.split(separator).map(|i| i.trim().to_owned()).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.trim().to_owned(),
                other => other.to_string(),
            })
            .collect(),
        Some(other) => vec![other.to_string()],
    };
    items.into_iter().filter(|i| !i.is_empty()).collect()
}

/// The `[webhooks]` table (or `GRANTRY_WEBHOOK_*`): endpoints, secrets, timeout. `None` when no
/// endpoint is set; an endpoint without a secret, or a secret without an endpoint, is an error.
fn webhook_settings(
    table: &BTreeMap<String, Value>,
) -> Result<Option<WebhookSettings>, ConfigError> {
    let invalid = |key: &str, reason: String| ConfigError::Invalid {
        variable: variable_of(&format!("webhooks.{key}")).into(),
        reason,
    };
    if let Some(unknown) = table
        .keys()
        .find(|k| !WEBHOOK_VARIABLES.iter().any(|(known, _)| known == k))
    {
        return Err(ConfigError::Invalid {
            variable: format!("[webhooks] {unknown}"),
            reason: "unknown key; expected url, secret or timeout".into(),
        });
    }
    let urls = list(table.get("url"), ',');
    let secrets = list(table.get("secret"), ' ');
    let timeout = seconds("webhooks.timeout", table.get("timeout"), 1..=300)?
        .unwrap_or(crate::webhooks::DEFAULT_TIMEOUT);
    match (urls.is_empty(), secrets.is_empty()) {
        (true, true) => return Ok(None),
        (false, true) => {
            return Err(invalid(
                "secret",
                "GRANTRY_WEBHOOK_URL is set, so events need a signing secret (whsec_<base64>)"
                    .into(),
            ));
        }
        (true, false) => {
            return Err(invalid(
                "url",
                "GRANTRY_WEBHOOK_SECRET is set but no endpoint receives the events".into(),
            ));
        }
        (false, false) => {}
    }
    let endpoints = urls
        .iter()
        .map(|text| {
            let bad = || {
                invalid(
                    "url",
                    "an endpoint must be an http:// or https:// URL with a host and no user or \
                     password"
                        .into(),
                )
            };
            let url = url::Url::parse(text).map_err(|_| bad())?;
            if matches!(url.scheme(), "http" | "https")
                && url.host().is_some()
                && url.username().is_empty()
                && url.password().is_none()
            {
                Ok(url)
            } else {
                Err(bad())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let secrets = secrets
        .iter()
        .map(|text| WebhookSecret::parse(text).map_err(|reason| invalid("secret", reason)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(WebhookSettings {
        timeout,
        ..WebhookSettings::new(endpoints, secrets)
    }))
}

/// A whole number from a TOML number or an environment string, within `range`; `what` names
/// the expected value in the error.
fn bounded(
    key: &str,
    value: Option<&Value>,
    range: std::ops::RangeInclusive<u64>,
    what: &str,
) -> Result<Option<u64>, ConfigError> {
    let Some(value) = value else { return Ok(None) };
    let parsed = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if s.trim().is_empty() => return Ok(None),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    match parsed.filter(|n| range.contains(n)) {
        Some(n) => Ok(Some(n)),
        None => Err(ConfigError::Invalid {
            variable: variable_of(key).into(),
            reason: format!(
                "expected {what} from {} to {}, got {value}",
                range.start(),
                range.end()
            ),
        }),
    }
}

/// A whole number from a TOML number or an environment string, within `range`.
fn whole_number(
    key: &str,
    value: Option<&Value>,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, ConfigError> {
    bounded(key, value, range, "a whole number")
}

/// Whole seconds from a TOML number or an environment string, within `range`.
fn seconds(
    key: &str,
    value: Option<&Value>,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<std::time::Duration>, ConfigError> {
    Ok(bounded(key, value, range, "whole seconds")?.map(std::time::Duration::from_secs))
}

/// A boolean from a TOML boolean or an environment string (`true`/`false`, `1`/`0`, …).
fn flag(key: &str, value: Option<&Value>, default: bool) -> Result<bool, ConfigError> {
    let parsed = match value {
        None => return Ok(default),
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(default),
        Some(Value::String(s)) => grantry_core::provider::parse_bool(s.trim()),
        Some(_) => None,
    };
    parsed.ok_or_else(|| ConfigError::Invalid {
        variable: variable_of(key).into(),
        reason: "expected true or false".into(),
    })
}

/// Web origins (`https://chat.example.com`), comma-separated or a TOML array.
fn origins(key: &str, value: Option<&Value>) -> Result<Vec<url::Origin>, ConfigError> {
    let items: Vec<String> = match value {
        None => Vec::new(),
        Some(Value::String(s)) => s.split(',').map(|i| i.trim().to_owned()).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.trim().to_owned(),
                other => other.to_string(),
            })
            .collect(),
        Some(other) => vec![other.to_string()],
    };
    items
        .into_iter()
        .filter(|i| !i.is_empty())
        .map(|item| {
            let invalid = || ConfigError::Invalid {
                variable: variable_of(key).into(),
                reason: format!(
                    "`{item}` is not an origin such as https://chat.example.com (scheme, host and \
                     optional port; no path)"
                ),
            };
            let url = url::Url::parse(&item).map_err(|_| invalid())?;
            let bare = matches!(url.scheme(), "http" | "https")
                && url.host().is_some()
                && url.username().is_empty()
                && url.password().is_none()
                && url.path() == "/"
                && url.query().is_none()
                && url.fragment().is_none();
            if bare {
                Ok(url.origin())
            } else {
                Err(invalid())
            }
        })
        .collect()
}

/// The resolved configuration of a grantry server.
#[derive(Debug)]
pub struct Config {
    /// Listen address (`GRANTRY_BIND`).
    pub bind: SocketAddr,
    /// Database (`DATABASE_URL`).
    pub database_url: DatabaseUrl,
    /// Current encryption key, base64 (`GRANTRY_ENCRYPTION_KEY`).
    pub encryption_key: Option<SecretString>,
    /// Older keys, comma-separated base64 (`GRANTRY_ENCRYPTION_OLD_KEYS`).
    pub encryption_old_keys: Option<SecretString>,
    /// HS256 secret for users' bearer tokens (`GRANTRY_JWT_SECRET`).
    pub jwt_secret: Option<SecretString>,
    /// Log level or tracing filter (`LOG_LEVEL`).
    pub log_level: String,
    /// Refresh this long before access tokens expire (`GRANTRY_REFRESH_MARGIN`); the provider's
    /// own margin (5 minutes for Atlassian) when unset.
    pub refresh_margin: Option<std::time::Duration>,
    /// How long a replica holds the refresh lease (`GRANTRY_REFRESH_LEASE`).
    pub refresh_lease: std::time::Duration,
    /// How often the maintenance task runs (`GRANTRY_MAINTENANCE_INTERVAL`).
    pub maintenance_interval: std::time::Duration,
    /// How long a process serves a connection it read from memory (`GRANTRY_CACHE_TTL`, 0 = off);
    /// local writes invalidate at once, other replicas' writes show after this time.
    pub cache_ttl: std::time::Duration,
    /// Timeouts and connection cap of the HTTP listener (`GRANTRY_HEADER_READ_TIMEOUT`,
    /// `GRANTRY_REQUEST_TIMEOUT`, `GRANTRY_KEEP_ALIVE_TIMEOUT`, `GRANTRY_MAX_CONNECTIONS`).
    pub http: HttpLimits,
    /// Origins besides the server's own that may send cookie-authenticated writes
    /// (`GRANTRY_CSRF_ALLOWED_ORIGINS`).
    pub csrf_allowed_origins: Vec<url::Origin>,
    /// Whether admins may take users' access tokens (`GRANTRY_ACCESS_TOKEN_ROUTE`).
    pub access_token_route: bool,
    /// The bearer token `/metrics` requires, when set (`GRANTRY_METRICS_TOKEN`).
    pub metrics_token: Option<SecretString>,
    /// Keep-alive refreshes a maintenance pass runs at once (`GRANTRY_MAINTENANCE_CONCURRENCY`).
    pub maintenance_concurrency: usize,
    /// Rows a maintenance pass reads per batch (`GRANTRY_MAINTENANCE_BATCH`).
    pub maintenance_batch: u32,
    /// How long `/metrics` reuses its connection counts (`GRANTRY_METRICS_COUNTS_TTL`, 0 = every scrape).
    pub metrics_counts_ttl: std::time::Duration,
    /// The `iss` every user token must carry (`GRANTRY_JWT_ISSUER`); not checked when unset.
    pub jwt_issuer: Option<String>,
    /// The `aud` every user token must name (`GRANTRY_JWT_AUDIENCE`); when unset, tokens with
    /// an `aud` claim are refused.
    pub jwt_audience: Option<String>,
    /// Pending authorizations kept per user and provider (`GRANTRY_MAX_PENDING_STATES`); a new
    /// one drops the oldest beyond this.
    pub max_pending_states: usize,
    /// Most database connections this process opens (`GRANTRY_DB_MAX_CONNECTIONS`); the
    /// backend's default (8 on SQLite, 16 on PostgreSQL) when unset.
    pub db_max_connections: Option<u32>,
    /// Where events are delivered and how they are signed (`[webhooks]`, `GRANTRY_WEBHOOK_*`);
    /// `None` when no endpoint is configured (events are then not recorded).
    pub webhooks: Option<WebhookSettings>,
    /// Per-provider sections.
    pub providers: ProvidersConfig,
    /// The TOML file that was read, if any.
    pub file: Option<PathBuf>,
}

impl Config {
    /// Loads from the process environment and the configuration file.
    pub fn load() -> Result<Self, ConfigError> {
        let ids: Vec<&str> = grantry_core::provider::factories()?
            .iter()
            .map(|f| f.id)
            .collect();
        Self::load_from(std::env::vars(), &ids)
    }

    /// Loads from the given environment; `provider_ids` are the ids whose `FOO_*` variables are read
    /// even without `ENABLE_FOO_INTEGRATION` (every `ENABLE_X_INTEGRATION` adds its own id).
    pub fn load_from<I>(env: I, provider_ids: &[&str]) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let env: BTreeMap<String, String> = env.into_iter().collect();
        let file = config_file(&env)?;

        let mut figment = Figment::from(Serialized::defaults(Raw::default()));
        if let Some(path) = &file {
            figment = figment.merge(Toml::file_exact(path));
        }
        let toml_ids: Vec<String> = match &file {
            Some(_) => figment
                .extract_inner::<BTreeMap<String, Value>>("providers")
                .map(|m| m.into_keys().collect())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        figment = figment.merge(Serialized::defaults(env_overlay(
            &env,
            provider_ids,
            &toml_ids,
        )));

        let raw: Raw = figment
            .extract()
            .map_err(|e| figment_error(&e, file.as_deref()))?;

        let bind_text = raw.bind.unwrap_or_else(|| DEFAULT_BIND.into());
        let bind = bind_text.parse().map_err(|_| ConfigError::Invalid {
            variable: "GRANTRY_BIND".into(),
            reason: format!("`{bind_text}` is not an address such as 127.0.0.1:8080"),
        })?;
        let log_level = raw.log_level.unwrap_or_else(|| "info".into());
        let secret = |v: Option<String>| v.filter(|s| !s.trim().is_empty()).map(SecretString::from);
        let providers = raw
            .providers
            .into_iter()
            .map(|(id, table)| {
                let mut values = BTreeMap::new();
                for (key, value) in table {
                    flatten(&key, &value, &mut values);
                }
                ProviderSettings::new(id, values)
            })
            .collect::<Vec<_>>();
        let refresh_margin = seconds("refresh_margin", raw.refresh_margin.as_ref(), 0..=86_400)?;
        let refresh_lease = seconds("refresh_lease", raw.refresh_lease.as_ref(), 1..=3600)?
            .unwrap_or(std::time::Duration::from_secs(DEFAULT_REFRESH_LEASE_SECS));
        let maintenance_interval = seconds(
            "maintenance_interval",
            raw.maintenance_interval.as_ref(),
            1..=86_400,
        )?
        .unwrap_or(std::time::Duration::from_secs(
            DEFAULT_MAINTENANCE_INTERVAL_SECS,
        ));
        let cache_ttl = seconds("cache_ttl", raw.cache_ttl.as_ref(), 0..=60)?
            .unwrap_or(std::time::Duration::from_secs(DEFAULT_CACHE_TTL_SECS));
        let defaults = HttpLimits::default();
        let http = HttpLimits {
            header_read_timeout: seconds(
                "header_read_timeout",
                raw.header_read_timeout.as_ref(),
                1..=300,
            )?
            .unwrap_or(defaults.header_read_timeout),
            request_timeout: seconds("request_timeout", raw.request_timeout.as_ref(), 1..=3600)?
                .unwrap_or(defaults.request_timeout),
            keep_alive_timeout: seconds(
                "keep_alive_timeout",
                raw.keep_alive_timeout.as_ref(),
                0..=3600,
            )?
            .unwrap_or(defaults.keep_alive_timeout),
            max_connections: whole_number(
                "max_connections",
                raw.max_connections.as_ref(),
                1..=1_000_000,
            )?
            .map_or(defaults.max_connections, |n| {
                usize::try_from(n).unwrap_or(usize::MAX)
            }),
        };
        let csrf_allowed_origins =
            origins("csrf_allowed_origins", raw.csrf_allowed_origins.as_ref())?;
        let access_token_route = flag("access_token_route", raw.access_token_route.as_ref(), true)?;
        let metrics_token = secret(raw.metrics_token);
        if metrics_token
            .as_ref()
            .is_some_and(|t| t.expose_secret().trim().chars().count() < MIN_METRICS_TOKEN_LEN)
        {
            return Err(ConfigError::Invalid {
                variable: "GRANTRY_METRICS_TOKEN".into(),
                reason: format!("must be at least {MIN_METRICS_TOKEN_LEN} characters"),
            });
        }
        let maintenance_concurrency = whole_number(
            "maintenance_concurrency",
            raw.maintenance_concurrency.as_ref(),
            1..=64,
        )?
        .unwrap_or(DEFAULT_MAINTENANCE_CONCURRENCY);
        let maintenance_batch = whole_number(
            "maintenance_batch",
            raw.maintenance_batch.as_ref(),
            10..=10_000,
        )?
        .unwrap_or(DEFAULT_MAINTENANCE_BATCH);
        let metrics_counts_ttl = seconds(
            "metrics_counts_ttl",
            raw.metrics_counts_ttl.as_ref(),
            0..=3600,
        )?
        .unwrap_or(std::time::Duration::from_secs(
            DEFAULT_METRICS_COUNTS_TTL_SECS,
        ));
        let max_pending_states = whole_number(
            "max_pending_states",
            raw.max_pending_states.as_ref(),
            1..=1000,
        )?
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(DEFAULT_MAX_PENDING_STATES);
        let db_max_connections = whole_number(
            "db_max_connections",
            raw.db_max_connections.as_ref(),
            1..=1000,
        )?
        .and_then(|n| u32::try_from(n).ok());
        let text = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let webhooks = webhook_settings(&raw.webhooks)?;
        let event_delivery = webhooks.is_some();
        let public_url = match text(raw.public_url) {
            None => None,
            Some(t) => Some(
                url::Url::parse(&t)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                    .ok_or_else(|| ConfigError::Invalid {
                        variable: "GRANTRY_PUBLIC_URL".into(),
                        reason: format!(
                            "`{t}` is not an http:// or https:// URL such as https://grantry.example.com"
                        ),
                    })?,
            ),
        };
        Ok(Self {
            webhooks,
            http,
            csrf_allowed_origins,
            access_token_route,
            metrics_token,
            bind,
            cache_ttl,
            maintenance_concurrency: usize::try_from(maintenance_concurrency).unwrap_or(1),
            maintenance_batch: u32::try_from(maintenance_batch).unwrap_or(500),
            metrics_counts_ttl,
            refresh_margin,
            refresh_lease,
            maintenance_interval,
            database_url: DatabaseUrl::new(
                raw.database_url
                    .unwrap_or_else(|| DEFAULT_DATABASE_URL.into()),
            ),
            encryption_key: secret(raw.encryption_key),
            encryption_old_keys: secret(raw.encryption_old_keys),
            jwt_secret: secret(raw.jwt_secret),
            jwt_issuer: text(raw.jwt_issuer),
            jwt_audience: text(raw.jwt_audience),
            max_pending_states,
            db_max_connections,
            log_level,
            providers: ProvidersConfig::new(providers)
                .with_public_url(public_url)
                .with_event_delivery(event_delivery),
            file,
        })
    }

    /// The key ring, or an error naming the variable that is missing or bad.
    pub fn keyring(&self) -> Result<KeyRing, ConfigError> {
        let key = self
            .encryption_key
            .as_ref()
            .ok_or_else(|| ConfigError::Missing {
                variable: "GRANTRY_ENCRYPTION_KEY".into(),
                context: " (base64 of 32 random bytes; `grantry keygen` prints one)".into(),
            })?;
        KeyRing::from_base64(key, self.encryption_old_keys.as_ref()).map_err(|e| match e {
            CryptoError::InvalidKey { variable } => ConfigError::Invalid {
                variable: variable.into(),
                reason: "must be base64 of exactly 32 bytes (`grantry keygen` prints one)".into(),
            },
            other => ConfigError::Invalid {
                variable: "GRANTRY_ENCRYPTION_KEY".into(),
                reason: other.to_string(),
            },
        })
    }

    /// The refresh tuning this configuration asks for.
    pub fn refresh_settings(&self) -> grantry_core::refresh::RefreshSettings {
        grantry_core::refresh::RefreshSettings {
            lease: self.refresh_lease,
            margin: self.refresh_margin,
            ..grantry_core::refresh::RefreshSettings::default()
        }
    }

    /// The settings of the HTTP API this configuration asks for.
    pub fn api_settings(&self) -> ApiSettings {
        ApiSettings {
            cross_site: CrossSitePolicy::new(self.csrf_allowed_origins.clone()),
            access_token_route: self.access_token_route,
            metrics_token: self.metrics_token.as_ref().map(MetricsToken::new),
        }
    }

    /// The maintenance tuning this configuration asks for.
    pub fn maintenance_settings(&self) -> grantry_core::maintenance::MaintenanceSettings {
        grantry_core::maintenance::MaintenanceSettings {
            concurrency: self.maintenance_concurrency,
            batch_size: self.maintenance_batch,
            ..grantry_core::maintenance::MaintenanceSettings::default()
        }
    }

    /// The JWT secret, or an error naming `GRANTRY_JWT_SECRET`.
    pub fn require_jwt_secret(&self) -> Result<&SecretString, ConfigError> {
        self.jwt_secret
            .as_ref()
            .ok_or_else(|| ConfigError::Missing {
                variable: "GRANTRY_JWT_SECRET".into(),
                context: " (the HS256 secret that verifies users' bearer tokens)".into(),
            })
    }
}

fn config_file(env: &BTreeMap<String, String>) -> Result<Option<PathBuf>, ConfigError> {
    match env
        .get("GRANTRY_CONFIG")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        Some(path) => {
            let path = PathBuf::from(path);
            if path.is_file() {
                Ok(Some(path))
            } else {
                Err(ConfigError::Invalid {
                    variable: "GRANTRY_CONFIG".into(),
                    reason: format!("no file at {}", path.display()),
                })
            }
        }
        None => {
            let path = PathBuf::from(DEFAULT_CONFIG_FILE);
            Ok(path.is_file().then_some(path))
        }
    }
}

/// The environment as a figment layer: top-level variables and every provider's `FOO_*`.
fn env_overlay(env: &BTreeMap<String, String>, known_ids: &[&str], toml_ids: &[String]) -> Value {
    let mut top = Map::new();
    for (key, var) in VARIABLES {
        if let Some(v) = env.get(*var) {
            top.insert((*key).into(), Value::String(v.clone()));
        }
    }
    let mut hooks = Map::new();
    for (key, var) in WEBHOOK_VARIABLES {
        if let Some(v) = env.get(*var) {
            hooks.insert((*key).into(), Value::String(v.clone()));
        }
    }
    if !hooks.is_empty() {
        top.insert("webhooks".into(), Value::Object(hooks));
    }
    let mut ids: Vec<String> = known_ids.iter().map(|s| (*s).to_owned()).collect();
    ids.extend(toml_ids.iter().cloned());
    for (var, value) in env {
        // `ENABLE_ID_INTEGRATION`, or `ID_KIND` naming a linked provider kind (`JIRA_DC_KIND=
        // atlassian-dc`), makes `ID` a section.
        let enable = var
            .strip_prefix("ENABLE_")
            .and_then(|r| r.strip_suffix("_INTEGRATION"));
        let kind = var.strip_suffix("_KIND").filter(|_| {
            known_ids
                .iter()
                .any(|k| k.eq_ignore_ascii_case(value.trim()))
        });
        if let Some(middle) = enable.or(kind)
            && !middle.is_empty()
        {
            let id = middle.to_ascii_lowercase().replace('_', "-");
            if !ids.iter().any(|known| env_prefix(known) == middle) {
                ids.push(id);
            }
        }
    }
    let mut providers = Map::new();
    for id in ids {
        let prefix = env_prefix(&id);
        let mut section = Map::new();
        if let Some(v) = env.get(&format!("ENABLE_{prefix}_INTEGRATION")) {
            section.insert("enabled".into(), Value::String(v.clone()));
        }
        let lead = format!("{prefix}_");
        for (var, value) in env {
            if let Some(key) = var.strip_prefix(&lead).filter(|k| !k.is_empty()) {
                section.insert(key.to_ascii_lowercase(), Value::String(value.clone()));
            }
        }
        if !section.is_empty() {
            providers.insert(id, Value::Object(section));
        }
    }
    if !providers.is_empty() {
        top.insert("providers".into(), Value::Object(providers));
    }
    Value::Object(top)
}

/// Flattens a TOML value to strings: arrays joined by spaces, tables as dotted keys.
fn flatten(key: &str, value: &Value, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Null => {}
        Value::String(s) => {
            out.insert(key.to_owned(), s.clone());
        }
        Value::Bool(b) => {
            out.insert(key.to_owned(), b.to_string());
        }
        Value::Number(n) => {
            out.insert(key.to_owned(), n.to_string());
        }
        Value::Array(items) => {
            let parts: Vec<String> = items
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            out.insert(key.to_owned(), parts.join(" "));
        }
        Value::Object(map) => {
            for (k, v) in map {
                flatten(&format!("{key}.{k}"), v, out);
            }
        }
    }
}

fn figment_error(error: &figment::Error, file: Option<&Path>) -> ConfigError {
    let variable = match error.path.first().map(String::as_str) {
        Some("providers") => match (error.path.get(1), error.path.get(2)) {
            (Some(id), Some(key)) => {
                ProviderSettings::new(id.clone(), BTreeMap::new()).variable(key)
            }
            _ => "providers".into(),
        },
        Some(key) => variable_of(key).to_owned(),
        None => match file {
            Some(path) => format!("GRANTRY_CONFIG ({})", path.display()),
            None => "configuration".into(),
        },
    };
    // A parser's message may quote the offending line or value: never for secrets.
    let secret = error.path.is_empty()
        || error.path.iter().any(|p| {
            let p = p.to_ascii_lowercase();
            p.contains("secret")
                || p.contains("key")
                || p.contains("password")
                || p.contains("token")
        });
    let reason = if secret {
        "not valid here (details withheld: the value may be a secret)".to_owned()
    } else {
        error.kind.to_string().replace('\n', " ")
    };
    ConfigError::Invalid { variable, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_apply() {
        let c = Config::load_from(env(&[("GRANTRY_CONFIG", "")]), &["atlassian"]).expect("config");
        assert_eq!(c.bind.to_string(), DEFAULT_BIND);
        assert_eq!(c.database_url.expose(), DEFAULT_DATABASE_URL);
        assert_eq!(c.log_level, "info");
        assert!(c.encryption_key.is_none());
        assert!(!c.providers.section("atlassian").enabled().expect("flag"));
    }

    #[test]
    fn provider_variables_map_to_sections() {
        let c = Config::load_from(
            env(&[
                ("ENABLE_ATLASSIAN_INTEGRATION", "true"),
                ("ATLASSIAN_CLIENT_ID", "cid"),
                ("ATLASSIAN_OAUTH_SCOPE", "read:me offline_access"),
                ("ENABLE_CORP_SSO_INTEGRATION", "1"),
                ("CORP_SSO_ISSUER", "https://sso.example"),
                ("UNRELATED", "x"),
            ]),
            &["atlassian"],
        )
        .expect("config");
        let a = c.providers.section("atlassian");
        assert_eq!(a.enabled(), Ok(true));
        assert_eq!(a.get("client_id"), Some("cid"));
        assert_eq!(a.get("oauth_scope"), Some("read:me offline_access"));
        let sso = c.providers.section("corp-sso");
        assert_eq!(sso.enabled(), Ok(true));
        assert_eq!(sso.get("issuer"), Some("https://sso.example"));
    }

    #[test]
    fn a_kind_variable_naming_a_linked_kind_makes_a_section() {
        let c = Config::load_from(
            env(&[
                ("JIRA_DC_KIND", "atlassian-dc"),
                ("JIRA_DC_BASE_URL", "https://jira.example.com/jira"),
                ("RUST_KIND", "nightly"),
            ]),
            &["atlassian", "atlassian-dc", "oauth2"],
        )
        .expect("config");
        let dc = c.providers.section("jira-dc");
        assert_eq!(dc.get("kind"), Some("atlassian-dc"));
        assert_eq!(dc.get("base_url"), Some("https://jira.example.com/jira"));
        assert!(
            c.providers.sections().all(|s| s.id() != "rust"),
            "a KIND that names no linked kind is not a section"
        );
    }

    #[test]
    fn environment_overrides_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.toml");
        std::fs::write(
            &path,
            "bind = \"127.0.0.1:9000\"\nlog_level = \"debug\"\n[providers.atlassian]\nenabled = true\nclient_id = \"from-file\"\noauth_scope = [\"read:me\", \"offline_access\"]\n[providers.gitlab]\nkind = \"oauth2\"\n",
        )
        .expect("write");
        let c = Config::load_from(
            env(&[
                ("GRANTRY_CONFIG", path.to_str().expect("utf8")),
                ("LOG_LEVEL", "TRACE"),
                ("ATLASSIAN_CLIENT_ID", "from-env"),
                ("GITLAB_CLIENT_ID", "gl"),
            ]),
            &["atlassian"],
        )
        .expect("config");
        assert_eq!(c.bind.to_string(), "127.0.0.1:9000");
        assert_eq!(c.log_level, "TRACE");
        let a = c.providers.section("atlassian");
        assert_eq!(a.enabled(), Ok(true));
        assert_eq!(a.get("client_id"), Some("from-env"));
        assert_eq!(a.get("oauth_scope"), Some("read:me offline_access"));
        let gl = c.providers.section("gitlab");
        assert_eq!(gl.get("kind"), Some("oauth2"));
        assert_eq!(gl.get("client_id"), Some("gl"));
    }

    #[test]
    fn webhooks_come_from_the_environment_or_the_file_and_need_a_secret() {
        const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let none = Config::load_from(env(&[]), &[]).expect("config");
        assert!(none.webhooks.is_none());

        let c = Config::load_from(
            env(&[
                (
                    "GRANTRY_WEBHOOK_URL",
                    "https://a.example/h, http://127.0.0.1:4000/hooks",
                ),
                ("GRANTRY_WEBHOOK_SECRET", &format!("{SECRET} {SECRET}")),
                ("GRANTRY_WEBHOOK_TIMEOUT", "3"),
            ]),
            &[],
        )
        .expect("config");
        let hooks = c.webhooks.expect("webhooks");
        assert_eq!(hooks.endpoints.len(), 2);
        assert_eq!(hooks.endpoints[1].as_str(), "http://127.0.0.1:4000/hooks");
        assert_eq!(hooks.secrets.len(), 2);
        assert_eq!(hooks.timeout, std::time::Duration::from_secs(3));
        assert!(
            !format!("{hooks:?}").contains("MfKQ9r8"),
            "no secret in Debug"
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.toml");
        std::fs::write(
            &path,
            "[webhooks]\nurl = [\"https://file.example/h\"]\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n",
        )
        .expect("write");
        let file = Config::load_from(
            env(&[("GRANTRY_CONFIG", path.to_str().expect("utf8"))]),
            &[],
        )
        .expect("config");
        assert_eq!(
            file.webhooks.expect("webhooks").endpoints[0].as_str(),
            "https://file.example/h"
        );

        for (vars, variable) in [
            (
                vec![("GRANTRY_WEBHOOK_URL", "https://a.example/h")],
                "GRANTRY_WEBHOOK_SECRET",
            ),
            (
                vec![("GRANTRY_WEBHOOK_SECRET", SECRET)],
                "GRANTRY_WEBHOOK_URL",
            ),
            (
                vec![
                    ("GRANTRY_WEBHOOK_URL", "https://a.example/h"),
                    ("GRANTRY_WEBHOOK_SECRET", "not-a-secret"),
                ],
                "GRANTRY_WEBHOOK_SECRET",
            ),
            (
                vec![
                    ("GRANTRY_WEBHOOK_URL", "ftp://a.example/h"),
                    ("GRANTRY_WEBHOOK_SECRET", SECRET),
                ],
                "GRANTRY_WEBHOOK_URL",
            ),
            (
                vec![
                    ("GRANTRY_WEBHOOK_URL", "https://user:pw@a.example/h"),
                    ("GRANTRY_WEBHOOK_SECRET", SECRET),
                ],
                "GRANTRY_WEBHOOK_URL",
            ),
            (
                vec![
                    ("GRANTRY_WEBHOOK_URL", "https://a.example/h"),
                    ("GRANTRY_WEBHOOK_SECRET", SECRET),
                    ("GRANTRY_WEBHOOK_TIMEOUT", "0"),
                ],
                "GRANTRY_WEBHOOK_TIMEOUT",
            ),
            (
                vec![("GRANTRY_PUBLIC_URL", "grantry.example.com")],
                "GRANTRY_PUBLIC_URL",
            ),
        ] {
            let e = Config::load_from(env(&vars), &[]).expect_err(variable);
            assert!(e.to_string().starts_with(variable), "{variable}: {e}");
            assert!(
                !e.to_string().contains("MfKQ9r8"),
                "no secret in errors: {e}"
            );
        }
        let public = Config::load_from(
            env(&[("GRANTRY_PUBLIC_URL", "https://g.example/base")]),
            &[],
        )
        .expect("config");
        assert_eq!(
            public.providers.public_url().map(url::Url::as_str),
            Some("https://g.example/base")
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        let e = Config::load_from(env(&[("GRANTRY_BIND", "nowhere")]), &[]).expect_err("bad bind");
        assert!(e.to_string().starts_with("GRANTRY_BIND is invalid"), "{e}");
        let e = Config::load_from(env(&[("GRANTRY_CONFIG", "/nonexistent/g.toml")]), &[])
            .expect_err("no file");
        assert!(
            e.to_string().starts_with("GRANTRY_CONFIG is invalid"),
            "{e}"
        );
        let c = Config::load_from(env(&[]), &[]).expect("config");
        let e = c.keyring().expect_err("no key");
        assert!(
            e.to_string()
                .starts_with("GRANTRY_ENCRYPTION_KEY is required"),
            "{e}"
        );
        let c =
            Config::load_from(env(&[("GRANTRY_ENCRYPTION_KEY", "c2hvcnQ=")]), &[]).expect("config");
        let e = c.keyring().expect_err("short key");
        assert!(
            e.to_string()
                .starts_with("GRANTRY_ENCRYPTION_KEY is invalid"),
            "{e}"
        );
        assert!(!e.to_string().contains("c2hvcnQ"));
        let e = c.require_jwt_secret().expect_err("no jwt");
        assert!(
            e.to_string().starts_with("GRANTRY_JWT_SECRET is required"),
            "{e}"
        );
    }

    #[test]
    fn http_and_security_settings_parse_and_name_their_variable() {
        let c = Config::load_from(env(&[]), &[]).expect("config");
        assert_eq!(c.http, HttpLimits::default());
        assert!(c.access_token_route);
        assert!(c.csrf_allowed_origins.is_empty());
        assert!(c.metrics_token.is_none());

        let c = Config::load_from(
            env(&[
                ("GRANTRY_HEADER_READ_TIMEOUT", "5"),
                ("GRANTRY_REQUEST_TIMEOUT", "30"),
                ("GRANTRY_KEEP_ALIVE_TIMEOUT", "0"),
                ("GRANTRY_MAX_CONNECTIONS", "64"),
                (
                    "GRANTRY_CSRF_ALLOWED_ORIGINS",
                    "https://chat.example.com, http://localhost:3000/",
                ),
                ("GRANTRY_ACCESS_TOKEN_ROUTE", "false"),
                ("GRANTRY_METRICS_TOKEN", "a-metrics-token-of-some-length"),
            ]),
            &[],
        )
        .expect("config");
        assert_eq!(
            c.http,
            HttpLimits {
                header_read_timeout: std::time::Duration::from_secs(5),
                request_timeout: std::time::Duration::from_secs(30),
                keep_alive_timeout: std::time::Duration::ZERO,
                max_connections: 64,
            }
        );
        assert_eq!(
            c.csrf_allowed_origins
                .iter()
                .map(url::Origin::ascii_serialization)
                .collect::<Vec<_>>(),
            ["https://chat.example.com", "http://localhost:3000"]
        );
        assert!(!c.access_token_route);
        let settings = c.api_settings();
        assert!(
            settings
                .metrics_token
                .as_ref()
                .is_some_and(|t| t.matches("a-metrics-token-of-some-length"))
        );
        assert!(!format!("{settings:?} {c:?}").contains("a-metrics-token-of-some-length"));

        for (variable, value) in [
            ("GRANTRY_HEADER_READ_TIMEOUT", "0"),
            ("GRANTRY_REQUEST_TIMEOUT", "soon"),
            ("GRANTRY_KEEP_ALIVE_TIMEOUT", "-1"),
            ("GRANTRY_MAX_CONNECTIONS", "0"),
            ("GRANTRY_CSRF_ALLOWED_ORIGINS", "chat.example.com"),
            (
                "GRANTRY_CSRF_ALLOWED_ORIGINS",
                "https://chat.example.com/app",
            ),
            ("GRANTRY_CSRF_ALLOWED_ORIGINS", "ftp://chat.example.com"),
            ("GRANTRY_ACCESS_TOKEN_ROUTE", "maybe"),
            ("GRANTRY_METRICS_TOKEN", "short-token"),
        ] {
            let e = Config::load_from(env(&[(variable, value)]), &[]).expect_err(value);
            let line = e.to_string();
            assert!(
                line.starts_with(&format!("{variable} is invalid")),
                "{line}"
            );
            assert!(!line.contains('\n'), "{line}");
            if variable == "GRANTRY_METRICS_TOKEN" {
                assert!(!line.contains(value), "{line}");
            }
        }
    }

    #[test]
    fn maintenance_and_metrics_settings_parse_and_are_bounded() {
        let c = Config::load_from(env(&[]), &[]).expect("defaults");
        let m = c.maintenance_settings();
        assert_eq!((m.concurrency, m.batch_size), (8, 500));
        assert_eq!(c.metrics_counts_ttl, std::time::Duration::from_secs(60));
        let c = Config::load_from(
            env(&[
                ("GRANTRY_MAINTENANCE_CONCURRENCY", "3"),
                ("GRANTRY_MAINTENANCE_BATCH", "50"),
                ("GRANTRY_METRICS_COUNTS_TTL", "0"),
            ]),
            &[],
        )
        .expect("config");
        let m = c.maintenance_settings();
        assert_eq!((m.concurrency, m.batch_size), (3, 50));
        assert!(c.metrics_counts_ttl.is_zero());
        for (variable, value) in [
            ("GRANTRY_MAINTENANCE_CONCURRENCY", "0"),
            ("GRANTRY_MAINTENANCE_CONCURRENCY", "eight"),
            ("GRANTRY_MAINTENANCE_BATCH", "5"),
            ("GRANTRY_METRICS_COUNTS_TTL", "-1"),
        ] {
            let e = Config::load_from(env(&[(variable, value)]), &[]).expect_err(value);
            assert!(
                e.to_string().starts_with(&format!("{variable} is invalid")),
                "{e}"
            );
        }
    }

    #[test]
    fn the_database_pool_size_is_read_and_bounded() {
        let c = Config::load_from(env(&[]), &[]).expect("defaults");
        assert_eq!(c.db_max_connections, None);
        let c =
            Config::load_from(env(&[("GRANTRY_DB_MAX_CONNECTIONS", "32")]), &[]).expect("config");
        assert_eq!(c.db_max_connections, Some(32));
        for value in ["0", "1001", "many"] {
            let e = Config::load_from(env(&[("GRANTRY_DB_MAX_CONNECTIONS", value)]), &[])
                .expect_err(value);
            assert!(
                e.to_string()
                    .starts_with("GRANTRY_DB_MAX_CONNECTIONS is invalid"),
                "{e}"
            );
        }
    }

    #[test]
    fn token_claims_and_the_pending_state_cap_are_read() {
        let c = Config::load_from(env(&[("GRANTRY_CONFIG", "")]), &[]).expect("config");
        assert_eq!(
            (c.jwt_issuer, c.jwt_audience, c.max_pending_states),
            (None, None, DEFAULT_MAX_PENDING_STATES)
        );
        let c = Config::load_from(
            env(&[
                ("GRANTRY_JWT_ISSUER", " https://chat.example "),
                ("GRANTRY_JWT_AUDIENCE", "grantry"),
                ("GRANTRY_MAX_PENDING_STATES", "3"),
            ]),
            &[],
        )
        .expect("config");
        assert_eq!(c.jwt_issuer.as_deref(), Some("https://chat.example"));
        assert_eq!(c.jwt_audience.as_deref(), Some("grantry"));
        assert_eq!(c.max_pending_states, 3);
        for bad in ["0", "1001", "ten", "-1"] {
            let e = Config::load_from(env(&[("GRANTRY_MAX_PENDING_STATES", bad)]), &[])
                .expect_err("refused");
            assert!(
                e.to_string()
                    .starts_with("GRANTRY_MAX_PENDING_STATES is invalid"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_broken_file_never_echoes_a_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.toml");
        std::fs::write(&path, "jwt_secret = \"s3cret-value\nbind = 1\n").expect("write");
        let e = Config::load_from(
            env(&[("GRANTRY_CONFIG", path.to_str().expect("utf8"))]),
            &[],
        )
        .expect_err("broken toml");
        assert!(!e.to_string().contains("s3cret-value"), "{e}");
        std::fs::write(&path, "jwt_secret = 123456\n").expect("write");
        let e = Config::load_from(
            env(&[("GRANTRY_CONFIG", path.to_str().expect("utf8"))]),
            &[],
        )
        .expect_err("wrong type");
        assert!(
            e.to_string().starts_with("GRANTRY_JWT_SECRET is invalid"),
            "{e}"
        );
        assert!(!e.to_string().contains("123456"), "{e}");
    }

    #[test]
    fn debug_hides_secrets() {
        let c = Config::load_from(
            env(&[
                ("GRANTRY_ENCRYPTION_KEY", "super-secret-key"),
                ("GRANTRY_JWT_SECRET", "jwt-secret-value"),
                ("DATABASE_URL", "postgres://app:hunter2@db.example/grantry"),
                ("ATLASSIAN_CLIENT_SECRET", "client-secret-value"),
            ]),
            &["atlassian"],
        )
        .expect("config");
        let shown = format!("{c:?}");
        for secret in [
            "super-secret-key",
            "jwt-secret-value",
            "hunter2",
            "client-secret-value",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked in {shown}");
        }
        assert_eq!(
            c.database_url.to_string(),
            "postgres://app:redacted@db.example/grantry"
        );
    }
}
