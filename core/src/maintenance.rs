//! Background upkeep: keep idle grants alive, retire grants past their absolute expiry, purge
//! expired states.
//!
//! A pass reads only the rows that are due, in keyset batches served by indexes, refreshes with
//! bounded concurrency, and runs on one replica at a time: it holds a task lease row in the
//! database (renewed while it runs) and a replica that cannot take it skips its pass.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;

use crate::error::StoreError;
use crate::events::{ReauthReason, StatusChange};
use crate::http::ProviderContext;
use crate::provider::Provider;
use crate::refresh::{AccessError, Refresher};
use crate::store::{DueConnection, TokenStore};

/// The name of the maintenance pass's row in the task lease table.
pub const LEASE_NAME: &str = "maintenance";

/// Tuning of a maintenance pass.
#[derive(Debug, Clone)]
pub struct MaintenanceSettings {
    /// Refresh a grant this long before its refresh token dies of inactivity (at most half the
    /// provider's inactivity expiry).
    pub keep_alive_window: Duration,
    /// Keep-alive refreshes in flight at once.
    pub concurrency: usize,
    /// Rows read per batch (and expired states deleted per statement).
    pub batch_size: u32,
    /// How long the pass lease lasts unless renewed; the holder renews it every third of this.
    pub lease: Duration,
}

impl Default for MaintenanceSettings {
    fn default() -> Self {
        Self {
            keep_alive_window: Duration::from_secs(7 * 24 * 3600),
            concurrency: 8,
            batch_size: 500,
            lease: Duration::from_secs(60),
        }
    }
}

/// What one maintenance pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Another replica held the pass lease, so this one did nothing.
    pub skipped: bool,
    /// The pass lost its lease while running and stopped early.
    pub lease_lost: bool,
    /// Expired OAuth states deleted.
    pub states_purged: u64,
    /// Due connections read (keep-alive and absolute expiry).
    pub rows_read: usize,
    /// Idle grants refreshed before their inactivity expiry.
    pub kept_alive: usize,
    /// Grants marked `needs_reauth` because they passed their absolute expiry.
    pub expired: usize,
    /// Keep-alive refreshes that failed (logged at debug; retried next pass).
    pub failures: usize,
    /// How long the pass took.
    pub elapsed: Duration,
}

/// Counters of the maintenance passes of this process, read by `/metrics`.
#[derive(Debug, Default)]
pub struct MaintenanceMetrics {
    /// Passes that ran to the end (or until their lease was lost).
    pub completed: AtomicU64,
    /// Passes skipped because another replica held the lease.
    pub skipped: AtomicU64,
    /// Passes that stopped on a database error.
    pub failed: AtomicU64,
    /// Grants marked `needs_reauth` for passing their absolute expiry.
    pub expired: AtomicU64,
    /// Keep-alive refreshes that failed.
    pub keep_alive_failures: AtomicU64,
    /// Expired states deleted.
    pub states_purged: AtomicU64,
    /// Duration of the last completed pass, microseconds.
    pub last_duration_micros: AtomicU64,
    /// When the last completed pass ended, Unix seconds (0 before the first).
    pub last_completed_at: AtomicU64,
}

