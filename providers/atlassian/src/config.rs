//! Configuration of the Atlassian provider (`ATLASSIAN_*`, `[providers.atlassian]`).

use grantry_core::{ClientSecret, ConfigError, ProviderSettings, ProvidersConfig, ScopeSet};
use std::time::Duration;

use url::{Host, Url};

/// Default authorization host.
pub const DEFAULT_AUTH_URL: &str = "https://auth.atlassian.com";
/// Default API gateway.
pub const DEFAULT_API_URL: &str = "https://api.atlassian.com";
/// Scopes asked for when `ATLASSIAN_OAUTH_SCOPE` is unset.
pub const DEFAULT_SCOPES: &str =
    "read:me read:jira-user read:jira-work read:confluence-content.all offline_access";

/// The scopes every content route needs on a real site: the default scopes plus Confluence
/// search, spaces and pages (v2) and attachment downloads. A grant without one of them gets
/// `403 insufficient_scope` from the routes that need it.
pub const CONTENT_SCOPES: &str = "read:me read:jira-user read:jira-work \
     read:confluence-content.all search:confluence read:space:confluence read:page:confluence \
     readonly:content.attachment:confluence offline_access";

/// Default timeout of one upstream call, in seconds.
pub const DEFAULT_HTTP_TIMEOUT_SECS: u64 = 15;

/// The scopes every Jira dynamic-webhook operation needs; added to the default scopes when
/// `ATLASSIAN_WEBHOOK_EVENTS` is set.
pub const WEBHOOK_SCOPES: [&str; 2] = ["read:jira-work", "manage:jira-webhook"];

/// The events a Jira dynamic webhook may subscribe to (Jira's `WebhookDetails.events`).
pub const JIRA_WEBHOOK_EVENTS: [&str; 20] = [
    "jira:issue_created",
    "jira:issue_updated",
    "jira:issue_deleted",
    "comment_created",
    "comment_updated",
    "comment_deleted",
    "issue_property_set",
    "issue_property_deleted",
    "sprint_created",
    "sprint_updated",
    "sprint_closed",
    "sprint_deleted",
    "sprint_started",
    "jira:version_released",
    "jira:version_unreleased",
    "jira:version_created",
    "jira:version_moved",
    "jira:version_updated",
    "jira:version_merged",
    "jira:version_deleted",
];

