//! Retention at scale: fills a SQLite store with N old events, then applies retention while a
//! writer keeps appending 20-event batches (a gateway's group commits under load), and reports
//! how fast retention deleted (and archived) and how long the appends waited meanwhile,
//! against the same appends with no retention running: the baseline of the same run.
//!
//! `cargo run --release -p meshguard-store --example retention_load -- [EVENTS=500000]`
//! (`MESHGUARD_BENCH_DATABASE_URL=postgres://…` runs it on PostgreSQL.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cast_precision_loss,
    missing_docs
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod support;

use meshguard_store::{Store, StoreLocation};
use support::event;
use time::OffsetDateTime;

const BATCH: usize = 20;

/// Appends batches of recent events until `stop`; the time each append took, in ms.
async fn appender(store: Arc<dyn Store>, gateway: String, stop: Arc<AtomicBool>) -> Vec<f64> {
    let mut took = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let batch: Vec<_> = (0..BATCH)
            .map(|k| event(&gateway, OffsetDateTime::now_utc(), i + k))
            .collect();
        i += BATCH;
        let started = Instant::now();
        store.append_audit(&batch).await.unwrap();
        took.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    took
}

fn summary(mut took: Vec<f64>) -> String {
    took.sort_by(f64::total_cmp);
    let at = |q: f64| took[((took.len() as f64 - 1.0) * q) as usize];
    format!(
        "{} appends, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        took.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

/// Appends for `seconds` with nothing else running.
async fn appends_alone(store: &Arc<dyn Store>, gateway: &str, seconds: u64) -> Vec<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(appender(
        Arc::clone(store),
        gateway.to_owned(),
        Arc::clone(&stop),
    ));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap()
}

/// One run on its own chain (`gateway`), so that runs sharing a PostgreSQL database do not mix.
async fn run(
    store: Arc<dyn Store>,
    gateway: &str,
    events: usize,
    archive: Option<&std::path::Path>,
) {
    let old = OffsetDateTime::now_utc() - time::Duration::days(100);
    for start in (0..events).step_by(1000) {
        let batch: Vec<_> = (start..(start + 1000).min(events))
            .map(|i| event(gateway, old + time::Duration::milliseconds(i as i64), i))
            .collect();
        store.append_audit(&batch).await.unwrap();
    }
    let alone = appends_alone(&store, gateway, 3).await;

    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(appender(
        Arc::clone(&store),
        gateway.to_owned(),
        Arc::clone(&stop),
    ));
    let started = Instant::now();
    let report = store
        .apply_retention(
            OffsetDateTime::now_utc() - time::Duration::days(90),
            archive,
        )
        .await
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let during = task.await.unwrap();
    assert_eq!(report.deleted as usize, events);
    println!(
        "retention deleted {} events in {seconds:.2} s ({:.0} events/s){}",
        report.deleted,
        report.deleted as f64 / seconds,
        if archive.is_some() {
            format!(", archived to {} files", report.archived.len())
        } else {
            String::new()
        }
    );
    println!("  appends alone (baseline): {}", summary(alone));
    println!("  appends during retention: {}", summary(during));
}

#[tokio::main]
async fn main() {
    let events: usize = std::env::args()
        .nth(1)
        .map_or(500_000, |n| n.parse().expect("EVENTS is a number"));
    for archive in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let location = match std::env::var("MESHGUARD_BENCH_DATABASE_URL") {
            Ok(url) => StoreLocation::parse(&url).expect("a database URL"),
            Err(_) => StoreLocation::in_data_dir(dir.path()),
        };
        let store = meshguard_store::open(&location).await.unwrap();
        let archive_dir = dir.path().join("archive");
        println!(
            "{} ({events} old events{})",
            store.backend(),
            if archive { ", archived" } else { "" }
        );
        let gateway = format!("bench-{}", uuid::Uuid::now_v7().simple());
        run(
            store,
            &gateway,
            events,
            archive.then_some(archive_dir.as_path()),
        )
        .await;
    }
}
