//! The SQL token store: one implementation over sqlx's `Any` driver for SQLite and PostgreSQL.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use grantry_core::error::StoreError;
use grantry_core::events::{ConnectionRef, DeleteReason, Event, StatusChange};
use grantry_core::keyring::SealedValue;
use grantry_core::store::{
    ConnectionPageQuery, ConnectionRecord, ConnectionStatus, ConnectionSummary, DueConnection,
    StateRecord, StoredAccount, Subscription, TokenHandout, TokenStore, TokenUpdate,
};
use grantry_core::{Account, Resource, ScopeSet};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row};

mod handouts;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

/// The database behind a [`SqlStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, the embedded default.
    Sqlite,
    /// PostgreSQL, shared by several replicas.
    Postgres,
}

impl Backend {
    /// Picks the backend from a `DATABASE_URL`.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::Database(
                "DATABASE_URL must start with sqlite:// or postgres://".into(),
            ))
        }
    }
}

/// The PostgreSQL notification channel on which every change of a connection's row is announced.
pub const CHANGES_CHANNEL: &str = "grantry_connection_changed";

/// A [`TokenStore`] on SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    /// Where events go: each recorded event gets one delivery row per endpoint; none, no event.
    endpoints: Arc<[String]>,
    /// Told after a transaction that wrote an event commits (this process's delivery worker).
    events_signal: Arc<tokio::sync::Notify>,
    /// The token hand-out audit, committed in groups.
    handouts: Arc<handouts::HandoutLog>,
}

fn db_err(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn opt_millis(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(millis)
}

fn time(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("time {ms} out of range")))
}

fn opt_time(ms: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
    ms.map(time).transpose()
}

/// The SQLite URL with `mode=rwc` added so that a missing database file is created.
fn sqlite_url(url: &str) -> String {
    if url.contains("mode=") || url.contains(":memory:") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// Creates a missing SQLite database file readable by its owner only (0600); SQLite gives its
/// `-wal` and `-shm` files the mode of the database file.
fn create_private_file(url: &str) -> Result<(), StoreError> {
    if !url.contains("mode=rwc") || url.contains(":memory:") {
        return Ok(());
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).map_err(db_err)?;
    let path = options.get_filename();
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    match open.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            #[cfg(unix)]
            if let Ok(meta) = std::fs::metadata(path) {
                use std::os::unix::fs::PermissionsExt;
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        path = %path.display(),
                        "the SQLite database is readable by other users; chmod 600 it"
                    );
                }
            }
            Ok(())
        }
        Err(e) => Err(StoreError::Database(format!(
            "cannot create the SQLite database {}: {e}",
            path.display()
        ))),
    }
}

macro_rules! select_connections {
    ($tail:literal) => {
        concat!(
            "SELECT id, user_id, provider, account_id, account_name, account_email, scopes, status, \
             access_token, refresh_token, key_id, access_expires_at, refresh_idle_expires_at, refresh_expires_at, \
             version, lease_until, lease_owner, last_failure, connected_at, updated_at, last_refreshed_at, \
             access_issued_at FROM connections ",
            $tail
        )
    };
}

/// One connection with its resources in one round trip (the hot read of status and fresh tokens):
/// a row per resource, or one row with NULL resource columns.
macro_rules! select_with_resources {
    ($where:literal) => {
        concat!(
            "SELECT c.id, c.user_id, c.provider, c.account_id, c.account_name, c.account_email, \
             c.scopes, c.status, c.access_token, c.refresh_token, c.key_id, c.access_expires_at, \
             c.refresh_idle_expires_at, c.refresh_expires_at, c.version, c.lease_until, c.lease_owner, \
             c.last_failure, c.connected_at, c.updated_at, c.last_refreshed_at, c.access_issued_at, \
             r.resource_id AS r_id, r.name AS r_name, r.url AS r_url, r.scopes AS r_scopes, \
             r.avatar_url AS r_avatar_url \
             FROM connections c LEFT JOIN connection_resources r ON r.connection_id = c.id ",
            $where,
            " ORDER BY r.position"
        )
    };
}

/// [`select_with_resources`] without the tokens and the refresh bookkeeping (a summary).
macro_rules! select_summary_with_resources {
    ($where:literal) => {
        concat!(
            "SELECT c.id, c.user_id, c.provider, c.account_id, c.account_name, c.account_email, \
             c.scopes, c.status, c.access_expires_at, c.refresh_idle_expires_at, \
             c.refresh_expires_at, c.last_failure, c.connected_at, \
             r.resource_id AS r_id, r.name AS r_name, r.url AS r_url, r.scopes AS r_scopes, \
             r.avatar_url AS r_avatar_url \
             FROM connections c LEFT JOIN connection_resources r ON r.connection_id = c.id ",
            $where,
            " ORDER BY r.position"
        )
    };
}

/// The columns of a connection's summary, for [`select_page`].
macro_rules! summary_columns {
    () => {
        "id, user_id, provider, account_id, account_name, account_email, scopes, status, \
         access_expires_at, refresh_idle_expires_at, refresh_expires_at, last_failure, connected_at"
    };
}

/// The columns of a whole connection row, for [`select_page`].
macro_rules! record_columns {
    () => {
        "id, user_id, provider, account_id, account_name, account_email, scopes, status, \
         access_token, refresh_token, key_id, access_expires_at, refresh_idle_expires_at, \
         refresh_expires_at, version, lease_until, lease_owner, last_failure, connected_at, \
         updated_at, last_refreshed_at, access_issued_at"
    };
}

/// One page of connections with their resources in one round trip: the page is chosen (ordered
/// and limited, through an index) in a derived table, then joined with its resources by
/// `$join`. `$1` is the limit; `$where` binds from `$2`.
macro_rules! select_page {
    ($columns:ident, $join:ident, $where:literal, $order:literal, $outer_order:literal) => {
        concat!(
            "SELECT c.*, r.resource_id AS r_id, r.name AS r_name, r.url AS r_url, \
             r.scopes AS r_scopes, r.avatar_url AS r_avatar_url FROM (SELECT ",
            $columns!(),
            " FROM connections ",
            $where,
            " ORDER BY ",
            $order,
            " LIMIT $1) c ",
            $join!(),
            " ORDER BY ",
            $outer_order,
            ", r.position"
        )
    };
}

/// How a page joins its resources on SQLite, whose planner probes the resources' index per row.
macro_rules! resources_join_sqlite {
    () => {
        "LEFT JOIN connection_resources r ON r.connection_id = c.id"
    };
}

/// How a page joins its resources on PostgreSQL: a probe of the resources' index per connection
/// of the page, always. As a plain join the planner may hash the whole resources table instead
/// (seen at 100k connections: 100 ms a page of 1,000 against 10 ms); `OFFSET 0` keeps the
/// subquery from being flattened back into one.
macro_rules! resources_join_postgres {
    () => {
        "LEFT JOIN LATERAL (SELECT * FROM connection_resources r WHERE r.connection_id = c.id \
         OFFSET 0) r ON true"
    };
}

/// [`select_page`] of one provider's connections in user-id order (index `(provider, user_id)`,
/// or `(provider, status, user_id)` with a status).
macro_rules! select_provider_page {
    ($columns:ident, $join:ident, $where:literal) => {
        select_page!($columns, $join, $where, "user_id", "c.user_id")
    };
}

