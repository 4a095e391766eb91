//! The event outbox in SQL: the deliveries a worker claims, their outcomes, the admin view and
//! the purge of old events. Events themselves are written by [`SqlStore`]'s connection changes.

use chrono::{DateTime, Utc};
use grantry_core::error::StoreError;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::store::{Backend, SqlStore};

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (or being attempted).
    Pending,
    /// An endpoint answered 2xx.
    Delivered,
    /// Every attempt failed and the retry window has passed.
    Failed,
}

impl DeliveryStatus {
    /// The stored form: `pending`, `delivered` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    /// Parses the stored form.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// A delivery a worker holds the claim of: one event to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDelivery {
    /// The delivery id.
    pub id: i64,
    /// The event id (`webhook-id`).
    pub event_id: String,
    /// The endpoint URL.
    pub endpoint: String,
    /// Attempts made before this one (since the last retry by an admin).
    pub attempts: i64,
    /// Where its retry window starts: its creation, or an admin's retry.
    pub window_start: DateTime<Utc>,
    /// The event's JSON body.
    pub body: String,
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The endpoint answered 2xx.
    Delivered {
        /// The HTTP status.
        status: u16,
    },
    /// It did not: try again at `next_at`, or give up when `give_up`.
    Failed {
        /// The HTTP status, when the endpoint answered.
        status: Option<u16>,
        /// What went wrong, without secrets.
        error: String,
        /// When to try again.
        next_at: DateTime<Utc>,
        /// The retry window has passed: the delivery fails for good.
        give_up: bool,
    },
}

/// One delivery as an admin sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryView {
    /// The delivery id.
    pub id: i64,
    /// The event id.
    pub event_id: String,
    /// The event type.
    pub event_type: String,
    /// The endpoint URL.
    pub endpoint: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: i64,
    /// The next attempt, while pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The last attempt.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The HTTP status of the last answer.
    pub last_status: Option<i64>,
    /// What went wrong last.
    pub last_error: Option<String>,
    /// When the event was recorded.
    pub created_at: DateTime<Utc>,
    /// When an endpoint took it.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// What is waiting: the pending deliveries and the oldest one's creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PendingStats {
    /// Pending deliveries.
    pub pending: u64,
    /// When the oldest pending delivery was created.
    pub oldest: Option<DateTime<Utc>>,
}

/// The outbox queries over a [`SqlStore`].
#[derive(Debug, Clone)]
pub struct Outbox {
    store: SqlStore,
}

fn db_err(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

fn corrupt(e: sqlx::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn time(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("time {ms} out of range")))
}

fn opt_time(ms: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
    ms.map(time).transpose()
}

/// The claim of due deliveries on SQLite (one writer at a time): `$1` claim length (ms), `$2`
/// claim id, `$3` batch size.
const SQLITE_CLAIM: &str = "UPDATE event_deliveries SET \
     next_attempt_at = CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER) + $1, claim = $2 \
     WHERE id IN (SELECT id FROM event_deliveries WHERE status = 'pending' \
     AND next_attempt_at <= CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER) \
     ORDER BY next_attempt_at, id LIMIT $3)";

/// The same on PostgreSQL: the due rows are picked once (a materialized CTE; a subquery in the
/// `WHERE` may be evaluated again and take more than the batch), skipping rows another worker
/// is claiming, and re-checked after their lock, so of two workers only one takes a row.
const POSTGRES_CLAIM: &str = "WITH due AS MATERIALIZED (SELECT id FROM event_deliveries \
     WHERE status = 'pending' AND next_attempt_at <= CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) \
     ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
     UPDATE event_deliveries d SET \
     next_attempt_at = CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) + $1, claim = $2 \
     FROM due WHERE d.id = due.id AND d.status = 'pending'";

impl Outbox {
    /// The outbox of `store`.
    pub fn new(store: SqlStore) -> Self {
        Self { store }
    }

    /// The store.
    pub fn store(&self) -> &SqlStore {
        &self.store
    }

