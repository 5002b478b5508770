//! Many writers at once: `seq` stays gap-free per chain and every chain verifies, within one
//! store, across two stores on the same database (as two processes would be), and after reopen.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::common::{TestDb, check_event};
use crate::on_every_backend;
use meshguard_store::{AuditEvent, AuditFilter, AuditOrder, NewAuditEvent, Store};
use time::OffsetDateTime;

on_every_backend!(
    concurrent_appends_keep_every_chain_gap_free,
    two_stores_on_one_database_continue_each_other_s_chains,
    a_reopened_store_continues_its_chains,
    a_failing_batch_stores_nothing_and_consumes_no_seq,
    a_chain_emptied_by_retention_continues_from_its_anchor,
    verify_while_events_are_appended_reports_no_break,
);

fn batch(gateway: &str, size: usize) -> Vec<NewAuditEvent> {
    (0..size)
        .map(|_| check_event(gateway, OffsetDateTime::now_utc(), "read:file", "allow"))
        .collect()
}

async fn all_events(store: &Arc<dyn Store>) -> Vec<AuditEvent> {
    let mut events = Vec::new();
    let mut filter = AuditFilter {
        limit: 1000,
        order: AuditOrder::OldestFirst,
        ..AuditFilter::default()
    };
    loop {
        let page = store.query_audit(&filter).await.unwrap();
        events.extend(page.entries);
        match page.next_cursor {
            Some(cursor) => filter.cursor = Some(cursor),
            None => return events,
        }
    }
}

/// `seq` of each chain is exactly 1..=n.
fn assert_gap_free(events: &[AuditEvent]) -> BTreeMap<String, u64> {
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for event in events {
        seqs.entry(event.event.gateway.clone())
            .or_default()
            .push(event.seq);
    }
    seqs.into_iter()
        .map(|(gateway, mut seqs)| {
            seqs.sort_unstable();
            let n = seqs.len() as u64;
            assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "chain {gateway}");
            (gateway, n)
        })
        .collect()
}

async fn hammer(stores: &[Arc<dyn Store>], tasks: usize, appends: usize) -> usize {
    let mut handles = Vec::new();
    for task in 0..tasks {
        let store = Arc::clone(&stores[task % stores.len()]);
        handles.push(tokio::spawn(async move {
            let mut written = 0;
            for round in 0..appends {
                let size = 1 + (task * 7 + round * 3) % 9;
                let events = if round % 4 == 3 {
                    // A batch spanning both chains, listed in an order that differs per task:
                    // concurrent batches must not deadlock on each other's chain locks.
                    let (first, second) = if task % 2 == 0 {
                        ("gw-1", "gw-2")
                    } else {
                        ("gw-2", "gw-1")
                    };
                    let mut events = batch(first, size);
                    events.extend(batch(second, size));
                    events
                } else if (task + round) % 3 == 0 {
                    batch("gw-2", size)
                } else {
                    batch("gw-1", size)
                };
                let committed = store.append_audit(&events).await.unwrap();
                assert_eq!(committed.len(), events.len());
                // Within one batch each chain's sequence numbers are consecutive.
                for gateway in ["gw-1", "gw-2"] {
                    let chain: Vec<_> = committed
                        .iter()
                        .filter(|e| e.event.gateway == gateway)
                        .collect();
                    for pair in chain.windows(2) {
                        assert_eq!(pair[1].seq, pair[0].seq + 1);
                        assert_eq!(pair[1].prev_hash, pair[0].hash);
                    }
                }
                written += events.len();
            }
            written
        }));
    }
    let mut total = 0;
    for handle in handles {
        total += handle.await.unwrap();
    }
    total
}

async fn concurrent_appends_keep_every_chain_gap_free(db: TestDb) {
    let store = db.open().await;
    let written = hammer(std::slice::from_ref(&store), 16, 15).await;

    let events = all_events(&store).await;
    assert_eq!(events.len(), written);
    let heads = assert_gap_free(&events);
    assert_eq!(heads.values().sum::<u64>() as usize, written);
    let report = store
        .verify_audit(&meshguard_store::VerifyOptions::full(Default::default()))
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events_checked as usize, written);
}