/// The two statements that delete the connection matching `$filter` (a condition on
/// `connections` over `$1` and `$2`): its resources first, then the row, returning what the
/// deletion event needs.
macro_rules! delete_connection_where {
    ($filter:literal) => {
        (
            concat!(
                "DELETE FROM connection_resources WHERE connection_id IN \
                 (SELECT id FROM connections WHERE ",
                $filter,
                ")"
            ),
            concat!(
                "DELETE FROM connections WHERE ",
                $filter,
                " RETURNING id, user_id, provider"
            ),
        )
    };
}

/// [`select_page`] of every provider's connections in (provider, user id) order.
macro_rules! select_all_page {
    ($columns:ident, $join:ident, $where:literal) => {
        select_page!(
            $columns,
            $join,
            $where,
            "provider, user_id",
            "c.provider, c.user_id"
        )
    };
}

/// The statements of a page in every variant, for one column list and one join: of one provider
/// or all, with a status filter or not, from the start or after a key. Binds: limit, provider,
/// status, key (user id, or provider and user id).
macro_rules! page_statements {
    ($columns:ident, $join:ident, $one_provider:expr, $status:expr, $after:expr) => {
        match ($one_provider, $status, $after) {
            (true, false, false) => select_provider_page!($columns, $join, "WHERE provider = $2"),
            (true, false, true) => {
                select_provider_page!($columns, $join, "WHERE provider = $2 AND user_id > $3")
            }
            (true, true, false) => {
                select_provider_page!($columns, $join, "WHERE provider = $2 AND status = $3")
            }
            (true, true, true) => select_provider_page!(
                $columns,
                $join,
                "WHERE provider = $2 AND status = $3 AND user_id > $4"
            ),
            (false, false, false) => select_all_page!($columns, $join, ""),
            (false, false, true) => {
                select_all_page!($columns, $join, "WHERE (provider, user_id) > ($2, $3)")
            }
            (false, true, false) => select_all_page!($columns, $join, "WHERE status = $2"),
            (false, true, true) => select_all_page!(
                $columns,
                $join,
                "WHERE status = $2 AND (provider, user_id) > ($3, $4)"
            ),
        }
    };
}

/// What a page carries: whole rows, or summaries without tokens.
#[derive(Clone, Copy)]
enum PageOf {
    Records,
    Summaries,
}

/// The statement of a page (see [`page_statements`]).
fn page_sql(
    backend: Backend,
    of: PageOf,
    one_provider: bool,
    status: bool,
    after: bool,
) -> &'static str {
    match (backend, of) {
        (Backend::Sqlite, PageOf::Records) => page_statements!(
            record_columns,
            resources_join_sqlite,
            one_provider,
            status,
            after
        ),
        (Backend::Sqlite, PageOf::Summaries) => page_statements!(
            summary_columns,
            resources_join_sqlite,
            one_provider,
            status,
            after
        ),
        (Backend::Postgres, PageOf::Records) => page_statements!(
            record_columns,
            resources_join_postgres,
            one_provider,
            status,
            after
        ),
        (Backend::Postgres, PageOf::Summaries) => page_statements!(
            summary_columns,
            resources_join_postgres,
            one_provider,
            status,
            after
        ),
    }
}

/// The first batch of connections due for keep-alive (served by `connections_keep_alive`).
const KEEP_ALIVE_FIRST: &str = "SELECT id, version, refresh_idle_expires_at AS due_at FROM connections \
     WHERE provider = $1 AND status = 'active' AND refresh_token IS NOT NULL \
     AND refresh_idle_expires_at < $2 \
     ORDER BY refresh_idle_expires_at, id LIMIT $3";

/// The batch of connections due for keep-alive after a (due_at, id) cursor.
const KEEP_ALIVE_NEXT: &str = "SELECT id, version, refresh_idle_expires_at AS due_at FROM connections \
     WHERE provider = $1 AND status = 'active' AND refresh_token IS NOT NULL \
     AND refresh_idle_expires_at < $2 AND (refresh_idle_expires_at, id) > ($3, $4) \
     ORDER BY refresh_idle_expires_at, id LIMIT $5";

/// The first batch of connections past their absolute expiry (served by `connections_absolute_expiry`).
const EXPIRED_FIRST: &str = "SELECT id, version, refresh_expires_at AS due_at FROM connections \
     WHERE provider = $1 AND status = 'active' AND refresh_expires_at <= $2 \
     ORDER BY refresh_expires_at, id LIMIT $3";

/// The batch of connections past their absolute expiry after a (due_at, id) cursor.
const EXPIRED_NEXT: &str = "SELECT id, version, refresh_expires_at AS due_at FROM connections \
     WHERE provider = $1 AND status = 'active' AND refresh_expires_at <= $2 \
     AND (refresh_expires_at, id) > ($3, $4) \
     ORDER BY refresh_expires_at, id LIMIT $5";

/// The first page of a provider's accounts (served by `connections_provider_user`).
const ACCOUNTS_FIRST: &str = "SELECT id, user_id, account_id, status, \
     COALESCE(account_read_at, connected_at) AS read_at FROM connections \
     WHERE provider = $1 ORDER BY user_id LIMIT $2";

/// The page of a provider's accounts after a user id.
const ACCOUNTS_NEXT: &str = "SELECT id, user_id, account_id, status, \
     COALESCE(account_read_at, connected_at) AS read_at FROM connections \
     WHERE provider = $1 AND user_id > $2 ORDER BY user_id LIMIT $3";

/// The distinct key ids of stored tokens by a skip scan of `connections_key_id`: one index probe
/// per distinct key, not one per row.
const TOKEN_KEY_IDS: &str = "WITH RECURSIVE k(key_id) AS ( \
     SELECT MIN(key_id) FROM connections \
     UNION ALL \
     SELECT (SELECT MIN(c.key_id) FROM connections c WHERE c.key_id > k.key_id) \
     FROM k WHERE k.key_id IS NOT NULL) \
     SELECT key_id FROM k WHERE key_id IS NOT NULL";

/// The database clock in epoch milliseconds (SQLite).
macro_rules! sqlite_now_millis {
    () => {
        "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
    };
}

/// The database clock in epoch milliseconds (PostgreSQL).
macro_rules! postgres_now_millis {
    () => {
        "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
    };
}

/// The pool size of a backend when `GRANTRY_DB_MAX_CONNECTIONS` is unset.
pub fn default_pool_size(backend: Backend) -> u32 {
    match backend {
        Backend::Sqlite => 8,
        Backend::Postgres => 16,
    }
}

