//! The settings of one Data Center instance (`[providers.ID] kind = "atlassian-dc"`, `ID_*`).

use std::time::Duration;

use grantry_core::{ClientSecret, ConfigError, ProviderSettings, ScopeSet};
use url::{Host, Url};

/// The `kind` that makes a provider section an instance of this crate.
pub const KIND: &str = "atlassian-dc";
/// Scopes asked for when `oauth_scope` is unset.
pub const DEFAULT_SCOPES: &str = "READ";
/// The scopes Data Center knows, weakest first; each includes the ones before it.
pub const KNOWN_SCOPES: [&str; 4] = ["READ", "WRITE", "ADMIN", "SYSTEM_ADMIN"];
/// Default timeout of one upstream call, in seconds.
pub const DEFAULT_HTTP_TIMEOUT_SECS: u64 = 15;

/// The Data Center product an instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    /// Jira Data Center (Jira Software, Jira Service Management).
    Jira,
    /// Confluence Data Center.
    Confluence,
}

impl Product {
    /// `jira` or `confluence`, as configured and as the content routes' path segment.
    pub fn id(self) -> &'static str {
        match self {
            Self::Jira => "jira",
            Self::Confluence => "confluence",
        }
    }

    /// `Jira` or `Confluence`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Jira => "Jira",
            Self::Confluence => "Confluence",
        }
    }
}

/// One validated instance.
#[derive(Debug, Clone)]
pub struct DcConfig {
    /// The provider id (`jira-dc`): routes under `/api/v1/{id}`.
    pub id: String,
    /// The instance's base URL with its context path (`https://jira.example.com/jira`), no
    /// trailing slash.
    pub base_url: Url,
    /// The product the instance runs.
    pub product: Product,
    /// The incoming link's client id.
    pub client_id: String,
    /// The incoming link's client secret.
    pub client_secret: ClientSecret,
    /// The callback URL registered on the incoming link.
    pub redirect_uri: Url,
    /// The scopes asked for.
    pub scopes: ScopeSet,
    /// Longest one upstream call may take.
    pub http_timeout: Duration,
}

fn invalid(s: &ProviderSettings, key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        variable: s.variable(key),
        reason: reason.into(),
    }
}

/// Whether `section` asks for an instance of this kind.
pub fn selects(section: &ProviderSettings) -> Result<bool, ConfigError> {
    match section.get("kind") {
        Some(kind) if kind.eq_ignore_ascii_case(KIND) => section.flag("enabled", true),
        _ => Ok(false),
    }
}

/// `base_url` checked: HTTPS, or plain HTTP on a loopback host only; no query, fragment or
/// credentials; the context path kept without its trailing slash.
fn base_url(s: &ProviderSettings) -> Result<Url, ConfigError> {
    let mut url = s.url("base_url", None)?;
    let loopback = match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if url.scheme() != "https" && !loopback {
        return Err(invalid(
            s,
            "base_url",
            "must be an https URL (plain http only for a loopback host)",
        ));
    }
    if url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(invalid(
            s,
            "base_url",
            "must be the instance's base URL alone: no query, fragment or credentials",
        ));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Ok(url)
}

