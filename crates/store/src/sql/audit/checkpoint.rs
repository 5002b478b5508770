//! Storing signed checkpoints (crates/store/src/checkpoint.rs). The store keeps them and says
//! which were walked through; it never trusts one: every use checks its signature again.

use sqlx::any::AnyRow;
use time::OffsetDateTime;

use crate::sql::{SqlStore, column, db_error, micros, signed, time_column, unsigned};
use crate::{AuditCheckpoint, StoreError};

const COLUMNS: &str = "gateway, seq, hash, ts, key_id, signature";

fn from_row(row: &AnyRow) -> Result<AuditCheckpoint, StoreError> {
    Ok(AuditCheckpoint {
        gateway: column(row, "gateway")?,
        seq: unsigned(row, "seq")?,
        hash: column(row, "hash")?,
        ts: time_column(row, "ts")?,
        key_id: column(row, "key_id")?,
        signature: column(row, "signature")?,
    })
}

/// Stores `checkpoint`; a second one for the same `(gateway, seq)` is refused as a conflict.
pub(crate) async fn add(store: &SqlStore, checkpoint: &AuditCheckpoint) -> Result<(), StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO audit_checkpoints (gateway, seq, hash, ts, key_id, signature) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (gateway, seq) DO NOTHING",
    )
    .bind(&checkpoint.gateway)
    .bind(signed("seq", checkpoint.seq)?)
    .bind(&checkpoint.hash)
    .bind(micros(checkpoint.ts))
    .bind(&checkpoint.key_id)
    .bind(&checkpoint.signature)
    .execute(&store.pool)
    .await
    .map_err(db_error)?
    .rows_affected();
    if inserted == 0 {
        return Err(StoreError::conflict(
            format!(
                "checkpoint of gateway `{}` at seq {}",
                checkpoint.gateway, checkpoint.seq
            ),
            "it already exists",
        ));
    }
    Ok(())
}

/// `gateway`'s checkpoints with `after < seq <= through`, oldest first.
pub(crate) async fn range(
    store: &SqlStore,
    gateway: &str,
    after: u64,
    through: u64,
) -> Result<Vec<AuditCheckpoint>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM audit_checkpoints WHERE gateway = $1 AND seq > $2 AND seq <= $3 \
         ORDER BY seq"
    );
    let rows = sqlx::query(&sql)
        .bind(gateway)
        .bind(signed("seq", after)?)
        .bind(signed("seq", through)?)
        .fetch_all(&store.pool)
        .await
        .map_err(db_error)?;
    rows.iter().map(from_row).collect()
}

/// `gateway`'s newest checkpoint, or with `verified`, its newest one a verification walked
/// through, in both cases after `after`.
pub(crate) async fn latest(
    store: &SqlStore,
    gateway: &str,
    after: u64,
    verified: bool,
) -> Result<Option<AuditCheckpoint>, StoreError> {
    let only_verified = if verified {
        " AND verified_at IS NOT NULL"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM audit_checkpoints WHERE gateway = $1 AND seq > $2{only_verified} \
         ORDER BY seq DESC LIMIT 1"
    );
    let row = sqlx::query(&sql)
        .bind(gateway)
        .bind(signed("seq", after)?)
        .fetch_optional(&store.pool)
        .await
        .map_err(db_error)?;
    row.as_ref().map(from_row).transpose()
}

/// Notes that a verification walked through `gateway`'s checkpoints up to `through`.
pub(crate) async fn mark_verified(
    store: &SqlStore,
    gateway: &str,
    through: u64,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE audit_checkpoints SET verified_at = $3 \
         WHERE gateway = $1 AND seq <= $2 AND verified_at IS NULL",
    )
    .bind(gateway)
    .bind(signed("seq", through)?)
    .bind(micros(now))
    .execute(&store.pool)
    .await
    .map_err(db_error)?;
    Ok(())
}