impl SqlStore {
    /// Connects to `url` (`sqlite://…`, created if missing, or `postgres://…`) with the
    /// backend's default pool size.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with_pool(url, None).await
    }

    /// Connects to `url` with at most `max_connections` pooled connections (the backend's
    /// default when `None`).
    pub async fn connect_with_pool(
        url: &str,
        max_connections: Option<u32>,
    ) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let url = match backend {
            Backend::Sqlite => sqlite_url(url),
            Backend::Postgres => url.to_owned(),
        };
        if backend == Backend::Sqlite {
            create_private_file(&url)?;
        }
        let options = AnyConnectOptions::from_str(&url).map_err(db_err)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.unwrap_or_else(|| default_pool_size(backend)).max(1))
            // A burst queues for the pool (on SQLite, the pool is the writers' queue: every token
            // hand-out writes its audit row); give up well inside the request timeout, not at 5 s.
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        sqlx::raw_sql("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;")
                            .execute(conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(db_err)?;
        Ok(Self {
            pool,
            backend,
            endpoints: Arc::from(Vec::new()),
            events_signal: Arc::new(tokio::sync::Notify::new()),
            handouts: Arc::default(),
        })
    }

    /// Applies the embedded migrations of this backend.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Database(format!("migration failed: {e}")))
    }

    /// Tells the other replicas that a connection's row changed (PostgreSQL `NOTIFY` on
    /// [`CHANGES_CHANNEL`], the connection id as payload), so their waiters read it now. Best
    /// effort: a waiter that misses it finds the change at its next poll.
    async fn announce(&self, connection_id: &str) {
        if self.backend != Backend::Postgres {
            return;
        }
        if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANGES_CHANNEL)
            .bind(connection_id.to_owned())
            .execute(&self.pool)
            .await
        {
            tracing::debug!(connection = connection_id, error = %e, "could not announce a change");
        }
    }

    /// This store, recording every event for delivery to each of `endpoints` (webhook URLs);
    /// with none, events are not recorded.
    pub fn with_event_endpoints(mut self, endpoints: Vec<String>) -> Self {
        self.endpoints = Arc::from(endpoints);
        self
    }

    /// Notified each time this store (or a clone) committed an event: the delivery worker
    /// takes it at once instead of at its next poll.
    pub fn events_signal(&self) -> &Arc<tokio::sync::Notify> {
        &self.events_signal
    }

    /// Deletes the connection the two `statements` of [`delete_connection_where`] match (bound to
    /// `first` and `second`) with its resources and records `connection.deleted` with `reason`,
    /// in one transaction; the deleted connection's id, `None` when nothing matched.
    async fn delete_matching(
        &self,
        statements: (&'static str, &'static str),
        first: &str,
        second: &str,
        reason: DeleteReason,
    ) -> Result<Option<String>, StoreError> {
        let (resources, connection) = statements;
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query(resources)
            .bind(first.to_owned())
            .bind(second.to_owned())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let deleted = sqlx::query(connection)
            .bind(first.to_owned())
            .bind(second.to_owned())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        let Some(row) = deleted else {
            return Ok(None);
        };
        let get = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
        let connection_id: String = row.try_get("id").map_err(get)?;
        let user_id: String = row.try_get("user_id").map_err(get)?;
        let provider: String = row.try_get("provider").map_err(get)?;
        let event = reason.event(ConnectionRef {
            connection_id: &connection_id,
            user_id: &user_id,
            provider: &provider,
        });
        self.commit_with_event(tx, &event).await?;
        Ok(Some(connection_id))
    }

    /// Writes `event` and one pending delivery per endpoint in `tx`, commits it, then wakes
    /// this process's delivery worker: every write of an event ends here.
    async fn commit_with_event(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Any>,
        event: &Event,
    ) -> Result<(), StoreError> {
        if self.endpoints.is_empty() {
            return tx.commit().await.map_err(db_err);
        }
        let at = millis(event.timestamp);
        sqlx::query("INSERT INTO events (id, type, created_at, body) VALUES ($1, $2, $3, $4)")
            .bind(event.id.clone())
            .bind(event.kind.clone())
            .bind(at)
            .bind(event.body())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        for endpoint in self.endpoints.iter() {
            sqlx::query(
                "INSERT INTO event_deliveries (event_id, endpoint, status, attempts, next_attempt_at, created_at, \
                 window_start) VALUES ($1, $2, 'pending', 0, $3, $3, $3)",
            )
            .bind(event.id.clone())
            .bind(endpoint.clone())
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        self.events_signal.notify_one();
        Ok(())
    }

    /// Applies a status change (only at `expected_version` when given) with its event, in one
    /// transaction; whether the row was written.
    async fn change_status(
        &self,
        connection_id: &str,
        expected_version: Option<i64>,
        change: StatusChange<'_>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let sql = if expected_version.is_some() {
            "UPDATE connections SET status = $1, last_failure = $2, lease_until = NULL, lease_owner = NULL, \
             updated_at = $3 WHERE id = $4 AND version = $5 RETURNING user_id, provider"
        } else {
            "UPDATE connections SET status = $1, last_failure = $2, lease_until = NULL, lease_owner = NULL, \
             updated_at = $3 WHERE id = $4 RETURNING user_id, provider"
        };
        let mut query = sqlx::query(sql)
            .bind(change.status().as_str())
            .bind(change.failure().to_owned())
            .bind(millis(Utc::now()))
            .bind(connection_id.to_owned());
        if let Some(version) = expected_version {
            query = query.bind(version);
        }
        let Some(row) = query.fetch_optional(&mut *tx).await.map_err(db_err)? else {
            return Ok(false);
        };
        let get = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
        let user_id: String = row.try_get("user_id").map_err(get)?;
        let provider: String = row.try_get("provider").map_err(get)?;
        let event = change.event(ConnectionRef {
            connection_id,
            user_id: &user_id,
            provider: &provider,
        });
        self.commit_with_event(tx, &event).await?;
        self.announce(connection_id).await;
        Ok(true)
    }

    /// Which database this store uses.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Runs one of the due-row queries: `$1` provider, `$2` time bound, then the cursor (when
    /// `after` is set) and the limit.
    async fn due_batch<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
        provider: &str,
        bound: DateTime<Utc>,
        after: Option<&DueConnection>,
        limit: u32,
    ) -> Result<Vec<DueConnection>, StoreError> {
        let mut query = query.bind(provider.to_owned()).bind(millis(bound));
        if let Some(after) = after {
            query = query.bind(millis(after.due_at)).bind(after.id.clone());
        }
        let rows = query
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        let get = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
        rows.iter()
            .map(|row| {
                Ok(DueConnection {
                    id: row.try_get("id").map_err(get)?,
                    version: row.try_get("version").map_err(get)?,
                    due_at: time(row.try_get("due_at").map_err(get)?)?,
                })
            })
            .collect()
    }

    /// The rows of one page (a row per resource) of `of`, for [`TokenStore::connections_page`]
    /// and [`TokenStore::connection_summaries_page`].
    async fn page_rows(
        &self,
        of: PageOf,
        query: &ConnectionPageQuery<'_>,
    ) -> Result<Vec<AnyRow>, StoreError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::from(query.limit);
        let status = query.status.map(ConnectionStatus::as_str);
        // Every statement binds the limit first, then the provider (when filtered), the status
        // (when filtered) and the key to start after (when given).
        let (sql, provider, after) = match query.provider {
            Some(provider) => {
                // Within one provider the key is the user id; a key of another provider places
                // the page before (nothing to skip) or after (nothing left) all of its rows.
                let after = match query.after {
                    Some(key) if key.provider.as_str() > provider => return Ok(Vec::new()),
                    Some(key) if key.provider == provider => vec![key.user_id.clone()],
                    _ => Vec::new(),
                };
                let sql = page_sql(self.backend, of, true, status.is_some(), !after.is_empty());
                (sql, Some(provider), after)
            }
            None => {
                let after = query
                    .after
                    .map(|key| vec![key.provider.clone(), key.user_id.clone()])
                    .unwrap_or_default();
                let sql = page_sql(self.backend, of, false, status.is_some(), !after.is_empty());
                (sql, None, after)
            }
        };
        let mut q = sqlx::query(sql).bind(limit);
        if let Some(provider) = provider {
            q = q.bind(provider.to_owned());
        }
        if let Some(status) = status {
            q = q.bind(status);
        }
        for value in after {
            q = q.bind(value);
        }
        q.fetch_all(&self.pool).await.map_err(db_err)
    }

    /// The summary columns of a row (of a summary or a whole-row statement).
    fn summary_from_row(row: &AnyRow) -> Result<ConnectionSummary, StoreError> {
        let get = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
        let status: String = row.try_get("status").map_err(get)?;
        Ok(ConnectionSummary {
            id: row.try_get("id").map_err(get)?,
            user_id: row.try_get("user_id").map_err(get)?,
            provider: row.try_get("provider").map_err(get)?,
            account: Account {
                id: row.try_get("account_id").map_err(get)?,
                name: row.try_get("account_name").map_err(get)?,
                email: row.try_get("account_email").map_err(get)?,
            },
            scopes: ScopeSet::parse(&row.try_get::<String, _>("scopes").map_err(get)?),
            status: ConnectionStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown status `{status}`")))?,
            access_expires_at: opt_time(row.try_get("access_expires_at").map_err(get)?)?,
            refresh_idle_expires_at: opt_time(
                row.try_get("refresh_idle_expires_at").map_err(get)?,
            )?,
            refresh_expires_at: opt_time(row.try_get("refresh_expires_at").map_err(get)?)?,
            last_failure: row.try_get("last_failure").map_err(get)?,
            connected_at: time(row.try_get("connected_at").map_err(get)?)?,
            resources: Vec::new(),
        })
    }

    /// A whole row: its summary's columns plus the tokens and the refresh bookkeeping.
    fn record_from_row(row: &AnyRow) -> Result<ConnectionRecord, StoreError> {
        let get = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
        let summary = Self::summary_from_row(row)?;
        Ok(ConnectionRecord {
            id: summary.id,
            user_id: summary.user_id,
            provider: summary.provider,
            account: summary.account,
            scopes: summary.scopes,
            status: summary.status,
            access_token: SealedValue::from_bytes(row.try_get("access_token").map_err(get)?),
            refresh_token: row
                .try_get::<Option<Vec<u8>>, _>("refresh_token")
                .map_err(get)?
                .map(SealedValue::from_bytes),
            key_id: row.try_get("key_id").map_err(get)?,
            access_expires_at: summary.access_expires_at,
            refresh_idle_expires_at: summary.refresh_idle_expires_at,
            refresh_expires_at: summary.refresh_expires_at,
            version: row.try_get("version").map_err(get)?,
            lease_until: opt_time(row.try_get("lease_until").map_err(get)?)?,
            lease_owner: row.try_get("lease_owner").map_err(get)?,
            last_failure: summary.last_failure,
            connected_at: summary.connected_at,
            updated_at: time(row.try_get("updated_at").map_err(get)?)?,
            last_refreshed_at: opt_time(row.try_get("last_refreshed_at").map_err(get)?)?,
            access_issued_at: opt_time(row.try_get("access_issued_at").map_err(get)?)?,
            resources: Vec::new(),
        })
    }

    fn subscription_from_row(row: &AnyRow) -> Result<Subscription, StoreError> {
        let get = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
        let remote: String = row.try_get("remote_ids").map_err(get)?;
        Ok(Subscription {
            connection_id: row.try_get("connection_id").map_err(get)?,
            provider: row.try_get("provider").map_err(get)?,
            resource_id: row.try_get("resource_id").map_err(get)?,
            secret_hash: row.try_get("secret_hash").map_err(get)?,
            remote_ids: remote.split_whitespace().map(str::to_owned).collect(),
            expires_at: opt_time(row.try_get("expires_at").map_err(get)?)?,
            created_at: time(row.try_get("created_at").map_err(get)?)?,
            renewed_at: time(row.try_get("renewed_at").map_err(get)?)?,
        })
    }

    fn resource_from_row(row: &AnyRow) -> Result<(String, Resource), StoreError> {
        let get = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
        let scopes: String = row.try_get("scopes").map_err(get)?;
        Ok((
            row.try_get("connection_id").map_err(get)?,
            Resource {
                id: row.try_get("resource_id").map_err(get)?,
                name: row.try_get("name").map_err(get)?,
                url: row.try_get("url").map_err(get)?,
                scopes: scopes.split_whitespace().map(str::to_owned).collect(),
                avatar_url: row.try_get("avatar_url").map_err(get)?,
            },
        ))
    }

    /// One connection and its resources from the rows of [`select_with_resources!`].
    fn record_with_resources(rows: &[AnyRow]) -> Result<Option<ConnectionRecord>, StoreError> {
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let mut record = Self::record_from_row(first)?;
        record.resources = Self::resources_of(rows)?;
        Ok(Some(record))
    }

    fn summary_with_resources(rows: &[AnyRow]) -> Result<Option<ConnectionSummary>, StoreError> {
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let mut summary = Self::summary_from_row(first)?;
        summary.resources = Self::resources_of(rows)?;
        Ok(Some(summary))
    }

    /// The resources of one connection's rows (none when its only row has NULL resource columns).
    fn resources_of(rows: &[AnyRow]) -> Result<Vec<Resource>, StoreError> {
        let get = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
        let mut resources = Vec::new();
        for row in rows {
            let Some(id) = row.try_get::<Option<String>, _>("r_id").map_err(get)? else {
                continue;
            };
            let scopes: String = row.try_get("r_scopes").map_err(get)?;
            resources.push(Resource {
                id,
                name: row.try_get("r_name").map_err(get)?,
                url: row.try_get("r_url").map_err(get)?,
                scopes: scopes.split_whitespace().map(str::to_owned).collect(),
                avatar_url: row.try_get("r_avatar_url").map_err(get)?,
            });
        }
        Ok(resources)
    }

    /// The connections of [`select_page!`] rows: consecutive rows of one id make one.
    fn rows_by_connection<T>(
        rows: &[AnyRow],
        one: impl Fn(&[AnyRow]) -> Result<Option<T>, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let id = |row: &AnyRow| row.try_get::<String, _>("id").ok();
        rows.chunk_by(|a, b| id(a) == id(b))
            .filter_map(|chunk| one(chunk).transpose())
            .collect()
    }

    async fn write_resources<'c>(
        tx: &mut sqlx::Transaction<'c, sqlx::Any>,
        connection_id: &str,
        resources: &[Resource],
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM connection_resources WHERE connection_id = $1")
            .bind(connection_id.to_owned())
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
        for (position, res) in resources.iter().enumerate() {
            sqlx::query(
                "INSERT INTO connection_resources (connection_id, position, resource_id, name, url, scopes, avatar_url) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(connection_id.to_owned())
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .bind(res.id.clone())
            .bind(res.name.clone())
            .bind(res.url.clone())
            .bind(res.scopes.join(" "))
            .bind(res.avatar_url.clone())
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
        }
        Ok(())
    }
}

