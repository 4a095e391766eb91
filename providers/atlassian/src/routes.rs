//! Atlassian's own routes under `/api/v1/atlassian`.

use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::routing::get;
use axum::{Json, Router};
use grantry_core::{ApiError, FreshToken, ProviderContext, ProviderError, Resource};

use crate::Atlassian;

/// The state of Atlassian's routes: the provider and the context the server handed over.
#[derive(Clone)]
pub(crate) struct Routes {
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

/// The routes Atlassian adds beside the generic connection routes.
pub(crate) fn router(provider: Arc<Atlassian>, context: ProviderContext) -> Router {
    let state = Routes { provider, context };
    Router::new()
        .route("/sites", get(sites))
        .with_state(state.clone())
        .merge(crate::content::router(state))
}

/// Atlassian's own routes and the content routes, for `/openapi.json`.
pub(crate) fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = <SitesApi as utoipa::OpenApi>::openapi();
    doc.merge(<crate::content::ContentApi as utoipa::OpenApi>::openapi());
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
    fn the_document_lists_every_route() {
        let doc = serde_json::to_value(openapi()).expect("json");
        let paths = doc["paths"].as_object().expect("paths");
        for (path, methods) in [
            ("/sites", &["get"][..]),
            ("/search", &["get"]),
            ("/jira/{site_id}/projects", &["get"]),
            ("/jira/{site_id}/issues/{key}", &["get"]),
            ("/confluence/{site_id}/spaces", &["get"]),
            ("/confluence/{site_id}/spaces/{key}/pages", &["get"]),
            ("/confluence/{site_id}/pages/{id}", &["get"]),
            (
                "/proxy/{product}/{site_id}/{path}",
                &["get", "post", "put", "delete", "patch"],
            ),
        ] {
            for method in methods {
                assert!(
                    paths.get(path).and_then(|p| p.get(*method)).is_some(),
                    "{method} {path}"
                );
            }
        }
        assert_eq!(paths.len(), 8);
        let hit = &doc["components"]["schemas"]["Hit"]["properties"];
        for field in [
            "kind",
            "site_id",
            "id",
            "title",
            "url",
            "excerpt",
            "updated_at",
        ] {
            assert!(hit.get(field).is_some(), "Hit.{field}: {hit}");
        }
        let page = &doc["components"]["schemas"]["PageView"]["properties"];
        assert!(page.get("type").is_some() && page.get("kind").is_none());
    }
}
