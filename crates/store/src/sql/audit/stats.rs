//! Counting checks over a period: totals, top denied actions, hourly buckets.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::query::{Arg, Conditions};
use super::rollup::{HOUR_US, MINUTE_US, Tier};
use crate::sql::{SqlStore, column, db_error, from_micros, micros};
use meshguard_policy::Effect;

use crate::{ActionCount, AuditStats, HourlyBucket, ShadowChange, StatsQuery, StoreError};

const TOP_DENIED: usize = 10;
const MAX_HOURLY_BUCKETS: i64 = 366 * 24;

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

/// Rows of the rollups of `tier` for the units (minutes or hours) `first <= unit < end`.
fn rolled(binds: &mut Conditions, query: &StatsQuery, tier: Tier, first: i64, end: i64) -> String {
    let (a, b) = (binds.bind(Arg::Int(first)), binds.bind(Arg::Int(end)));
    let agent = match &query.agent {
        Some(agent) => format!(" AND {}", binds.agent_text_condition(agent)),
        None => String::new(),
    };
    let (table, unit, micros) = (tier.table(), tier.column(), tier.micros());
    format!(
        "SELECT {unit} * {micros} AS ts, NULLIF(agent_id, '') AS agent_id, \
         NULLIF(agent_name, '') AS agent_name, NULLIF(decision, '') AS decision, action, \
         NULLIF(shadow_policy, '') AS shadow_policy, \
         NULLIF(shadow_decision, '') AS shadow_decision, n \
         FROM {table} WHERE {unit} >= {a} AND {unit} < {b}{agent}"
    )
}

/// Rows of the rollups of the whole minutes `first <= minute < end`: the whole hours among them
/// from the hourly tier, the minutes before and after those from the minute tier.
fn rolled_minutes(binds: &mut Conditions, query: &StatsQuery, first: i64, end: i64) -> String {
    let per_hour = HOUR_US / MINUTE_US;
    let (first_hour, end_hour) = (
        first.div_euclid(per_hour) + i64::from(first.rem_euclid(per_hour) != 0),
        end.div_euclid(per_hour),
    );
    if first_hour >= end_hour {
        return rolled(binds, query, Tier::Minute, first, end);
    }
    let mut parts = vec![rolled(binds, query, Tier::Hour, first_hour, end_hour)];
    if first < first_hour * per_hour {
        parts.push(rolled(
            binds,
            query,
            Tier::Minute,
            first,
            first_hour * per_hour,
        ));
    }
    if end_hour * per_hour < end {
        parts.push(rolled(binds, query, Tier::Minute, end_hour * per_hour, end));
    }
    parts.join(" UNION ALL ")
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
    let whole = rolled(binds, query, Tier::Minute, minute, minute + 1);
    let before = events(binds, query, start, lower, -1);
    let after = events(binds, query, upper, end, -1);
    format!("{whole} UNION ALL {before} UNION ALL {after}")
}

