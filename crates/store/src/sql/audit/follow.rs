//! Reading what other gateways commit: each chain's head, and a chain's events after a `seq`.
//!
//! A chain's `seq` is assigned under its head row's lock and committed in order, so "after the
//! last `seq` seen" never skips an event that commits late; a position across chains (`pos`)
//! could, because two gateways commit concurrently.

use std::collections::BTreeMap;

use super::{CHAIN_EVENTS, COLUMNS, from_row, of_chain};
use crate::sql::{SqlStore, column, db_error, signed, unsigned};
use crate::{AuditEvent, StoreError};

pub(crate) async fn heads(store: &SqlStore) -> Result<BTreeMap<String, u64>, StoreError> {
    let rows = sqlx::query("SELECT gateway, head_seq FROM audit_chains")
        .fetch_all(&store.pool)
        .await
        .map_err(db_error)?;
    rows.iter()
        .map(|row| Ok((column(row, "gateway")?, unsigned(row, "head_seq")?)))
        .collect()
}

pub(crate) async fn chain_after(
    store: &SqlStore,
    gateway: &str,
    after: u64,
    limit: u32,
) -> Result<Vec<AuditEvent>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM {CHAIN_EVENTS} WHERE {} AND e.seq > $2 \
         ORDER BY e.seq LIMIT $3",
        of_chain("$1")
    );
    let rows = sqlx::query(&sql)
        .bind(gateway)
        .bind(signed("after", after)?)
        .bind(i64::from(limit.max(1)))
        .fetch_all(&store.pool)
        .await
        .map_err(db_error)?;
    rows.iter().map(from_row).collect()
}