/// The setting that names the Jira events; set means the webhooks are on.
const EVENTS_KEY: &str = "webhook_events";
/// The setting that holds the JQL filter of the webhooks.
const JQL_KEY: &str = "webhook_jql";
/// The variable of the public URL (a server setting, not a provider one).
const PUBLIC_URL_VARIABLE: &str = "GRANTRY_PUBLIC_URL";
/// The variable of the event endpoints (a server setting, not a provider one).
const EVENT_URL_VARIABLE: &str = "GRANTRY_WEBHOOK_URL";

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
    ///
    /// With `ATLASSIAN_WEBHOOK_EVENTS` set, the default scopes gain [`WEBHOOK_SCOPES`], and an
    /// `ATLASSIAN_OAUTH_SCOPE` without them is an error.
    pub fn from_settings(s: &ProviderSettings) -> Result<Self, ConfigError> {
        let client_id = s.require("client_id")?.to_owned();
        let client_secret = s.require_secret("client_secret")?;
        let redirect_uri = s.url("redirect_uri", None)?;
        let webhooks = s.get(EVENTS_KEY).is_some();
        let scopes = match s.get("oauth_scope") {
            None if webhooks => ScopeSet::from_names(
                ScopeSet::parse(DEFAULT_SCOPES)
                    .iter()
                    .chain(WEBHOOK_SCOPES)
                    .map(str::to_owned),
            ),
            None => ScopeSet::parse(DEFAULT_SCOPES),
            Some(text) => ScopeSet::parse(text),
        };
        if scopes.is_empty() {
            return Err(ConfigError::Invalid {
                variable: s.variable("oauth_scope"),
                reason: "no scope given".into(),
            });
        }
        let missing = scopes.missing(&ScopeSet::from_names(WEBHOOK_SCOPES));
        if webhooks && !missing.is_empty() {
            return Err(ConfigError::Invalid {
                variable: s.variable("oauth_scope"),
                reason: format!(
                    "lacks {missing}, which Jira webhooks need ({} is set); add them, or unset {} to use the default scopes",
                    s.variable(EVENTS_KEY),
                    s.variable("oauth_scope"),
                ),
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

/// Jira dynamic webhooks of Atlassian Cloud connections, on when `ATLASSIAN_WEBHOOK_EVENTS` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JiraWebhookConfig {
    /// The Jira events subscribed to (`ATLASSIAN_WEBHOOK_EVENTS`), in the order given.
    pub events: Vec<String>,
    /// The JQL filter of every webhook (`ATLASSIAN_WEBHOOK_JQL`).
    pub jql: String,
    /// Where Atlassian reaches grantry (`GRANTRY_PUBLIC_URL`).
    pub public_url: Url,
}

impl JiraWebhookConfig {
    /// Reads the webhook settings: `None` when `ATLASSIAN_WEBHOOK_EVENTS` is unset; an error
    /// naming the variable for an unknown event, a missing JQL filter, a missing or unusable
    /// public URL (`providers.public_url()`), or no event delivery (`providers.event_delivery()`).
    pub fn from_settings(
        s: &ProviderSettings,
        providers: &ProvidersConfig,
    ) -> Result<Option<Self>, ConfigError> {
        let Some(text) = s.get(EVENTS_KEY) else {
            return Ok(None);
        };
        let mut events: Vec<String> = Vec::new();
        for event in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
        {
            if !JIRA_WEBHOOK_EVENTS.contains(&event) {
                return Err(ConfigError::Invalid {
                    variable: s.variable(EVENTS_KEY),
                    reason: format!(
                        "`{event}` is not a Jira webhook event; Jira knows: {}",
                        JIRA_WEBHOOK_EVENTS.join(", ")
                    ),
                });
            }
            if !events.iter().any(|e| e == event) {
                events.push(event.to_owned());
            }
        }
        if events.is_empty() {
            return Err(ConfigError::Invalid {
                variable: s.variable(EVENTS_KEY),
                reason: "no event given (a comma-separated list such as jira:issue_created,jira:issue_updated)".into(),
            });
        }
        let jql = s
            .get(JQL_KEY)
            .ok_or_else(|| ConfigError::Missing {
                variable: s.variable(JQL_KEY),
                context: format!(
                    " when {} is set: Jira registers a webhook only with a JQL filter (such as `project = ACME`)",
                    s.variable(EVENTS_KEY)
                ),
            })?
            .to_owned();
        let public_url = providers.public_url().ok_or_else(|| ConfigError::Missing {
            variable: PUBLIC_URL_VARIABLE.into(),
            context: format!(
                " when {} is set: it is where Atlassian delivers the Jira webhooks",
                s.variable(EVENTS_KEY)
            ),
        })?;
        if public_url.scheme() != "https" && !is_loopback(public_url) {
            return Err(ConfigError::Invalid {
                variable: PUBLIC_URL_VARIABLE.into(),
                reason: format!(
                    "Jira delivers webhooks to https:// URLs only (http:// on a loopback host for tests), and {} is set",
                    s.variable(EVENTS_KEY)
                ),
            });
        }
        if public_url.query().is_some() || public_url.fragment().is_some() {
            return Err(ConfigError::Invalid {
                variable: PUBLIC_URL_VARIABLE.into(),
                reason: "the webhook callbacks are built under it: no query or fragment".into(),
            });
        }
        if !providers.event_delivery() {
            return Err(ConfigError::Missing {
                variable: EVENT_URL_VARIABLE.into(),
                context: format!(
                    " when {} is set: Jira deliveries become grantry events, and events are recorded only for configured endpoints",
                    s.variable(EVENTS_KEY)
                ),
            });
        }
        Ok(Some(Self {
            events,
            jql,
            public_url: public_url.clone(),
        }))
    }

    /// The callback URL of the path secret `secret`:
    /// `{public_url}/api/v1/atlassian/webhooks/jira/{secret}`, keeping the public URL's path.
    pub fn callback_url(&self, secret: &str) -> Url {
        let mut url = self.public_url.clone();
        let path = format!(
            "{}/api/v1/{}/webhooks/jira/{secret}",
            url.path().trim_end_matches('/'),
            crate::ID
        );
        url.set_path(&path);
        url
    }
}

/// Whether the URL's host is a loopback one (`localhost`, 127.0.0.0/8, `::1`).
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> ProviderSettings {
        let mut values: BTreeMap<String, String> = [
            ("enabled", "true"),
            ("client_id", "cid"),
            ("client_secret", "client-secret-value"),
            (
                "redirect_uri",
                "https://chat.example.com/settings/connections",
            ),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (k, v) in pairs {
            values.insert((*k).to_owned(), (*v).to_owned());
        }
        ProviderSettings::new(crate::ID, values)
    }

    fn public() -> Url {
        Url::parse("https://grantry.example.com").expect("url")
    }

    fn webhooks(
        pairs: &[(&str, &str)],
        url: Option<&Url>,
    ) -> Result<Option<JiraWebhookConfig>, String> {
        let providers = ProvidersConfig::new([])
            .with_public_url(url.cloned())
            .with_event_delivery(true);
        JiraWebhookConfig::from_settings(&settings(pairs), &providers).map_err(|e| e.to_string())
    }

    #[test]
    fn unset_events_leave_the_feature_off_and_the_scopes_alone() {
        assert_eq!(webhooks(&[], None), Ok(None));
        assert_eq!(webhooks(&[("webhook_events", "  ")], None), Ok(None));
        let config = AtlassianConfig::from_settings(&settings(&[])).expect("config");
        assert_eq!(config.scopes, ScopeSet::parse(DEFAULT_SCOPES));
    }

    #[test]
    fn events_are_parsed_and_checked_against_jira() {
        let config = webhooks(
            &[
                (
                    "webhook_events",
                    "jira:issue_created, jira:issue_updated,comment_created jira:issue_created",
                ),
                ("webhook_jql", "project = ACME"),
            ],
            Some(&public()),
        )
        .expect("valid")
        .expect("on");
        assert_eq!(
            config.events,
            [
                "jira:issue_created",
                "jira:issue_updated",
                "comment_created"
            ]
        );
        assert_eq!(config.jql, "project = ACME");
        let err = webhooks(
            &[
                ("webhook_events", "jira:issue_created,issue_updated"),
                ("webhook_jql", "project = A"),
            ],
            Some(&public()),
        )
        .expect_err("unknown event");
        assert!(
            err.starts_with(
                "ATLASSIAN_WEBHOOK_EVENTS is invalid: `issue_updated` is not a Jira webhook event"
            ),
            "{err}"
        );
        let err = webhooks(
            &[("webhook_events", ", ,"), ("webhook_jql", "project = A")],
            Some(&public()),
        )
        .expect_err("no event");
        assert!(
            err.starts_with("ATLASSIAN_WEBHOOK_EVENTS is invalid: no event given"),
            "{err}"
        );
    }

    #[test]
    fn events_without_jql_are_an_error_naming_the_variable() {
        let err = webhooks(&[("webhook_events", "jira:issue_updated")], Some(&public()))
            .expect_err("no jql");
        assert_eq!(
            err,
            "ATLASSIAN_WEBHOOK_JQL is required when ATLASSIAN_WEBHOOK_EVENTS is set: Jira registers a webhook only with a JQL filter (such as `project = ACME`)"
        );
    }

    #[test]
    fn events_without_a_public_url_are_an_error_naming_it() {
        let pairs = [
            ("webhook_events", "jira:issue_updated"),
            ("webhook_jql", "project = ACME"),
        ];
        let err = webhooks(&pairs, None).expect_err("no public url");
        assert_eq!(
            err,
            "GRANTRY_PUBLIC_URL is required when ATLASSIAN_WEBHOOK_EVENTS is set: it is where Atlassian delivers the Jira webhooks"
        );
        let plain = Url::parse("http://grantry.example.com").expect("url");
        let err = webhooks(&pairs, Some(&plain)).expect_err("http");
        assert!(
            err.starts_with("GRANTRY_PUBLIC_URL is invalid: Jira delivers webhooks to https://"),
            "{err}"
        );
        let loopback = Url::parse("http://127.0.0.1:8080").expect("url");
        assert!(webhooks(&pairs, Some(&loopback)).is_ok());
        let query = Url::parse("https://grantry.example.com/?a=b").expect("url");
        assert!(webhooks(&pairs, Some(&query)).is_err());
    }

    #[test]
    fn events_without_event_endpoints_are_an_error_naming_them() {
        let pairs = [
            ("webhook_events", "jira:issue_updated"),
            ("webhook_jql", "project = ACME"),
        ];
        let providers = ProvidersConfig::new([]).with_public_url(Some(public()));
        let err = JiraWebhookConfig::from_settings(&settings(&pairs), &providers)
            .expect_err("no event endpoint");
        assert_eq!(
            err.to_string(),
            "GRANTRY_WEBHOOK_URL is required when ATLASSIAN_WEBHOOK_EVENTS is set: Jira deliveries become grantry events, and events are recorded only for configured endpoints"
        );
    }

    #[test]
    fn events_add_the_webhook_scopes_to_the_defaults() {
        let config =
            AtlassianConfig::from_settings(&settings(&[("webhook_events", "jira:issue_updated")]))
                .expect("config");
        assert!(
            config.scopes.contains("manage:jira-webhook"),
            "{}",
            config.scopes
        );
        assert!(config.scopes.contains("read:jira-work"));
        assert!(
            ScopeSet::parse(DEFAULT_SCOPES)
                .iter()
                .all(|s| config.scopes.contains(s))
        );
    }

    #[test]
    fn an_explicit_scope_without_the_webhook_scopes_is_an_error() {
        let err = AtlassianConfig::from_settings(&settings(&[
            ("webhook_events", "jira:issue_updated"),
            ("oauth_scope", "read:me read:jira-work offline_access"),
        ]))
        .expect_err("scope missing");
        let text = err.to_string();
        assert!(
            text.starts_with("ATLASSIAN_OAUTH_SCOPE is invalid: lacks manage:jira-webhook, which Jira webhooks need"),
            "{text}"
        );
        assert!(!text.contains("client-secret-value"));
        let config = AtlassianConfig::from_settings(&settings(&[
            ("webhook_events", "jira:issue_updated"),
            (
                "oauth_scope",
                "read:me read:jira-work manage:jira-webhook offline_access",
            ),
        ]))
        .expect("scopes given");
        assert_eq!(config.scopes.len(), 4);
        let without = AtlassianConfig::from_settings(&settings(&[("oauth_scope", "read:me")]))
            .expect("feature off: any scope");
        assert_eq!(without.scopes.len(), 1);
    }

    #[test]
    fn callback_urls_keep_the_public_path() {
        let pairs = [
            ("webhook_events", "jira:issue_updated"),
            ("webhook_jql", "project = ACME"),
        ];
        let at_root = webhooks(&pairs, Some(&public())).expect("ok").expect("on");
        assert_eq!(
            at_root.callback_url("s3cr3t").as_str(),
            "https://grantry.example.com/api/v1/atlassian/webhooks/jira/s3cr3t"
        );
        let nested = Url::parse("https://example.com/tools/grantry/").expect("url");
        let nested = webhooks(&pairs, Some(&nested)).expect("ok").expect("on");
        assert_eq!(
            nested.callback_url("s3cr3t").as_str(),
            "https://example.com/tools/grantry/api/v1/atlassian/webhooks/jira/s3cr3t"
        );
    }
}