impl MaintenanceMetrics {
    /// Adds the outcome of one pass.
    pub fn record(&self, outcome: &Result<MaintenanceReport, StoreError>) {
        let Ok(report) = outcome else {
            self.failed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if report.skipped {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.completed.fetch_add(1, Ordering::Relaxed);
        self.expired
            .fetch_add(report.expired as u64, Ordering::Relaxed);
        self.keep_alive_failures
            .fetch_add(report.failures as u64, Ordering::Relaxed);
        self.states_purged
            .fetch_add(report.states_purged, Ordering::Relaxed);
        self.last_duration_micros.store(
            u64::try_from(report.elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.last_completed_at.store(
            u64::try_from(Utc::now().timestamp()).unwrap_or(0),
            Ordering::Relaxed,
        );
    }
}

/// Runs one pass over what is due for `providers` at `now`, if this replica wins the pass lease.
///
/// Logs one summary line (info) per pass; per-connection failures are logged at debug.
pub async fn run_once(
    refresher: &Arc<Refresher>,
    providers: &[Arc<dyn Provider>],
    settings: &MaintenanceSettings,
    now: DateTime<Utc>,
) -> Result<MaintenanceReport, StoreError> {
    let started = Instant::now();
    let store = Arc::clone(refresher.vault().store());
    let owner = refresher.owner().to_owned();
    if !store
        .try_acquire_task_lease(LEASE_NAME, &owner, settings.lease)
        .await?
    {
        tracing::debug!("maintenance pass skipped: another replica holds the pass lease");
        return Ok(MaintenanceReport {
            skipped: true,
            elapsed: started.elapsed(),
            ..MaintenanceReport::default()
        });
    }
    let lost = Arc::new(AtomicBool::new(false));
    let heartbeat = tokio::spawn(renew_lease(
        Arc::clone(&store),
        owner.clone(),
        settings.lease,
        Arc::clone(&lost),
    ));
    let mut report = MaintenanceReport::default();
    let outcome = pass(refresher, providers, settings, now, &lost, &mut report).await;
    heartbeat.abort();
    report.lease_lost = lost.load(Ordering::Relaxed);
    if !report.lease_lost
        && let Err(e) = store.release_task_lease(LEASE_NAME, &owner).await
    {
        tracing::debug!(error = %e, "could not release the maintenance pass lease; it runs out by itself");
    }
    report.elapsed = started.elapsed();
    let r = &report;
    match outcome {
        Ok(()) => {
            tracing::info!(
                states_purged = r.states_purged,
                rows_read = r.rows_read,
                kept_alive = r.kept_alive,
                expired = r.expired,
                failures = r.failures,
                lease_lost = r.lease_lost,
                ms = r.elapsed.as_millis() as u64,
                "maintenance pass"
            );
            Ok(report)
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                states_purged = r.states_purged,
                rows_read = r.rows_read,
                kept_alive = r.kept_alive,
                expired = r.expired,
                failures = r.failures,
                ms = r.elapsed.as_millis() as u64,
                "maintenance pass failed"
            );
            Err(e)
        }
    }
}

/// Renews the pass lease every third of its duration; flags `lost` when another owner has it.
async fn renew_lease(
    store: Arc<dyn TokenStore>,
    owner: String,
    lease: Duration,
    lost: Arc<AtomicBool>,
) {
    let every = (lease / 3).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(every).await;
        match store
            .try_acquire_task_lease(LEASE_NAME, &owner, lease)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("maintenance pass lease taken over by another replica; stopping");
                lost.store(true, Ordering::Relaxed);
                return;
            }
            Err(e) => tracing::debug!(error = %e, "could not renew the maintenance pass lease"),
        }
    }
}

/// How long receipts of upstream notifications are kept for deduplication.
const RECEIPT_RETENTION: chrono::Duration = chrono::Duration::days(7);

async fn pass(
    refresher: &Arc<Refresher>,
    providers: &[Arc<dyn Provider>],
    settings: &MaintenanceSettings,
    now: DateTime<Utc>,
    lost: &AtomicBool,
    report: &mut MaintenanceReport,
) -> Result<(), StoreError> {
    grants(refresher, providers, settings, now, lost, report).await?;
    let store = refresher.vault().store();
    // The providers' own upkeep (Jira webhooks, say) runs under the pass lease too: one
    // replica at a time.
    for provider in providers {
        if lost.load(Ordering::Relaxed) {
            return Ok(());
        }
        let context = ProviderContext::for_upkeep(
            refresher.token_source(provider.clone()),
            Arc::clone(store),
        )
        .with_telemetry(refresher.telemetry().clone());
        provider.maintain(&context, now).await;
    }
    let batch = settings.batch_size.max(1);
    while !lost.load(Ordering::Relaxed)
        && store.purge_receipts(now - RECEIPT_RETENTION, batch).await? == u64::from(batch)
    {}
    Ok(())
}