/// The checks of the period as rows that each count `n` of them: the whole hours and minutes
/// from the rollups, the partial minutes at the edges from the events or from their rollup less the
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
    let mut parts = vec![rolled_minutes(&mut binds, query, first, end)];
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

    // One pass over the period's rows, grouped by what any part of the answer tells apart;
    // the totals, the top denied actions, the shadow changes and the hours are summed here.
    let (counted, binds) = source(query);
    let hour = if query.hourly {
        format!("ts / {HOUR_US}")
    } else {
        "0".to_owned()
    };
    let grouped = "decision, action, shadow_policy, shadow_decision";
    let sql = format!(
        "SELECT {hour} AS hour, {grouped}, CAST(SUM(n) AS BIGINT) AS checks FROM {counted} \
         GROUP BY {}{grouped}",
        if query.hourly {
            format!("{hour}, ")
        } else {
            String::new()
        }
    );
    let rows = binds
        .query(&sql)
        .fetch_all(&store.pool)
        .await
        .map_err(db_error)?;
    let mut total = Counts::default();
    let mut hours: BTreeMap<i64, Counts> = BTreeMap::new();
    let mut denied_actions: BTreeMap<String, i64> = BTreeMap::new();
    let mut shadows: BTreeMap<(Option<String>, Effect, Effect), i64> = BTreeMap::new();
    for row in &rows {
        let checks: i64 = column(row, "checks")?;
        let decision: Option<String> = column(row, "decision")?;
        let decision = decision.as_deref().and_then(Effect::parse);
        total.add(decision, checks);
        if query.hourly {
            hours
                .entry(column(row, "hour")?)
                .or_default()
                .add(decision, checks);
        }
        if decision == Some(Effect::Deny) {
            *denied_actions.entry(column(row, "action")?).or_default() += checks;
        }
        let shadow: Option<String> = column(row, "shadow_decision")?;
        if let Some(shadow) = shadow {
            let effect = |name: &str, text: Option<&str>| {
                text.and_then(Effect::parse).ok_or_else(|| {
                    StoreError::Corrupt(format!("audit event column `{name}` holds {text:?}"))
                })
            };
            let from = effect("decision", decision.map(Effect::as_str))?;
            let to = effect("shadow_decision", Some(&shadow))?;
            *shadows
                .entry((column(row, "shadow_policy")?, from, to))
                .or_default() += checks;
        }
    }
    let total = total.checked()?;
    let mut top_denied = denied_actions
        .into_iter()
        .filter(|&(_, checks)| checks > 0)
        .map(|(action, checks)| {
            Ok(ActionCount {
                action,
                count: count(checks)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    // Most denied first; ties in the actions' (byte) order, which the map kept.
    top_denied.sort_by_key(|count| std::cmp::Reverse(count.count));
    top_denied.truncate(TOP_DENIED);
    let mut shadow = shadows
        .into_iter()
        .filter(|&(_, checks)| checks > 0)
        .map(|((policy, from, to), checks)| {
            Ok(ShadowChange {
                policy,
                from,
                to,
                count: count(checks)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    shadow.sort_by_key(|change| std::cmp::Reverse(change.count));

    let hourly = if query.hourly {
        (first_hour..=last_hour)
            .map(|hour| {
                let counted = hours.remove(&hour).unwrap_or_default().checked()?;
                Ok(HourlyBucket {
                    hour: hour_start(hour)?,
                    total: counted.total,
                    allowed: counted.allowed,
                    denied: counted.denied,
                    require_approval: counted.require_approval,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?
    } else {
        Vec::new()
    };

    Ok(AuditStats {
        from: query.from,
        to: query.to,
        total: total.total,
        allowed: total.allowed,
        denied: total.denied,
        require_approval: total.require_approval,
        allowed_pct: percent(total.allowed, total.total),
        denied_pct: percent(total.denied, total.total),
        require_approval_pct: percent(total.require_approval, total.total),
        top_denied,
        hourly,
        shadow,
    })
}

/// Checks counted by decision, as summed (a partial minute's rollup less its events outside the
/// period may make a group's part negative; the whole never is).
#[derive(Debug, Default, Clone, Copy)]
struct Counts<T = i64> {
    total: T,
    allowed: T,
    denied: T,
    require_approval: T,
}

impl Counts {
    fn add(&mut self, decision: Option<Effect>, checks: i64) {
        self.total += checks;
        match decision {
            Some(Effect::Allow) => self.allowed += checks,
            Some(Effect::Deny) => self.denied += checks,
            Some(Effect::RequireApproval) => self.require_approval += checks,
            None => {}
        }
    }

    fn checked(self) -> Result<Counts<u64>, StoreError> {
        Ok(Counts {
            total: count(self.total)?,
            allowed: count(self.allowed)?,
            denied: count(self.denied)?,
            require_approval: count(self.require_approval)?,
        })
    }
}

/// A sum of checks, which the rollups and events never make negative.
fn count(checks: i64) -> Result<u64, StoreError> {
    u64::try_from(checks)
        .map_err(|_| StoreError::Corrupt(format!("the audit rollups count {checks} checks")))
}

fn hour_start(hour: i64) -> Result<OffsetDateTime, StoreError> {
    from_micros(hour.saturating_mul(HOUR_US))
}
