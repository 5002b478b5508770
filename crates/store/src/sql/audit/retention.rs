//! Retention: drop the oldest events of each chain, keeping an anchor to verify from.

use time::OffsetDateTime;

use super::rollup;
use crate::sql::{SqlStore, column, db_error, micros, signed, unsigned, unsigned_opt};
use crate::{ChainAnchor, RetentionReport, StoreError};

pub(crate) async fn retain(
    store: &SqlStore,
    cutoff: OffsetDateTime,
) -> Result<RetentionReport, StoreError> {
    let cutoff_us = micros(cutoff);
    let _no_append_meanwhile = store.append_lock.lock().await;
    let mut tx = store.begin_write().await?;
    let chains = sqlx::query("SELECT gateway, head_seq, anchor_seq FROM audit_chains")
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
    let mut report = RetentionReport {
        cutoff,
        deleted: 0,
        anchors: Vec::new(),
    };
    for chain in &chains {
        let gateway: String = column(chain, "gateway")?;
        let head_seq = unsigned(chain, "head_seq")?;
        let anchor_seq = unsigned(chain, "anchor_seq")?;
        // A chain only ever loses a prefix, so that what remains still links to the anchor:
        // stop before the first event that is recent enough to keep, even if an older one
        // (a clock step back) follows it.
        let first_kept = sqlx::query(
            "SELECT MIN(seq) AS first_kept FROM audit_events WHERE gateway = $1 AND ts >= $2",
        )
        .bind(&gateway)
        .bind(cutoff_us)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        let last_deleted = match unsigned_opt(&first_kept, "first_kept")? {
            Some(first_kept) => first_kept.saturating_sub(1),
            None => head_seq,
        };
        if last_deleted <= anchor_seq {
            continue;
        }
        let last = signed("seq", last_deleted)?;
        let hash: Option<String> =
            sqlx::query_scalar("SELECT hash FROM audit_events WHERE gateway = $1 AND seq = $2")
                .bind(&gateway)
                .bind(last)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
        let Some(hash) = hash else {
            return Err(StoreError::Corrupt(format!(
                "chain `{gateway}` has no event seq {last_deleted} to anchor retention on; \
                 run `meshguard audit verify`"
            )));
        };
        // The rollups lose what the events lose, so stats still equal a count over the events.
        let gone = rollup::tally_prefix(&mut tx, &gateway, last).await?;
        rollup::apply(&mut tx, store.dialect, &gone, -1).await?;
        let deleted = sqlx::query("DELETE FROM audit_events WHERE gateway = $1 AND seq <= $2")
            .bind(&gateway)
            .bind(last)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
        sqlx::query("UPDATE audit_chains SET anchor_seq = $2, anchor_hash = $3 WHERE gateway = $1")
            .bind(&gateway)
            .bind(last)
            .bind(&hash)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        report.deleted += deleted;
        report.anchors.push(ChainAnchor {
            gateway,
            seq: last_deleted,
            hash,
        });
    }
    tx.commit().await.map_err(db_error)?;
    report
        .anchors
        .sort_by(|a, b| a.gateway.as_bytes().cmp(b.gateway.as_bytes()));
    Ok(report)
}
