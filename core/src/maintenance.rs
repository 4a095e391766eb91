//! Background upkeep: keep idle grants alive, retire grants past their absolute expiry, purge
//! expired states.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::StoreError;
use crate::provider::Provider;
use crate::refresh::Refresher;
use crate::store::ConnectionStatus;

/// What one maintenance pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Expired OAuth states deleted.
    pub states_purged: u64,
    /// Idle grants refreshed before their inactivity expiry.
    pub kept_alive: usize,
    /// Grants marked `needs_reauth` because they passed their absolute expiry.
    pub expired: usize,
    /// Keep-alive refreshes that failed (logged; retried next pass).
    pub failures: usize,
}

/// Runs one pass over every connection of `providers`.
///
/// A grant is kept alive when its refresh token would die of inactivity within `window` (or
/// half the provider's inactivity expiry, if that is shorter).
pub async fn run_once(
    refresher: &Arc<Refresher>,
    providers: &[Arc<dyn Provider>],
    window: Duration,
    now: DateTime<Utc>,
) -> Result<MaintenanceReport, StoreError> {
    let store = refresher.vault().store();
    let mut report = MaintenanceReport {
        states_purged: store.purge_expired_states(now).await?,
        ..MaintenanceReport::default()
    };
    for provider in providers {
        let policy = provider.refresh_policy();
        let window = match policy.idle_expiry {
            Some(idle) => window.min(idle / 2),
            None => window,
        };
        for record in store.list_connections(Some(provider.id())).await? {
            if record.status != ConnectionStatus::Active {
                continue;
            }
            if record.refresh_expires_at.is_some_and(|at| at <= now) {
                tracing::info!(connection = %record.id, provider = provider.id(), "grant passed its absolute expiry; needs re-consent");
                store
                    .set_status(
                        &record.id,
                        ConnectionStatus::NeedsReauth,
                        Some("the grant passed its absolute expiry"),
                    )
                    .await?;
                report.expired += 1;
                continue;
            }
            if policy.idle_expiry.is_none() {
                continue;
            }
            match refresher.keep_alive(&record.id, provider, window).await {
                Ok(true) => report.kept_alive += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(connection = %record.id, provider = provider.id(), error = %e, "keep-alive refresh failed");
                    report.failures += 1;
                }
            }
        }
    }
    Ok(report)
}
