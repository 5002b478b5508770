//! Per-minute counts of checks (`audit_rollups`), kept in the same transaction as the events they
//! count: an append adds its checks, retention subtracts the ones it deletes. `audit stats` reads
//! whole minutes from here and only the partial minutes at the edges of its period from the
//! events, so its cost follows the number of distinct (minute, agent, decision, action) groups,
//! not the number of events.

use std::collections::BTreeMap;

use sqlx::AnyConnection;

use crate::sql::{Dialect, column, db_error, micros};
use crate::{AuditKind, NewAuditEvent, StoreError};
use meshguard_policy::Effect;

/// Microseconds in a minute: a rollup's `minute` is `ts / MINUTE_US`.
pub(super) const MINUTE_US: i64 = 60_000_000;

/// Rows per upsert statement.
const MAX_ROWS: usize = 64;
const COLUMNS: usize = 8;

/// What a rollup row counts: absent values are ''.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key {
    minute: i64,
    agent_id: String,
    agent_name: String,
    decision: String,
    action: String,
    shadow_policy: String,
    shadow_decision: String,
}

/// Counts per key.
pub(super) type Tally = BTreeMap<Key, i64>;

/// Counts the checks among `events`; events before 1970 are left to the event scan.
pub(super) fn tally<'a>(events: impl IntoIterator<Item = &'a NewAuditEvent>) -> Tally {
    let mut counts = Tally::new();
    for event in events {
        let ts = micros(event.ts);
        if event.kind != AuditKind::Check || ts < 0 {
            continue;
        }
        let key = Key {
            minute: ts / MINUTE_US,
            agent_id: event
                .agent
                .as_ref()
                .map(|a| a.id.clone())
                .unwrap_or_default(),
            agent_name: event
                .agent
                .as_ref()
                .map(|a| a.name.clone())
                .unwrap_or_default(),
            decision: event
                .decision
                .map(Effect::as_str)
                .unwrap_or_default()
                .into(),
            action: event.action.clone(),
            shadow_policy: event
                .shadow
                .as_ref()
                .and_then(|s| s.policy.clone())
                .unwrap_or_default(),
            shadow_decision: event
                .shadow
                .as_ref()
                .map(|s| s.decision.as_str())
                .unwrap_or_default()
                .into(),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// Counts the checks of `gateway`'s chain with `after_seq < seq <= last_seq`, which retention is
/// about to delete.
pub(super) async fn tally_prefix(
    tx: &mut AnyConnection,
    gateway: &str,
    after_seq: i64,
    last_seq: i64,
) -> Result<Tally, StoreError> {
    let rows = sqlx::query(&format!(
        concat!(
            "SELECT e.ts / {MINUTE_US} AS minute, COALESCE(a.agent_id, '') AS agent_id, \
             COALESCE(e.agent_name, '') AS agent_name, COALESCE({decision}, '') AS decision, \
             e.action, COALESCE({shadow_policy}, '') AS shadow_policy, \
             COALESCE({shadow_decision}, '') AS shadow_decision, COUNT(*) AS n \
             FROM audit_events e LEFT JOIN audit_agents a ON a.agent = e.agent ",
            outcome_join!(),
            " WHERE e.chain = {chain} AND e.seq > $3 AND e.seq <= $2 AND {kind} = 'check' \
             AND e.ts >= 0 \
             GROUP BY e.ts / {MINUTE_US}, COALESCE(a.agent_id, ''), COALESCE(e.agent_name, ''), \
             COALESCE({decision}, ''), e.action, COALESCE({shadow_policy}, ''), \
             COALESCE({shadow_decision}, '')"
        ),
        MINUTE_US = MINUTE_US,
        chain = super::chain_of("$1"),
        kind = outcome_column!("kind"),
        decision = outcome_column!("decision"),
        shadow_policy = outcome_column!("shadow_policy"),
        shadow_decision = outcome_column!("shadow_decision"),
    ))
    .bind(gateway)
    .bind(last_seq)
    .bind(after_seq)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_error)?;
    let mut counts = Tally::new();
    for row in &rows {
        let key = Key {
            minute: column(row, "minute")?,
            agent_id: column(row, "agent_id")?,
            agent_name: column(row, "agent_name")?,
            decision: column(row, "decision")?,
            action: column(row, "action")?,
            shadow_policy: column(row, "shadow_policy")?,
            shadow_decision: column(row, "shadow_decision")?,
        };
        counts.insert(key, column(row, "n")?);
    }
    Ok(counts)
}

/// Adds `counts` (times `sign`: 1 for appended events, -1 for deleted ones) to the rollups.
pub(super) async fn apply(
    tx: &mut AnyConnection,
    dialect: Dialect,
    counts: &Tally,
    sign: i64,
) -> Result<(), StoreError> {
    let rows: Vec<(&Key, i64)> = counts.iter().map(|(key, n)| (key, n * sign)).collect();
    for chunk in rows.chunks(MAX_ROWS) {
        let values: Vec<String> = (0..chunk.len())
            .map(|row| {
                let first = row * COLUMNS + 1;
                let columns: Vec<String> = (first..first + COLUMNS)
                    .map(|n| dialect.placeholder(n))
                    .collect();
                format!("({})", columns.join(", "))
            })
            .collect();
        let sql = format!(
            "INSERT INTO audit_rollups (minute, agent_id, agent_name, decision, action, \
             shadow_policy, shadow_decision, n) VALUES {} \
             ON CONFLICT (minute, agent_id, agent_name, decision, action, shadow_policy, \
             shadow_decision) DO UPDATE SET n = audit_rollups.n + excluded.n",
            values.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for (key, n) in chunk {
            query = query
                .bind(key.minute)
                .bind(&key.agent_id)
                .bind(&key.agent_name)
                .bind(&key.decision)
                .bind(&key.action)
                .bind(&key.shadow_policy)
                .bind(&key.shadow_decision)
                .bind(*n);
        }
        query.execute(&mut *tx).await.map_err(db_error)?;
    }
    if sign < 0 && !counts.is_empty() {
        sqlx::query("DELETE FROM audit_rollups WHERE n <= 0")
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
    }
    Ok(())
}
