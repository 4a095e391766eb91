//! The routes outside any provider: the health probes and the list of mounted providers.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use grantry_core::{ApiError, Principal};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::app::AppState;

/// A mounted provider as listed by `/api/v1/providers`.
#[derive(Serialize, ToSchema)]
pub(crate) struct ProviderInfo {
    /// The provider id, also its route prefix.
    pub(crate) id: String,
    /// Human name.
    pub(crate) name: String,
    /// The scopes requested at consent.
    pub(crate) scopes: Vec<String>,
    /// Where users revoke the app themselves, for a provider that cannot revoke on disconnect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) revocation_hint: Option<String>,
}

/// `{"status": "ok"}` and friends.
#[derive(Serialize, ToSchema)]
pub(crate) struct StatusBody {
    /// `ok` or `ready`.
    pub(crate) status: String,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "probes", security(()),
    responses((status = 200, body = StatusBody)))]
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "probes", security(()),
    responses(
        (status = 200, body = StatusBody),
        (status = 503, body = grantry_core::ErrorBody, description = "`database_unavailable`"),
    ))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.store().ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database does not answer",
        )
    })?;
    Ok(Json(json!({"status": "ready"})))
}

/// The mounted providers.
#[utoipa::path(get, path = "/api/v1/providers", tag = "providers",
    responses(
        (status = 200, body = Vec<ProviderInfo>),
        (status = 401, body = grantry_core::ErrorBody, description = "`unauthorized`"),
    ))]
pub(crate) async fn providers(
    State(state): State<AppState>,
    _principal: Principal,
) -> Json<Vec<ProviderInfo>> {
    Json(
        state
            .providers()
            .iter()
            .map(|p| ProviderInfo {
                id: p.id().to_owned(),
                name: p.display_name().to_owned(),
                scopes: p.requested_scopes().to_vec(),
                revocation_hint: p.revocation_hint().map(str::to_owned),
            })
            .collect(),
    )
}
