//! Atlassian's own routes under `/api/v1/atlassian`.

use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use grantry_core::{ApiError, FreshToken, ProviderContext, ProviderError, Resource};

use crate::Atlassian;

/// Routes another crate adds under `/api/v1/atlassian`: linking that crate is all it takes.
///
/// The crate submits one with `inventory::submit!`; the provider's router and OpenAPI document
/// merge every extension linked into the binary. grantry-atlassian-content adds the Jira and
/// Confluence content routes this way. Its paths must not overlap `/sites`, the generic
/// connection routes or another extension's: axum refuses overlapping routes when the router is
/// built, at start-up.
pub struct RouteExtension {
    /// The extension's routes, relative to `/api/v1/atlassian`, over the provider's route state.
    pub routes: fn(Routes) -> Router,
    /// The OpenAPI description of those routes, paths relative to `/api/v1/atlassian`.
    pub openapi: fn() -> utoipa::openapi::OpenApi,
}

inventory::collect!(RouteExtension);

/// The state of Atlassian's routes: the provider and the context the server handed over.
#[derive(Clone)]
pub struct Routes {
    provider: Arc<Atlassian>,
    context: ProviderContext,
}

impl FromRef<Routes> for Arc<Atlassian> {
    fn from_ref(routes: &Routes) -> Self {
        routes.provider.clone()
    }
}

impl FromRef<Routes> for ProviderContext {
    fn from_ref(routes: &Routes) -> Self {
        routes.context.clone()
    }
}

/// `/sites`, the Jira webhook deliveries when they are on, and the routes of every linked
/// [`RouteExtension`].
pub(crate) fn router(provider: Arc<Atlassian>, context: ProviderContext) -> Router {
    let webhooks = provider.webhooks().is_some();
    let state = Routes { provider, context };
    let mut own = Router::new().route("/sites", get(sites));
    if webhooks {
        own = own.route("/webhooks/jira/{secret}", post(crate::webhooks::deliver));
    }
    let own = own.with_state(state.clone());
    inventory::iter::<RouteExtension>
        .into_iter()
        .fold(own, |router, extension| {
            router.merge((extension.routes)(state.clone()))
        })
}

/// The OpenAPI description of `/sites`, of the Jira webhook deliveries when `webhooks`, and of
/// every linked [`RouteExtension`].
pub(crate) fn openapi(webhooks: bool) -> utoipa::openapi::OpenApi {
    let mut doc = <SitesApi as utoipa::OpenApi>::openapi();
    if webhooks {
        doc.merge(<crate::webhooks::JiraWebhooksApi as utoipa::OpenApi>::openapi());
    }
    for extension in inventory::iter::<RouteExtension> {
        doc.merge((extension.openapi)());
    }
    doc
}

/// The OpenAPI description of `/sites`.
#[derive(utoipa::OpenApi)]
#[openapi(paths(sites), components(schemas(Resource, grantry_core::ErrorBody)))]
struct SitesApi;

/// The live accessible-resources of the user's grant, fetched with a fresh token.
#[utoipa::path(get, path = "/sites", tag = "atlassian",
    responses(
        (status = 200, body = Vec<Resource>, description = "the sites, duplicate cloud ids merged"),
        (status = 401, body = grantry_core::ErrorBody, description = "`unauthorized`"),
        (status = 404, body = grantry_core::ErrorBody, description = "`not_connected`"),
        (status = 409, body = grantry_core::ErrorBody, description = "`needs_reauth`"),
        (status = 502, body = grantry_core::ErrorBody, description = "`upstream_unavailable`"),
        (status = 503, body = grantry_core::ErrorBody, description = "`database_unavailable`"),
    ))]
async fn sites(
    State(provider): State<Arc<Atlassian>>,
    token: FreshToken,
) -> Result<Json<Vec<Resource>>, ApiError> {
    provider
        .sites(&token.access.access_token)
        .await
        .map(Json)
        .map_err(|e| upstream_error(&e))
}

fn upstream_error(e: &ProviderError) -> ApiError {
    tracing::warn!(error = %e, "atlassian call failed");
    ApiError::upstream(format!("Atlassian: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_extensions_the_document_lists_sites_only() {
        let doc = serde_json::to_value(openapi(false)).expect("json");
        let paths = doc["paths"].as_object().expect("paths");
        assert!(paths["/sites"].get("get").is_some(), "{doc}");
        assert_eq!(paths.len(), 1, "{doc}");
        assert!(doc["components"]["schemas"]["Resource"].is_object());
    }

    #[test]
    fn with_jira_webhooks_the_delivery_route_is_documented_as_public() {
        let doc = serde_json::to_value(openapi(true)).expect("json");
        let paths = doc["paths"].as_object().expect("paths");
        assert_eq!(paths.len(), 2, "{doc}");
        let deliver = &paths["/webhooks/jira/{secret}"]["post"];
        assert_eq!(deliver["security"], serde_json::json!([{}]), "{deliver}");
        for status in ["200", "400", "401", "413", "503"] {
            assert!(
                deliver["responses"][status].is_object(),
                "{status}: {deliver}"
            );
        }
    }
}
