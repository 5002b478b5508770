//! Following other gateways' chains: heads and "events after seq", as the live audit stream of
//! a gateway sharing its database reads them.

use crate::common::{TestDb, check_event};
use crate::on_every_backend;
use meshguard_store::NewAuditEvent;
use time::OffsetDateTime;

on_every_backend!(
    heads_and_events_after_a_seq_follow_each_chain,
    concurrent_writers_never_make_a_follower_skip_an_event,
);

fn batch(gateway: &str, action: &str, size: usize) -> Vec<NewAuditEvent> {
    (0..size)
        .map(|_| check_event(gateway, OffsetDateTime::now_utc(), action, "allow"))
        .collect()
}

async fn heads_and_events_after_a_seq_follow_each_chain(db: TestDb) {
    // Two stores on one database, as two gateways would hold.
    let a = db.open().await;
    let b = db.open().await;
    assert!(a.audit_heads().await.unwrap().is_empty());
    a.append_audit(&batch("gw_a", "read:a", 3)).await.unwrap();
    b.append_audit(&batch("gw_b", "read:b", 5)).await.unwrap();

    let heads = a.audit_heads().await.unwrap();
    assert_eq!(heads.get("gw_a"), Some(&3));
    assert_eq!(heads.get("gw_b"), Some(&5));

    let after = a.audit_chain_after("gw_b", 2, 100).await.unwrap();
    let seqs: Vec<u64> = after.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [3, 4, 5]);
    assert!(
        after
            .iter()
            .all(|e| e.event.gateway == "gw_b" && e.event.action == "read:b")
    );
    let limited = a.audit_chain_after("gw_b", 0, 2).await.unwrap();
    assert_eq!(limited.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    assert!(
        a.audit_chain_after("gw_b", 5, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        a.audit_chain_after("gw_none", 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A follower reading on from its last `seq` while two gateways append concurrently ends up
/// with every event of the other chain, each once, in `seq` order.
async fn concurrent_writers_never_make_a_follower_skip_an_event(db: TestDb) {
    let a = db.open().await;
    let b = db.open().await;
    let writers = [("gw_a", a.clone()), ("gw_b", b.clone())].map(|(gateway, store)| {
        tokio::spawn(async move {
            for _ in 0..40 {
                store
                    .append_audit(&batch(gateway, "write:x", 3))
                    .await
                    .unwrap();
            }
        })
    });
    let follower = a.clone();
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut last = 0;
        // Bounded by time, not by rounds: on a busy machine the writers may need many rounds.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            let events = follower.audit_chain_after("gw_b", last, 7).await.unwrap();
            for event in events {
                last = event.seq;
                seen.push(event.seq);
            }
            if last == 120 {
                break;
            }
            tokio::task::yield_now().await;
        }
        seen
    });
    for writer in writers {
        writer.await.unwrap();
    }
    let seen = reader.await.unwrap();
    assert_eq!(seen, (1..=120).collect::<Vec<u64>>());
}
