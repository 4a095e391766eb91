//! The refresh manager: fresh access tokens, one refresh per connection across threads,
//! processes and replicas (an in-process lock plus a lease row only one replica can win).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::Instrument;

pub use crate::access::{AccessError, FreshAccess};
use crate::error::ProviderError;
use crate::events::{ReauthReason, StatusChange};
use crate::http::TokenSource;
use crate::provider::{Provider, RefreshPolicy};
use crate::secret::AccessToken;
use crate::store::{ConnectionRecord, ConnectionStatus, TokenUpdate};
use crate::telemetry::{Telemetry, WaitRole, db_span};
use crate::token::TokenSet;
use crate::vault::Vault;

/// Tuning of the refresh protocol.
#[derive(Debug, Clone)]
pub struct RefreshSettings {
    /// How long a refresher holds the lease before another replica may take over.
    pub lease: Duration,
    /// Attempts at the token endpoint for transient failures.
    pub max_attempts: u32,
    /// First backoff between attempts (doubled each time, with jitter).
    pub base_backoff: Duration,
    /// Longest wait honoured from a `Retry-After`.
    pub max_retry_after: Duration,
    /// How often a waiter looks for the winner's new version when no change notification
    /// wakes it first.
    pub poll_interval: Duration,
    /// Overrides every provider's refresh margin when set.
    pub margin: Option<Duration>,
}

impl Default for RefreshSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            max_attempts: 3,
            base_backoff: Duration::from_millis(250),
            max_retry_after: Duration::from_secs(5),
            poll_interval: Duration::from_millis(50),
            margin: None,
        }
    }
}

/// Counters of the refresh protocol, read by `/metrics`.
#[derive(Debug, Default)]
pub struct RefreshMetrics {
    /// Refreshes this process started at a token endpoint.
    pub started: AtomicU64,
    /// Refreshes that stored a new token pair.
    pub succeeded: AtomicU64,
    /// Refreshes refused for good (`invalid_grant`): the connection needs re-consent.
    pub failed_invalid_grant: AtomicU64,
    /// Refreshes that failed for a passing reason (network, 5xx, 429, timeouts) after retries.
    pub failed_transient: AtomicU64,
    /// Refreshes the provider refused otherwise (bad client, bad request).
    pub failed_rejected: AtomicU64,
    /// Refreshes whose result could not be stored.
    pub failed_store: AtomicU64,
    /// Callers that found the token due and were served by another caller's refresh.
    pub waiters_served: AtomicU64,
    /// Idle grants refreshed to keep them alive.
    pub keep_alive: AtomicU64,
}

impl RefreshMetrics {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What makes a connection due for refresh.
#[derive(Debug, Clone, Copy)]
enum Due {
    /// The access token expires within the margin.
    AccessExpiry,
    /// The refresh token would die of inactivity within this window.
    IdleExpiry(chrono::Duration),
}

/// A refresher bound to one provider.
struct ProviderTokens {
    refresher: Arc<Refresher>,
    provider: Arc<dyn Provider>,
}

#[async_trait::async_trait]
impl TokenSource for ProviderTokens {
    fn provider_id(&self) -> &str {
        self.provider.id()
    }

    async fn fresh_token(&self, user_id: &str) -> Result<FreshAccess, AccessError> {
        self.refresher.fresh_token(user_id, &self.provider).await
    }
}

/// Hands out fresh access tokens, refreshing each connection at most once at a time.
pub struct Refresher {
    vault: Vault,
    owner: String,
    settings: RefreshSettings,
    /// Per connection: the in-process lock of its refresh, holding the last token a caller under
    /// it got, which the callers queued behind it take instead of reading the row again.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<FreshAccess>>>>>,
    wakers: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
    metrics: RefreshMetrics,
    telemetry: Telemetry,
}

/// This process's waiter on another replica's refresh of one connection, registered so that a
/// change notification can wake it; unregistered on drop.
struct Waker<'a> {
    refresher: &'a Refresher,
    connection_id: &'a str,
    notify: Arc<tokio::sync::Notify>,
}

