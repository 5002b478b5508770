//! Retention: drop the oldest events of each chain, keeping an anchor to verify from.

use std::path::Path;

use time::OffsetDateTime;

use super::{chain_of, checkpoint, follow, rollup};
use crate::sql::{SqlStore, db_error, micros, signed, unsigned_opt};
use crate::{ChainAnchor, RetentionReport, StoreError};

/// Events deleted per transaction: retention holds the append lock only this long at a time
/// (about 20 ms on SQLite), so checks keep committing between batches however much it deletes.
const BATCH: u64 = 1_000;

/// Events per archive file (deleted in transactions of [`BATCH`] once the file is on disk).
const ARCHIVE_BATCH: u64 = 10_000;

pub(crate) async fn retain(
    store: &SqlStore,
    cutoff: OffsetDateTime,
    archive: Option<&Path>,
) -> Result<RetentionReport, StoreError> {
    let cutoff_us = micros(cutoff);
    let mut report = RetentionReport {
        cutoff,
        deleted: 0,
        anchors: Vec::new(),
        archived: Vec::new(),
    };
    let gateways: Vec<String> = sqlx::query_scalar("SELECT gateway FROM audit_chains")
        .fetch_all(&store.pool)
        .await
        .map_err(db_error)?;
    for gateway in gateways {
        // What to drop is decided once: events appended meanwhile come after it in the chain.
        let last_dropped = last_dropped(store, &gateway, cutoff_us).await?;
        let mut anchored = None;
        loop {
            // Archived outside the append lock: events this old are never appended to, and the
            // anchor only moves forward, so every event deleted below is in a file on disk.
            let upto = match archive {
                Some(dir) => match archive_batch(store, &gateway, last_dropped, dir).await? {
                    Some((last, path)) => {
                        report.archived.push(path);
                        last
                    }
                    None => break,
                },
                None => last_dropped,
            };
            while let Some((deleted, anchor)) = retain_batch(store, &gateway, upto).await? {
                report.deleted += deleted;
                anchored = Some(anchor);
            }
            if archive.is_none() {
                break;
            }
        }
        if let Some(anchor) = anchored {
            report.anchors.push(anchor);
        }
    }
    report
        .anchors
        .sort_by(|a, b| a.gateway.as_bytes().cmp(b.gateway.as_bytes()));
    Ok(report)
}

/// The last `seq` of `gateway`'s chain that retention drops. A chain only ever loses a prefix,
/// so that what remains still links to the anchor: it stops before the first event recent
/// enough to keep, even if an older one (a clock step back) follows it.
async fn last_dropped(store: &SqlStore, gateway: &str, cutoff_us: i64) -> Result<u64, StoreError> {
    let first_kept = sqlx::query(&format!(
        "SELECT MIN(seq) AS first_kept FROM audit_events WHERE chain = {} AND ts >= $2",
        chain_of("$1")
    ))
    .bind(gateway)
    .bind(cutoff_us)
    .fetch_one(&store.pool)
    .await
    .map_err(db_error)?;
    match unsigned_opt(&first_kept, "first_kept")? {
        Some(first_kept) => Ok(first_kept.saturating_sub(1)),
        None => {
            let head: i64 =
                sqlx::query_scalar("SELECT head_seq FROM audit_chains WHERE gateway = $1")
                    .bind(gateway)
                    .fetch_one(&store.pool)
                    .await
                    .map_err(db_error)?;
            u64::try_from(head)
                .map_err(|_| StoreError::Corrupt(format!("chain `{gateway}` has head seq {head}")))
        }
    }
}

/// The chain's anchor `seq` as committed.
async fn anchor_seq(
    executor: impl sqlx::Executor<'_, Database = sqlx::Any>,
    gateway: &str,
) -> Result<u64, StoreError> {
    let anchor_seq: i64 =
        sqlx::query_scalar("SELECT anchor_seq FROM audit_chains WHERE gateway = $1")
            .bind(gateway)
            .fetch_one(executor)
            .await
            .map_err(db_error)?;
    u64::try_from(anchor_seq)
        .map_err(|_| StoreError::Corrupt(format!("chain `{gateway}` has anchor seq {anchor_seq}")))
}

