//! Telling gateways about changes: an in-process broadcast, fed on PostgreSQL by LISTEN/NOTIFY
//! so that a change made by one gateway reaches every other one.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::broadcast;

use super::{Dialect, SqlStore};
use crate::{StoreChange, StoreError};

/// The PostgreSQL notification channel.
const CHANNEL: &str = "meshguard_changes";

/// Changes buffered per receiver before it lags (and must resync).
pub(super) const CAPACITY: usize = 1024;

/// Pause before listening again after the notification connection failed.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

impl SqlStore {
    /// Announces a committed change. A failed notification is logged, not returned: the change
    /// itself is committed, and other gateways resync when their listener reconnects.
    pub(super) async fn announce(&self, change: StoreChange) {
        match self.dialect {
            Dialect::Sqlite => {
                // No receiver yet is not an error.
                let _ = self.changes.send(change);
            }
            Dialect::Postgres => {
                let payload = match serde_json::to_string(&change) {
                    Ok(payload) => payload,
                    Err(err) => {
                        tracing::warn!(?change, %err, "cannot encode a store change");
                        return;
                    }
                };
                // `IS NULL` gives the statement a boolean column: pg_notify's `void` has no
                // representation in sqlx's `Any` driver.
                let sent = sqlx::query("SELECT pg_notify($1, $2) IS NULL AS sent")
                    .bind(CHANNEL)
                    .bind(payload)
                    .fetch_one(&self.pool)
                    .await;
                if let Err(err) = sent {
                    tracing::warn!(?change, %err, "cannot notify other gateways of a change");
                    let _ = self.changes.send(change);
                }
            }
        }
    }

    pub(super) async fn announce_all(&self, changes: impl IntoIterator<Item = StoreChange>) {
        for change in changes {
            self.announce(change).await;
        }
    }
}

/// Starts listening before `open` returns, so that no change committed after `open` is missed.
pub(super) async fn listen(url: &str) -> Result<PgListener, StoreError> {
    let mut listener = PgListener::connect(url)
        .await
        .map_err(|err| StoreError::Unavailable(format!("cannot listen for changes: {err}")))?;
    listener
        .listen(CHANNEL)
        .await
        .map_err(|err| StoreError::Unavailable(format!("cannot listen for changes: {err}")))?;
    Ok(listener)
}

/// Forwards notifications to the broadcast until the store is dropped (which aborts this task).
pub(super) async fn forward(
    url: String,
    mut listener: PgListener,
    changes: broadcast::Sender<StoreChange>,
) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => {
                match serde_json::from_str::<StoreChange>(notification.payload()) {
                    Ok(change) => {
                        let _ = changes.send(change);
                    }
                    Err(err) => tracing::warn!(%err, "ignoring a malformed change notification"),
                }
            }
            // The connection was lost and re-established: notifications in between are gone.
            Ok(None) => {
                let _ = changes.send(StoreChange::Resync);
            }
            Err(err) => {
                tracing::warn!(%err, "lost the change notification connection; retrying");
                tokio::time::sleep(RECONNECT_DELAY).await;
                if let Ok(fresh) = listen(&url).await {
                    listener = fresh;
                    let _ = changes.send(StoreChange::Resync);
                }
            }
        }
    }
}