    /// Claims up to `limit` due deliveries for `claim_for` of the database clock under the
    /// claim id `claim`; a claim that is not settled in time is free again when it runs out.
    pub async fn claim(
        &self,
        claim: &str,
        claim_for: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let sql = match self.store.backend() {
            Backend::Sqlite => SQLITE_CLAIM,
            Backend::Postgres => POSTGRES_CLAIM,
        };
        let claimed = sqlx::query(sql)
            .bind(i64::try_from(claim_for.as_millis()).unwrap_or(i64::MAX / 2))
            .bind(claim.to_owned())
            .bind(i64::from(limit))
            .execute(self.store.pool())
            .await
            .map_err(db_err)?;
        if claimed.rows_affected() == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT d.id, d.event_id, d.endpoint, d.attempts, d.window_start, e.body \
             FROM event_deliveries d JOIN events e ON e.id = d.event_id \
             WHERE d.claim = $1 AND d.status = 'pending' ORDER BY d.id",
        )
        .bind(claim.to_owned())
        .fetch_all(self.store.pool())
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|row| {
                Ok(ClaimedDelivery {
                    id: row.try_get("id").map_err(corrupt)?,
                    event_id: row.try_get("event_id").map_err(corrupt)?,
                    endpoint: row.try_get("endpoint").map_err(corrupt)?,
                    attempts: row.try_get("attempts").map_err(corrupt)?,
                    window_start: time(row.try_get("window_start").map_err(corrupt)?)?,
                    body: row.try_get("body").map_err(corrupt)?,
                })
            })
            .collect()
    }

    /// Records the outcome of an attempt of delivery `id` under `claim`; whether the claim was
    /// still this worker's (a claim that ran out may have been taken over).
    pub async fn settle(
        &self,
        id: i64,
        claim: &str,
        at: DateTime<Utc>,
        attempt: &Attempt,
    ) -> Result<bool, StoreError> {
        let mut conn = self.store.pool().acquire().await.map_err(db_err)?;
        Self::settle_on(&mut conn, id, claim, at, attempt).await
    }

    /// Records the outcomes of a batch under `claim` in one transaction (one commit for the
    /// batch); how many were still this worker's.
    pub async fn settle_all(
        &self,
        claim: &str,
        outcomes: &[(i64, DateTime<Utc>, Attempt)],
    ) -> Result<usize, StoreError> {
        let mut tx = self.store.pool().begin().await.map_err(db_err)?;
        let mut settled = 0;
        for (id, at, attempt) in outcomes {
            if Self::settle_on(&mut tx, *id, claim, *at, attempt).await? {
                settled += 1;
            }
        }
        tx.commit().await.map_err(db_err)?;
        Ok(settled)
    }

    async fn settle_on(
        conn: &mut sqlx::AnyConnection,
        id: i64,
        claim: &str,
        at: DateTime<Utc>,
        attempt: &Attempt,
    ) -> Result<bool, StoreError> {
        let done = match attempt {
            Attempt::Delivered { status } => sqlx::query(
                "UPDATE event_deliveries SET status = 'delivered', attempts = attempts + 1, \
                 last_attempt_at = $1, last_status = $2, last_error = NULL, delivered_at = $1, claim = NULL \
                 WHERE id = $3 AND claim = $4",
            )
            .bind(at.timestamp_millis())
            .bind(i64::from(*status))
            .bind(id)
            .bind(claim.to_owned())
            .execute(&mut *conn)
            .await
            .map_err(db_err)?,
            Attempt::Failed {
                status,
                error,
                next_at,
                give_up,
            } => sqlx::query(
                "UPDATE event_deliveries SET status = $1, attempts = attempts + 1, last_attempt_at = $2, \
                 last_status = $3, last_error = $4, next_attempt_at = $5, claim = NULL \
                 WHERE id = $6 AND claim = $7",
            )
            .bind(if *give_up {
                DeliveryStatus::Failed.as_str()
            } else {
                DeliveryStatus::Pending.as_str()
            })
            .bind(at.timestamp_millis())
            .bind(status.map(i64::from))
            .bind(error.clone())
            .bind(next_at.timestamp_millis())
            .bind(id)
            .bind(claim.to_owned())
            .execute(&mut *conn)
            .await
            .map_err(db_err)?,
        };
        Ok(done.rows_affected() == 1)
    }

    /// Makes delivery `id` pending again and due now, with a new retry window and its attempts
    /// counted anew (an admin's retry); whether it exists.
    pub async fn retry(&self, id: i64, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE event_deliveries SET status = 'pending', next_attempt_at = $1, window_start = $1, \
             attempts = 0, claim = NULL WHERE id = $2 AND (status <> 'pending' OR claim IS NULL)",
        )
        .bind(now.timestamp_millis())
        .bind(id)
        .execute(self.store.pool())
        .await
        .map_err(db_err)?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        let exists = sqlx::query("SELECT 1 AS one FROM event_deliveries WHERE id = $1")
            .bind(id)
            .fetch_optional(self.store.pool())
            .await
            .map_err(db_err)?;
        Ok(exists.is_some())
    }

    /// The deliveries newest first: at most `limit`, only ids below `before` when given, only
    /// of `status` when given.
    pub async fn deliveries(
        &self,
        status: Option<DeliveryStatus>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<DeliveryView>, StoreError> {
        let before = before.unwrap_or(i64::MAX);
        let rows = match status {
            Some(status) => sqlx::query(concat!(
                "SELECT d.id, d.event_id, e.type, d.endpoint, d.status, d.attempts, d.next_attempt_at, \
                 d.last_attempt_at, d.last_status, d.last_error, d.created_at, d.delivered_at \
                 FROM event_deliveries d JOIN events e ON e.id = d.event_id ",
                "WHERE d.id < $1 AND d.status = $3 ORDER BY d.id DESC LIMIT $2"
            ))
            .bind(before)
            .bind(i64::from(limit))
            .bind(status.as_str()),
            None => sqlx::query(concat!(
                "SELECT d.id, d.event_id, e.type, d.endpoint, d.status, d.attempts, d.next_attempt_at, \
                 d.last_attempt_at, d.last_status, d.last_error, d.created_at, d.delivered_at \
                 FROM event_deliveries d JOIN events e ON e.id = d.event_id ",
                "WHERE d.id < $1 ORDER BY d.id DESC LIMIT $2"
            ))
            .bind(before)
            .bind(i64::from(limit)),
        }
        .fetch_all(self.store.pool())
        .await
        .map_err(db_err)?;
        rows.iter().map(view).collect()
    }

    /// The pending deliveries and the oldest one's creation (through the due index).
    pub async fn pending(&self) -> Result<PendingStats, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM event_deliveries WHERE status = 'pending'",
        )
        .fetch_one(self.store.pool())
        .await
        .map_err(db_err)?;
        Ok(PendingStats {
            pending: u64::try_from(row.try_get::<i64, _>("n").map_err(corrupt)?).unwrap_or(0),
            oldest: opt_time(row.try_get("oldest").map_err(corrupt)?)?,
        })
    }

    /// Deletes up to `limit` events recorded before `cutoff` that have no pending delivery,
    /// with their deliveries (the foreign key cascades); how many events.
    pub async fn purge(&self, cutoff: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE e.created_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM event_deliveries d WHERE d.event_id = e.id \
             AND d.status = 'pending') ORDER BY e.created_at LIMIT $2)",
        )
        .bind(cutoff.timestamp_millis())
        .bind(i64::from(limit))
        .execute(self.store.pool())
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected())
    }
}

fn view(row: &AnyRow) -> Result<DeliveryView, StoreError> {
    let status: String = row.try_get("status").map_err(corrupt)?;
    let status = DeliveryStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown delivery status `{status}`")))?;
    Ok(DeliveryView {
        id: row.try_get("id").map_err(corrupt)?,
        event_id: row.try_get("event_id").map_err(corrupt)?,
        event_type: row.try_get("type").map_err(corrupt)?,
        endpoint: row.try_get("endpoint").map_err(corrupt)?,
        status,
        attempts: row.try_get("attempts").map_err(corrupt)?,
        next_attempt_at: match status {
            DeliveryStatus::Pending => {
                Some(time(row.try_get("next_attempt_at").map_err(corrupt)?)?)
            }
            _ => None,
        },
        last_attempt_at: opt_time(row.try_get("last_attempt_at").map_err(corrupt)?)?,
        last_status: row.try_get("last_status").map_err(corrupt)?,
        last_error: row.try_get("last_error").map_err(corrupt)?,
        created_at: time(row.try_get("created_at").map_err(corrupt)?)?,
        delivered_at: opt_time(row.try_get("delivered_at").map_err(corrupt)?)?,
    })
}
