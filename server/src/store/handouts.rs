//! The token hand-out audit, committed in groups: every hand-out waits until its own row is
//! durable, but the hand-outs that arrive while one write is in flight share the next write
//! (one multi-row `INSERT`, one commit) instead of queueing one commit each.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use grantry_core::error::StoreError;
use grantry_core::store::TokenHandout;
use sqlx::{AnyPool, Row};
use tokio::sync::oneshot;

use super::{db_err, millis, time};

/// The most rows one write takes (four bound values each, well inside both databases' limits);
/// the rest wait for the next write.
const MAX_BATCH: usize = 256;

/// One hand-out waiting for its row.
struct Pending {
    provider: String,
    admin_id: String,
    user_id: String,
    at: i64,
    done: oneshot::Sender<Result<TokenHandout, StoreError>>,
}

/// The hand-outs not yet taken by a write, and whether a writer is at work.
#[derive(Default)]
pub(super) struct HandoutLog {
    queue: Arc<Mutex<Queue>>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Pending>,
    writing: bool,
}

impl Queue {
    /// The next batch to write, or `None` (and no writer at work) when nothing waits.
    fn next_batch(&mut self) -> Option<Vec<Pending>> {
        if self.waiting.is_empty() {
            self.writing = false;
            return None;
        }
        let rest = self.waiting.split_off(self.waiting.len().min(MAX_BATCH));
        Some(std::mem::replace(&mut self.waiting, rest))
    }
}

fn lock(queue: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    queue
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The writer task's hold on the queue: should the task end without draining it (a panic, its
/// runtime shutting down), the callers waiting in it get an error and the next caller starts a
/// writer again.
struct Writer {
    queue: Arc<Mutex<Queue>>,
    /// Set once the queue was found empty (and `writing` cleared under its lock).
    drained: bool,
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.drained {
            let mut queue = lock(&self.queue);
            queue.writing = false;
            queue.waiting.clear();
        }
    }
}

impl std::fmt::Debug for HandoutLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandoutLog").finish_non_exhaustive()
    }
}

impl HandoutLog {
    /// Audits one hand-out and returns its stored row once it is committed.
    ///
    /// The caller that finds no writer at work starts one, in a task of its own: it writes what
    /// waits (up to [`MAX_BATCH`] rows a statement) until nothing does, so a caller that goes
    /// away (a client hanging up) never abandons the rows of the others.
    pub(super) async fn record(
        &self,
        pool: &AnyPool,
        provider: &str,
        admin_id: &str,
        user_id: &str,
        at: DateTime<Utc>,
    ) -> Result<TokenHandout, StoreError> {
        let (done, result) = oneshot::channel();
        let start = {
            let mut queue = lock(&self.queue);
            queue.waiting.push(Pending {
                provider: provider.to_owned(),
                admin_id: admin_id.to_owned(),
                user_id: user_id.to_owned(),
                at: millis(at),
                done,
            });
            !std::mem::replace(&mut queue.writing, true)
        };
        if start {
            let pool = pool.clone();
            let writer = Writer {
                queue: Arc::clone(&self.queue),
                drained: false,
            };
            tokio::spawn(async move {
                let mut writer = writer;
                loop {
                    let batch = lock(&writer.queue).next_batch();
                    let Some(batch) = batch else { break };
                    write(&pool, batch).await;
                }
                writer.drained = true;
            });
        }
        result
            .await
            .unwrap_or_else(|_| Err(StoreError::Database("the audit write was abandoned".into())))
    }
}

/// Writes `batch` and answers every caller in it. When a write of several rows fails, each row
/// is written again on its own, so that one row the database refuses fails only its own caller.
async fn write(pool: &AnyPool, batch: Vec<Pending>) {
    match insert(pool, &batch).await {
        Ok(stored) => answer(batch, stored),
        Err(e) if batch.len() == 1 => {
            if let Some(p) = batch.into_iter().next() {
                let _ = p.done.send(Err(e));
            }
        }
        Err(_) => {
            for p in batch {
                let one = std::slice::from_ref(&p);
                match insert(pool, one).await {
                    Ok(stored) => answer(vec![p], stored),
                    Err(e) => {
                        let _ = p.done.send(Err(e));
                    }
                }
            }
        }
    }
}

/// Inserts `rows` in one statement (one commit); the stored rows, in no particular order.
async fn insert(pool: &AnyPool, rows: &[Pending]) -> Result<Vec<TokenHandout>, StoreError> {
    let mut sql = String::from(
        "INSERT INTO token_handouts (provider, admin_id, user_id, handed_out_at) VALUES ",
    );
    for i in 0..rows.len() {
        let n = i * 4;
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&format!("(${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4));
    }
    sql.push_str(" RETURNING id, provider, admin_id, user_id, handed_out_at");
    // Placeholders only: every value is bound.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for p in rows {
        query = query
            .bind(p.provider.clone())
            .bind(p.admin_id.clone())
            .bind(p.user_id.clone())
            .bind(p.at);
    }
    query
        .fetch_all(pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(stored)
        .collect()
}

/// Hands each caller of `batch` a row of `stored` with its own values: `RETURNING` promises no
/// order, and rows with equal values are interchangeable.
fn answer(batch: Vec<Pending>, mut stored: Vec<TokenHandout>) {
    for p in batch {
        let found = stored.iter().position(|h| {
            h.provider == p.provider
                && h.admin_id == p.admin_id
                && h.user_id == p.user_id
                && h.handed_out_at.timestamp_millis() == p.at
        });
        let answer = found
            .map(|i| stored.swap_remove(i))
            .ok_or_else(|| StoreError::Corrupt("the audit insert returned other rows".into()));
        let _ = p.done.send(answer);
    }
}

/// A row of `token_handouts`.
pub(super) fn stored(row: &sqlx::any::AnyRow) -> Result<TokenHandout, StoreError> {
    let get = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
    Ok(TokenHandout {
        id: row.try_get("id").map_err(get)?,
        provider: row.try_get("provider").map_err(get)?,
        admin_id: row.try_get("admin_id").map_err(get)?,
        user_id: row.try_get("user_id").map_err(get)?,
        handed_out_at: time(row.try_get("handed_out_at").map_err(get)?)?,
    })
}
