//! Counting checks over a period: totals, top denied actions, hourly buckets.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::query::{Arg, Conditions};
use super::rollup::MINUTE_US;
use crate::sql::{SqlStore, column, db_error, from_micros, micros, unsigned};
use meshguard_policy::Effect;

use crate::{ActionCount, AuditStats, HourlyBucket, ShadowChange, StatsQuery, StoreError};

const HOUR_US: i64 = 3_600_000_000;
const TOP_DENIED: i64 = 10;
const MAX_HOURLY_BUCKETS: i64 = 366 * 24;

/// The decision columns summed by every stats query over [`source`]'s rows (each counts `n`
/// checks). Cast because PostgreSQL sums a BIGINT into a NUMERIC.
const COUNTS: &str = "CAST(COALESCE(SUM(n), 0) AS BIGINT) AS total, \
    CAST(COALESCE(SUM(CASE WHEN decision = 'allow' THEN n ELSE 0 END), 0) AS BIGINT) AS allowed, \
    CAST(COALESCE(SUM(CASE WHEN decision = 'deny' THEN n ELSE 0 END), 0) AS BIGINT) AS denied, \
    CAST(COALESCE(SUM(CASE WHEN decision = 'require_approval' THEN n ELSE 0 END), 0) AS BIGINT) \
    AS approval";

/// Rows of events with `lower <= ts < upper`, each counting `sign` (1, or -1 for events taken
/// back out of a rolled-up minute): one range of the `ts` index.
fn events(binds: &mut Conditions, query: &StatsQuery, lower: i64, upper: i64, sign: i8) -> String {
    let (l, u) = (binds.bind(Arg::Int(lower)), binds.bind(Arg::Int(upper)));
    let agent = match &query.agent {
        Some(agent) => format!(" AND {}", binds.agent_condition(agent, false)),
        None => String::new(),
    };
    format!(
        concat!(
            "SELECT e.ts, a.agent_id, e.agent_name, ",
            outcome_column!("decision"),
            " AS decision, e.action, ",
            outcome_column!("shadow_policy"),
            " AS shadow_policy, ",
            outcome_column!("shadow_decision"),
            " AS shadow_decision, {sign} AS n \
             FROM audit_events e LEFT JOIN audit_agents a ON a.agent = e.agent ",
            outcome_join!(),
            " WHERE ",
            outcome_column!("kind"),
            " = 'check' AND e.ts >= {l} AND e.ts < {u}{agent}"
        ),
        sign = sign,
        l = l,
        u = u,
        agent = agent
    )
}

/// Rows of the rollups of the minutes `first <= minute < end`.
fn rolled(binds: &mut Conditions, query: &StatsQuery, first: i64, end: i64) -> String {
    let (a, b) = (binds.bind(Arg::Int(first)), binds.bind(Arg::Int(end)));
    let agent = match &query.agent {
        Some(agent) => format!(" AND {}", binds.agent_text_condition(agent)),
        None => String::new(),
    };
    format!(
        "SELECT minute * {MINUTE_US} AS ts, NULLIF(agent_id, '') AS agent_id, \
         NULLIF(agent_name, '') AS agent_name, NULLIF(decision, '') AS decision, action, \
         NULLIF(shadow_policy, '') AS shadow_policy, \
         NULLIF(shadow_decision, '') AS shadow_decision, n \
         FROM audit_rollups WHERE minute >= {a} AND minute < {b}{agent}"
    )
}

/// The checks of the part `[lower, upper)` of one minute (`lower < upper`, both inside it):
/// counted from the events of that part, or, when the rest of the minute holds less time, as
/// the minute's rollup less the events of the rest. Time after `now` holds no events, so a
/// period that ends now costs the events of its first partial minute's outside part, never
/// those of the minute so far. Either way the count is exact: the choice is only what is read.
fn partial_minute(
    binds: &mut Conditions,
    query: &StatsQuery,
    lower: i64,
    upper: i64,
    now: i64,
) -> String {
    let minute = lower.div_euclid(MINUTE_US);
    let (start, end) = (minute * MINUTE_US, (minute + 1) * MINUTE_US);
    let populated = |a: i64, b: i64| (b.min(now) - a).max(0);
    let inside = populated(lower, upper);
    let outside = populated(start, lower) + populated(upper, end);
    if minute < 0 || inside <= outside {
        return events(binds, query, lower, upper, 1);
    }
    let whole = rolled(binds, query, minute, minute + 1);
    let before = events(binds, query, start, lower, -1);
    let after = events(binds, query, upper, end, -1);
    format!("{whole} UNION ALL {before} UNION ALL {after}")
}

/// The checks of the period as rows that each count `n` of them: the whole minutes from the
/// rollups, the partial minutes at the edges from the events or from their rollup less the
/// events outside the period (whichever reads fewer), and any event before 1970 from the events
/// themselves. Returns the `FROM` item and its bound values.
fn source(query: &StatsQuery) -> (String, Conditions) {
    let from = micros(query.from);
    let to = micros(query.to);
    // Whole minutes [first, end): rolled up.
    let first = from.div_euclid(MINUTE_US) + i64::from(from.rem_euclid(MINUTE_US) != 0);
    let first = first.max(0);
    let end = to.div_euclid(MINUTE_US).max(first);
    let now = micros(OffsetDateTime::now_utc());
    let mut binds = Conditions::default();
    let mut parts = vec![rolled(&mut binds, query, first, end)];
    // The edges: [from, first minute) and [end minute, to), each one range of the ts
    // index (an OR of the two would make SQLite scan the whole period).
    let head_end = first.saturating_mul(MINUTE_US).min(to);
    if from < head_end {
        // Before 1970 (`first` clamped to 0) the head spans many minutes: events only.
        if head_end - from < MINUTE_US {
            parts.push(partial_minute(&mut binds, query, from, head_end, now));
        } else {
            parts.push(events(&mut binds, query, from, head_end, 1));
        }
    }
    let tail_start = end.saturating_mul(MINUTE_US).max(from);
    if tail_start < to {
        parts.push(partial_minute(&mut binds, query, tail_start, to, now));
    }
    (format!("({}) AS counted", parts.join(" UNION ALL ")), binds)
}

