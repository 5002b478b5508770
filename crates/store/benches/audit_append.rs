//! What group commit buys: appending 100 audit events as 100 one-event transactions (what a
//! gateway without group commit does) against one 100-event transaction, on SQLite with the
//! durability the gateway uses (WAL, `synchronous = FULL`). Compare the two lines of the same
//! run; `MESHGUARD_BENCH_DATABASE_URL=postgres://…` runs the same pair on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use meshguard_store::{NewAuditEvent, Store, StoreLocation};

/// The typical check the load examples write, shared with them.
#[path = "../examples/support/mod.rs"]
mod support;
use support::event;
use time::OffsetDateTime;

const EVENTS: usize = 100;

fn events(n: usize) -> Vec<NewAuditEvent> {
    (0..n)
        .map(|i| {
            let mut event = event("bench", OffsetDateTime::now_utc(), i);
            if i % 3 == 0 {
                event.decision = Some(meshguard_policy::Effect::Deny);
            }
            event
        })
        .collect()
}

fn append(c: &mut Criterion, backend: &str, store: &Arc<dyn Store>, rt: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group(format!("audit_append_{EVENTS}_events/{backend}"));
    group.sample_size(20);
    group.bench_function("one_transaction_per_event", |b| {
        b.iter_batched(
            || events(EVENTS),
            |batch| {
                rt.block_on(async {
                    for event in batch.chunks(1) {
                        store.append_audit(event).await.unwrap();
                    }
                });
            },
            BatchSize::SmallInput,
        );
    });
    group.bench_function("one_group_commit", |b| {
        b.iter_batched(
            || events(EVENTS),
            |batch| {
                rt.block_on(store.append_audit(&batch)).unwrap();
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = rt
        .block_on(meshguard_store::open(&StoreLocation::in_data_dir(
            dir.path(),
        )))
        .unwrap();
    append(c, "sqlite", &sqlite, &rt);

    if let Ok(url) = std::env::var("MESHGUARD_BENCH_DATABASE_URL") {
        let location = StoreLocation::parse(&url).unwrap();
        let postgres = rt.block_on(meshguard_store::open(&location)).unwrap();
        append(c, "postgres", &postgres, &rt);
    }
}

criterion_group!(audit, benches);
criterion_main!(audit);
