//! Application state: everything the handlers share.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use grantry_core::http::{Authentication, Authenticator};
use grantry_core::lifecycle::{ConnectionSettings, Connections};
use grantry_core::maintenance::{MaintenanceMetrics, MaintenanceSettings};
use grantry_core::refresh::{RefreshSettings, Refresher};
use grantry_core::store::TokenStore;
use grantry_core::telemetry::Telemetry;
use grantry_core::vault::Vault;
use grantry_core::{Provider, ProviderContext};

use crate::auth::CrossSiteGuard;
pub use crate::config::ApiSettings;
use crate::metrics::{CountsCache, MetricsSource};
use crate::webhooks::Webhooks;

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
    /// The authenticator behind the cross-site guard of `settings`: what every route uses.
    authentication: Authentication,
    refresher: Arc<Refresher>,
    connections: Connections,
    settings: ApiSettings,
    maintenance: MaintenanceSettings,
    maintenance_metrics: Arc<MaintenanceMetrics>,
    counts: Arc<CountsCache>,
    webhooks: Option<Arc<Webhooks>>,
    telemetry: Telemetry,
}

/// `authenticator` behind the guard that refuses cookie-signed writes from other sites.
fn guarded(authenticator: &Arc<dyn Authenticator>, settings: &ApiSettings) -> Authentication {
    Authentication::new(Arc::new(CrossSiteGuard {
        inner: authenticator.clone(),
        policy: settings.cross_site.clone(),
    }))
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
        let telemetry = Telemetry::default();
        let refresher = Arc::new(
            Refresher::new(vault.clone(), Refresher::random_owner(), refresh)
                .with_telemetry(telemetry.clone()),
        );
        let settings = ApiSettings::default();
        let connections = Connections::new(
            vault.clone(),
            ConnectionSettings {
                max_pending_states: crate::config::DEFAULT_MAX_PENDING_STATES,
                ..ConnectionSettings::default()
            },
        )
        .with_telemetry(telemetry.clone());
        Self {
            inner: Arc::new(Inner {
                vault,
                providers,
                authentication: guarded(&authenticator, &settings),
                authenticator,
                refresher,
                connections,
                settings,
                maintenance: MaintenanceSettings::default(),
                maintenance_metrics: Arc::default(),
                counts: Arc::new(CountsCache::new(Duration::from_secs(
                    crate::config::DEFAULT_METRICS_COUNTS_TTL_SECS,
                ))),
                webhooks: None,
                telemetry,
            }),
        }
    }

    /// This state with `settings` (call before the state is shared).
    #[must_use]
    pub fn with_settings(self, settings: ApiSettings) -> Self {
        let mut inner = (*self.inner).clone();
        inner.authentication = guarded(&inner.authenticator, &settings);
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
        inner.connections = Connections::new(
            inner.vault.clone(),
            ConnectionSettings {
                max_pending_states: max.max(1),
                ..inner.connections.settings().clone()
            },
        )
        .with_telemetry(inner.telemetry.clone());
        Self {
            inner: Arc::new(inner),
        }
    }

    /// How many pending authorizations are kept per user and provider.
    pub fn max_pending_states(&self) -> usize {
        self.inner.connections.settings().max_pending_states
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

    /// This state delivering events with `webhooks` (its admin routes mount at
    /// `/api/v1/webhooks`).
    #[must_use]
    pub fn with_webhooks(self, webhooks: Arc<Webhooks>) -> Self {
        let mut inner = (*self.inner).clone();
        inner.webhooks = Some(webhooks);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The webhook delivery worker, when endpoints are configured.
    pub fn webhooks(&self) -> Option<&Arc<Webhooks>> {
        self.inner.webhooks.as_ref()
    }

    /// The maintenance tuning.
    pub fn maintenance(&self) -> &MaintenanceSettings {
        &self.inner.maintenance
    }

    /// The counters of this process's maintenance passes.
    pub fn maintenance_metrics(&self) -> &MaintenanceMetrics {
        &self.inner.maintenance_metrics
    }

    /// How requests are authenticated: the authenticator behind the cross-site guard.
    pub fn authentication(&self) -> &Authentication {
        &self.inner.authentication
    }

    /// The connection lifecycle (authorize, callback, status, disconnect).
    pub fn connections(&self) -> &Connections {
        &self.inner.connections
    }

    /// What `provider`'s own routes get: its fresh tokens and the authentication of callers.
    pub fn provider_context(&self, provider: &Arc<dyn Provider>) -> ProviderContext {
        ProviderContext::new(
            self.inner.refresher.token_source(provider.clone()),
            self.inner.authentication.clone(),
            self.store().clone(),
        )
        .with_telemetry(self.inner.telemetry.clone())
    }

    /// The latency histograms `/metrics` shows.
    pub fn telemetry(&self) -> &Telemetry {
        &self.inner.telemetry
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

impl FromRef<AppState> for Authentication {
    fn from_ref(state: &AppState) -> Self {
        state.inner.authentication.clone()
    }
}

impl FromRef<AppState> for MetricsSource {
    fn from_ref(state: &AppState) -> Self {
        Self {
            store: state.store().clone(),
            refresher: state.inner.refresher.clone(),
            maintenance: state.inner.maintenance_metrics.clone(),
            counts: state.inner.counts.clone(),
            token: state.inner.settings.metrics_token.clone(),
            webhooks: state.inner.webhooks.clone(),
            telemetry: state.inner.telemetry.clone(),
        }
    }
}
