//! A read cache in front of a token store: the hot reads (`connection(user, provider)` and its
//! summary) are served from memory for a short time; every write through this cache invalidates
//! what it touches.
//!
//! Writes made by other processes become visible when the entry's time is up, so the time to live
//! bounds how stale a replica may be (default 1 second; 0 turns the cache off).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::StoreError;
use crate::events::{DeleteReason, Event, StatusChange};
use crate::keyring::SealedValue;
use crate::store::{
    ConnectionPageQuery, ConnectionRecord, ConnectionStatus, ConnectionSummary, DueConnection,
    StateRecord, StoredAccount, Subscription, TokenHandout, TokenStore, TokenUpdate,
};
use crate::token::{Account, Resource};

/// Most entries kept before the cache starts over.
const MAX_ENTRIES: usize = 100_000;

type Key = (String, String);

/// What the cache holds of one (user, provider): the stored row, or only its summary (read by
/// the status route, which needs no tokens).
enum Cached {
    Record(Option<ConnectionRecord>),
    Summary(Option<ConnectionSummary>),
}

impl Cached {
    fn id(&self) -> Option<&str> {
        match self {
            Self::Record(r) => r.as_ref().map(|r| r.id.as_str()),
            Self::Summary(s) => s.as_ref().map(|s| s.id.as_str()),
        }
    }
}

#[derive(Default)]
struct Entries {
    by_key: HashMap<Key, (Instant, Cached)>,
    keys_by_id: HashMap<String, Key>,
    /// Bumped by every invalidation, so a read that raced a write is not cached.
    generation: u64,
}

/// A [`TokenStore`] that caches `connection(user, provider)` for `ttl`.
pub struct CachedStore<S> {
    inner: S,
    ttl: Duration,
    entries: Mutex<Entries>,
}

