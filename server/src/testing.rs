//! Test support (feature `testing`): fresh databases for test suites on SQLite and PostgreSQL,
//! and a store that injects database failures.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use grantry_core::error::StoreError;
use grantry_core::events::{DeleteReason, Event, StatusChange};
use grantry_core::keyring::{SealedValue, TokenField};
use grantry_core::store::{
    ConnectionPageQuery, ConnectionRecord, ConnectionStatus, ConnectionSummary, DueConnection,
    StateRecord, StoredAccount, Subscription, TokenHandout, TokenStore, TokenUpdate,
};
use grantry_core::{Account, Resource};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::store::SqlStore;

/// The variable that points the PostgreSQL tests at a server.
pub const POSTGRES_URL_VAR: &str = "GRANTRY_TEST_POSTGRES_URL";

/// A fresh, empty database that lives as long as this value: a PostgreSQL database is dropped
/// when the value is (or earlier, by [`TestDatabase::cleanup`]), so test runs leave none behind.
#[derive(Debug)]
pub struct TestDatabase {
    /// The `DATABASE_URL` of the fresh database.
    pub url: String,
    /// Which kind it is, for messages.
    pub kind: &'static str,
    admin_url: Option<String>,
    name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// A new SQLite database file in a temporary folder.
    pub fn sqlite() -> Self {
        let dir =
            tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temporary folder: {e}"));
        let path: PathBuf = dir.path().join("grantry-test.db");
        Self {
            url: format!("sqlite://{}", path.display()),
            kind: "sqlite",
            admin_url: None,
            name: None,
            _dir: Some(dir),
        }
    }

    /// A new PostgreSQL database on the server of `GRANTRY_TEST_POSTGRES_URL`, or `None` when unset.
    pub async fn postgres() -> Option<Self> {
        let admin = std::env::var(POSTGRES_URL_VAR)
            .ok()
            .filter(|s| !s.trim().is_empty())?;
        let name = format!("grantry_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!("{POSTGRES_URL_VAR} is set but the server does not answer: {e}")
        });
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        let _ = conn.close().await;
        let mut url = url::Url::parse(&admin)
            .unwrap_or_else(|e| panic!("{POSTGRES_URL_VAR} is not a URL: {e}"));
        url.set_path(&format!("/{name}"));
        Some(Self {
            url: url.to_string(),
            kind: "postgres",
            admin_url: Some(admin),
            name: Some(name),
            _dir: None,
        })
    }

    /// Every backend available here: SQLite always, PostgreSQL when configured.
    pub async fn all() -> Vec<Self> {
        let mut dbs = vec![Self::sqlite()];
        match Self::postgres().await {
            Some(pg) => dbs.push(pg),
            None => {
                eprintln!("note: {POSTGRES_URL_VAR} is unset; PostgreSQL not tested in this run")
            }
        }
        dbs
    }

    /// A migrated store on this database.
    pub async fn store(&self) -> SqlStore {
        let store = SqlStore::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the {} test database: {e}", self.kind));
        store
            .migrate()
            .await
            .unwrap_or_else(|e| panic!("cannot migrate the {} test database: {e}", self.kind));
        store
    }

    /// Drops a PostgreSQL database now (SQLite files go with their folder).
    pub async fn cleanup(mut self) {
        if let (Some(admin), Some(name)) = (self.admin_url.take(), self.name.take()) {
            drop_database(&admin, &name).await;
        }
    }
}

impl Drop for TestDatabase {
    /// Drops a PostgreSQL database still there, from a thread of its own (a test's runtime may
    /// be the one dropping this value, and cannot be blocked on).
    fn drop(&mut self) {
        let (Some(admin), Some(name)) = (self.admin_url.take(), self.name.take()) else {
            return;
        };
        let dropper = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(drop_database(&admin, &name));
            }
        });
        let _ = dropper.join();
    }
}

/// `DROP DATABASE … WITH (FORCE)` through the admin URL; failures are ignored (a test database
/// left behind is not worth failing a test for).
async fn drop_database(admin: &str, name: &str) {
    if let Ok(opts) = PgConnectOptions::from_str(admin)
        && let Ok(mut conn) = PgConnection::connect_with(&opts).await
    {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
        let _ = conn.close().await;
    }
}

/// Seals `plaintext` the way grantry did before the user id joined the associated data
/// (format 1: connection id, provider and field only), to test upgrades of old rows.
pub fn seal_legacy(
    key_base64: &str,
    plaintext: &str,
    connection_id: &str,
    provider: &str,
    field: TokenField,
) -> SealedValue {
    use aes_gcm::Aes256Gcm;
    use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
    use base64::Engine;
    use sha2::{Digest, Sha256};

    let key = base64::engine::general_purpose::STANDARD
        .decode(key_base64)
        .unwrap_or_else(|e| panic!("key is not base64: {e}"));
    let cipher = Aes256Gcm::new_from_slice(&key).unwrap_or_else(|e| panic!("key: {e}"));
    let key_id = Sha256::new()
        .chain_update(b"grantry key id v1\0")
        .chain_update(&key)
        .finalize();
    let mut aad = b"grantry v1\0".to_vec();
    for part in [connection_id, provider, field.as_str()] {
        aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let ciphertext = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext.as_bytes(),
                aad: &aad,
            },
        )
        .unwrap_or_else(|e| panic!("seal: {e}"));
    let mut out = vec![1u8];
    out.extend_from_slice(&key_id[..8]);
    out.extend_from_slice(nonce.as_slice());
    out.extend_from_slice(&ciphertext);
    SealedValue::from_bytes(out)
}

