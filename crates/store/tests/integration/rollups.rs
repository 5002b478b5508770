//! `audit stats` reads per-hour and per-minute rollups kept in the same transactions as the
//! events: whatever the period (whole hours, whole minutes, a few seconds, across hours), the
//! agent and the breakdown, after retention has deleted a prefix, and after migration 11 built
//! the hourly rollups of an existing trail, it answers exactly what a count over the events
//! answers.

use std::collections::BTreeMap;

use meshguard_policy::{Code, Effect};
use meshguard_store::{
    AuditAgent, AuditEvent, AuditFilter, AuditKind, AuditOrder, ShadowVerdict, StatsQuery, Store,
};
use time::{Duration, OffsetDateTime, macros::datetime};

use crate::common::{TestDb, check_event};
use crate::on_every_backend;

on_every_backend!(
    stats_equal_a_count_over_the_events,
    stats_of_a_period_ending_now_are_exact,
    retention_deletes_in_batches_and_keeps_the_chain_verifiable,
    migration_builds_hourly_rollups_from_the_minutes
);

const AGENTS: [(&str, &str); 3] = [
    ("agent_0000000000000000000a", "alpha"),
    ("agent_0000000000000000000b", "beta"),
    ("agent_0000000000000000000c", "gamma"),
];
const DECISIONS: [&str; 3] = ["allow", "deny", "require_approval"];

async fn stored_checks(store: &dyn Store) -> Vec<AuditEvent> {
    let mut all = Vec::new();
    let mut filter = AuditFilter {
        limit: 1000,
        kind: Some(AuditKind::Check),
        order: AuditOrder::OldestFirst,
        ..AuditFilter::default()
    };
    loop {
        let page = store.query_audit(&filter).await.unwrap();
        all.extend(page.entries);
        match page.next_cursor {
            Some(cursor) => filter.cursor = Some(cursor),
            None => return all,
        }
    }
}

/// A shadow change as counted: policy, enforced decision, shadow decision, checks.
type ShadowRow = (Option<String>, &'static str, &'static str, u64);
/// Totals, top denied actions, hourly buckets and shadow changes.
type Counted = (Vec<u64>, Vec<(String, u64)>, Vec<Vec<u64>>, Vec<ShadowRow>);

/// What `audit stats` must answer for `query`, counted over `events` one by one.
fn counted(events: &[AuditEvent], query: &StatsQuery) -> Counted {
    let hour_us = 3_600_000_000_i128;
    let us = |t: OffsetDateTime| t.unix_timestamp_nanos() / 1000;
    let chosen: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| e.event.ts >= query.from && e.event.ts < query.to)
        .filter(|e| match &query.agent {
            None => true,
            Some(agent) => e
                .event
                .agent
                .as_ref()
                .is_some_and(|a| &a.id == agent || &a.name == agent),
        })
        .collect();
    let by = |e: &&AuditEvent, d: Effect| u64::from(e.event.decision == Some(d));
    let totals = vec![
        chosen.len() as u64,
        chosen.iter().map(|e| by(e, Effect::Allow)).sum(),
        chosen.iter().map(|e| by(e, Effect::Deny)).sum(),
        chosen.iter().map(|e| by(e, Effect::RequireApproval)).sum(),
    ];
    let mut denied: BTreeMap<String, u64> = BTreeMap::new();
    for e in chosen
        .iter()
        .filter(|e| e.event.decision == Some(Effect::Deny))
    {
        *denied.entry(e.event.action.clone()).or_default() += 1;
    }
    let mut top: Vec<(String, u64)> = denied.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(10);
    let mut hourly = Vec::new();
    if query.hourly {
        let first = us(query.from).div_euclid(hour_us);
        let last = (us(query.to) - 1).div_euclid(hour_us);
        for hour in first..=last {
            let inside: Vec<&&AuditEvent> = chosen
                .iter()
                .filter(|e| us(e.event.ts).div_euclid(hour_us) == hour)
                .collect();
            hourly.push(vec![
                inside.len() as u64,
                inside.iter().map(|e| by(e, Effect::Allow)).sum(),
                inside.iter().map(|e| by(e, Effect::Deny)).sum(),
                inside.iter().map(|e| by(e, Effect::RequireApproval)).sum(),
            ]);
        }
    }
    let mut shadow: BTreeMap<(Option<String>, &'static str, &'static str), u64> = BTreeMap::new();
    for e in &chosen {
        if let (Some(s), Some(d)) = (&e.event.shadow, e.event.decision) {
            *shadow
                .entry((s.policy.clone(), d.as_str(), s.decision.as_str()))
                .or_default() += 1;
        }
    }
    let shadow = shadow
        .into_iter()
        .map(|((p, f, t), n)| (p, f, t, n))
        .collect();
    (totals, top, hourly, shadow)
}

