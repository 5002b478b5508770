//! Counting checks over a period: totals, top denied actions, hourly buckets.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::query::{Arg, Conditions};
use crate::sql::{SqlStore, column, db_error, from_micros, micros, unsigned};
use meshguard_policy::Effect;

use crate::{ActionCount, AuditStats, HourlyBucket, ShadowChange, StatsQuery, StoreError};

const HOUR_US: i64 = 3_600_000_000;
const TOP_DENIED: i64 = 10;
const MAX_HOURLY_BUCKETS: i64 = 366 * 24;

/// The decision columns summed by every stats query.
const COUNTS: &str = "COUNT(*) AS total, \
    COALESCE(SUM(CASE WHEN decision = 'allow' THEN 1 ELSE 0 END), 0) AS allowed, \
    COALESCE(SUM(CASE WHEN decision = 'deny' THEN 1 ELSE 0 END), 0) AS denied, \
    COALESCE(SUM(CASE WHEN decision = 'require_approval' THEN 1 ELSE 0 END), 0) AS approval";

fn conditions(query: &StatsQuery) -> Conditions {
    let mut conditions = Conditions::default();
    conditions.and("kind = 'check'");
    let from = conditions.bind(Arg::Int(micros(query.from)));
    conditions.and(&format!("ts >= {from}"));
    let to = conditions.bind(Arg::Int(micros(query.to)));
    conditions.and(&format!("ts < {to}"));
    if let Some(agent) = &query.agent {
        conditions.agent(agent);
    }
    conditions
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

    let where_clause = conditions(query).where_clause();
    let sql = format!("SELECT {COUNTS} FROM audit_events {where_clause}");
    let row = conditions(query)
        .query(&sql)
        .fetch_one(&store.pool)
        .await
        .map_err(db_error)?;
    let total = unsigned(&row, "total")?;
    let allowed = unsigned(&row, "allowed")?;
    let denied = unsigned(&row, "denied")?;
    let require_approval = unsigned(&row, "approval")?;

    let sql = format!(
        "SELECT action, COUNT(*) AS n FROM audit_events {where_clause} AND decision = 'deny' \
         GROUP BY action ORDER BY n DESC, action LIMIT {TOP_DENIED}"
    );
    let rows = conditions(query)
        .query(&sql)
        .fetch_all(&store.pool)
        .await
        .map_err(db_error)?;
    let top_denied = rows
        .iter()
        .map(|row| {
            Ok(ActionCount {
                action: column(row, "action")?,
                count: unsigned(row, "n")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;

    let sql = format!(
        "SELECT shadow_policy, decision, shadow_decision, COUNT(*) AS n FROM audit_events \
         {where_clause} AND shadow_decision IS NOT NULL \
         GROUP BY shadow_policy, decision, shadow_decision ORDER BY n DESC, shadow_policy"
    );
    let rows = conditions(query)
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
                count: unsigned(row, "n")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;

    let hourly = if query.hourly {
        hourly(store, query, &where_clause, first_hour, last_hour).await?
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
    where_clause: &str,
    first_hour: i64,
    last_hour: i64,
) -> Result<Vec<HourlyBucket>, StoreError> {
    // Integer division of microseconds is the hour number in both dialects (no date functions,
    // whose names and time zones differ).
    let sql = format!(
        "SELECT ts / {HOUR_US} AS hour, {COUNTS} FROM audit_events {where_clause} \
         GROUP BY ts / {HOUR_US}"
    );
    let rows = conditions(query)
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