impl Drop for Waker<'_> {
    fn drop(&mut self) {
        let mut wakers = self
            .refresher
            .wakers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if wakers
            .get(self.connection_id)
            .is_some_and(|n| Arc::ptr_eq(n, &self.notify))
        {
            wakers.remove(self.connection_id);
        }
    }
}

/// A caller's hold on the refresh lock of one connection; the last caller to let go, finished
/// or cancelled, removes the lock and the token it keeps.
struct LockEntry<'a> {
    refresher: &'a Refresher,
    connection_id: &'a str,
    lock: Arc<tokio::sync::Mutex<Option<FreshAccess>>>,
}

impl Drop for LockEntry<'_> {
    fn drop(&mut self) {
        let mut locks = self
            .refresher
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Held by the map and this caller only: nobody else waits.
        if Arc::strong_count(&self.lock) <= 2
            && locks
                .get(self.connection_id)
                .is_some_and(|l| Arc::ptr_eq(l, &self.lock))
        {
            locks.remove(self.connection_id);
        }
    }
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresher")
            .field("owner", &self.owner)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn jitter(max: Duration) -> Duration {
    use aes_gcm::aead::OsRng;
    use aes_gcm::aead::rand_core::RngCore;
    let millis = u64::try_from(max.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(OsRng.next_u64() % millis)
}

impl Refresher {
    /// A refresher over `vault`; `owner` names this process in lease rows.
    pub fn new(vault: Vault, owner: impl Into<String>, settings: RefreshSettings) -> Self {
        Self {
            vault,
            owner: owner.into(),
            settings,
            locks: Mutex::new(HashMap::new()),
            wakers: Mutex::new(HashMap::new()),
            metrics: RefreshMetrics::default(),
            telemetry: Telemetry::default(),
        }
    }

    /// This refresher recording its refreshes, waits and token calls into `telemetry`.
    #[must_use]
    pub fn with_telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Where refreshes, waits and token calls are recorded.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// The counters of this refresher.
    pub fn metrics(&self) -> &RefreshMetrics {
        &self.metrics
    }

    /// The name this process writes into lease rows.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The tuning in force.
    pub fn settings(&self) -> &RefreshSettings {
        &self.settings
    }

    /// A process-unique lease owner name: host-less, random.
    pub fn random_owner() -> String {
        format!("grantry-{}", uuid::Uuid::new_v4())
    }

    /// Wakes this process's caller waiting for another replica to finish refreshing
    /// `connection_id`, so it reads the new version now instead of at its next poll. Fed by the
    /// database's change notifications (PostgreSQL `LISTEN`); unknown ids are ignored.
    pub fn wake(&self, connection_id: &str) {
        let notify = self
            .wakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(connection_id)
            .cloned();
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }

    fn register_waker<'a>(&'a self, connection_id: &'a str) -> Waker<'a> {
        let notify = self
            .wakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(connection_id.to_owned())
            .or_default()
            .clone();
        Waker {
            refresher: self,
            connection_id,
            notify,
        }
    }

    /// The vault.
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// The refresh margin of this record's access token: the configured margin, capped at half
    /// the lifetime the provider granted the token, so a short-lived token is not due at birth.
    fn margin(&self, policy: &RefreshPolicy, record: &ConnectionRecord) -> chrono::Duration {
        let configured = self.settings.margin.unwrap_or(policy.refresh_margin);
        let configured = chrono::Duration::from_std(configured).unwrap_or(chrono::Duration::zero());
        let issued = record
            .access_issued_at
            .or(record.last_refreshed_at)
            .unwrap_or(record.updated_at);
        match record.access_expires_at {
            Some(expires) if expires > issued => configured.min((expires - issued) / 2),
            _ => configured,
        }
    }

    fn is_due(
        &self,
        record: &ConnectionRecord,
        policy: &RefreshPolicy,
        now: DateTime<Utc>,
        due: Due,
    ) -> bool {
        match due {
            Due::AccessExpiry => record
                .access_expires_at
                .is_some_and(|exp| exp - self.margin(policy, record) <= now),
            Due::IdleExpiry(window) => {
                record.refresh_token.is_some()
                    && record
                        .refresh_idle_expires_at
                        .is_some_and(|exp| exp - window <= now)
            }
        }
    }

    /// Whether a caller that found the row at `seen_version` should use the row as it is now
    /// instead of refreshing: someone else wrote new tokens since, and they have not expired.
    fn served_by_another(
        record: &ConnectionRecord,
        seen_version: Option<i64>,
        now: DateTime<Utc>,
    ) -> bool {
        seen_version.is_some_and(|seen| record.version != seen)
            && record.access_expires_at.is_none_or(|exp| exp > now)
    }

    fn open(&self, record: &ConnectionRecord, refreshed: bool) -> Result<FreshAccess, AccessError> {
        let access_token = self.vault.open_access(record)?;
        Ok(Self::fresh(record, access_token, refreshed))
    }

    /// The answer for `record` whose access token is already open.
    fn fresh(record: &ConnectionRecord, access_token: AccessToken, refreshed: bool) -> FreshAccess {
        FreshAccess {
            access_token,
            token_type: "Bearer".into(),
            expires_at: record.access_expires_at,
            connection_id: record.id.clone(),
            version: record.version,
            refreshed,
            resources: record.resources.clone(),
            scopes: record.scopes.clone(),
        }
    }

    /// The fresh tokens of `provider`'s connections, for its routes' [`ProviderContext`](crate::http::ProviderContext).
    pub fn token_source(self: &Arc<Self>, provider: Arc<dyn Provider>) -> Arc<dyn TokenSource> {
        Arc::new(ProviderTokens {
            refresher: Arc::clone(self),
            provider,
        })
    }

    /// A fresh access token of `user_id` for `provider`, refreshed first when it is due.
    pub async fn fresh_token(
        self: &Arc<Self>,
        user_id: &str,
        provider: &Arc<dyn Provider>,
    ) -> Result<FreshAccess, AccessError> {
        let record = self
            .vault
            .store()
            .connection(user_id, provider.id())
            .instrument(db_span("read_connection"))
            .await?
            .ok_or(AccessError::NotConnected)?;
        if record.status == ConnectionStatus::NeedsReauth {
            return Err(AccessError::NeedsReauth);
        }
        let (record, opened) = self.vault.verify_binding(record).await?;
        let policy = provider.refresh_policy();
        if !self.is_due(&record, &policy, Utc::now(), Due::AccessExpiry) {
            return match opened {
                Some(tokens) => Ok(Self::fresh(&record, tokens.access_token, false)),
                None => self.open(&record, false),
            };
        }
        let started = std::time::Instant::now();
        let served = self
            .single_flight(
                &record.id,
                provider,
                Due::AccessExpiry,
                Some(record.version),
            )
            .await;
        let role = served.as_ref().map_or(WaitRole::Failed, |(_, role)| *role);
        self.telemetry
            .observe_wait(provider.id(), role, started.elapsed());
        let (access, _) = served?;
        if !access.refreshed {
            RefreshMetrics::bump(&self.metrics.waiters_served);
        }
        Ok(access)
    }

    /// Refreshes `connection_id` if its refresh token would die of inactivity within `window`.
    pub async fn keep_alive(
        self: &Arc<Self>,
        connection_id: &str,
        provider: &Arc<dyn Provider>,
        window: Duration,
    ) -> Result<bool, AccessError> {
        let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::zero());
        let (access, _) = self
            .single_flight(connection_id, provider, Due::IdleExpiry(window), None)
            .await?;
        if access.refreshed {
            RefreshMetrics::bump(&self.metrics.keep_alive);
        }
        Ok(access.refreshed)
    }

    /// Runs the refresh protocol for one connection; `seen_version` is the version at which the
    /// caller found the token due (a later version means another caller refreshed it). Also
    /// says how the caller was served.
    async fn single_flight(
        self: &Arc<Self>,
        connection_id: &str,
        provider: &Arc<dyn Provider>,
        due: Due,
        seen_version: Option<i64>,
    ) -> Result<(FreshAccess, WaitRole), AccessError> {
        let entry = LockEntry {
            refresher: self,
            connection_id,
            lock: {
                let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
                locks.entry(connection_id.to_owned()).or_default().clone()
            },
        };
        let mut last = entry.lock.lock().await;
        let now = Utc::now();
        // Newer than the row this caller found due, and not expired. (A status change does not
        // bump the version: a caller already queued when one lands may still get the token
        // the caller before it got, as it would have had it come a moment earlier.)
        if let Some(access) = last.as_ref().filter(|access| {
            seen_version.is_some_and(|seen| access.version > seen)
                && access.expires_at.is_none_or(|exp| exp > now)
        }) {
            return Ok((
                FreshAccess {
                    refreshed: false,
                    ..access.clone()
                },
                WaitRole::Waiter,
            ));
        }
        let result = self
            .refresh_locked(connection_id, provider, due, seen_version)
            .instrument(tracing::info_span!("lease", provider = provider.id()))
            .await;
        *last = result.as_ref().ok().cloned();
        result.map(|access| {
            let role = if access.refreshed {
                WaitRole::Winner
            } else {
                WaitRole::CrossReplica
            };
            (access, role)
        })
    }

    async fn refresh_locked(
        self: &Arc<Self>,
        connection_id: &str,
        provider: &Arc<dyn Provider>,
        due: Due,
        seen_version: Option<i64>,
    ) -> Result<FreshAccess, AccessError> {
        let policy = provider.refresh_policy();
        let store = self.vault.store();
        let started = tokio::time::Instant::now();
        let give_up = self.settings.lease * 3;
        let waker = self.register_waker(connection_id);
        loop {
            // Listen before reading, so a change committed after the read still wakes us.
            let changed = waker.notify.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let record = store
                .connection_by_id(connection_id)
                .instrument(db_span("read_connection"))
                .await?
                .ok_or(AccessError::NotConnected)?;
            if record.status == ConnectionStatus::NeedsReauth {
                return Err(AccessError::NeedsReauth);
            }
            let now = Utc::now();
            if Self::served_by_another(&record, seen_version, now)
                || !self.is_due(&record, &policy, now, due)
            {
                return self.open(&record, false);
            }
            if store
                .try_acquire_lease(connection_id, &self.owner, self.settings.lease)
                .instrument(db_span("acquire_lease"))
                .await?
            {
                return self
                    .refresh_as_winner(connection_id, provider, &policy, due, seen_version)
                    .await;
            }
            if started.elapsed() > give_up {
                return Err(AccessError::Upstream(ProviderError::Transient {
                    reason: "timed out waiting for another replica's refresh".into(),
                    retry_after: None,
                }));
            }
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
    }

    async fn refresh_as_winner(
        self: &Arc<Self>,
        connection_id: &str,
        provider: &Arc<dyn Provider>,
        policy: &RefreshPolicy,
        due: Due,
        seen_version: Option<i64>,
    ) -> Result<FreshAccess, AccessError> {
        let store = self.vault.store();
        // The redeem-and-store step runs in its own task: if the caller goes away (a client
        // disconnect, a timeout around the request), the rotated pair is still stored.
        let task = {
            let this = Arc::clone(self);
            let (id, provider, policy) = (
                connection_id.to_owned(),
                Arc::clone(provider),
                policy.clone(),
            );
            // Recorded in the task too, so a refresh whose caller left still counts.
            tokio::spawn(
                async move {
                    let started = std::time::Instant::now();
                    let result = this
                        .redeem(&id, &provider, &policy, due, seen_version)
                        .await;
                    this.record_refresh(provider.id(), &result, started.elapsed());
                    result
                }
                .in_current_span(),
            )
        };
        let result = match task.await {
            Ok(result) => result,
            Err(e) => {
                let failed = Err(AccessError::Upstream(ProviderError::Transient {
                    reason: format!("the refresh task failed: {e}"),
                    retry_after: None,
                }));
                self.record_refresh(provider.id(), &failed, Duration::ZERO);
                failed
            }
        };
        if result.is_err()
            && let Err(e) = store.release_lease(connection_id, &self.owner).await
        {
            tracing::warn!(connection = connection_id, error = %e, "could not release the refresh lease");
        }
        result
    }

    /// Counts a refresh run under the lease: its duration by outcome, and a failure by reason.
    fn record_refresh(
        &self,
        provider: &str,
        result: &Result<FreshAccess, AccessError>,
        took: Duration,
    ) {
        let m = &self.metrics;
        let (outcome, failed) = match result {
            Ok(access) if access.refreshed => ("ok", None),
            Ok(_) => ("not_needed", None),
            Err(AccessError::NeedsReauth) => ("invalid_grant", Some(&m.failed_invalid_grant)),
            Err(AccessError::Upstream(ProviderError::Transient { .. })) => {
                ("transient", Some(&m.failed_transient))
            }
            Err(AccessError::Upstream(_)) => ("rejected", Some(&m.failed_rejected)),
            Err(AccessError::NotConnected | AccessError::Core(_)) => {
                ("store", Some(&m.failed_store))
            }
        };
        self.telemetry.observe_refresh(provider, outcome, took);
        if let Some(counter) = failed {
            RefreshMetrics::bump(counter);
        }
    }

    /// Writes a redeemed token pair, retrying a failing database until the lease deadline: the
    /// provider may already have rotated the refresh token, so giving up early would lose the
    /// grant. Whether the row still was at the version the refresh started from.
    async fn store_refreshed(
        &self,
        record: &ConnectionRecord,
        update: &TokenUpdate,
        new_tokens: &TokenSet,
        deadline: tokio::time::Instant,
    ) -> Result<bool, AccessError> {
        let store = self.vault.store();
        let mut wait = self.settings.base_backoff.max(Duration::from_millis(10));
        let mut failed = false;
        loop {
            match store
                .complete_refresh(&record.id, record.version, update)
                .instrument(db_span("complete_refresh"))
                .await
            {
                Ok(true) => return Ok(true),
                Ok(false) if failed => {
                    // An earlier attempt may have committed before its answer was lost.
                    return Ok(self.holds_tokens(record, new_tokens).await);
                }
                Ok(false) => return Ok(false),
                Err(e) => {
                    failed = true;
                    if tokio::time::Instant::now() + wait >= deadline {
                        tracing::error!(connection = %record.id, error = %e, "could not store the refreshed tokens before the lease ran out");
                        return Err(e.into());
                    }
                    tracing::warn!(connection = %record.id, error = %e, ?wait, "storing the refreshed tokens failed; retrying");
                    tokio::time::sleep(wait / 2 + jitter(wait)).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Whether the stored row is one version past `record` and holds `new_tokens`.
    async fn holds_tokens(&self, record: &ConnectionRecord, new_tokens: &TokenSet) -> bool {
        let Ok(Some(now)) = self.vault.store().connection_by_id(&record.id).await else {
            return false;
        };
        now.version == record.version + 1
            && self.vault.open_tokens(&now).is_ok_and(|stored| {
                stored.access_token.secret() == new_tokens.access_token.secret()
            })
    }

    async fn redeem(
        &self,
        connection_id: &str,
        provider: &Arc<dyn Provider>,
        policy: &RefreshPolicy,
        due: Due,
        seen_version: Option<i64>,
    ) -> Result<FreshAccess, AccessError> {
        let store = self.vault.store();
        // Read again under the lease: another replica may have finished just before we won it.
        let record = store
            .connection_by_id(connection_id)
            .instrument(db_span("read_connection"))
            .await?
            .ok_or(AccessError::NotConnected)?;
        if record.status == ConnectionStatus::NeedsReauth {
            store
                .release_lease(connection_id, &self.owner)
                .instrument(db_span("release_lease"))
                .await?;
            return Err(AccessError::NeedsReauth);
        }
        let now = Utc::now();
        if Self::served_by_another(&record, seen_version, now)
            || !self.is_due(&record, policy, now, due)
        {
            store
                .release_lease(connection_id, &self.owner)
                .instrument(db_span("release_lease"))
                .await?;
            return self.open(&record, false);
        }
        let tokens = self.vault.open_tokens(&record)?;
        let Some(refresh_token) = tokens.refresh_token.clone() else {
            if record
                .access_expires_at
                .is_some_and(|exp| exp <= Utc::now())
            {
                store
                    .set_status_at(
                        connection_id,
                        record.version,
                        StatusChange::NeedsReauth {
                            reason: ReauthReason::Expired,
                            failure: "expired and no refresh token",
                        },
                    )
                    .await?;
                return Err(AccessError::NeedsReauth);
            }
            store
                .release_lease(connection_id, &self.owner)
                .instrument(db_span("release_lease"))
                .await?;
            return self.open(&record, false);
        };
        // Every attempt and every wait ends before the lease does (with a margin), so no other
        // replica can take over while this one may still be redeeming the token.
        let margin = (self.settings.lease / 5).min(Duration::from_secs(5));
        let deadline = tokio::time::Instant::now() + self.settings.lease.saturating_sub(margin);
        let mut attempt = 1;
        RefreshMetrics::bump(&self.metrics.started);
        loop {
            // The deadline inside the recorded call: a call cut short is a transient sample.
            let call = async {
                tokio::time::timeout_at(deadline, provider.refresh(&refresh_token))
                    .await
                    .unwrap_or_else(|_| {
                        Err(ProviderError::Transient {
                            reason: "the token endpoint did not answer within the refresh lease"
                                .into(),
                            retry_after: None,
                        })
                    })
            };
            let answer = self
                .telemetry
                .upstream(provider.id(), "refresh", call)
                .await;
            match answer {
                Ok(new_tokens) => {
                    let now = Utc::now();
                    let update = self.vault.seal_refresh(&record, &new_tokens, policy, now)?;
                    if !self
                        .store_refreshed(&record, &update, &new_tokens, deadline)
                        .await?
                    {
                        tracing::error!(
                            connection = connection_id,
                            "the row changed under our lease; the refreshed tokens were not stored"
                        );
                        return Err(AccessError::Upstream(ProviderError::Transient {
                            reason: "concurrent update during refresh".into(),
                            retry_after: None,
                        }));
                    }
                    RefreshMetrics::bump(&self.metrics.succeeded);
                    tracing::info!(
                        connection = connection_id,
                        provider = provider.id(),
                        "refreshed access token"
                    );
                    return Ok(FreshAccess {
                        access_token: new_tokens.access_token,
                        token_type: new_tokens.token_type,
                        expires_at: new_tokens.expires_at,
                        connection_id: connection_id.to_owned(),
                        version: record.version + 1,
                        refreshed: true,
                        resources: record.resources.clone(),
                        scopes: new_tokens
                            .scopes
                            .clone()
                            .unwrap_or_else(|| record.scopes.clone()),
                    });
                }
                Err(e) if e.is_terminal() => {
                    tracing::warn!(connection = connection_id, provider = provider.id(), error = %e, "grant refused; connection needs re-consent");
                    store
                        .set_status_at(
                            connection_id,
                            record.version,
                            StatusChange::NeedsReauth {
                                reason: ReauthReason::InvalidGrant,
                                failure: &e.to_string(),
                            },
                        )
                        .await?;
                    return Err(AccessError::NeedsReauth);
                }
                Err(e) => {
                    let retry_after = match &e {
                        ProviderError::Transient { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    let backoff = self.settings.base_backoff * 2u32.pow(attempt - 1);
                    let wait = match retry_after {
                        Some(secs) => Duration::from_secs(secs).min(self.settings.max_retry_after),
                        None => backoff / 2 + jitter(backoff),
                    };
                    let may_retry = e.is_transient()
                        && attempt < self.settings.max_attempts
                        && tokio::time::Instant::now() + wait < deadline;
                    if !may_retry {
                        tracing::warn!(connection = connection_id, provider = provider.id(), error = %e, attempt, "refresh failed");
                        store
                            .set_status_at(
                                connection_id,
                                record.version,
                                StatusChange::RefreshFailed {
                                    failure: &e.to_string(),
                                },
                            )
                            .await?;
                        return Err(AccessError::Upstream(e));
                    }
                    tracing::debug!(connection = connection_id, attempt, ?wait, error = %e, "retrying refresh");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }
}
