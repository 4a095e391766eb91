//! What data cannot say: code a provider adds to its spec.

use async_trait::async_trait;
use grantry_core::store::ConnectionRecord;
use grantry_core::{AccessToken, ProviderContext, ProviderError, Resource};
use serde_json::{Map, Value};

use crate::OAuthSpec;

/// What [`Hooks::resources`] is given: the upstream client, the grant's token, the account
/// document and the spec.
#[derive(Clone, Copy)]
pub struct AccountCall<'a> {
    /// The provider's upstream HTTP client.
    pub http: &'a reqwest::Client,
    /// The grant's access token.
    pub token: &'a AccessToken,
    /// The account document the account was read from.
    pub document: &'a Map<String, Value>,
    /// The provider's spec.
    pub spec: &'a OAuthSpec,
}

/// The document holds personal data: `Debug` lists its keys only.
impl std::fmt::Debug for AccountCall<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountCall")
            .field("token", self.token)
            .field("document_keys", &self.document.keys().collect::<Vec<_>>())
            .field("spec", &self.spec.id)
            .finish_non_exhaustive()
    }
}

/// The code of a provider beyond its [`OAuthSpec`]; every hook has a default.
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// The resources (sites, workspaces…) the grant reaches; none by default.
    async fn resources(&self, _call: AccountCall<'_>) -> Result<Vec<Resource>, ProviderError> {
        Ok(Vec::new())
    }

    /// Extra routes under `/api/v1/{id}`, given the server's context (for [`grantry_core::FreshToken`],
    /// see [`grantry_core::RouteState`]) and the upstream client; none by default.
    fn routes(&self, _context: &ProviderContext, _http: &reqwest::Client) -> Option<axum::Router> {
        None
    }

    /// The OpenAPI description of [`routes`](Hooks::routes); none by default.
    fn openapi(&self) -> Option<utoipa::openapi::OpenApi> {
        None
    }

    /// After a grant was stored ([`Provider::connected`](grantry_core::Provider::connected));
    /// nothing by default.
    async fn connected(&self, _call: ConnectionCall<'_>) {}

    /// Before a connection is deleted
    /// ([`Provider::disconnecting`](grantry_core::Provider::disconnecting)); nothing by default.
    async fn disconnecting(&self, _call: ConnectionCall<'_>) {}

    /// Each maintenance pass ([`Provider::maintain`](grantry_core::Provider::maintain));
    /// nothing by default.
    async fn maintain(
        &self,
        _context: &ProviderContext,
        _http: &reqwest::Client,
        _now: chrono::DateTime<chrono::Utc>,
    ) {
    }
}

/// What the connection hooks are given: the server's context, the upstream client and the
/// connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionCall<'a> {
    /// The server's context (fresh tokens, the store).
    pub context: &'a ProviderContext,
    /// The provider's upstream HTTP client.
    pub http: &'a reqwest::Client,
    /// The connection.
    pub connection: &'a ConnectionRecord,
}

/// No hooks: the provider is its spec alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {}
