//! Per-minute and per-hour counts of checks (`audit_rollups`, `audit_rollups_hourly`), kept in
//! the same transaction as the events they count: an append adds its checks, retention subtracts
//! the ones it deletes. `audit stats` reads whole hours, then whole minutes at the edges of its
//! period, and only the partial minutes from the events, so its cost follows the number of
//! distinct (hour or minute, agent, decision, action) groups, not the number of events.

use std::collections::BTreeMap;

use sqlx::AnyConnection;

use crate::sql::{Dialect, column, db_error, micros};
use crate::{AuditKind, NewAuditEvent, StoreError};
use meshguard_policy::Effect;

/// Microseconds in a minute: a rollup's `minute` is `ts / MINUTE_US`.
pub(super) const MINUTE_US: i64 = 60_000_000;
/// Microseconds in an hour: an hourly rollup's `hour` is `ts / HOUR_US`.
pub(super) const HOUR_US: i64 = 3_600_000_000;

/// A level of rollups: the table, its time column and the microseconds one of its rows covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tier {
    /// `audit_rollups`, one row per minute and group.
    Minute,
    /// `audit_rollups_hourly`, one row per hour and group: the minutes' sums.
    Hour,
}

impl Tier {
    pub(super) const fn table(self) -> &'static str {
        match self {
            Self::Minute => "audit_rollups",
            Self::Hour => "audit_rollups_hourly",
        }
    }

    pub(super) const fn column(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
        }
    }

    pub(super) const fn micros(self) -> i64 {
        match self {
            Self::Minute => MINUTE_US,
            Self::Hour => HOUR_US,
        }
    }
}

/// Rows per upsert statement.
const MAX_ROWS: usize = 64;
const COLUMNS: usize = 8;

/// What a rollup row counts: absent values are ''.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key {
    /// The minute, or in an hourly tally the hour.
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

/// Adds `counts` (times `sign`: 1 for appended events, -1 for deleted ones) to the rollups of
/// both tiers.
pub(super) async fn apply(
    tx: &mut AnyConnection,
    dialect: Dialect,
    counts: &Tally,
    sign: i64,
) -> Result<(), StoreError> {
    if counts.is_empty() {
        return Ok(());
    }
    let minutes_per_hour = HOUR_US / MINUTE_US;
    let mut hours = Tally::new();
    for (key, n) in counts {
        let hour = Key {
            minute: key.minute.div_euclid(minutes_per_hour),
            ..key.clone()
        };
        *hours.entry(hour).or_default() += n;
    }
    let signed = |tally| -> Vec<(&Key, i64)> {
        Tally::iter(tally).map(|(key, n)| (key, n * sign)).collect()
    };
    let (minute_rows, hour_rows) = (signed(counts), signed(&hours));
    if dialect == Dialect::Postgres && minute_rows.len().max(hour_rows.len()) <= MAX_ROWS {
        // Both tiers in one round trip (an append's usual case): PostgreSQL runs a
        // data-modifying WITH whether or not the statement reads it.
        let sql = format!(
            "WITH minutes AS ({}) {}",
            upsert(dialect, Tier::Minute, minute_rows.len(), 1),
            upsert(
                dialect,
                Tier::Hour,
                hour_rows.len(),
                minute_rows.len() * COLUMNS + 1
            )
        );
        let query = bind_rows(bind_rows(sqlx::query(&sql), &minute_rows), &hour_rows);
        query.execute(&mut *tx).await.map_err(db_error)?;
    } else {
        for (tier, rows) in [(Tier::Minute, &minute_rows), (Tier::Hour, &hour_rows)] {
            for chunk in rows.chunks(MAX_ROWS) {
                let sql = upsert(dialect, tier, chunk.len(), 1);
                let query = bind_rows(sqlx::query(&sql), chunk);
                query.execute(&mut *tx).await.map_err(db_error)?;
            }
        }
    }
    if sign < 0 {
        delete_emptied(tx, dialect, Tier::Minute, counts).await?;
        delete_emptied(tx, dialect, Tier::Hour, &hours).await?;
    }
    Ok(())
}

/// The statement adding `rows` rows to `tier`'s table, its placeholders numbered from `first`.
fn upsert(dialect: Dialect, tier: Tier, rows: usize, first: usize) -> String {
    let (table, unit) = (tier.table(), tier.column());
    let values: Vec<String> = (0..rows)
        .map(|row| {
            let start = first + row * COLUMNS;
            let columns: Vec<String> = (start..start + COLUMNS)
                .map(|n| dialect.placeholder(n))
                .collect();
            format!("({})", columns.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO {table} ({unit}, agent_id, agent_name, decision, action, shadow_policy, \
         shadow_decision, n) VALUES {} \
         ON CONFLICT ({unit}, agent_id, agent_name, decision, action, shadow_policy, \
         shadow_decision) DO UPDATE SET n = {table}.n + excluded.n",
        values.join(", ")
    )
}

/// Binds the values of [`upsert`]'s rows, in its column order.
fn bind_rows<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    rows: &'q [(&'q Key, i64)],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for (key, n) in rows {
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
    query
}

/// Deletes the rows of `tier` that subtracting `counts` emptied. Keys are ordered by time
/// first: those rows lie between the first key's unit and the last's.
async fn delete_emptied(
    tx: &mut AnyConnection,
    dialect: Dialect,
    tier: Tier,
    counts: &Tally,
) -> Result<(), StoreError> {
    let (Some((first, _)), Some((last, _))) = (counts.first_key_value(), counts.last_key_value())
    else {
        return Ok(());
    };
    let (table, unit) = (tier.table(), tier.column());
    sqlx::query(&format!(
        "DELETE FROM {table} WHERE {unit} >= {} AND {unit} <= {} AND n <= 0",
        dialect.placeholder(1),
        dialect.placeholder(2)
    ))
    .bind(first.minute)
    .bind(last.minute)
    .execute(&mut *tx)
    .await
    .map_err(db_error)?;
    Ok(())
}
