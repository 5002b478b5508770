//! Group commit against its baseline, in the same run: 256 audit events appended by 256
//! concurrent requests, (a) each in its own transaction (what the gateway would do without a
//! writer task), (b) through the group-commit writer. Both on a temp-dir SQLite store with
//! `synchronous = FULL`, the production setting. Report: the ratio of (a) to (b).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meshguard_gateway::alerts::AlertQueue;
use meshguard_gateway::audit_writer::AuditWriter;
use meshguard_gateway::config::AuditDurability;
use meshguard_gateway::metrics::GatewayMetrics;
use meshguard_store::{AuditAgent, AuditKind, NewAuditEvent, Store, StoreLocation};

const EVENTS: usize = 256;
const GATEWAY: &str = "gw_bench";

fn event(i: usize) -> NewAuditEvent {
    NewAuditEvent {
        agent: Some(AuditAgent {
            id: "agent_bench".into(),
            name: "bench".into(),
        }),
        resource: Some(format!("notes-{i}.txt")),
        decision: Some(meshguard_policy::Effect::Allow),
        code: Some(meshguard_policy::Code::Allowed.into()),
        reason: Some("Action 'read:workspace' allowed by rule 'rule-1' of policy 'bench'".into()),
        policy: Some("bench".into()),
        rule: Some("rule-1".into()),
        trace_id: Some("bench-trace".into()),
        latency_us: Some(100),
        ..NewAuditEvent::new(AuditKind::Check, "read:workspace", GATEWAY)
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = runtime
        .block_on(meshguard_store::open(&StoreLocation::in_data_dir(
            dir.path(),
        )))
        .unwrap();
    let (writer, _task) = runtime.block_on(async {
        AuditWriter::start(
            Arc::clone(&store),
            GatewayMetrics::new().unwrap(),
            GATEWAY.into(),
            AuditDurability::Sync,
            AlertQueue::default(),
            None,
        )
    });
    // The same writer in front of a write-ahead log (what a SQLite gateway runs), on a store
    // of its own.
    let logged_dir = tempfile::tempdir().unwrap();
    let (logged_writer, _logged_task) = runtime.block_on(async {
        let store = meshguard_store::open(&StoreLocation::in_data_dir(logged_dir.path()))
            .await
            .unwrap();
        let log = meshguard_gateway::audit_log::open(&*store, logged_dir.path(), GATEWAY)
            .await
            .unwrap();
        AuditWriter::start(
            store,
            GatewayMetrics::new().unwrap(),
            GATEWAY.into(),
            AuditDurability::Sync,
            AlertQueue::default(),
            Some(log),
        )
    });

    let mut group = c.benchmark_group("audit_256_concurrent_events");
    group.sample_size(10);
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("baseline_one_transaction_each", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let tasks: Vec<_> = (0..EVENTS)
                    .map(|i| {
                        let store = Arc::clone(&store);
                        tokio::spawn(async move { store.append_audit(&[event(i)]).await.unwrap() })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
            });
        });
    });
    for (name, writer) in [
        ("group_commit_writer", &writer),
        ("group_commit_writer_with_log", &logged_writer),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let tasks: Vec<_> = (0..EVENTS)
                        .map(|i| {
                            let writer = writer.clone();
                            tokio::spawn(
                                async move { writer.append_committed(event(i)).await.unwrap() },
                            )
                        })
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                });
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
