//! grantry-atlassian-dc: Jira and Confluence Data Center (8.22+ / 7.17+) as grantry providers,
//! over the OAuth 2.0 of their "incoming application links".
//!
//! One factory yields one provider per configured instance: `[providers.ID] kind =
//! "atlassian-dc"` (or `ID_KIND=atlassian-dc`) with `base_url`, `product` (`jira` or
//! `confluence`), `client_id`, `client_secret`, `redirect_uri` and `oauth_scope` (default
//! `READ`). What Data Center asks, as data: authorization and tokens under
//! `{base_url}/rest/oauth2/latest/`, PKCE S256, form-encoded token requests with the client in the
//! body, `redirect_uri` on refresh too, rotating refresh tokens with no reuse leeway, no
//! revocation endpoint. The account is the product's current user, keyed by its stable `key`
//! (never the renameable name); the grant's one resource is the instance itself.
//!
//! Content routes come from other crates, as [`DcRouteExtension`]s (grantry-atlassian-content
//! adds search, issues, pages and the proxy with the Cloud routes' shapes). See
//! `docs/atlassian-data-center.md`.

pub mod config;

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::extract::FromRef;
use grantry_core::{
    ConfigError, Provider, ProviderContext, ProviderError, ProviderFactory, ProvidersConfig,
    RefreshPolicy, Resource, ScopeInfo,
};
use grantry_protocol::{
    AccountCall, AccountFields, BodyEncoding, Client, Endpoints, Hooks, OAuthProvider, OAuthSpec,
    TokenAuthMethod, scope,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use url::Url;

pub use config::{DEFAULT_SCOPES, DcConfig, KIND, KNOWN_SCOPES, Product};

/// The factory id; instances take the ids of their configuration sections.
pub const FACTORY_ID: &str = "atlassian-dc";

/// Data Center's scopes; each includes the ones before it, all capped by the user's own
/// permissions.
pub static SCOPES: &[ScopeInfo] = &[
    scope("READ", "View what the user can view"),
    scope(
        "WRITE",
        "Create and change what the user can change (includes READ)",
    ),
    scope(
        "ADMIN",
        "Administer projects or spaces the user administers (includes WRITE)",
    ),
    scope(
        "SYSTEM_ADMIN",
        "Administer the instance, when the user is a system administrator (includes ADMIN)",
    ),
];

/// One Data Center instance as a provider: its spec with [`AtlassianDc`] as its hooks.
pub type AtlassianDcProvider = OAuthProvider<AtlassianDc>;

/// The hooks of one instance and the state of its routes: the configuration and the HTTP client.
#[derive(Debug, Clone)]
pub struct AtlassianDc {
    config: DcConfig,
    http: reqwest::Client,
}

/// The part of the instance's application-links manifest grantry reads.
#[derive(Deserialize)]
struct Manifest {
    name: Option<String>,
}

impl AtlassianDc {
    /// The hooks of a validated instance.
    pub fn new(config: DcConfig) -> Result<Self, ConfigError> {
        let http = grantry_protocol::http::client(config.http_timeout).map_err(|e| {
            ConfigError::Invalid {
                variable: format!(
                    "{}_BASE_URL",
                    grantry_core::provider::env_prefix(&config.id)
                ),
                reason: format!("cannot build the HTTP client: {e}"),
            }
        })?;
        Ok(Self { config, http })
    }

    /// The configuration in use.
    pub fn config(&self) -> &DcConfig {
        &self.config
    }

    /// The upstream HTTP client (timeouts, no redirects), shared with the provider.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `{base_url}/{path}`, the context path kept.
    pub fn url(&self, path: &str) -> Url {
        let mut url = self.config.base_url.clone();
        let joined = format!(
            "{}/{}",
            url.path().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        url.set_path(&joined);
        url
    }

    /// The id of the instance as a resource: stable for its base URL.
    pub fn instance_id(&self) -> String {
        let digest = Sha256::digest(self.config.base_url.as_str().as_bytes());
        format!("dc-{}", &hex::encode(digest)[..24])
    }

    /// The provider: Data Center's OAuth 2.0 as data plus these hooks.
    pub fn provider(self) -> AtlassianDcProvider {
        let c = &self.config;
        let client = Client {
            id: c.client_id.clone(),
            secret: Some(c.client_secret.clone()),
            redirect_uri: c.redirect_uri.clone(),
        };
        let endpoints = Endpoints {
            authorization: self.url("rest/oauth2/latest/authorize"),
            token: self.url("rest/oauth2/latest/token"),
            revocation: None,
            account: self.url(match c.product {
                Product::Jira => "rest/api/2/myself",
                Product::Confluence => "rest/api/user/current",
            }),
        };
        let name = format!("{} Data Center", c.product.name());
        let mut spec = OAuthSpec::new(&c.id, &name, client, endpoints);
        spec.scope_catalogue = SCOPES;
        spec.scopes = c.scopes.clone();
        spec.auth_method = TokenAuthMethod::ClientSecretPost;
        spec.body = BodyEncoding::Form;
        spec.pkce = true;
        spec.redirect_uri_on_refresh = true;
        spec.refresh_policy = RefreshPolicy {
            rotates: true,
            reuse_leeway: std::time::Duration::ZERO,
            ..RefreshPolicy::default()
        };
        spec.account_fields = match c.product {
            Product::Jira => AccountFields::new("key", "displayName", "emailAddress"),
            Product::Confluence => AccountFields::new("userKey", "displayName", "email"),
        };
        spec.http_timeout = c.http_timeout;
        spec.revocation_hint = Some(format!(
            "in {}, open your profile, then Authorized applications, and revoke the app.",
            c.product.name()
        ));
        let http = self.http.clone();
        OAuthProvider::with_http(spec, self, http)
    }

    /// The instance's title from its application-links manifest; its host when that fails.
    async fn title(&self, call: AccountCall<'_>) -> String {
        let url = self.url("rest/applinks/1.0/manifest");
        let what = "the application-links manifest";
        match grantry_protocol::http::get_json::<Manifest>(call.http, url, call.token, what).await {
            Ok(Manifest { name: Some(name) }) if !name.trim().is_empty() => name.trim().to_owned(),
            other => {
                if let Err(e) = other {
                    tracing::debug!(provider = %self.config.id, error = %e, "no instance title");
                }
                self.config
                    .base_url
                    .host_str()
                    .unwrap_or("Data Center")
                    .to_owned()
            }
        }
    }
}

#[async_trait]
impl Hooks for AtlassianDc {
    /// The instance itself: id stable per base URL, name from its own title.
    async fn resources(&self, call: AccountCall<'_>) -> Result<Vec<Resource>, ProviderError> {
        Ok(vec![Resource {
            id: self.instance_id(),
            name: self.title(call).await,
            url: Some(self.config.base_url.to_string()),
            scopes: call.spec.scopes.to_vec(),
            avatar_url: None,
        }])
    }

    fn routes(&self, context: &ProviderContext, _http: &reqwest::Client) -> Option<Router> {
        let state = DcRoutes {
            provider: Arc::new(self.clone()),
            context: context.clone(),
        };
        let mut extensions = inventory::iter::<DcRouteExtension>.into_iter().peekable();
        extensions.peek()?;
        Some(extensions.fold(Router::new(), |router, extension| {
            router.merge((extension.routes)(state.clone()))
        }))
    }

    fn openapi(&self) -> Option<utoipa::openapi::OpenApi> {
        let mut extensions = inventory::iter::<DcRouteExtension>.into_iter();
        let first = (extensions.next()?.openapi)();
        Some(extensions.fold(first, |mut doc, extension| {
            doc.merge((extension.openapi)());
            doc
        }))
    }
}

/// Routes another crate adds under `/api/v1/{id}` of every Data Center instance: linking that
/// crate is all it takes (it submits one with `inventory::submit!`).
pub struct DcRouteExtension {
    /// The extension's routes, relative to `/api/v1/{id}`, over the instance's route state.
    pub routes: fn(DcRoutes) -> Router,
    /// The OpenAPI description of those routes, paths relative to `/api/v1/{id}`.
    pub openapi: fn() -> utoipa::openapi::OpenApi,
}

inventory::collect!(DcRouteExtension);

/// The state of an instance's routes: the instance and the context the server handed over.
#[derive(Clone)]
pub struct DcRoutes {
    provider: Arc<AtlassianDc>,
    context: ProviderContext,
}

impl FromRef<DcRoutes> for Arc<AtlassianDc> {
    fn from_ref(routes: &DcRoutes) -> Self {
        routes.provider.clone()
    }
}

impl FromRef<DcRoutes> for ProviderContext {
    fn from_ref(routes: &DcRoutes) -> Self {
        routes.context.clone()
    }
}

fn build(config: &ProvidersConfig) -> Result<Vec<Arc<dyn Provider>>, ConfigError> {
    let mut built: Vec<Arc<dyn Provider>> = Vec::new();
    for section in config.sections() {
        if config::selects(section)? {
            let hooks = AtlassianDc::new(config::from_settings(section)?)?;
            built.push(Arc::new(hooks.provider()));
        }
    }
    Ok(built)
}

grantry_core::register_provider!(ProviderFactory {
    id: FACTORY_ID,
    name: "Atlassian Data Center (Jira, Confluence)",
    build,
});

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use grantry_core::ProviderSettings;

    use super::*;

    fn instance(base: &str, product: &str) -> AtlassianDc {
        let values: BTreeMap<String, String> = [
            ("kind", "atlassian-dc"),
            ("base_url", base),
            ("product", product),
            ("client_id", "id"),
            ("client_secret", "secret"),
            ("redirect_uri", "https://chat.example.com/cb"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let config = config::from_settings(&ProviderSettings::new("jira-dc", values)).expect("ok");
        AtlassianDc::new(config).expect("hooks")
    }

    #[test]
    fn endpoints_keep_the_context_path() {
        let dc = instance("https://jira.example.com/jira/", "jira");
        assert_eq!(
            dc.url("rest/oauth2/latest/token").as_str(),
            "https://jira.example.com/jira/rest/oauth2/latest/token"
        );
        let root = instance("https://wiki.example.com", "confluence");
        assert_eq!(
            root.url("/rest/api/user/current").as_str(),
            "https://wiki.example.com/rest/api/user/current"
        );
    }

    #[test]
    fn the_instance_id_is_stable_per_base_url() {
        let a = instance("https://jira.example.com/jira", "jira");
        let b = instance("https://jira.example.com/jira/", "jira");
        let c = instance("https://jira2.example.com/jira", "jira");
        assert_eq!(a.instance_id(), b.instance_id());
        assert_ne!(a.instance_id(), c.instance_id());
        assert!(a.instance_id().starts_with("dc-"));
    }

    #[test]
    fn the_spec_says_what_data_center_asks() {
        let provider = instance("https://jira.example.com/jira", "jira").provider();
        let spec = provider.spec();
        assert!(spec.pkce && spec.redirect_uri_on_refresh);
        assert_eq!(spec.body, BodyEncoding::Form);
        assert_eq!(spec.auth_method, TokenAuthMethod::ClientSecretPost);
        assert!(spec.endpoints.revocation.is_none());
        assert!(spec.refresh_policy.rotates);
        assert_eq!(spec.refresh_policy.reuse_leeway, std::time::Duration::ZERO);
        assert_eq!(
            spec.endpoints.account.as_str(),
            "https://jira.example.com/jira/rest/api/2/myself"
        );
        assert_eq!(spec.account_fields.id, ["key"]);
    }
}
