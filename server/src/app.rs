//! Application state and the axum router.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use grantry_core::{Provider, TokenStore, Vault};
use serde_json::{Value, json};

use crate::error::ApiError;

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    vault: Vault,
    providers: Vec<Arc<dyn Provider>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("providers", &self.provider_ids())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over a vault and the enabled providers.
    pub fn new(vault: Vault, providers: Vec<Arc<dyn Provider>>) -> Self {
        Self {
            inner: Arc::new(Inner { vault, providers }),
        }
    }

    /// The vault (store plus keys).
    pub fn vault(&self) -> &Vault {
        &self.inner.vault
    }

    /// The token store.
    pub fn store(&self) -> &Arc<dyn TokenStore> {
        self.inner.vault.store()
    }

    /// The enabled providers, sorted by id.
    pub fn providers(&self) -> &[Arc<dyn Provider>] {
        &self.inner.providers
    }

    /// The ids of the enabled providers.
    pub fn provider_ids(&self) -> Vec<String> {
        self.inner
            .providers
            .iter()
            .map(|p| p.id().to_owned())
            .collect()
    }
}

/// The complete router: health probes and the API of every enabled provider.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
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
