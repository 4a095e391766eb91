//! Atlassian's own routes under `/api/v1/atlassian`.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use grantry_core::{ApiError, FreshToken, ProviderError, Resource};

use crate::Atlassian;

/// The routes Atlassian adds beside the generic connection routes.
pub(crate) fn router(provider: Arc<Atlassian>) -> Router {
    Router::new()
        .route("/sites", get(sites))
        .with_state(provider)
}

/// The live accessible-resources of the user's grant, fetched with a fresh token.
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