/// Writes the next events retention deletes (at most [`ARCHIVE_BATCH`]) to an archive file in
/// `dir`; the last `seq` written and the file, or `None` when nothing is left to delete.
async fn archive_batch(
    store: &SqlStore,
    gateway: &str,
    last_dropped: u64,
    dir: &Path,
) -> Result<Option<(u64, std::path::PathBuf)>, StoreError> {
    let anchor = anchor_seq(&store.pool, gateway).await?;
    if last_dropped <= anchor {
        return Ok(None);
    }
    let last = last_dropped.min(anchor.saturating_add(ARCHIVE_BATCH));
    let limit = u32::try_from(last - anchor).unwrap_or(u32::MAX);
    let events = follow::chain_after(store, gateway, anchor, limit).await?;
    if events.first().map(|e| e.seq) != Some(anchor + 1)
        || events.last().map(|e| e.seq) != Some(last)
        || events.len() as u64 != last - anchor
    {
        return Err(StoreError::Corrupt(format!(
            "chain `{gateway}` lacks events between seq {} and {last}: retention archives whole \
             ranges only; run `meshguard audit verify --full`",
            anchor + 1
        )));
    }
    let checkpoints = checkpoint::range(store, gateway, anchor, last).await?;
    let dir = dir.to_path_buf();
    let path =
        tokio::task::spawn_blocking(move || crate::archive::write(&dir, events, checkpoints))
            .await
            .map_err(|err| StoreError::Unavailable(format!("archiving failed: {err}")))??;
    Ok(Some((last, path)))
}

/// Deletes at most [`BATCH`] of the events of `gateway`'s chain up to `last_dropped`, in one
/// transaction that moves the anchor along; `None` when none is left.
async fn retain_batch(
    store: &SqlStore,
    gateway: &str,
    last_dropped: u64,
) -> Result<Option<(u64, ChainAnchor)>, StoreError> {
    let _no_append_meanwhile = store.append_lock.lock().await;
    let mut tx = store.begin_write().await?;
    let anchor_seq = anchor_seq(&mut *tx, gateway).await?;
    if last_dropped <= anchor_seq {
        return Ok(None);
    }
    let last_deleted = last_dropped.min(anchor_seq.saturating_add(BATCH));
    let last = signed("seq", last_deleted)?;
    let hash: Option<Vec<u8>> = sqlx::query_scalar(&format!(
        "SELECT hash FROM audit_events WHERE chain = {} AND seq = $2",
        chain_of("$1")
    ))
    .bind(gateway)
    .bind(last)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_error)?;
    let hash = hash.map(hex::encode);
    let Some(hash) = hash else {
        return Err(StoreError::Corrupt(format!(
            "chain `{gateway}` has no event seq {last_deleted} to anchor retention on; \
             run `meshguard audit verify`"
        )));
    };
    // The rollups lose what the events lose, so stats still equal a count over the events.
    // Bounded below too, so that the count reads the batch through `(chain, seq)`.
    let gone = rollup::tally_prefix(&mut tx, gateway, signed("seq", anchor_seq)?, last).await?;
    rollup::apply(&mut tx, store.dialect, &gone, -1).await?;
    let deleted = sqlx::query(&format!(
        "DELETE FROM audit_events WHERE chain = {} AND seq <= $2",
        chain_of("$1")
    ))
    .bind(gateway)
    .bind(last)
    .execute(&mut *tx)
    .await
    .map_err(db_error)?
    .rows_affected();
    // Checkpoints at or before the anchor sign nothing left (they are in the archive, if any).
    sqlx::query("DELETE FROM audit_checkpoints WHERE gateway = $1 AND seq <= $2")
        .bind(gateway)
        .bind(last)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    sqlx::query("UPDATE audit_chains SET anchor_seq = $2, anchor_hash = $3 WHERE gateway = $1")
        .bind(gateway)
        .bind(last)
        .bind(&hash)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    let anchor = ChainAnchor {
        gateway: gateway.to_owned(),
        seq: last_deleted,
        hash,
    };
    Ok(Some((deleted, anchor)))
}
