//! `audit verify`: walk every chain from its anchor and recompute every hash.

use sqlx::any::AnyRow;

use super::{COLUMNS, from_row};
use crate::chain::{GENESIS_HASH, event_hash};
use crate::sql::{SqlStore, column, db_error, signed, unsigned, unsigned_opt};
use crate::{ChainBreak, ChainReport, StoreError, VerifyReport};

/// Events read per round trip while walking a chain.
const PAGE: i64 = 1000;

/// A chain as `audit_chains` records it.
struct ChainRow {
    gateway: String,
    head_seq: u64,
    head_hash: String,
    anchor_seq: u64,
    anchor_hash: String,
}

fn chain_from_row(row: &AnyRow) -> Result<ChainRow, StoreError> {
    Ok(ChainRow {
        gateway: column(row, "gateway")?,
        head_seq: unsigned(row, "head_seq")?,
        head_hash: column(row, "head_hash")?,
        anchor_seq: unsigned(row, "anchor_seq")?,
        anchor_hash: column(row, "anchor_hash")?,
    })
}

pub(crate) async fn verify(store: &SqlStore) -> Result<VerifyReport, StoreError> {
    let rows = sqlx::query(
        "SELECT gateway, head_seq, head_hash, anchor_seq, anchor_hash FROM audit_chains",
    )
    .fetch_all(&store.pool)
    .await
    .map_err(db_error)?;
    let mut chains = rows
        .iter()
        .map(chain_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    // Events whose chain has no record at all: their chain row was deleted.
    let orphans = sqlx::query(
        "SELECT gateway, MIN(seq) AS first_seq FROM audit_events \
         WHERE gateway NOT IN (SELECT gateway FROM audit_chains) GROUP BY gateway",
    )
    .fetch_all(&store.pool)
    .await
    .map_err(db_error)?;
    chains.sort_by(|a, b| a.gateway.as_bytes().cmp(b.gateway.as_bytes()));

    let mut reports = Vec::with_capacity(chains.len() + orphans.len());
    let mut events_checked = 0;
    for chain in &chains {
        let report = walk(store, chain).await?;
        events_checked += report.events;
        reports.push(report);
    }
    for row in &orphans {
        let gateway: String = column(row, "gateway")?;
        let seq = unsigned(row, "first_seq")?;
        reports.push(ChainReport {
            anchor_seq: 0,
            head_seq: 0,
            events: 0,
            broken: Some(ChainBreak {
                gateway: gateway.clone(),
                seq,
                reason: "the chain's head record is missing".to_owned(),
            }),
            gateway,
        });
    }
    reports.sort_by(|a, b| a.gateway.as_bytes().cmp(b.gateway.as_bytes()));
    Ok(VerifyReport {
        ok: reports.iter().all(|report| report.broken.is_none()),
        events_checked,
        chains: reports,
    })
}

/// Walks one chain; stops at its first break.
async fn walk(store: &SqlStore, chain: &ChainRow) -> Result<ChainReport, StoreError> {
    let mut report = ChainReport {
        gateway: chain.gateway.clone(),
        anchor_seq: chain.anchor_seq,
        head_seq: chain.head_seq,
        events: 0,
        broken: None,
    };
    let broken = |seq: u64, reason: String| ChainBreak {
        gateway: chain.gateway.clone(),
        seq,
        reason,
    };
    let mut last_seq = chain.anchor_seq;
    let mut prev_hash = chain.anchor_hash.clone();
    // The walk stops at the head read above: events appended since (through MeshGuard, which
    // moves the head in the same transaction) are the next verification's, not a break.
    let sql = format!(
        "SELECT {COLUMNS} FROM audit_events WHERE gateway = $1 AND seq > $2 AND seq <= $3 \
         ORDER BY seq LIMIT $4"
    );
    let head = signed("seq", chain.head_seq)?;
    loop {
        let rows = sqlx::query(&sql)
            .bind(&chain.gateway)
            .bind(signed("seq", last_seq)?)
            .bind(head)
            .bind(PAGE)
            .fetch_all(&store.pool)
            .await
            .map_err(db_error)?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let expected = last_seq + 1;
            let event = match from_row(row) {
                Ok(event) => event,
                Err(err) => {
                    report.broken =
                        Some(broken(expected, format!("the event cannot be read: {err}")));
                    return Ok(report);
                }
            };
            if event.seq != expected {
                report.broken = Some(broken(
                    expected,
                    format!(
                        "seq {expected} is missing (the next stored event is seq {})",
                        event.seq
                    ),
                ));
                return Ok(report);
            }
            if event.prev_hash != prev_hash {
                report.broken = Some(broken(expected, link_reason(chain, expected)));
                return Ok(report);
            }
            report.events += 1;
            if event_hash(&event) != event.hash {
                report.broken = Some(broken(
                    expected,
                    "the stored hash does not match the event's content: the event was altered"
                        .to_owned(),
                ));
                return Ok(report);
            }
            last_seq = event.seq;
            prev_hash = event.hash;
        }
    }
    // Deleting the newest events leaves a chain that links perfectly: the head record catches it.
    if last_seq < chain.head_seq {
        report.broken = Some(broken(
            last_seq + 1,
            format!(
                "seq {} to {} are missing: the chain's head is at seq {}",
                last_seq + 1,
                chain.head_seq,
                chain.head_seq
            ),
        ));
    } else if prev_hash != chain.head_hash {
        report.broken = Some(broken(
            chain.head_seq,
            "the last event's hash differs from the chain's recorded head".to_owned(),
        ));
    } else if let Some((seq, head_seq)) = beyond_head(store, &chain.gateway).await? {
        report.broken = Some(broken(
            seq,
            format!(
                "events after seq {head_seq} were not appended through MeshGuard (the head is at seq {head_seq})"
            ),
        ));
    }
    Ok(report)
}

/// The first event stored past its chain's current head, with that head: rows written behind
/// MeshGuard's back. One statement, so the head and the events are read in one snapshot and an
/// append committing meanwhile (events and head move together) is never mistaken for one.
async fn beyond_head(store: &SqlStore, gateway: &str) -> Result<Option<(u64, u64)>, StoreError> {
    let row = sqlx::query(
        "SELECT MIN(e.seq) AS first_seq, MIN(c.head_seq) AS head_seq \
         FROM audit_events e JOIN audit_chains c ON c.gateway = e.gateway \
         WHERE e.gateway = $1 AND e.seq > c.head_seq",
    )
    .bind(gateway)
    .fetch_one(&store.pool)
    .await
    .map_err(db_error)?;
    let first = unsigned_opt(&row, "first_seq")?;
    let head = unsigned_opt(&row, "head_seq")?;
    Ok(first.zip(head))
}

fn link_reason(chain: &ChainRow, seq: u64) -> String {
    if seq == chain.anchor_seq + 1 {
        if chain.anchor_seq == 0 && chain.anchor_hash == GENESIS_HASH {
            "prev_hash is not the genesis hash of a new chain".to_owned()
        } else {
            format!(
                "prev_hash does not match the retention anchor (seq {})",
                chain.anchor_seq
            )
        }
    } else {
        format!(
            "prev_hash does not match the hash of seq {}: the chain was relinked",
            seq - 1
        )
    }
}
