//! Full verification's walk over a large trail: fills a store with N checks, then times
//! `verify --full` (every event read, decoded and hashed) against the same run's baselines: a
//! bare read of every row, each column fetched and nothing else done, through sqlx (how every
//! walk read before) and, on SQLite, through rusqlite on one thread (the floor of any walk).
//! `VERIFY_ONLY=1` skips the baselines (for profiling the walk alone).
//!
//! `cargo run --release -p meshguard-store --example verify_walk -- [EVENTS=300000]`
//! (`MESHGUARD_BENCH_DATABASE_URL=postgres://…` runs it on PostgreSQL.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    missing_docs
)]

mod support;

/// The allocator of the `meshguard` binary, in which verification runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use futures::TryStreamExt as _;
use meshguard_store::{StoreLocation, VerifyOptions};
use sqlx::Row as _;
use support::event;
use time::OffsetDateTime;

/// Reads every column of every row of `gateway`'s chain with rusqlite, on this thread.
fn bare_read_in_place(path: &std::path::Path, gateway: &str) -> u64 {
    let connection = rusqlite::Connection::open(path).unwrap();
    let mut statement = connection
        .prepare(
            "SELECT * FROM audit_events \
             WHERE chain = (SELECT chain FROM audit_chains WHERE gateway = ?1) ORDER BY seq",
        )
        .unwrap();
    let mut rows = statement.query([gateway]).unwrap();
    let (mut count, mut bytes) = (0, 0);
    while let Some(row) = rows.next().unwrap() {
        for i in 0..row.as_ref().column_count() {
            bytes += row.get_ref(i).unwrap().as_str().map_or(0, str::len);
        }
        count += 1;
    }
    assert!(bytes > 0);
    count
}

/// Reads every column of every row of `gateway`'s chain through sqlx.
async fn bare_read(location: &StoreLocation, gateway: &str) -> u64 {
    let sql = "SELECT * FROM audit_events \
               WHERE chain = (SELECT chain FROM audit_chains WHERE gateway = $1) ORDER BY seq";
    let mut rows = 0;
    let mut bytes = 0;
    match location {
        StoreLocation::Sqlite { path } => {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            let mut stream = sqlx::query(sql).bind(gateway).fetch(&pool);
            while let Some(row) = stream.try_next().await.unwrap() {
                for i in 0..row.len() {
                    let value: Option<&str> = row.try_get(i).unwrap_or(None);
                    bytes += value.map_or(0, str::len);
                }
                rows += 1;
            }
        }
        StoreLocation::Postgres { url } => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            let mut stream = sqlx::query(sql).bind(gateway).fetch(&pool);
            while let Some(row) = stream.try_next().await.unwrap() {
                for i in 0..row.len() {
                    let value: Option<&str> = row.try_get(i).unwrap_or(None);
                    bytes += value.map_or(0, str::len);
                }
                rows += 1;
            }
        }
    }
    assert!(bytes > 0);
    rows
}

#[tokio::main]
async fn main() {
    let events: usize = std::env::args()
        .nth(1)
        .map_or(300_000, |n| n.parse().expect("EVENTS is a number"));
    let dir = tempfile::tempdir().unwrap();
    let location = match std::env::var("MESHGUARD_BENCH_DATABASE_URL") {
        Ok(url) => StoreLocation::parse(&url).expect("a database URL"),
        Err(_) => StoreLocation::in_data_dir(dir.path()),
    };
    let store = meshguard_store::open(&location).await.unwrap();
    let gateway = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let now = OffsetDateTime::now_utc();
    for start in (0..events).step_by(1000) {
        let batch: Vec<_> = (start..(start + 1000).min(events))
            .map(|i| event(&gateway, now, i))
            .collect();
        store.append_audit(&batch).await.unwrap();
    }
    println!("{} ({events} checks on chain {gateway})", store.backend());

    let mut baselines = Vec::new();
    if std::env::var_os("VERIFY_ONLY").is_none() {
        let started = Instant::now();
        assert_eq!(bare_read(&location, &gateway).await as usize, events);
        baselines.push(("bare read through sqlx", started.elapsed().as_secs_f64()));
        if let StoreLocation::Sqlite { path } = &location {
            let started = Instant::now();
            assert_eq!(bare_read_in_place(path, &gateway) as usize, events);
            baselines.push((
                "bare read in place (rusqlite, one thread)",
                started.elapsed().as_secs_f64(),
            ));
        }
    }
    for (what, seconds) in &baselines {
        println!(
            "  {what}: {seconds:.3} s, {:.0} rows/s",
            events as f64 / seconds
        );
    }

    let started = Instant::now();
    let report = store
        .verify_audit(&VerifyOptions {
            full: true,
            ..VerifyOptions::default()
        })
        .await
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(report.ok, "{report:?}");
    let checked = report
        .chains
        .iter()
        .find(|chain| chain.gateway == gateway)
        .map(|chain| chain.events)
        .unwrap();
    assert_eq!(checked as usize, events);
    println!(
        "  verify --full: {seconds:.3} s, {:.0} events/s",
        events as f64 / seconds
    );
    for (what, baseline) in &baselines {
        println!("    {:.2}x the rate of the {what}", baseline / seconds);
    }
}