/// Moves the stored access token of (`user_id`, `provider`) to just past half its lifetime, so
/// it is due for refresh without waiting: issued 55 s ago, expiring in 5 s. Panics unless
/// exactly one row changed.
pub async fn make_access_token_due(store: &SqlStore, user_id: &str, provider: &str) {
    let now = Utc::now().timestamp_millis();
    let done = sqlx::query(
        "UPDATE connections SET access_issued_at = $1, access_expires_at = $2 \
         WHERE user_id = $3 AND provider = $4",
    )
    .bind(now - 55_000)
    .bind(now + 5_000)
    .bind(user_id.to_owned())
    .bind(provider.to_owned())
    .execute(store.pool())
    .await
    .unwrap_or_else(|e| panic!("cannot move the token's expiry: {e}"));
    assert_eq!(
        done.rows_affected(),
        1,
        "one connection of {user_id} for {provider}"
    );
}

/// How [`FaultyStore`] breaks the next writes of refreshed tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshWriteFault {
    /// The write fails before reaching the database.
    Fail,
    /// The write commits, then its answer is lost (the caller sees an error).
    LoseAnswer,
}

/// A [`TokenStore`] that passes everything to an inner store, except the next writes of
/// refreshed tokens, which it breaks as told: a database failing between the provider's answer
/// and the write of the new pair.
pub struct FaultyStore {
    inner: Arc<dyn TokenStore>,
    faults: Mutex<VecDeque<RefreshWriteFault>>,
}

impl std::fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStore").finish_non_exhaustive()
    }
}

impl FaultyStore {
    /// Wraps `inner`, with no fault planned.
    pub fn new(inner: Arc<dyn TokenStore>) -> Self {
        Self {
            inner,
            faults: Mutex::new(VecDeque::new()),
        }
    }

    /// Breaks the next `times` writes of refreshed tokens with `fault`.
    pub fn break_refresh_writes(&self, fault: RefreshWriteFault, times: usize) {
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        faults.extend(std::iter::repeat_n(fault, times));
    }

    /// Planned faults not yet used.
    pub fn pending_faults(&self) -> usize {
        self.faults.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

fn injected() -> StoreError {
    StoreError::Database("injected failure".into())
}

#[async_trait]
impl TokenStore for FaultyStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn put_connection(
        &self,
        record: &ConnectionRecord,
    ) -> Result<ConnectionRecord, StoreError> {
        self.inner.put_connection(record).await
    }

    async fn connection(
        &self,
        user_id: &str,
        provider: &str,
    ) -> Result<Option<ConnectionRecord>, StoreError> {
        self.inner.connection(user_id, provider).await
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

    async fn connection_summary(
        &self,
        user_id: &str,
        provider: &str,
    ) -> Result<Option<ConnectionSummary>, StoreError> {
        self.inner.connection_summary(user_id, provider).await
    }

    async fn connection_summaries_page(
        &self,
        query: &ConnectionPageQuery<'_>,
    ) -> Result<Vec<ConnectionSummary>, StoreError> {
        self.inner.connection_summaries_page(query).await
    }

    async fn connections_page(
        &self,
        query: &ConnectionPageQuery<'_>,
    ) -> Result<Vec<ConnectionRecord>, StoreError> {
        self.inner.connections_page(query).await
    }

    async fn delete_connection(
        &self,
        user_id: &str,
        provider: &str,
        reason: DeleteReason,
    ) -> Result<bool, StoreError> {
        self.inner
            .delete_connection(user_id, provider, reason)
            .await
    }

    async fn replace_resources(
        &self,
        connection_id: &str,
        resources: &[Resource],
    ) -> Result<(), StoreError> {
        self.inner.replace_resources(connection_id, resources).await
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
        let fault = self
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        match fault {
            Some(RefreshWriteFault::Fail) => Err(injected()),
            Some(RefreshWriteFault::LoseAnswer) => {
                self.inner
                    .complete_refresh(connection_id, expected_version, update)
                    .await?;
                Err(injected())
            }
            None => {
                self.inner
                    .complete_refresh(connection_id, expected_version, update)
                    .await
            }
        }
    }

    async fn rewrap_tokens(
        &self,
        connection_id: &str,
        expected_version: i64,
        access_token: &SealedValue,
        refresh_token: Option<&SealedValue>,
        key_id: &str,
    ) -> Result<bool, StoreError> {
        self.inner
            .rewrap_tokens(
                connection_id,
                expected_version,
                access_token,
                refresh_token,
                key_id,
            )
            .await
    }

    async fn set_status(
        &self,
        connection_id: &str,
        change: StatusChange<'_>,
    ) -> Result<(), StoreError> {
        self.inner.set_status(connection_id, change).await
    }

    async fn set_status_at(
        &self,
        connection_id: &str,
        expected_version: i64,
        change: StatusChange<'_>,
    ) -> Result<bool, StoreError> {
        self.inner
            .set_status_at(connection_id, expected_version, change)
            .await
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
        duration: std::time::Duration,
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
        self.inner
            .update_account(connection_id, account, read_at)
            .await
    }

    async fn delete_account_connection(
        &self,
        connection_id: &str,
        account_id: &str,
        reason: DeleteReason,
    ) -> Result<bool, StoreError> {
        self.inner
            .delete_account_connection(connection_id, account_id, reason)
            .await
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
