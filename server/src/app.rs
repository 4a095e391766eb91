//! Application state and the axum router.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Json, Router};
use grantry_core::{
    ApiError, Authenticator, AuthenticatorHandle, MaintenanceMetrics, MaintenanceSettings,
    Principal, Provider, RefreshSettings, Refresher, RefresherHandle, TokenStore, Vault,
};
use serde_json::{Value, json};

use crate::auth::{CrossSiteGuard, CrossSitePolicy};
use crate::metrics::CountsCache;
use crate::metrics::MetricsToken;
use crate::routes::provider_router;

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

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    vault: Vault,
    providers: Vec<Arc<dyn Provider>>,
    authenticator: Arc<dyn Authenticator>,
    refresher: Arc<Refresher>,
    settings: ApiSettings,
    maintenance: MaintenanceSettings,
    maintenance_metrics: Arc<MaintenanceMetrics>,
    counts: Arc<CountsCache>,
    max_pending_states: usize,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("providers", &self.provider_ids())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over a vault, the enabled providers and the authenticator of users.
    pub fn new(
        vault: Vault,
        providers: Vec<Arc<dyn Provider>>,
        authenticator: Arc<dyn Authenticator>,
        refresh: RefreshSettings,
    ) -> Self {
        let refresher = Arc::new(Refresher::new(
            vault.clone(),
            Refresher::random_owner(),
            refresh,
        ));
        Self {
            inner: Arc::new(Inner {
                vault,
                providers,
                authenticator,
                refresher,
                settings: ApiSettings::default(),
                maintenance: MaintenanceSettings::default(),
                maintenance_metrics: Arc::default(),
                counts: Arc::new(CountsCache::new(Duration::from_secs(
                    crate::config::DEFAULT_METRICS_COUNTS_TTL_SECS,
                ))),
                max_pending_states: crate::config::DEFAULT_MAX_PENDING_STATES,
            }),
        }
    }

    /// This state with `settings` (call before the state is shared).
    #[must_use]
    pub fn with_settings(self, settings: ApiSettings) -> Self {
        let mut inner = (*self.inner).clone();
        inner.settings = settings;
        Self {
            inner: Arc::new(inner),
        }
    }

    /// This state with the given maintenance tuning (set it before serving).
    #[must_use]
    pub fn with_maintenance(self, settings: MaintenanceSettings) -> Self {
        let mut inner = (*self.inner).clone();
        inner.maintenance = settings;
        Self {
            inner: Arc::new(inner),
        }
    }

    /// This state keeping at most `max` pending authorizations per user and provider.
    #[must_use]
    pub fn with_max_pending_states(self, max: usize) -> Self {
        let mut inner = (*self.inner).clone();
        inner.max_pending_states = max.max(1);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// How many pending authorizations are kept per user and provider.
    pub fn max_pending_states(&self) -> usize {
        self.inner.max_pending_states
    }

    /// The settings of the HTTP API.
    pub fn settings(&self) -> &ApiSettings {
        &self.inner.settings
    }

    /// This state with `/metrics` connection counts cached for `ttl` (0 = counted every scrape).
    #[must_use]
    pub fn with_counts_ttl(self, ttl: Duration) -> Self {
        let mut inner = (*self.inner).clone();
        inner.counts = Arc::new(CountsCache::new(ttl));
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The maintenance tuning.
    pub fn maintenance(&self) -> &MaintenanceSettings {
        &self.inner.maintenance
    }

    /// The counters of this process's maintenance passes.
    pub fn maintenance_metrics(&self) -> &MaintenanceMetrics {
        &self.inner.maintenance_metrics
    }

    pub(crate) fn counts(&self) -> &CountsCache {
        &self.inner.counts
    }

    /// The vault (store plus keys).
    pub fn vault(&self) -> &Vault {
        &self.inner.vault
    }

    /// The token store.
    pub fn store(&self) -> &Arc<dyn TokenStore> {
        self.inner.vault.store()
    }

    /// The refresh manager.
    pub fn refresher(&self) -> &Arc<Refresher> {
        &self.inner.refresher
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

/// The complete router: health probes, `/api/v1/providers` and every enabled provider's routes.
pub fn router(state: AppState) -> Router {
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::render))
        .route("/openapi.json", get(crate::openapi::serve))
        .route("/api/v1/providers", get(providers))
        .with_state(state.clone());
    for provider in state.providers() {
        app = app.nest(
            &format!("/api/v1/{}", provider.id()),
            provider_router(state.clone(), provider.clone()),
        );
    }
    app.merge(crate::ui::router())
        .fallback(not_found)
        .layer(Extension(AuthenticatorHandle(Arc::new(CrossSiteGuard {
            inner: state.inner.authenticator.clone(),
            policy: state.inner.settings.cross_site.clone(),
        }))))
        .layer(Extension(RefresherHandle(state.inner.refresher.clone())))
        .layer(middleware::from_fn(log_request))
}

async fn log_request(request: Request, next: Next) -> Response {
    if !tracing::enabled!(target: "grantry::http", tracing::Level::INFO) {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::info!(
        target: "grantry::http",
        %method,
        path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "probes", security(()),
    responses((status = 200, body = crate::openapi::StatusBody)))]
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "probes", security(()),
    responses(
        (status = 200, body = crate::openapi::StatusBody),
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
        (status = 200, body = Vec<crate::openapi::ProviderInfo>),
        (status = 401, body = grantry_core::ErrorBody, description = "`unauthorized`"),
    ))]
pub(crate) async fn providers(
    State(state): State<AppState>,
    _principal: Principal,
) -> Json<Vec<crate::openapi::ProviderInfo>> {
    Json(
        state
            .providers()
            .iter()
            .map(|p| crate::openapi::ProviderInfo {
                id: p.id().to_owned(),
                name: p.display_name().to_owned(),
                scopes: p.requested_scopes().to_vec(),
            })
            .collect(),
    )
}