/// Reads and validates one instance; errors name the variable.
pub fn from_settings(s: &ProviderSettings) -> Result<DcConfig, ConfigError> {
    let id = s.id();
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
    let product = match s.require("product")?.to_ascii_lowercase().as_str() {
        "jira" => Product::Jira,
        "confluence" => Product::Confluence,
        other => {
            return Err(invalid(
                s,
                "product",
                format!("expected jira or confluence, got `{other}`"),
            ));
        }
    };
    let scopes = ScopeSet::parse(s.get("oauth_scope").unwrap_or(DEFAULT_SCOPES));
    if scopes.is_empty() {
        return Err(invalid(s, "oauth_scope", "names no scope"));
    }
    if let Some(unknown) = scopes.iter().find(|scope| !KNOWN_SCOPES.contains(scope)) {
        return Err(invalid(
            s,
            "oauth_scope",
            format!(
                "unknown scope `{unknown}` (Data Center knows {})",
                KNOWN_SCOPES.join(", ")
            ),
        ));
    }
    let http_timeout = match s.get("http_timeout") {
        None => Duration::from_secs(DEFAULT_HTTP_TIMEOUT_SECS),
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=300).contains(n))
            .map(Duration::from_secs)
            .ok_or_else(|| {
                invalid(
                    s,
                    "http_timeout",
                    format!("expected whole seconds from 1 to 300, got `{text}`"),
                )
            })?,
    };
    Ok(DcConfig {
        id: id.to_owned(),
        base_url: base_url(s)?,
        product,
        client_id: s.require("client_id")?.to_owned(),
        client_secret: s.require_secret("client_secret")?,
        redirect_uri: s.url("redirect_uri", None)?,
        scopes,
        http_timeout,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn section(pairs: &[(&str, &str)]) -> ProviderSettings {
        let values: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ProviderSettings::new("jira-dc", values)
    }

    const GOOD: &[(&str, &str)] = &[
        ("kind", "atlassian-dc"),
        ("base_url", "https://jira.example.com/jira/"),
        ("product", "Jira"),
        ("client_id", "id"),
        ("client_secret", "secret"),
        (
            "redirect_uri",
            "https://chat.example.com/settings/connections",
        ),
    ];

    fn with(changes: &[(&str, &str)]) -> ProviderSettings {
        let mut pairs: Vec<(&str, &str)> = GOOD
            .iter()
            .filter(|(k, _)| !changes.iter().any(|(c, _)| c == k))
            .copied()
            .collect();
        pairs.extend(changes.iter().copied().filter(|(_, v)| !v.is_empty()));
        section(&pairs)
    }

    #[test]
    fn a_good_instance_keeps_its_context_path() {
        let c = from_settings(&section(GOOD)).expect("valid");
        assert_eq!(c.base_url.as_str(), "https://jira.example.com/jira");
        assert_eq!(c.product, Product::Jira);
        assert_eq!(c.scopes.to_string(), "READ");
        assert!(selects(&section(GOOD)).expect("flag"));
        assert!(!format!("{c:?}").contains("secret\""), "{c:?}");
    }

    #[test]
    fn loopback_may_be_plain_http_nothing_else_may() {
        assert!(from_settings(&with(&[("base_url", "http://127.0.0.1:8090")])).is_ok());
        assert!(from_settings(&with(&[("base_url", "http://localhost/jira")])).is_ok());
        let err = from_settings(&with(&[("base_url", "http://jira.example.com")]))
            .expect_err("plain http");
        assert!(err.to_string().contains("JIRA_DC_BASE_URL"), "{err}");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (change, variable) in [
            (("product", "bitbucket"), "JIRA_DC_PRODUCT"),
            (("product", ""), "JIRA_DC_PRODUCT"),
            (
                ("oauth_scope", "READ offline_access"),
                "JIRA_DC_OAUTH_SCOPE",
            ),
            (
                ("base_url", "https://jira.example.com/?x=1"),
                "JIRA_DC_BASE_URL",
            ),
            (
                ("base_url", "https://u:p@jira.example.com"),
                "JIRA_DC_BASE_URL",
            ),
            (("base_url", ""), "JIRA_DC_BASE_URL"),
            (("client_secret", ""), "JIRA_DC_CLIENT_SECRET"),
            (("http_timeout", "0"), "JIRA_DC_HTTP_TIMEOUT"),
        ] {
            let err = from_settings(&with(&[change])).expect_err("invalid");
            assert!(err.to_string().contains(variable), "{change:?}: {err}");
        }
    }

    #[test]
    fn scopes_default_to_read_and_may_widen() {
        let c = from_settings(&with(&[("oauth_scope", "READ WRITE")])).expect("valid");
        assert_eq!(c.scopes.to_string(), "READ WRITE");
    }
}
