//! grantry-server: configuration, SQL token stores and the axum server that mounts every enabled
//! provider under `/api/v1/{provider}`. It knows no provider by name.

pub mod app;
pub mod auth;
pub mod changes;
pub mod config;
pub mod error;
pub mod http_server;
pub mod logging;
mod metrics;
pub mod openapi;
pub mod outbox;
mod paging;
mod router;
mod routes;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod top;
mod ui;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;

use grantry_core::Provider;
use tracing::Instrument;

pub use app::AppState;
pub use auth::{CrossSitePolicy, JwtAuthenticator};
pub use config::ApiSettings;
pub use config::Config;
pub use error::{ApiError, ServerError};
pub use http_server::{HttpLimits, serve_router};
pub use metrics::MetricsToken;
pub use router::router;
pub use store::{Backend, SqlStore};

/// What an embedder builds an [`AppState`] from, re-exported from grantry-core's engine modules.
pub use grantry_core::http::{Authenticator, Credential, Principal, Role};
pub use grantry_core::keyring::KeyRing;
pub use grantry_core::provider::build_providers;
pub use grantry_core::refresh::RefreshSettings;
pub use grantry_core::vault::Vault;

/// Connects to the configured database and applies the migrations.
pub async fn open_store(config: &Config) -> Result<SqlStore, ServerError> {
    let endpoints = config
        .webhooks
        .as_ref()
        .map(|w| w.endpoints.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    let store =
        SqlStore::connect_with_pool(config.database_url.expose(), config.db_max_connections)
            .await?
            .with_event_endpoints(endpoints);
    store.migrate().await?;
    Ok(store)
}

/// Opens the vault: database migrated and every stored key id present in the key ring.
pub async fn open_vault(config: &Config) -> Result<(SqlStore, Vault), ServerError> {
    open_vault_with(config, config.keyring()?).await
}

async fn open_vault_with(config: &Config, keys: KeyRing) -> Result<(SqlStore, Vault), ServerError> {
    let keys = Arc::new(keys);
    let store = open_store(config).await?;
    let vault = Vault::new(
        Arc::new(grantry_core::cache::CachedStore::new(
            store.clone(),
            config.cache_ttl,
        )),
        keys,
    );
    vault.check_keys().await?;
    Ok((store, vault))
}

/// Validates the configuration and builds everything `serve` needs, without listening yet.
pub async fn prepare(config: &Config) -> Result<AppState, ServerError> {
    let keys = config.keyring()?;
    let jwt = config.require_jwt_secret()?;
    let providers: Vec<Arc<dyn Provider>> = build_providers(&config.providers)?;
    let (store, vault) = open_vault_with(config, keys).await?;
    let authenticator = auth::JwtAuthenticator::new(jwt)
        .expecting(config.jwt_issuer.as_deref(), config.jwt_audience.as_deref());
    let state = AppState::new(
        vault,
        providers,
        Arc::new(authenticator),
        config.refresh_settings(),
    )
    .with_settings(config.api_settings())
    .with_maintenance(config.maintenance_settings())
    .with_counts_ttl(config.metrics_counts_ttl)
    .with_max_pending_states(config.max_pending_states);
    Ok(match &config.webhooks {
        Some(settings) => state.with_webhooks(Arc::new(
            webhooks::Webhooks::new(outbox::Outbox::new(store), settings.clone()).map_err(
                |reason| {
                    ServerError::Config(grantry_core::ConfigError::Invalid {
                        variable: "GRANTRY_WEBHOOK_URL".into(),
                        reason,
                    })
                },
            )?,
        )),
        None => state,
    })
}

/// Serves `state` on the configured address until `shutdown` completes.
pub async fn serve(
    config: &Config,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let addr = config.bind.to_string();
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|source| ServerError::Io {
            addr: addr.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServerError::Io {
        addr: addr.clone(),
        source,
    })?;
    tracing::info!(%local, providers = ?state.provider_ids(), database = %config.database_url, "grantry listening");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let maintenance = tokio::spawn(maintain(
        state.clone(),
        config.maintenance_interval,
        stop_rx,
    ));
    let changes = (Backend::from_url(config.database_url.expose()).ok() == Some(Backend::Postgres))
        .then(|| {
            tokio::spawn(changes::listen(
                config.database_url.expose().to_owned(),
                Arc::downgrade(state.refresher()),
            ))
        });
    let deliveries = state
        .webhooks()
        .map(|hooks| tokio::spawn(hooks.clone().run(stop_tx.subscribe())));
    serve_router(listener, router(state), config.http, shutdown).await;
    // In-flight requests (and the refreshes they run) have finished; let a maintenance pass
    // in progress finish too, so no lease is left held.
    let _ = stop_tx.send(true);
    if let Some(changes) = changes {
        changes.abort();
    }
    if let Err(e) = maintenance.await {
        tracing::warn!(error = %e, "maintenance task ended abnormally");
    }
    if let Some(deliveries) = deliveries
        && let Err(e) = deliveries.await
    {
        tracing::warn!(error = %e, "webhook delivery task ended abnormally");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Runs the maintenance pass every `interval`, the first right away, until `stop` turns true
/// (a pass in progress completes first). Each pass logs its own summary line and feeds
/// [`AppState::maintenance_metrics`].
pub async fn maintain(
    state: AppState,
    interval: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let started = std::time::Instant::now();
        let outcome = grantry_core::maintenance::run_once(
            state.refresher(),
            state.providers(),
            state.maintenance(),
            chrono::Utc::now(),
        )
        .instrument(tracing::info_span!("maintenance_pass"))
        .await;
        state.maintenance_metrics().record(&outcome);
        let result = match &outcome {
            Ok(report) if report.skipped => "skipped",
            Ok(_) => "completed",
            Err(_) => "failed",
        };
        state.telemetry().observe_pass(result, started.elapsed());
        if *stop.borrow() {
            return;
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
