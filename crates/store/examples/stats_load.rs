//! `audit stats` over a large trail: fills a store with N checks spread evenly over the last D
//! days, from A agents asking of C actions (a fifth of them denied), then times `audit stats`
//! for periods of an hour, a day, a week and the whole trail (best of 3, with and without hourly
//! buckets) against the same run's baseline: a count of the same period over the events (what
//! stats ran before rollups). Each total is checked equal to the count.
//!
//! `cargo run --release -p meshguard-store --example stats_load -- [EVENTS=10000000] [DAYS=1]
//! [AGENTS=20] [ACTIONS=20]` (`MESHGUARD_BENCH_DATABASE_URL=postgres://…` runs it on PostgreSQL.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    missing_docs
)]

mod support;

use std::time::Instant;

use meshguard_store::{AuditAgent, StatsQuery, Store, StoreLocation};
use sqlx::Row as _;
use support::event;
use time::{Duration, OffsetDateTime};

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .map_or(default, |value| value.parse().expect("a number"))
}

/// The count over the events of `[from, to)`: what stats ran before rollups (the connection
/// is made before the clock starts).
async fn count(location: &StoreLocation, from: i64, to: i64) -> (i64, f64) {
    let url = match location {
        StoreLocation::Sqlite { path } => format!("sqlite://{}", path.display()),
        StoreLocation::Postgres { url } => url.clone(),
    };
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let started = Instant::now();
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM audit_events e \
         LEFT JOIN audit_outcomes o ON o.outcome = e.outcome \
         WHERE COALESCE(e.kind, o.kind) = 'check' AND e.ts >= $1 AND e.ts < $2",
    )
    .bind(from)
    .bind(to)
    .fetch_one(&pool)
    .await
    .unwrap();
    (row.get::<i64, _>("n"), started.elapsed().as_secs_f64())
}

/// The best of 3 timings of `audit stats` over `[from, to)`, each total checked against the
/// count over the events.
async fn best_of_3(
    store: &dyn Store,
    from: OffsetDateTime,
    to: OffsetDateTime,
    hourly: bool,
    expected: i64,
) -> f64 {
    let query = StatsQuery {
        from,
        to,
        agent: None,
        hourly,
    };
    let mut best = f64::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let stats = store.audit_stats(&query).await.unwrap();
        best = best.min(started.elapsed().as_secs_f64());
        assert_eq!(stats.total as i64, expected, "stats against the count");
    }
    best
}

fn micros(ts: OffsetDateTime) -> i64 {
    (ts.unix_timestamp_nanos() / 1000) as i64
}

#[tokio::main]
async fn main() {
    let events = arg(1, 10_000_000);
    let days = arg(2, 1);
    let agents = arg(3, 20);
    let actions = arg(4, 20);
    let dir = tempfile::tempdir().unwrap();
    let location = match std::env::var("MESHGUARD_BENCH_DATABASE_URL") {
        Ok(url) => StoreLocation::parse(&url).expect("a database URL"),
        Err(_) => StoreLocation::in_data_dir(dir.path()),
    };
    let store = meshguard_store::open(&location).await.unwrap();
    let gateway = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let now = OffsetDateTime::now_utc();
    let span = Duration::days(days as i64);
    let start = now - span;
    let step = span.whole_microseconds() as f64 / events as f64;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(2000);
    for i in 0..events {
        let ts = start + Duration::microseconds((i as f64 * step) as i64);
        let mut check = event(&gateway, ts, i as usize);
        let agent = i % agents;
        check.agent = Some(AuditAgent {
            id: format!("agent_{agent:020}"),
            name: format!("agent-{agent}"),
        });
        check.action = format!("read:area-{}", (i / agents) % actions);
        if i % 5 == 0 {
            check.decision = Some(meshguard_policy::Effect::Deny);
            check.code = Some(meshguard_store::EventCode::Decided(
                meshguard_policy::Code::DefaultDeny,
            ));
            check.rule = None;
        }
        batch.push(check);
        if batch.len() == 2000 {
            store.append_audit(&batch).await.unwrap();
            batch.clear();
        }
    }
    if !batch.is_empty() {
        store.append_audit(&batch).await.unwrap();
    }
    println!(
        "{}: {events} checks over {days} day(s), {agents} agents x {actions} actions, filled in \
         {:.0} s",
        store.backend(),
        started.elapsed().as_secs_f64()
    );
    println!("| period | count over the events (baseline) | stats | ÷ | stats, hourly | ÷ |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut periods = vec![
        ("last hour", Duration::hours(1)),
        ("last day", Duration::days(1)),
    ];
    if days > 1 {
        periods.push(("last 7 days", Duration::days(7.min(days) as i64)));
    }
    periods.push(("everything", span + Duration::minutes(1)));
    for (name, length) in periods {
        // Periods that end now and off minute boundaries, as `--period` asks.
        let to = OffsetDateTime::now_utc();
        let from = to - length;
        let (expected, baseline) = count(&location, micros(from), micros(to)).await;
        let plain = best_of_3(&*store, from, to, false, expected).await;
        let hourly = best_of_3(&*store, from, to, true, expected).await;
        println!(
            "| {name} ({expected} checks) | {:.3} s | {:.3} s | {:.1}x | {:.3} s | {:.1}x |",
            baseline,
            plain,
            baseline / plain,
            hourly,
            baseline / hourly
        );
    }
}