/// Expired states purged, grants past their absolute expiry retired, idle grants kept alive.
async fn grants(
    refresher: &Arc<Refresher>,
    providers: &[Arc<dyn Provider>],
    settings: &MaintenanceSettings,
    now: DateTime<Utc>,
    lost: &AtomicBool,
    report: &mut MaintenanceReport,
) -> Result<(), StoreError> {
    let store = refresher.vault().store();
    let batch = settings.batch_size.max(1);
    let stop = || lost.load(Ordering::Relaxed);
    loop {
        if stop() {
            return Ok(());
        }
        let purged = store.purge_expired_states(now, batch).await?;
        report.states_purged += purged;
        if purged < u64::from(batch) {
            break;
        }
    }
    for provider in providers {
        let id = provider.id();
        let mut after: Option<DueConnection> = None;
        loop {
            if stop() {
                return Ok(());
            }
            let mut due = store
                .past_absolute_expiry(id, now, after.as_ref(), batch)
                .await?;
            report.rows_read += due.len();
            for row in &due {
                if store
                    .set_status_at(
                        &row.id,
                        row.version,
                        StatusChange::NeedsReauth {
                            reason: ReauthReason::AbsoluteExpiry,
                            failure: "the grant passed its absolute expiry",
                        },
                    )
                    .await?
                {
                    tracing::debug!(connection = %row.id, provider = id, "grant passed its absolute expiry; needs re-consent");
                    report.expired += 1;
                }
            }
            if due.len() < batch as usize {
                break;
            }
            after = due.pop();
        }

        let Some(idle) = provider.refresh_policy().idle_expiry else {
            continue;
        };
        let window = settings.keep_alive_window.min(idle / 2);
        let cutoff = now + chrono::Duration::from_std(window).unwrap_or_default();
        let mut after: Option<DueConnection> = None;
        loop {
            if stop() {
                return Ok(());
            }
            let mut due = store
                .due_for_keep_alive(id, cutoff, after.as_ref(), batch)
                .await?;
            report.rows_read += due.len();
            keep_alive_batch(refresher, provider, &due, window, settings, lost, report).await;
            if due.len() < batch as usize {
                break;
            }
            after = due.pop();
        }
    }
    Ok(())
}

/// Refreshes the connections of one batch, at most `settings.concurrency` at a time.
async fn keep_alive_batch(
    refresher: &Arc<Refresher>,
    provider: &Arc<dyn Provider>,
    due: &[DueConnection],
    window: Duration,
    settings: &MaintenanceSettings,
    lost: &AtomicBool,
    report: &mut MaintenanceReport,
) {
    let mut tasks = JoinSet::new();
    let limit = settings.concurrency.max(1);
    for row in due {
        if lost.load(Ordering::Relaxed) {
            break;
        }
        while tasks.len() >= limit {
            if let Some(done) = tasks.join_next().await {
                tally(done, provider.id(), report);
            }
        }
        let (refresher, provider, id) =
            (Arc::clone(refresher), Arc::clone(provider), row.id.clone());
        tasks.spawn(async move {
            let outcome = refresher.keep_alive(&id, &provider, window).await;
            (id, outcome)
        });
    }
    while let Some(done) = tasks.join_next().await {
        tally(done, provider.id(), report);
    }
}

fn tally(
    done: Result<(String, Result<bool, AccessError>), tokio::task::JoinError>,
    provider: &str,
    report: &mut MaintenanceReport,
) {
    match done {
        Ok((_, Ok(true))) => report.kept_alive += 1,
        Ok((_, Ok(false) | Err(AccessError::NotConnected))) => {}
        Ok((id, Err(e))) => {
            tracing::debug!(connection = %id, provider, error = %e, "keep-alive refresh failed");
            report.failures += 1;
        }
        Err(e) => {
            tracing::debug!(provider, error = %e, "keep-alive task ended abnormally");
            report.failures += 1;
        }
    }
}