#[async_trait]
impl TokenStore for SqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn put_connection(&self, r: &ConnectionRecord) -> Result<ConnectionRecord, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let done = sqlx::query(
            "INSERT INTO connections (id, user_id, provider, account_id, account_name, account_email, scopes, status, \
             access_token, refresh_token, key_id, access_expires_at, refresh_idle_expires_at, refresh_expires_at, \
             version, lease_until, lease_owner, last_failure, connected_at, updated_at, last_refreshed_at, \
             access_issued_at, account_read_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 0, NULL, NULL, NULL, $15, $16, $17, \
             $18, $16) \
             ON CONFLICT (user_id, provider) DO UPDATE SET \
             account_id = excluded.account_id, account_name = excluded.account_name, \
             account_email = excluded.account_email, scopes = excluded.scopes, status = excluded.status, \
             access_token = excluded.access_token, refresh_token = excluded.refresh_token, key_id = excluded.key_id, \
             access_expires_at = excluded.access_expires_at, refresh_idle_expires_at = excluded.refresh_idle_expires_at, \
             refresh_expires_at = excluded.refresh_expires_at, version = connections.version + 1, \
             lease_until = NULL, lease_owner = NULL, last_failure = NULL, connected_at = excluded.connected_at, \
             updated_at = excluded.updated_at, last_refreshed_at = excluded.last_refreshed_at, \
             access_issued_at = excluded.access_issued_at, account_read_at = excluded.account_read_at \
             WHERE connections.id = excluded.id \
             RETURNING version",
        )
        .bind(r.id.clone())
        .bind(r.user_id.clone())
        .bind(r.provider.clone())
        .bind(r.account.id.clone())
        .bind(r.account.name.clone())
        .bind(r.account.email.clone())
        .bind(r.scopes.to_string())
        .bind(r.status.as_str())
        .bind(r.access_token.as_bytes().to_vec())
        .bind(r.refresh_token.as_ref().map(|t| t.as_bytes().to_vec()))
        .bind(r.key_id.clone())
        .bind(opt_millis(r.access_expires_at))
        .bind(opt_millis(r.refresh_idle_expires_at))
        .bind(opt_millis(r.refresh_expires_at))
        .bind(millis(r.connected_at))
        .bind(millis(r.updated_at))
        .bind(opt_millis(r.last_refreshed_at))
        .bind(opt_millis(r.access_issued_at))
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                StoreError::Conflict(format!("connection of user for {}", r.provider))
            }
            _ => db_err(e),
        })?;
        let Some(done) = done else {
            return Err(StoreError::Conflict(format!(
                "connection of user for {}",
                r.provider
            )));
        };
        let version: i64 = done
            .try_get("version")
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Self::write_resources(&mut tx, &r.id, &r.resources).await?;
        let event = Event::connected(
            ConnectionRef {
                connection_id: &r.id,
                user_id: &r.user_id,
                provider: &r.provider,
            },
            r.status,
            version > 0,
        );
        self.commit_with_event(tx, &event).await?;
        self.announce(&r.id).await;
        self.connection_by_id(&r.id)
            .await?
            .ok_or_else(|| StoreError::Conflict(format!("connection of user for {}", r.provider)))
    }

    async fn connection(
        &self,
        user_id: &str,
        provider: &str,
    ) -> Result<Option<ConnectionRecord>, StoreError> {
        let rows = sqlx::query(select_with_resources!(
            "WHERE c.user_id = $1 AND c.provider = $2"
        ))
        .bind(user_id.to_owned())
        .bind(provider.to_owned())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Self::record_with_resources(&rows)
    }

    async fn connection_summary(
        &self,
        user_id: &str,
        provider: &str,
    ) -> Result<Option<ConnectionSummary>, StoreError> {
        let rows = sqlx::query(select_summary_with_resources!(
            "WHERE c.user_id = $1 AND c.provider = $2"
        ))
        .bind(user_id.to_owned())
        .bind(provider.to_owned())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Self::summary_with_resources(&rows)
    }

    async fn connection_by_id(&self, id: &str) -> Result<Option<ConnectionRecord>, StoreError> {
        let rows = sqlx::query(select_with_resources!("WHERE c.id = $1"))
            .bind(id.to_owned())
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Self::record_with_resources(&rows)
    }

    async fn list_connections(
        &self,
        provider: Option<&str>,
    ) -> Result<Vec<ConnectionRecord>, StoreError> {
        let (rows, resource_rows) = match provider {
            Some(p) => (
                sqlx::query(select_connections!("WHERE provider = $1 ORDER BY user_id"))
                    .bind(p.to_owned())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_err)?,
                sqlx::query(
                    "SELECT r.connection_id, r.resource_id, r.name, r.url, r.scopes, r.avatar_url \
                     FROM connection_resources r JOIN connections c ON c.id = r.connection_id \
                     WHERE c.provider = $1 ORDER BY r.connection_id, r.position",
                )
                .bind(p.to_owned())
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?,
            ),
            None => (
                sqlx::query(select_connections!("ORDER BY provider, user_id"))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_err)?,
                sqlx::query(
                    "SELECT connection_id, resource_id, name, url, scopes, avatar_url \
                     FROM connection_resources ORDER BY connection_id, position",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?,
            ),
        };
        let mut resources: HashMap<String, Vec<Resource>> = HashMap::new();
        for row in &resource_rows {
            let (id, res) = Self::resource_from_row(row)?;
            resources.entry(id).or_default().push(res);
        }
        rows.iter()
            .map(|row| {
                let mut record = Self::record_from_row(row)?;
                record.resources = resources.remove(&record.id).unwrap_or_default();
                Ok(record)
            })
            .collect()
    }

    async fn connections_page(
        &self,
        query: &ConnectionPageQuery<'_>,
    ) -> Result<Vec<ConnectionRecord>, StoreError> {
        let rows = self.page_rows(PageOf::Records, query).await?;
        Self::rows_by_connection(&rows, Self::record_with_resources)
    }

    async fn connection_summaries_page(
        &self,
        query: &ConnectionPageQuery<'_>,
    ) -> Result<Vec<ConnectionSummary>, StoreError> {
        let rows = self.page_rows(PageOf::Summaries, query).await?;
        Self::rows_by_connection(&rows, Self::summary_with_resources)
    }

    async fn delete_connection(
        &self,
        user_id: &str,
        provider: &str,
        reason: DeleteReason,
    ) -> Result<bool, StoreError> {
        let statements = delete_connection_where!("user_id = $1 AND provider = $2");
        Ok(self
            .delete_matching(statements, user_id, provider, reason)
            .await?
            .is_some())
    }

    async fn replace_resources(
        &self,
        connection_id: &str,
        resources: &[Resource],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        Self::write_resources(&mut tx, connection_id, resources).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn try_acquire_lease(
        &self,
        connection_id: &str,
        owner: &str,
        lease: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let sql = match self.backend {
            Backend::Sqlite => concat!(
                "UPDATE connections SET lease_until = ",
                sqlite_now_millis!(),
                " + $1, lease_owner = $2 WHERE id = $3 AND (lease_until IS NULL OR lease_until < ",
                sqlite_now_millis!(),
                ")"
            ),
            Backend::Postgres => concat!(
                "UPDATE connections SET lease_until = ",
                postgres_now_millis!(),
                " + $1, lease_owner = $2 WHERE id = $3 AND (lease_until IS NULL OR lease_until < ",
                postgres_now_millis!(),
                ")"
            ),
        };
        let done = sqlx::query(sql)
            .bind(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2))
            .bind(owner.to_owned())
            .bind(connection_id.to_owned())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_lease(&self, connection_id: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE connections SET lease_until = NULL, lease_owner = NULL WHERE id = $1 AND lease_owner = $2",
        )
        .bind(connection_id.to_owned())
        .bind(owner.to_owned())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        self.announce(connection_id).await;
        Ok(())
    }

    async fn complete_refresh(
        &self,
        connection_id: &str,
        expected_version: i64,
        u: &TokenUpdate,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE connections SET access_token = $1, refresh_token = $2, key_id = $3, access_expires_at = $4, \
             refresh_idle_expires_at = $5, scopes = COALESCE($6, scopes), version = version + 1, \
             lease_until = NULL, lease_owner = NULL, status = 'active', last_failure = NULL, \
             updated_at = $7, last_refreshed_at = $7, access_issued_at = $7 WHERE id = $8 AND version = $9",
        )
        .bind(u.access_token.as_bytes().to_vec())
        .bind(u.refresh_token.as_ref().map(|t| t.as_bytes().to_vec()))
        .bind(u.key_id.clone())
        .bind(opt_millis(u.access_expires_at))
        .bind(opt_millis(u.refresh_idle_expires_at))
        .bind(u.scopes.as_ref().map(ToString::to_string))
        .bind(millis(u.refreshed_at))
        .bind(connection_id.to_owned())
        .bind(expected_version)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        let written = done.rows_affected() == 1;
        if written {
            self.announce(connection_id).await;
        }
        Ok(written)
    }

    async fn rewrap_tokens(
        &self,
        connection_id: &str,
        expected_version: i64,
        access_token: &SealedValue,
        refresh_token: Option<&SealedValue>,
        key_id: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE connections SET access_token = $1, refresh_token = $2, key_id = $3 \
             WHERE id = $4 AND version = $5",
        )
        .bind(access_token.as_bytes().to_vec())
        .bind(refresh_token.map(|t| t.as_bytes().to_vec()))
        .bind(key_id.to_owned())
        .bind(connection_id.to_owned())
        .bind(expected_version)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_status(
        &self,
        connection_id: &str,
        change: StatusChange<'_>,
    ) -> Result<(), StoreError> {
        self.change_status(connection_id, None, change).await?;
        Ok(())
    }

    async fn set_status_at(
        &self,
        connection_id: &str,
        expected_version: i64,
        change: StatusChange<'_>,
    ) -> Result<bool, StoreError> {
        self.change_status(connection_id, Some(expected_version), change)
            .await
    }

    async fn record_event(&self, event: &Event) -> Result<(), StoreError> {
        let tx = self.pool.begin().await.map_err(db_err)?;
        self.commit_with_event(tx, event).await
    }

    async fn connection_counts(&self) -> Result<Vec<(String, ConnectionStatus, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT provider, status, COUNT(*) AS n FROM connections GROUP BY provider, status \
             ORDER BY provider, status",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        let get = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
        rows.iter()
            .map(|row| {
                let status: String = row.try_get("status").map_err(get)?;
                Ok((
                    row.try_get("provider").map_err(get)?,
                    ConnectionStatus::parse(&status)
                        .ok_or_else(|| StoreError::Corrupt(format!("unknown status `{status}`")))?,
                    u64::try_from(row.try_get::<i64, _>("n").map_err(get)?).unwrap_or(0),
                ))
            })
            .collect()
    }

    async fn key_ids(&self, now: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        let tokens = sqlx::query(TOKEN_KEY_IDS)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        // Pending states live minutes: the expiry index bounds this to the last few minutes' rows.
        let states = sqlx::query(
            "SELECT DISTINCT key_id FROM oauth_states \
             WHERE expires_at > $1 AND used = 0 AND key_id IS NOT NULL",
        )
        .bind(millis(now))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        let ids = tokens
            .iter()
            .chain(&states)
            .map(|r| {
                r.try_get::<String, _>("key_id")
                    .map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect::<Result<std::collections::BTreeSet<_>, _>>()?;
        Ok(ids.into_iter().collect())
    }

    async fn due_for_keep_alive(
        &self,
        provider: &str,
        cutoff: DateTime<Utc>,
        after: Option<&DueConnection>,
        limit: u32,
    ) -> Result<Vec<DueConnection>, StoreError> {
        let query = match after {
            None => sqlx::query(KEEP_ALIVE_FIRST),
            Some(_) => sqlx::query(KEEP_ALIVE_NEXT),
        };
        self.due_batch(query, provider, cutoff, after, limit).await
    }

    async fn past_absolute_expiry(
        &self,
        provider: &str,
        now: DateTime<Utc>,
        after: Option<&DueConnection>,
        limit: u32,
    ) -> Result<Vec<DueConnection>, StoreError> {
        let query = match after {
            None => sqlx::query(EXPIRED_FIRST),
            Some(_) => sqlx::query(EXPIRED_NEXT),
        };
        self.due_batch(query, provider, now, after, limit).await
    }

    async fn try_acquire_task_lease(
        &self,
        name: &str,
        owner: &str,
        duration: Duration,
    ) -> Result<bool, StoreError> {
        let sql = match self.backend {
            Backend::Sqlite => concat!(
                "INSERT INTO task_leases (name, owner, lease_until) VALUES ($1, $2, ",
                sqlite_now_millis!(),
                " + $3) ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, \
                 lease_until = excluded.lease_until \
                 WHERE task_leases.owner = excluded.owner OR task_leases.lease_until < ",
                sqlite_now_millis!()
            ),
            Backend::Postgres => concat!(
                "INSERT INTO task_leases (name, owner, lease_until) VALUES ($1, $2, ",
                postgres_now_millis!(),
                " + $3) ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, \
                 lease_until = excluded.lease_until \
                 WHERE task_leases.owner = excluded.owner OR task_leases.lease_until < ",
                postgres_now_millis!()
            ),
        };
        let done = sqlx::query(sql)
            .bind(name.to_owned())
            .bind(owner.to_owned())
            .bind(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 2))
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_task_lease(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM task_leases WHERE name = $1 AND owner = $2")
            .bind(name.to_owned())
            .bind(owner.to_owned())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn put_state(&self, s: &StateRecord, max_pending: usize) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO oauth_states (state_hash, user_id, provider, expires_at, created_at, used, code_verifier, \
             key_id) VALUES ($1, $2, $3, $4, $5, 0, $6, $7)",
        )
        .bind(s.state_hash.clone())
        .bind(s.user_id.clone())
        .bind(s.provider.clone())
        .bind(millis(s.expires_at))
        .bind(millis(s.created_at))
        .bind(s.code_verifier.as_ref().map(|v| v.as_bytes().to_vec()))
        .bind(
            s.code_verifier
                .as_ref()
                .and_then(SealedValue::key_id)
                .map(|id| id.to_string()),
        )
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        // A separate statement after the insert: the last of concurrent inserts sees them all,
        // so at most `max_pending` remain. Reads the (user_id, provider, created_at) index.
        let keep_others = i64::try_from(max_pending.saturating_sub(1)).unwrap_or(i64::MAX);
        sqlx::query(
            "DELETE FROM oauth_states WHERE user_id = $1 AND provider = $2 AND state_hash <> $3 \
             AND (used = 1 OR expires_at <= $4 OR state_hash NOT IN (\
             SELECT state_hash FROM oauth_states WHERE user_id = $1 AND provider = $2 \
             AND state_hash <> $3 ORDER BY created_at DESC, state_hash DESC LIMIT $5))",
        )
        .bind(s.user_id.clone())
        .bind(s.provider.clone())
        .bind(s.state_hash.clone())
        .bind(millis(s.created_at))
        .bind(keep_others)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn consume_state(
        &self,
        state_hash: &str,
        user_id: &str,
        provider: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<StateRecord>, StoreError> {
        let row = sqlx::query(
            "UPDATE oauth_states SET used = 1 WHERE state_hash = $1 AND user_id = $2 AND provider = $3 \
             AND used = 0 AND expires_at > $4 \
             RETURNING state_hash, user_id, provider, expires_at, created_at, code_verifier",
        )
        .bind(state_hash.to_owned())
        .bind(user_id.to_owned())
        .bind(provider.to_owned())
        .bind(millis(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        let Some(row) = row else { return Ok(None) };
        let get = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
        Ok(Some(StateRecord {
            state_hash: row.try_get("state_hash").map_err(get)?,
            user_id: row.try_get("user_id").map_err(get)?,
            provider: row.try_get("provider").map_err(get)?,
            expires_at: time(row.try_get("expires_at").map_err(get)?)?,
            created_at: time(row.try_get("created_at").map_err(get)?)?,
            code_verifier: row
                .try_get::<Option<Vec<u8>>, _>("code_verifier")
                .map_err(get)?
                .map(SealedValue::from_bytes),
        }))
    }

    async fn purge_expired_states(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM oauth_states WHERE state_hash IN \
             (SELECT state_hash FROM oauth_states WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2)",
        )
        .bind(millis(now))
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected())
    }

    async fn put_subscription(&self, s: &Subscription) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO connection_subscriptions (connection_id, provider, resource_id, secret_hash, \
             remote_ids, expires_at, created_at, renewed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (connection_id, resource_id) DO UPDATE SET provider = excluded.provider, \
             secret_hash = excluded.secret_hash, remote_ids = excluded.remote_ids, \
             expires_at = excluded.expires_at, renewed_at = excluded.renewed_at",
        )
        .bind(s.connection_id.clone())
        .bind(s.provider.clone())
        .bind(s.resource_id.clone())
        .bind(s.secret_hash.clone())
        .bind(s.remote_ids.join(" "))
        .bind(opt_millis(s.expires_at))
        .bind(millis(s.created_at))
        .bind(millis(s.renewed_at))
        .execute(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                StoreError::Conflict("the connection of the subscription is gone".into())
            }
            _ => db_err(e),
        })?;
        Ok(())
    }

    async fn renew_subscription(
        &self,
        connection_id: &str,
        resource_id: &str,
        secret_hash: &str,
        expires_at: DateTime<Utc>,
        renewed_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE connection_subscriptions SET expires_at = $1, renewed_at = $2 \
             WHERE connection_id = $3 AND resource_id = $4 AND secret_hash = $5",
        )
        .bind(millis(expires_at))
        .bind(millis(renewed_at))
        .bind(connection_id.to_owned())
        .bind(resource_id.to_owned())
        .bind(secret_hash.to_owned())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn subscriptions(&self, connection_id: &str) -> Result<Vec<Subscription>, StoreError> {
        let rows = sqlx::query(
            "SELECT connection_id, provider, resource_id, secret_hash, remote_ids, expires_at, created_at, \
             renewed_at FROM connection_subscriptions WHERE connection_id = $1 ORDER BY resource_id",
        )
        .bind(connection_id.to_owned())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(Self::subscription_from_row).collect()
    }

    async fn subscription_by_secret(
        &self,
        secret_hash: &str,
    ) -> Result<Option<Subscription>, StoreError> {
        let row = sqlx::query(
            "SELECT connection_id, provider, resource_id, secret_hash, remote_ids, expires_at, created_at, \
             renewed_at FROM connection_subscriptions WHERE secret_hash = $1",
        )
        .bind(secret_hash.to_owned())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.as_ref().map(Self::subscription_from_row).transpose()
    }

    async fn subscriptions_expiring(
        &self,
        provider: &str,
        before: DateTime<Utc>,
        after: Option<&Subscription>,
        limit: u32,
    ) -> Result<Vec<Subscription>, StoreError> {
        macro_rules! expiring {
            ($where:literal) => {
                concat!(
                    "SELECT connection_id, provider, resource_id, secret_hash, remote_ids, expires_at, \
                     created_at, renewed_at FROM connection_subscriptions WHERE provider = $1 \
                     AND expires_at < $2 ",
                    $where,
                    " ORDER BY expires_at, connection_id, resource_id"
                )
            };
        }
        let rows = match after {
            None => sqlx::query(concat!(expiring!(""), " LIMIT $3"))
                .bind(provider.to_owned())
                .bind(millis(before))
                .bind(i64::from(limit)),
            Some(a) => sqlx::query(concat!(
                expiring!("AND (expires_at, connection_id, resource_id) > ($3, $4, $5)"),
                " LIMIT $6"
            ))
            .bind(provider.to_owned())
            .bind(millis(before))
            .bind(opt_millis(a.expires_at).unwrap_or(i64::MIN))
            .bind(a.connection_id.clone())
            .bind(a.resource_id.clone())
            .bind(i64::from(limit)),
        }
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(Self::subscription_from_row).collect()
    }

    async fn delete_subscriptions(&self, connection_id: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM connection_subscriptions WHERE connection_id = $1")
            .bind(connection_id.to_owned())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected())
    }

    async fn record_event_once(
        &self,
        provider: &str,
        delivery_id: &str,
        at: DateTime<Utc>,
        event: &Event,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let done = sqlx::query(
            "INSERT INTO inbound_receipts (provider, delivery_id, received_at) VALUES ($1, $2, $3) \
             ON CONFLICT (provider, delivery_id) DO NOTHING",
        )
        .bind(provider.to_owned())
        .bind(delivery_id.to_owned())
        .bind(millis(at))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        self.commit_with_event(tx, event).await?;
        Ok(true)
    }

    async fn purge_receipts(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM inbound_receipts WHERE (provider, delivery_id) IN (SELECT provider, delivery_id \
             FROM inbound_receipts WHERE received_at < $1 ORDER BY received_at LIMIT $2)",
        )
        .bind(millis(before))
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected())
    }

    async fn accounts_page(
        &self,
        provider: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StoredAccount>, StoreError> {
        let query = match after {
            None => sqlx::query(ACCOUNTS_FIRST)
                .bind(provider.to_owned())
                .bind(i64::from(limit)),
            Some(after) => sqlx::query(ACCOUNTS_NEXT)
                .bind(provider.to_owned())
                .bind(after.to_owned())
                .bind(i64::from(limit)),
        };
        let rows = query.fetch_all(&self.pool).await.map_err(db_err)?;
        let get = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
        rows.iter()
            .map(|row| {
                let status: String = row.try_get("status").map_err(get)?;
                Ok(StoredAccount {
                    connection_id: row.try_get("id").map_err(get)?,
                    user_id: row.try_get("user_id").map_err(get)?,
                    account_id: row.try_get("account_id").map_err(get)?,
                    status: ConnectionStatus::parse(&status)
                        .ok_or_else(|| StoreError::Corrupt(format!("unknown status `{status}`")))?,
                    read_at: time(row.try_get("read_at").map_err(get)?)?,
                })
            })
            .collect()
    }

    async fn update_account(
        &self,
        connection_id: &str,
        account: &Account,
        read_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE connections SET account_name = $1, account_email = $2, account_read_at = $3 \
             WHERE id = $4 AND account_id = $5",
        )
        .bind(account.name.clone())
        .bind(account.email.clone())
        .bind(millis(read_at))
        .bind(connection_id.to_owned())
        .bind(account.id.clone())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_account_connection(
        &self,
        connection_id: &str,
        account_id: &str,
        reason: DeleteReason,
    ) -> Result<bool, StoreError> {
        let statements = delete_connection_where!("id = $1 AND account_id = $2");
        match self
            .delete_matching(statements, connection_id, account_id, reason)
            .await?
        {
            Some(deleted) => {
                self.announce(&deleted).await;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn provider_state(
        &self,
        provider: &str,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM provider_state WHERE provider = $1 AND name = $2")
            .bind(provider.to_owned())
            .bind(name.to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.map(|row| {
            row.try_get("value")
                .map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .transpose()
    }

    async fn put_provider_state(
        &self,
        provider: &str,
        name: &str,
        value: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO provider_state (provider, name, value, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (provider, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(provider.to_owned())
        .bind(name.to_owned())
        .bind(value.to_owned())
        .bind(millis(at))
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn record_token_handout(
        &self,
        provider: &str,
        admin_id: &str,
        user_id: &str,
        at: DateTime<Utc>,
    ) -> Result<TokenHandout, StoreError> {
        self.handouts
            .record(&self.pool, provider, admin_id, user_id, at)
            .await
    }

    async fn token_handouts(
        &self,
        provider: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<TokenHandout>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, provider, admin_id, user_id, handed_out_at FROM token_handouts \
             WHERE provider = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(provider.to_owned())
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(handouts::stored).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDatabase;

    /// The plan of a page statement, one line per plan row, with typical values bound.
    async fn plan(
        store: &SqlStore,
        of: PageOf,
        one_provider: bool,
        status: bool,
        after: bool,
    ) -> String {
        let explain = match store.backend() {
            Backend::Sqlite => "EXPLAIN QUERY PLAN ",
            Backend::Postgres => "EXPLAIN ",
        };
        let sql = format!(
            "{explain}{}",
            page_sql(store.backend(), of, one_provider, status, after)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(10_i64);
        if one_provider {
            q = q.bind("atlassian");
        }
        if status {
            q = q.bind("needs_reauth");
        }
        if after {
            if !one_provider {
                q = q.bind("atlassian");
            }
            q = q.bind("user-500");
        }
        let mut conn = store.pool().acquire().await.expect("connection");
        if store.backend() == Backend::Postgres {
            // An empty table is cheapest to scan; ask what the planner does at scale.
            sqlx::query("SET enable_seqscan = off")
                .execute(&mut *conn)
                .await
                .expect("set");
        }
        let rows = q.fetch_all(&mut *conn).await.expect("explain");
        if store.backend() == Backend::Postgres {
            sqlx::query("RESET enable_seqscan")
                .execute(&mut *conn)
                .await
                .expect("reset");
        }
        let column = match store.backend() {
            Backend::Sqlite => "detail",
            Backend::Postgres => "QUERY PLAN",
        };
        rows.iter()
            .map(|r| r.try_get::<String, _>(column).expect("plan row"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn every_admin_page_is_read_through_an_index_in_order() {
        for db in TestDatabase::all().await {
            let store = db.store().await;
            // Admin pages read summaries; walks (`grantry reencrypt`) whole rows.
            for of in [PageOf::Summaries, PageOf::Records] {
                for (status, index) in [
                    (false, "connections_provider_user"),
                    (true, "connections_provider_status_user"),
                ] {
                    for after in [false, true] {
                        let plan = plan(&store, of, true, status, after).await;
                        assert!(
                            plan.contains(index),
                            "{}: status {status}, after {after}: not through {index}:\n{plan}",
                            db.kind
                        );
                        // Only the page itself is sorted (by resource position), never the table.
                        for line in plan.lines().filter(|l| l.contains("Sort Key")) {
                            assert!(line.contains("position"), "{}: {plan}", db.kind);
                        }
                        if store.backend() == Backend::Sqlite {
                            assert!(
                                !plan.lines().any(|l| l.starts_with("SCAN connections")),
                                "{}: {plan}",
                                db.kind
                            );
                        }
                    }
                }
                let plan = plan(&store, of, false, false, true).await;
                assert!(
                    plan.contains("connections_provider_user"),
                    "{}: {plan}",
                    db.kind
                );
            }
            store.close().await;
            db.cleanup().await;
        }
    }

    #[tokio::test]
    async fn account_pages_are_read_through_an_index_in_order() {
        for db in TestDatabase::all().await {
            let store = db.store().await;
            let (explain, column) = match store.backend() {
                Backend::Sqlite => ("EXPLAIN QUERY PLAN ", "detail"),
                Backend::Postgres => ("EXPLAIN ", "QUERY PLAN"),
            };
            for (sql, after) in [(ACCOUNTS_FIRST, false), (ACCOUNTS_NEXT, true)] {
                let mut q =
                    sqlx::query(sqlx::AssertSqlSafe(format!("{explain}{sql}"))).bind("atlassian");
                if after {
                    q = q.bind("user-500");
                }
                q = q.bind(90_i64);
                let mut conn = store.pool().acquire().await.expect("connection");
                if store.backend() == Backend::Postgres {
                    sqlx::query("SET enable_seqscan = off")
                        .execute(&mut *conn)
                        .await
                        .expect("set");
                }
                let rows = q.fetch_all(&mut *conn).await.expect("explain");
                if store.backend() == Backend::Postgres {
                    sqlx::query("RESET enable_seqscan")
                        .execute(&mut *conn)
                        .await
                        .expect("reset");
                }
                let plan = rows
                    .iter()
                    .map(|r| r.try_get::<String, _>(column).expect("plan row"))
                    .collect::<Vec<_>>()
                    .join("\n");
                assert!(
                    plan.contains("connections_provider_user"),
                    "{}: {plan}",
                    db.kind
                );
                assert!(!plan.contains("Sort Key"), "{}: {plan}", db.kind);
                assert!(!plan.contains("TEMP B-TREE"), "{}: {plan}", db.kind);
            }
            store.close().await;
            db.cleanup().await;
        }
    }

    #[test]
    fn backend_from_url() {
        assert_eq!(
            Backend::from_url("sqlite://x.db").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("postgres://u@h/db").ok(),
            Some(Backend::Postgres)
        );
        assert!(Backend::from_url("mysql://x").is_err());
        assert_eq!(sqlite_url("sqlite://a.db"), "sqlite://a.db?mode=rwc");
        assert_eq!(sqlite_url("sqlite://a.db?mode=ro"), "sqlite://a.db?mode=ro");
    }

    /// The maintenance and start-up queries are served by their indexes, never a table scan.
    #[tokio::test]
    async fn due_and_key_queries_use_their_indexes_on_sqlite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqlStore::connect(&format!(
            "sqlite://{}",
            dir.path().join("plan.db").display()
        ))
        .await
        .expect("connect");
        store.migrate().await.expect("migrate");
        for (sql, index, params) in [
            (KEEP_ALIVE_FIRST, "connections_keep_alive", 3),
            (KEEP_ALIVE_NEXT, "connections_keep_alive", 5),
            (EXPIRED_FIRST, "connections_absolute_expiry", 3),
            (EXPIRED_NEXT, "connections_absolute_expiry", 5),
            (TOKEN_KEY_IDS, "connections_key_id", 0),
        ] {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")));
            for i in 0..params {
                query = query.bind(i64::from(i));
            }
            let plan: Vec<String> = query
                .fetch_all(store.pool())
                .await
                .expect("explain")
                .iter()
                .map(|row| row.try_get::<String, _>("detail").expect("detail"))
                .collect();
            assert!(
                plan.iter().any(|line| line.contains(index)),
                "{index} not used: {plan:?}"
            );
            assert!(
                !plan.iter().any(
                    |line| line.starts_with("SCAN connections") || line.contains("TEMP B-TREE")
                ),
                "a scan or a sort: {plan:?}"
            );
        }
        store.close().await;
    }
}