fn percent(part: u64, total: u64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    (part as f64 * 10_000.0 / total as f64).round() / 100.0
}

pub(crate) async fn stats(store: &SqlStore, query: &StatsQuery) -> Result<AuditStats, StoreError> {
    if query.to <= query.from {
        return Err(StoreError::invalid(
            "period",
            "the end of the period must be after its start",
        ));
    }
    let first_hour = micros(query.from).div_euclid(HOUR_US);
    let last_hour = (micros(query.to) - 1).div_euclid(HOUR_US);
    if query.hourly && last_hour - first_hour >= MAX_HOURLY_BUCKETS {
        return Err(StoreError::invalid(
            "period",
            "hourly buckets cover at most 366 days",
        ));
    }

    let (counted, binds) = source(query);
    let sql = format!("SELECT {COUNTS} FROM {counted}");
    let row = binds
        .query(&sql)
        .fetch_one(&store.pool)
        .await
        .map_err(db_error)?;
    let total = unsigned(&row, "total")?;
    let allowed = unsigned(&row, "allowed")?;
    let denied = unsigned(&row, "denied")?;
    let require_approval = unsigned(&row, "approval")?;

    let (counted, binds) = source(query);
    let sql = format!(
        "SELECT action, CAST(SUM(n) AS BIGINT) AS checks FROM {counted} WHERE decision = 'deny' \
         GROUP BY action HAVING SUM(n) > 0 ORDER BY checks DESC, action LIMIT {TOP_DENIED}"
    );
    let rows = binds
        .query(&sql)
        .fetch_all(&store.pool)
        .await
        .map_err(db_error)?;
    let top_denied = rows
        .iter()
        .map(|row| {
            Ok(ActionCount {
                action: column(row, "action")?,
                count: unsigned(row, "checks")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;

    let (counted, binds) = source(query);
    let sql = format!(
        "SELECT shadow_policy, decision, shadow_decision, CAST(SUM(n) AS BIGINT) AS checks \
         FROM {counted} WHERE shadow_decision IS NOT NULL \
         GROUP BY shadow_policy, decision, shadow_decision HAVING SUM(n) > 0 \
         ORDER BY checks DESC, shadow_policy"
    );
    let rows = binds
        .query(&sql)
        .fetch_all(&store.pool)
        .await
        .map_err(db_error)?;
    let shadow = rows
        .iter()
        .map(|row| {
            let effect = |name: &str| -> Result<Effect, StoreError> {
                let text: Option<String> = column(row, name)?;
                text.as_deref().and_then(Effect::parse).ok_or_else(|| {
                    StoreError::Corrupt(format!("audit event column `{name}` holds {text:?}"))
                })
            };
            Ok(ShadowChange {
                policy: column(row, "shadow_policy")?,
                from: effect("decision")?,
                to: effect("shadow_decision")?,
                count: unsigned(row, "checks")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;

    let hourly = if query.hourly {
        hourly(store, query, first_hour, last_hour).await?
    } else {
        Vec::new()
    };

    Ok(AuditStats {
        from: query.from,
        to: query.to,
        total,
        allowed,
        denied,
        require_approval,
        allowed_pct: percent(allowed, total),
        denied_pct: percent(denied, total),
        require_approval_pct: percent(require_approval, total),
        top_denied,
        hourly,
        shadow,
    })
}

async fn hourly(
    store: &SqlStore,
    query: &StatsQuery,
    first_hour: i64,
    last_hour: i64,
) -> Result<Vec<HourlyBucket>, StoreError> {
    // Integer division of microseconds is the hour number in both dialects (no date functions,
    // whose names and time zones differ).
    let (counted, binds) = source(query);
    let sql =
        format!("SELECT ts / {HOUR_US} AS hour, {COUNTS} FROM {counted} GROUP BY ts / {HOUR_US}");
    let rows = binds
        .query(&sql)
        .fetch_all(&store.pool)
        .await
        .map_err(db_error)?;
    let mut counted = BTreeMap::new();
    for row in &rows {
        let hour: i64 = column(row, "hour")?;
        counted.insert(
            hour,
            (
                unsigned(row, "total")?,
                unsigned(row, "allowed")?,
                unsigned(row, "denied")?,
                unsigned(row, "approval")?,
            ),
        );
    }
    (first_hour..=last_hour)
        .map(|hour| {
            let (total, allowed, denied, require_approval) =
                counted.get(&hour).copied().unwrap_or_default();
            Ok(HourlyBucket {
                hour: hour_start(hour)?,
                total,
                allowed,
                denied,
                require_approval,
            })
        })
        .collect()
}

fn hour_start(hour: i64) -> Result<OffsetDateTime, StoreError> {
    from_micros(hour.saturating_mul(HOUR_US))
}