impl<S> std::fmt::Debug for CachedStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStore")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<S: TokenStore> CachedStore<S> {
    /// Caches reads of `inner` for `ttl`.
    pub fn new(inner: S, ttl: Duration) -> Self {
        Self {
            inner,
            ttl,
            entries: Mutex::new(Entries::default()),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget_key(&self, user_id: &str, provider: &str) {
        let mut entries = self.entries();
        entries.generation += 1;
        let key = (user_id.to_owned(), provider.to_owned());
        if let Some((_, cached)) = entries.by_key.remove(&key)
            && let Some(id) = cached.id()
        {
            entries.keys_by_id.remove(id);
        }
    }

    /// The cached answer for (`user_id`, `provider`) when a fresh entry gives one (`hit`);
    /// otherwise `fetch`'s, kept as `keep` makes it unless a write raced the read.
    async fn read_through<T>(
        &self,
        user_id: &str,
        provider: &str,
        hit: impl Fn(&Cached) -> Option<Option<T>>,
        fetch: impl std::future::Future<Output = Result<Option<T>, StoreError>>,
        keep: impl FnOnce(&Option<T>) -> Cached,
    ) -> Result<Option<T>, StoreError> {
        let key = (user_id.to_owned(), provider.to_owned());
        let generation = {
            let entries = self.entries();
            if let Some((at, cached)) = entries.by_key.get(&key)
                && at.elapsed() < self.ttl
                && let Some(answer) = hit(cached)
            {
                return Ok(answer);
            }
            entries.generation
        };
        let fetched_at = Instant::now();
        let fetched = fetch.await?;
        let cached = keep(&fetched);
        let mut entries = self.entries();
        if entries.generation != generation {
            return Ok(fetched);
        }
        if entries.by_key.len() >= MAX_ENTRIES {
            entries.by_key.clear();
            entries.keys_by_id.clear();
        }
        if let Some(id) = cached.id() {
            entries.keys_by_id.insert(id.to_owned(), key.clone());
        }
        entries.by_key.insert(key, (fetched_at, cached));
        Ok(fetched)
    }

    fn forget_id(&self, connection_id: &str) {
        let mut entries = self.entries();
        entries.generation += 1;
        if let Some(key) = entries.keys_by_id.remove(connection_id) {
            entries.by_key.remove(&key);
        }
    }
}

#[async_trait]
impl<S: TokenStore> TokenStore for CachedStore<S> {
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn put_connection(
        &self,
        record: &ConnectionRecord,
    ) -> Result<ConnectionRecord, StoreError> {
        self.forget_key(&record.user_id, &record.provider);
        let stored = self.inner.put_connection(record).await;
        self.forget_key(&record.user_id, &record.provider);
        stored
    }

    async fn connection(
        &self,
        user_id: &str,
        provider: &str,
    ) -> Result<Option<ConnectionRecord>, StoreError> {
        if self.ttl.is_zero() {
            return self.inner.connection(user_id, provider).await;
        }
        self.read_through(
            user_id,
            provider,
            |cached| match cached {
                Cached::Record(r) => Some(r.clone()),
                Cached::Summary(_) => None,
            },
            self.inner.connection(user_id, provider),
            |r| Cached::Record(r.clone()),
        )
        .await
    }

    async fn connection_summary(
        &self,
        user_id: &str,
        provider: &str,
    ) -> Result<Option<ConnectionSummary>, StoreError> {
        if self.ttl.is_zero() {
            return self.inner.connection_summary(user_id, provider).await;
        }
        self.read_through(
            user_id,
            provider,
            |cached| {
                Some(match cached {
                    Cached::Record(r) => r.as_ref().map(ConnectionSummary::of),
                    Cached::Summary(s) => s.clone(),
                })
            },
            self.inner.connection_summary(user_id, provider),
            |s| Cached::Summary(s.clone()),
        )
        .await
    }

    async fn connection_by_id(&self, id: &str) -> Result<Option<ConnectionRecord>, StoreError> {
        self.inner.connection_by_id(id).await
    }

    async fn list_connections(
        &self,
        provider: Option<&str>,
    ) -> Result<Vec<ConnectionRecord>, StoreError> {
        self.inner.list_connections(provider).await
    }

    async fn connections_page(
        &self,
        query: &ConnectionPageQuery<'_>,
    ) -> Result<Vec<ConnectionRecord>, StoreError> {
        self.inner.connections_page(query).await
    }

    async fn connection_summaries_page(
        &self,
        query: &ConnectionPageQuery<'_>,
    ) -> Result<Vec<ConnectionSummary>, StoreError> {
        self.inner.connection_summaries_page(query).await
    }

    async fn delete_connection(
        &self,
        user_id: &str,
        provider: &str,
        reason: DeleteReason,
    ) -> Result<bool, StoreError> {
        self.forget_key(user_id, provider);
        let done = self
            .inner
            .delete_connection(user_id, provider, reason)
            .await;
        self.forget_key(user_id, provider);
        done
    }

    async fn replace_resources(
        &self,
        connection_id: &str,
        resources: &[Resource],
    ) -> Result<(), StoreError> {
        let done = self.inner.replace_resources(connection_id, resources).await;
        self.forget_id(connection_id);
        done
    }

    async fn try_acquire_lease(
        &self,
        connection_id: &str,
        owner: &str,
        lease: std::time::Duration,
    ) -> Result<bool, StoreError> {
        self.inner
            .try_acquire_lease(connection_id, owner, lease)
            .await
    }

    async fn release_lease(&self, connection_id: &str, owner: &str) -> Result<(), StoreError> {
        self.inner.release_lease(connection_id, owner).await
    }

    async fn complete_refresh(
        &self,
        connection_id: &str,
        expected_version: i64,
        update: &TokenUpdate,
    ) -> Result<bool, StoreError> {
        let done = self
            .inner
            .complete_refresh(connection_id, expected_version, update)
            .await;
        self.forget_id(connection_id);
        done
    }

    async fn rewrap_tokens(
        &self,
        connection_id: &str,
        expected_version: i64,
        access_token: &SealedValue,
        refresh_token: Option<&SealedValue>,
        key_id: &str,
    ) -> Result<bool, StoreError> {
        let done = self
            .inner
            .rewrap_tokens(
                connection_id,
                expected_version,
                access_token,
                refresh_token,
                key_id,
            )
            .await;
        self.forget_id(connection_id);
        done
    }

    async fn set_status(
        &self,
        connection_id: &str,
        change: StatusChange<'_>,
    ) -> Result<(), StoreError> {
        let done = self.inner.set_status(connection_id, change).await;
        self.forget_id(connection_id);
        done
    }

    async fn set_status_at(
        &self,
        connection_id: &str,
        expected_version: i64,
        change: StatusChange<'_>,
    ) -> Result<bool, StoreError> {
        let done = self
            .inner
            .set_status_at(connection_id, expected_version, change)
            .await;
        self.forget_id(connection_id);
        done
    }

    async fn record_event(&self, event: &Event) -> Result<(), StoreError> {
        self.inner.record_event(event).await
    }

    async fn put_subscription(&self, subscription: &Subscription) -> Result<(), StoreError> {
        self.inner.put_subscription(subscription).await
    }

    async fn renew_subscription(
        &self,
        connection_id: &str,
        resource_id: &str,
        secret_hash: &str,
        expires_at: DateTime<Utc>,
        renewed_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.inner
            .renew_subscription(
                connection_id,
                resource_id,
                secret_hash,
                expires_at,
                renewed_at,
            )
            .await
    }

    async fn subscriptions(&self, connection_id: &str) -> Result<Vec<Subscription>, StoreError> {
        self.inner.subscriptions(connection_id).await
    }

    async fn subscription_by_secret(
        &self,
        secret_hash: &str,
    ) -> Result<Option<Subscription>, StoreError> {
        self.inner.subscription_by_secret(secret_hash).await
    }

    async fn subscriptions_expiring(
        &self,
        provider: &str,
        before: DateTime<Utc>,
        after: Option<&Subscription>,
        limit: u32,
    ) -> Result<Vec<Subscription>, StoreError> {
        self.inner
            .subscriptions_expiring(provider, before, after, limit)
            .await
    }

    async fn delete_subscriptions(&self, connection_id: &str) -> Result<u64, StoreError> {
        self.inner.delete_subscriptions(connection_id).await
    }

    async fn record_event_once(
        &self,
        provider: &str,
        delivery_id: &str,
        at: DateTime<Utc>,
        event: &Event,
    ) -> Result<bool, StoreError> {
        self.inner
            .record_event_once(provider, delivery_id, at, event)
            .await
    }

    async fn purge_receipts(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        self.inner.purge_receipts(before, limit).await
    }

    async fn connection_counts(&self) -> Result<Vec<(String, ConnectionStatus, u64)>, StoreError> {
        self.inner.connection_counts().await
    }

    async fn key_ids(&self, now: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        self.inner.key_ids(now).await
    }

    async fn due_for_keep_alive(
        &self,
        provider: &str,
        cutoff: DateTime<Utc>,
        after: Option<&DueConnection>,
        limit: u32,
    ) -> Result<Vec<DueConnection>, StoreError> {
        self.inner
            .due_for_keep_alive(provider, cutoff, after, limit)
            .await
    }

    async fn past_absolute_expiry(
        &self,
        provider: &str,
        now: DateTime<Utc>,
        after: Option<&DueConnection>,
        limit: u32,
    ) -> Result<Vec<DueConnection>, StoreError> {
        self.inner
            .past_absolute_expiry(provider, now, after, limit)
            .await
    }

    async fn try_acquire_task_lease(
        &self,
        name: &str,
        owner: &str,
        duration: Duration,
    ) -> Result<bool, StoreError> {
        self.inner
            .try_acquire_task_lease(name, owner, duration)
            .await
    }

    async fn release_task_lease(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        self.inner.release_task_lease(name, owner).await
    }

    async fn put_state(&self, state: &StateRecord, max_pending: usize) -> Result<(), StoreError> {
        self.inner.put_state(state, max_pending).await
    }

    async fn consume_state(
        &self,
        state_hash: &str,
        user_id: &str,
        provider: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<StateRecord>, StoreError> {
        self.inner
            .consume_state(state_hash, user_id, provider, now)
            .await
    }

    async fn purge_expired_states(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        self.inner.purge_expired_states(now, limit).await
    }

    async fn record_token_handout(
        &self,
        provider: &str,
        admin_id: &str,
        user_id: &str,
        at: DateTime<Utc>,
    ) -> Result<TokenHandout, StoreError> {
        self.inner
            .record_token_handout(provider, admin_id, user_id, at)
            .await
    }

    async fn token_handouts(
        &self,
        provider: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<TokenHandout>, StoreError> {
        self.inner.token_handouts(provider, before, limit).await
    }

    async fn accounts_page(
        &self,
        provider: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StoredAccount>, StoreError> {
        self.inner.accounts_page(provider, after, limit).await
    }

    async fn update_account(
        &self,
        connection_id: &str,
        account: &Account,
        read_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.forget_id(connection_id);
        let done = self
            .inner
            .update_account(connection_id, account, read_at)
            .await;
        self.forget_id(connection_id);
        done
    }

    async fn delete_account_connection(
        &self,
        connection_id: &str,
        account_id: &str,
        reason: DeleteReason,
    ) -> Result<bool, StoreError> {
        self.forget_id(connection_id);
        let done = self
            .inner
            .delete_account_connection(connection_id, account_id, reason)
            .await;
        self.forget_id(connection_id);
        done
    }

    async fn provider_state(
        &self,
        provider: &str,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        self.inner.provider_state(provider, name).await
    }

    async fn put_provider_state(
        &self,
        provider: &str,
        name: &str,
        value: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.inner
            .put_provider_state(provider, name, value, at)
            .await
    }
}
