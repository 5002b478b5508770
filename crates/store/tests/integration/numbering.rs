//! Audit rows name their agent, reason template and outcome by number, and a store remembers
//! the numbers it has read. A number inserted by a batch that rolls back is gone (SQLite gives
//! it to the next new text): the store must not remember it, or later events would read
//! another outcome than theirs and fail verification.

use meshguard_store::{AuditFilter, AuditOrder, StoreError, VerifyOptions};
use time::Duration;
use time::macros::datetime;

use crate::common::{TestDb, check_event};
use crate::on_every_backend;

on_every_backend!(numbers_of_a_rolled_back_batch_are_not_remembered);

async fn numbers_of_a_rolled_back_batch_are_not_remembered(db: TestDb) {
    let store = db.open().await;
    let start = datetime!(2026-03-01 10:00:00 UTC);
    let event = |seconds: i64, policy: &str, reason: &str| {
        let mut event = check_event(
            "gw-a",
            start + Duration::seconds(seconds),
            "read:file",
            "allow",
        );
        event.policy = Some(policy.to_owned());
        event.reason = Some(reason.to_owned());
        event
    };
    let first = event(0, "first", "first reason");
    store
        .append_audit(std::slice::from_ref(&first))
        .await
        .unwrap();

    // A new outcome and a new template are numbered, then the batch fails on a repeated id.
    let mut repeated = event(2, "first", "first reason");
    repeated.id.clone_from(&first.id);
    let failed = store
        .append_audit(&[event(1, "rolled-back", "rolled-back reason"), repeated])
        .await;
    assert!(
        matches!(failed, Err(StoreError::Conflict { .. })),
        "{failed:?}"
    );

    // Another new outcome and template (on SQLite, they take the numbers that were rolled
    // back), then the rolled-back ones again.
    let written = [
        event(3, "other", "other reason"),
        event(4, "rolled-back", "rolled-back reason"),
        event(5, "first", "first reason"),
    ];
    for one in &written {
        store.append_audit(std::slice::from_ref(one)).await.unwrap();
    }
    let page = store
        .query_audit(&AuditFilter {
            order: AuditOrder::OldestFirst,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let read: Vec<(Option<&str>, Option<&str>)> = page
        .entries
        .iter()
        .map(|e| (e.event.policy.as_deref(), e.event.reason.as_deref()))
        .collect();
    assert_eq!(
        read,
        [
            (Some("first"), Some("first reason")),
            (Some("other"), Some("other reason")),
            (Some("rolled-back"), Some("rolled-back reason")),
            (Some("first"), Some("first reason")),
        ]
    );
    let report = store
        .verify_audit(&VerifyOptions::full(Default::default()))
        .await
        .unwrap();
    assert!(report.ok, "{:?}", report.first_break());
}