async fn two_stores_on_one_database_continue_each_other_s_chains(db: TestDb) {
    // Two independently opened stores stand for two processes: neither may fork a chain by
    // trusting a head it read earlier.
    let first = db.open().await;
    let second = db.open().await;
    let written = hammer(&[first, Arc::clone(&second)], 8, 10).await;

    let events = all_events(&second).await;
    assert_eq!(events.len(), written);
    assert_gap_free(&events);
    let report = second
        .verify_audit(&meshguard_store::VerifyOptions::full(Default::default()))
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
}

async fn a_reopened_store_continues_its_chains(db: TestDb) {
    let before = {
        let store = db.open().await;
        store.append_audit(&batch("gw-1", 5)).await.unwrap();
        store.append_audit(&batch("gw-2", 2)).await.unwrap()
    };

    let store = db.open().await;
    let after = store.append_audit(&batch("gw-1", 3)).await.unwrap();
    assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), [6, 7, 8]);
    let gw2 = store.append_audit(&batch("gw-2", 1)).await.unwrap();
    assert_eq!(gw2[0].seq, 3);
    assert_eq!(gw2[0].prev_hash, before[1].hash);

    let report = store
        .verify_audit(&meshguard_store::VerifyOptions::full(Default::default()))
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events_checked, 11);
    // Reopening also re-runs migrations: already applied, they are skipped.
    assert_eq!(store.backend(), db.location.backend());
}

async fn a_failing_batch_stores_nothing_and_consumes_no_seq(db: TestDb) {
    let store = db.open().await;
    let first = store.append_audit(&batch("gw-1", 2)).await.unwrap();

    let mut bad = batch("gw-1", 3);
    bad[2].id = first[0].event.id.clone();
    let err = store.append_audit(&bad).await.unwrap_err();
    assert!(err.to_string().contains("already stored"), "{err}");
    assert_eq!(all_events(&store).await.len(), 2);

    let next = store.append_audit(&batch("gw-1", 1)).await.unwrap();
    assert_eq!(next[0].seq, 3);
    assert_eq!(next[0].prev_hash, first[1].hash);
    assert!(
        store
            .verify_audit(&meshguard_store::VerifyOptions::full(Default::default()))
            .await
            .unwrap()
            .ok
    );
}

async fn a_chain_emptied_by_retention_continues_from_its_anchor(db: TestDb) {
    let store = db.open().await;
    let old = OffsetDateTime::now_utc() - time::Duration::days(100);
    let aged: Vec<_> = (0..3)
        .map(|_| check_event("gw-1", old, "read:file", "allow"))
        .collect();
    let first = store.append_audit(&aged).await.unwrap();

    let report = store
        .apply_retention(OffsetDateTime::now_utc() - time::Duration::days(90), None)
        .await
        .unwrap();
    assert_eq!(report.deleted, 3);
    assert_eq!(report.anchors[0].seq, 3);
    assert_eq!(report.anchors[0].hash, first[2].hash);
    assert!(all_events(&store).await.is_empty());
    let verified = store
        .verify_audit(&meshguard_store::VerifyOptions::full(Default::default()))
        .await
        .unwrap();
    assert!(verified.ok, "{verified:?}");
    assert_eq!(verified.events_checked, 0);

    let next = store.append_audit(&batch("gw-1", 1)).await.unwrap();
    assert_eq!(next[0].seq, 4);
    assert_eq!(next[0].prev_hash, first[2].hash);
    let verified = store
        .verify_audit(&meshguard_store::VerifyOptions::full(Default::default()))
        .await
        .unwrap();
    assert!(verified.ok, "{verified:?}");
    assert_eq!(verified.chains[0].anchor_seq, 3);
}

async fn verify_while_events_are_appended_reports_no_break(db: TestDb) {
    // A scheduled `audit verify` runs on a gateway in use: appends committing while it walks
    // must never look like rows written behind MeshGuard's back.
    let store = db.open().await;
    store.append_audit(&batch("gw-a", 5)).await.unwrap();
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for i in 0..200 {
                let gateway = if i % 2 == 0 { "gw-a" } else { "gw-b" };
                store.append_audit(&batch(gateway, 3)).await.unwrap();
            }
        })
    };
    let mut verified = 0;
    while !writer.is_finished() && verified < 500 {
        let report = store
            .verify_audit(&meshguard_store::VerifyOptions::full(Default::default()))
            .await
            .unwrap();
        assert!(report.ok, "{report:?}");
        verified += 1;
    }
    writer.await.unwrap();
    assert!(verified > 0);
    let report = store
        .verify_audit(&meshguard_store::VerifyOptions::full(Default::default()))
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events_checked, 605);
}