async fn assert_stats(store: &dyn Store, events: &[AuditEvent], query: StatsQuery) {
    let stats = store.audit_stats(&query).await.unwrap();
    let (totals, top, hourly, shadow) = counted(events, &query);
    let what = format!("{} .. {}, agent {:?}", query.from, query.to, query.agent);
    assert_eq!(
        vec![
            stats.total,
            stats.allowed,
            stats.denied,
            stats.require_approval
        ],
        totals,
        "{what}"
    );
    let got_top: Vec<(String, u64)> = stats
        .top_denied
        .iter()
        .map(|c| (c.action.clone(), c.count))
        .collect();
    assert_eq!(got_top, top, "{what}");
    let got_hourly: Vec<Vec<u64>> = stats
        .hourly
        .iter()
        .map(|h| vec![h.total, h.allowed, h.denied, h.require_approval])
        .collect();
    assert_eq!(got_hourly, hourly, "{what}");
    let mut got_shadow: Vec<ShadowRow> = stats
        .shadow
        .iter()
        .map(|s| (s.policy.clone(), s.from.as_str(), s.to.as_str(), s.count))
        .collect();
    got_shadow.sort();
    assert_eq!(got_shadow, shadow, "{what}");
}

async fn stats_equal_a_count_over_the_events(db: TestDb) {
    let store = db.open().await;
    let start = datetime!(2026-03-01 09:58:17.250 UTC);
    // 900 checks over about three hours at irregular steps (some in the same microsecond), three
    // agents, three decisions, some with a shadow verdict; plus events that are not checks, and
    // one check before 1970, which no rollup holds.
    let mut batch = Vec::new();
    let mut at = start;
    for i in 0_u32..900 {
        at += Duration::milliseconds(i64::from((i * 7919) % 23_000));
        let (id, name) = AGENTS[(i % 3) as usize];
        let decision = DECISIONS[((i / 3) % 3) as usize];
        let mut event = check_event("gw-a", at, &format!("act:{}", i % 13), decision);
        event.agent = Some(AuditAgent {
            id: id.into(),
            name: name.into(),
        });
        if i % 5 == 0 {
            event.shadow = Some(ShadowVerdict {
                decision: Effect::Deny,
                code: Code::DeniedByRule,
                policy: Some(format!("shadow-{}", i % 2)),
                rule: None,
            });
        }
        if i % 17 == 0 {
            event.kind = AuditKind::Record;
        }
        batch.push(event);
        if batch.len() == (i as usize % 40) + 1 {
            store.append_audit(&batch).await.unwrap();
            batch.clear();
        }
    }
    batch.push(check_event(
        "gw-a",
        datetime!(1969-12-31 23:59:30 UTC),
        "act:old",
        "deny",
    ));
    store.append_audit(&batch).await.unwrap();
    let end = at + Duration::seconds(1);

    let periods = [
        (start - Duration::hours(1), end + Duration::hours(1)),
        (
            datetime!(2026-03-01 10:00:00 UTC),
            datetime!(2026-03-01 11:00:00 UTC),
        ),
        (
            datetime!(2026-03-01 10:14:59.999999 UTC),
            datetime!(2026-03-01 10:15:00.000001 UTC),
        ),
        (
            datetime!(2026-03-01 10:31:07.5 UTC),
            datetime!(2026-03-01 12:02:59.25 UTC),
        ),
        (
            datetime!(2026-03-01 11:20:10 UTC),
            datetime!(2026-03-01 11:20:50 UTC),
        ),
        // Both edges mostly inside their minutes: each counted as the minute's rollup less the
        // checks of its few seconds outside the period.
        (
            datetime!(2026-03-01 10:00:01.5 UTC),
            datetime!(2026-03-01 11:59:58 UTC),
        ),
        (
            datetime!(1969-12-31 23:00:00 UTC),
            datetime!(2026-03-01 10:05:00 UTC),
        ),
    ];
    let checks = stored_checks(&*store).await;
    for (from, to) in periods {
        for agent in [None, Some(AGENTS[1].0.to_owned()), Some("gamma".to_owned())] {
            let hourly = to - from < Duration::days(366);
            let query = StatsQuery {
                from,
                to,
                agent,
                hourly,
            };
            assert_stats(&*store, &checks, query).await;
        }
    }

    // Retention deletes a prefix of the chain; the rollups lose exactly what the events lose.
    let report = store
        .apply_retention(datetime!(2026-03-01 10:47:31.125 UTC), None)
        .await
        .unwrap();
    assert!(report.deleted > 100, "{report:?}");
    let left = stored_checks(&*store).await;
    assert!(left.len() < checks.len());
    for (from, to) in periods {
        let query = StatsQuery {
            from,
            to,
            agent: None,
            hourly: to - from < Duration::days(366),
        };
        assert_stats(&*store, &left, query).await;
    }
}

