//! Change notifications between replicas on PostgreSQL: a refresh stored by one replica wakes
//! the callers waiting for it in the others at once (`LISTEN`), instead of at their next poll.

use std::sync::Weak;
use std::time::Duration;

use grantry_core::refresh::Refresher;
use sqlx::postgres::PgListener;

use crate::store::CHANGES_CHANNEL;

/// Listens on the database at `url` (PostgreSQL) for changed connections and wakes the
/// refresher's waiters on them, until the refresher is dropped. Reconnects after failures;
/// polling covers whatever is missed meanwhile.
pub async fn listen(url: String, refresher: Weak<Refresher>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        match subscribe(&url).await {
            Ok(mut listener) => {
                backoff = Duration::from_millis(500);
                loop {
                    match listener.try_recv().await {
                        Ok(Some(notification)) => match refresher.upgrade() {
                            Some(refresher) => refresher.wake(notification.payload()),
                            None => return,
                        },
                        Ok(None) => {
                            tracing::debug!("change notifications: connection lost, reconnecting");
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "change notifications failed; waiters poll until they resume");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for change notifications; waiters poll until it can");
            }
        }
        if refresher.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn subscribe(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANGES_CHANNEL).await?;
    Ok(listener)
}