/// A period that ends now (what `audit stats --period N` asks) reads the current minute as its
/// rollup less the (empty) rest of the minute: still exactly the count over the events, with
/// checks written during the current minute, just before the end, and after it.
async fn stats_of_a_period_ending_now_are_exact(db: TestDb) {
    let store = db.open().await;
    // Whole microseconds, as the store keeps time.
    let now = OffsetDateTime::now_utc();
    let now = now.replace_microsecond(now.microsecond()).unwrap();
    let mut batch = Vec::new();
    for i in 0_u32..120 {
        let at = now - Duration::milliseconds(i64::from(i) * 1_500);
        let decision = DECISIONS[(i % 3) as usize];
        batch.push(check_event(
            "gw-now",
            at,
            &format!("act:{}", i % 4),
            decision,
        ));
    }
    // Written after the period's end (as by another gateway whose clock runs ahead).
    batch.push(check_event(
        "gw-now",
        now + Duration::seconds(2),
        "act:later",
        "deny",
    ));
    store.append_audit(&batch).await.unwrap();
    let checks = stored_checks(&*store).await;
    for period in [Duration::minutes(1), Duration::hours(1)] {
        let query = StatsQuery {
            from: now - period,
            to: now + Duration::milliseconds(1),
            agent: None,
            hourly: true,
        };
        assert_stats(&*store, &checks, query).await;
    }
}

async fn retention_deletes_in_batches_and_keeps_the_chain_verifiable(db: TestDb) {
    let store = db.open().await;
    // More old events than one retention transaction deletes, then a few recent ones.
    let old = datetime!(2026-01-01 00:00:00 UTC);
    let mut appended = 0_u32;
    while appended < 12_345 {
        let batch: Vec<_> = (appended..(appended + 1_000).min(12_345))
            .map(|i| {
                check_event(
                    "gw-r",
                    old + Duration::seconds(i64::from(i)),
                    "act:old",
                    "allow",
                )
            })
            .collect();
        appended += u32::try_from(batch.len()).unwrap();
        store.append_audit(&batch).await.unwrap();
    }
    let recent = datetime!(2026-03-01 00:00:00 UTC);
    let batch: Vec<_> = (0..5)
        .map(|i| check_event("gw-r", recent + Duration::seconds(i), "act:new", "deny"))
        .collect();
    store.append_audit(&batch).await.unwrap();

    let report = store
        .apply_retention(datetime!(2026-02-01 00:00:00 UTC), None)
        .await
        .unwrap();
    assert_eq!(report.deleted, 12_345);
    assert_eq!(report.anchors.len(), 1);
    assert_eq!(report.anchors[0].seq, 12_345);
    let verified = store
        .verify_audit(&meshguard_store::VerifyOptions::full(Default::default()))
        .await
        .unwrap();
    assert!(verified.first_break().is_none(), "{verified:?}");
    let left = stored_checks(&*store).await;
    assert_eq!(left.len(), 5);
    let everything = StatsQuery {
        from: old - Duration::days(1),
        to: recent + Duration::days(1),
        agent: None,
        hourly: false,
    };
    assert_stats(&*store, &left, everything).await;
    // Nothing left to drop: a second run deletes nothing and moves no anchor.
    let again = store
        .apply_retention(datetime!(2026-02-01 00:00:00 UTC), None)
        .await
        .unwrap();
    assert_eq!((again.deleted, again.anchors.len()), (0, 0));
}

/// A trail whose gateway predates the hourly rollups (migration 11 not yet run, its table
/// absent): opening it builds them from the minutes, and stats over whole hours stay exact.
async fn migration_builds_hourly_rollups_from_the_minutes(db: TestDb) {
    let store = db.open().await;
    let start = datetime!(2026-03-01 09:41:13 UTC);
    let events: Vec<_> = (0_u16..300)
        .map(|i| {
            let (id, name) = AGENTS[usize::from(i % 3)];
            let decision = DECISIONS[usize::from((i / 3) % 3)];
            let at = start + Duration::seconds(i64::from(i) * 67);
            let mut event = check_event("gw-m", at, &format!("act:{}", i % 4), decision);
            event.agent = Some(AuditAgent {
                id: id.into(),
                name: name.into(),
            });
            event
        })
        .collect();
    for batch in events.chunks(25) {
        store.append_audit(batch).await.unwrap();
    }
    drop(store);
    db.raw("DROP TABLE audit_rollups_hourly").await;
    db.raw("DELETE FROM _sqlx_migrations WHERE version = 11")
        .await;

    let store = db.open().await;
    let checks = stored_checks(&*store).await;
    assert_eq!(checks.len(), 300);
    let periods = [
        (start - Duration::hours(1), start + Duration::hours(7)),
        (
            datetime!(2026-03-01 10:00:00 UTC),
            datetime!(2026-03-01 14:00:00 UTC),
        ),
        (
            datetime!(2026-03-01 10:59:30 UTC),
            datetime!(2026-03-01 13:00:30 UTC),
        ),
    ];
    for (from, to) in periods {
        for agent in [None, Some(AGENTS[2].1.to_owned())] {
            let query = StatsQuery {
                from,
                to,
                agent,
                hourly: true,
            };
            assert_stats(&*store, &checks, query).await;
        }
    }
}
