//! At most one pending approval per (agent, action, resource), however many callers ask at once
//! and however many store instances (gateways) share the database; and databases written before
//! that guarantee, with duplicate pending approvals, migrate cleanly.

use std::sync::Arc;

use crate::common::{TestDb, new_agent};
use crate::on_every_backend;
use meshguard_store::{
    ApprovalDecision, ApprovalStatus, ApprovalVerdict, BoundArguments, NewApproval, PageRequest,
    PendingApproval, Store, StoreChange, StoreLocation,
};
use serde_json::json;
use sqlx::Connection;
use time::{Duration, OffsetDateTime};

fn ask(agent_id: &str, action: &str, created_at: OffsetDateTime) -> NewApproval {
    NewApproval {
        agent_id: agent_id.to_owned(),
        action: action.to_owned(),
        resource: "twitter".to_owned(),
        timeout_secs: 60,
        trace_id: None,
        created_at,
        max_pending: u32::MAX,
        arguments: None,
    }
}

on_every_backend!(
    concurrent_creates_share_one_pending_approval,
    a_pending_approval_whose_time_ran_out_gives_way,
    a_decided_approval_does_not_block_a_new_one,
    duplicate_pending_approvals_from_before_migrate_cleanly,
    the_pending_cap_holds_across_stores,
    approvals_are_bound_to_their_arguments,
);

/// Requests that differ only in their arguments are different requests: each gets its own
/// pending approval, the latest of one is not the other's, and the approver reads the
/// arguments back as they were sent.
async fn approvals_are_bound_to_their_arguments(db: TestDb) {
    let store = db.open().await;
    let agent = store
        .create_agent(new_agent("writer", "trusted", &[]))
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let with = |arguments: Option<BoundArguments>| NewApproval {
        arguments,
        ..ask(&agent.id, "mcp:fs/write_file", now)
    };
    let hello = BoundArguments::of(json!({"path": "/ws/a.txt", "content": "hello"}));
    // The same arguments in another key order bind alike; another content does not.
    let hello_again = BoundArguments::of(json!({"content": "hello", "path": "/ws/a.txt"}));
    let other = BoundArguments::of(json!({"path": "/ws/a.txt", "content": "rm -rf /"}));
    assert_eq!(hello.digest, hello_again.digest);
    assert_ne!(hello.digest, other.digest);
    assert_eq!(hello.digest.len(), 64);

    let first = store
        .create_approval(with(Some(hello.clone())))
        .await
        .unwrap();
    let PendingApproval::Created(first) = first else {
        panic!("the first request creates: {first:?}");
    };
    assert_eq!(first.arguments.as_ref(), Some(&hello));
    let again = store
        .create_approval(with(Some(hello_again)))
        .await
        .unwrap();
    assert!(
        matches!(&again, PendingApproval::Existing(r) if r.id == first.id),
        "{again:?}"
    );
    for distinct in [Some(other.clone()), None] {
        let created = store.create_approval(with(distinct)).await.unwrap();
        assert!(
            matches!(&created, PendingApproval::Created(r) if r.id != first.id),
            "{created:?}"
        );
    }

    let latest = |arguments: Option<BoundArguments>| {
        let store = store.clone();
        let agent_id = agent.id.clone();
        async move {
            store
                .latest_approval(
                    &agent_id,
                    "mcp:fs/write_file",
                    "twitter",
                    arguments.as_ref(),
                )
                .await
                .unwrap()
                .unwrap()
        }
    };
    assert_eq!(latest(Some(hello.clone())).await.id, first.id);
    let of_other = latest(Some(other.clone())).await;
    assert_eq!(of_other.arguments.map(|a| a.value), Some(other.value));
    assert!(latest(None).await.arguments.is_none());
    let listed = store
        .list_approvals(Some(ApprovalStatus::Pending), &PageRequest::default())
        .await
        .unwrap();
    let shown = listed.items.iter().find(|r| r.id == first.id).unwrap();
    assert_eq!(
        shown.arguments.as_ref().map(|a| &a.value),
        Some(&hello.value)
    );
}

/// 24 different requests of one agent, asked at once over two stores (two gateways on one
/// database), with a cap of 5: exactly 5 are created and the rest are refused; the request's own
/// pending approval still comes back at the cap, and one that ran out frees its place.
async fn the_pending_cap_holds_across_stores(db: TestDb) {
    let first = db.open().await;
    let second = db.open().await;
    let agent = first
        .create_agent(new_agent("flooder", "trusted", &[]))
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let capped = |action: String, at| NewApproval {
        max_pending: 5,
        ..ask(&agent.id, &action, at)
    };
    let barrier = Arc::new(tokio::sync::Barrier::new(24));
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let store: Arc<dyn Store> = if i % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            let request = capped(format!("post:social-{i}"), now);
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                store.create_approval(request).await.unwrap()
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    let created: Vec<_> = answers
        .iter()
        .filter_map(|a| match a {
            PendingApproval::Created(r) => Some(r.action.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 5, "{answers:#?}");
    assert!(
        answers.iter().all(|a| matches!(
            a,
            PendingApproval::Created(_) | PendingApproval::TooMany { max_pending: 5 }
        )),
        "{answers:#?}"
    );
    let pending = first
        .list_approvals(Some(ApprovalStatus::Pending), &PageRequest::default())
        .await
        .unwrap()
        .items;
    assert_eq!(pending.len(), 5);
    // Asking again for a request that waits is answered with its approval, not refused.
    let again = second
        .create_approval(capped(created[0].clone(), now))
        .await
        .unwrap();
    assert!(matches!(again, PendingApproval::Existing(_)), "{again:?}");
    // Once they ran out (60 s timeout), they hold no place.
    let later = now + Duration::seconds(61);
    let fresh = first
        .create_approval(capped("post:later".into(), later))
        .await
        .unwrap();
    assert!(matches!(fresh, PendingApproval::Created(_)), "{fresh:?}");
}

/// 16 tasks over two separately opened stores (two gateways on one database), all asking at the
/// same instant, several rounds: one creates, fifteen get the same approval back.
async fn concurrent_creates_share_one_pending_approval(db: TestDb) {
    let first = db.open().await;
    let second = db.open().await;
    let agent = first
        .create_agent(new_agent("poster", "trusted", &[]))
        .await
        .unwrap();
    for round in 0..5 {
        let action = format!("post:social-{round}");
        let now = OffsetDateTime::now_utc();
        let barrier = Arc::new(tokio::sync::Barrier::new(16));
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store: Arc<dyn Store> = if i % 2 == 0 {
                    first.clone()
                } else {
                    second.clone()
                };
                let request = ask(&agent.id, &action, now);
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.create_approval(request).await.unwrap()
                })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        let created = answers
            .iter()
            .filter(|a| matches!(a, PendingApproval::Created(_)))
            .count();
        assert_eq!(created, 1, "round {round}: {answers:#?}");
        let id = &answers[0].record().unwrap().id;
        assert!(
            answers.iter().all(|a| &a.record().unwrap().id == id),
            "round {round}: {answers:#?}"
        );
        let pending: Vec<_> = first
            .list_approvals(Some(ApprovalStatus::Pending), &PageRequest::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|a| a.action == action)
            .collect();
        assert_eq!(pending.len(), 1, "round {round}: {pending:#?}");
        assert_eq!(&pending[0].id, id);
    }
}

/// A pending approval that ran out but was not yet marked expired does not hold the slot, and an
/// existing pending approval comes back unchanged (the caller's timeout and trace are not used).
async fn a_pending_approval_whose_time_ran_out_gives_way(db: TestDb) {
    let store = db.open().await;
    let agent = store
        .create_agent(new_agent("poster", "trusted", &[]))
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let stale = store
        .create_approval(ask(&agent.id, "post:social", now - Duration::hours(2)))
        .await
        .unwrap();
    assert!(matches!(stale, PendingApproval::Created(_)), "{stale:?}");
    let stale = stale.into_record().unwrap();

    let mut changes = store.subscribe_changes();
    let fresh = store
        .create_approval(ask(&agent.id, "post:social", now))
        .await
        .unwrap();
    let PendingApproval::Created(fresh) = fresh else {
        panic!("a stale pending approval must not be returned: {fresh:?}");
    };
    assert_ne!(fresh.id, stale.id);
    assert_eq!(
        store.get_approval(&stale.id).await.unwrap().status,
        ApprovalStatus::Expired
    );
    // Both changes are announced: the stale one's expiry and the new approval (other changes,
    // such as the agent's, may still arrive through PostgreSQL's feed).
    let mut unseen = vec![
        StoreChange::Approval {
            id: stale.id.clone(),
        },
        StoreChange::Approval {
            id: fresh.id.clone(),
        },
    ];
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while !unseen.is_empty() {
            let change = changes.recv().await.unwrap();
            unseen.retain(|c| *c != change);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not announced: {unseen:?}"));

    let again = store
        .create_approval(NewApproval {
            timeout_secs: 5,
            trace_id: Some("another-trace".into()),
            ..ask(&agent.id, "post:social", now + Duration::seconds(1))
        })
        .await
        .unwrap();
    assert_eq!(again, PendingApproval::Existing(fresh));
}

/// Only a pending approval holds the slot: once decided, the next request gets a new one.
async fn a_decided_approval_does_not_block_a_new_one(db: TestDb) {
    let store = db.open().await;
    let agent = store
        .create_agent(new_agent("poster", "trusted", &[]))
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let first = store
        .create_approval(ask(&agent.id, "post:social", now))
        .await
        .unwrap()
        .into_record()
        .unwrap();
    store
        .decide_approval(
            &first.id,
            ApprovalDecision {
                verdict: ApprovalVerdict::Approve,
                decided_by: "alice".into(),
                reason: None,
                decided_at: now,
            },
        )
        .await
        .unwrap();
    let second = store
        .create_approval(ask(&agent.id, "post:social", now))
        .await
        .unwrap();
    let PendingApproval::Created(second) = second else {
        panic!("an approved approval is not pending: {second:?}");
    };
    assert_ne!(second.id, first.id);
    assert_eq!(
        store.get_approval(&first.id).await.unwrap().status,
        ApprovalStatus::Approved
    );
}

/// A database at migration 1 holding what gateways before the guarantee could write: two and
/// three pending approvals of the same request. Opening it migrates: the newest of each stays
/// pending, the older ones become expired, and no other row changes.
async fn duplicate_pending_approvals_from_before_migrate_cleanly(db: TestDb) {
    let (first_migration, url) = match &db.location {
        StoreLocation::Sqlite { .. } => (
            include_str!("../../migrations/sqlite/0001_initial.sql"),
            format!("{}?mode=rwc", db.raw_url),
        ),
        StoreLocation::Postgres { .. } => (
            include_str!("../../migrations/postgres/0001_initial.sql"),
            db.raw_url.clone(),
        ),
    };
    let migrations = tempfile::tempdir().unwrap();
    std::fs::write(migrations.path().join("0001_initial.sql"), first_migration).unwrap();
    let migrator = sqlx::migrate::Migrator::new(migrations.path())
        .await
        .unwrap();
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    migrator.run(&mut conn).await.unwrap();
    conn.close().await.unwrap();

    let t = 1_780_000_000_000_000_i64; // microseconds
    let hour = 3_600_000_000_i64;
    db.raw(
        "INSERT INTO agents (id, name, trust, tags, status, created_at, updated_at) \
         VALUES ('agent_1', 'poster', 'trusted', '[]', 'active', 0, 0)",
    )
    .await;
    // (id, action, status, created_at): post:social pending three times (two at the same
    // instant, told apart by id), send:email twice, pay:invoice once, plus decided rows.
    let rows = [
        ("apr_a1", "post:social", "pending", t),
        ("apr_a2", "post:social", "pending", t + 5),
        ("apr_a3", "post:social", "pending", t + 5),
        ("apr_a0", "post:social", "approved", t + 9),
        ("apr_b1", "send:email", "pending", t + 1),
        ("apr_b2", "send:email", "pending", t + 2),
        ("apr_c1", "pay:invoice", "pending", t),
        ("apr_c0", "pay:invoice", "used", t - 1),
    ];
    for (id, action, status, created_at) in rows {
        db.raw(&format!(
            "INSERT INTO approvals (id, agent_id, action, resource, status, timeout_secs, \
             created_at, expires_at) \
             VALUES ('{id}', 'agent_1', '{action}', 'twitter', '{status}', 3600, {created_at}, {})",
            created_at + hour
        ))
        .await;
    }

    let store = db.open().await;
    let status_of = |id: &'static str| {
        let store = store.clone();
        async move { store.get_approval(id).await.unwrap().status }
    };
    let expected = [
        ("apr_a1", ApprovalStatus::Expired),
        ("apr_a2", ApprovalStatus::Expired),
        ("apr_a3", ApprovalStatus::Pending),
        ("apr_a0", ApprovalStatus::Approved),
        ("apr_b1", ApprovalStatus::Expired),
        ("apr_b2", ApprovalStatus::Pending),
        ("apr_c1", ApprovalStatus::Pending),
        ("apr_c0", ApprovalStatus::Used),
    ];
    for (id, status) in expected {
        assert_eq!(status_of(id).await, status, "{id}");
    }
    // Expiring changed the status only.
    let a1 = store.get_approval("apr_a1").await.unwrap();
    assert_eq!(a1.expires_at - a1.created_at, Duration::hours(1));
    assert!(a1.decided_at.is_none() && a1.decided_by.is_none());

    // From now on the store keeps the one pending approval per request.
    let again = store
        .create_approval(NewApproval {
            created_at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(t + 10) * 1_000)
                .unwrap(),
            ..ask("agent_1", "post:social", OffsetDateTime::UNIX_EPOCH)
        })
        .await
        .unwrap();
    assert!(
        matches!(&again, PendingApproval::Existing(r) if r.id == "apr_a3"),
        "{again:?}"
    );
    let raw_insert = format!(
        "INSERT INTO approvals (id, agent_id, action, resource, status, timeout_secs, \
         created_at, expires_at) \
         VALUES ('apr_dup', 'agent_1', 'send:email', 'twitter', 'pending', 3600, {t}, {})",
        t + hour
    );
    let mut conn = sqlx::AnyConnection::connect(&db.raw_url).await.unwrap();
    let err = sqlx::query(&raw_insert)
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, sqlx::Error::Database(e) if e.is_unique_violation()),
        "{err}"
    );
}
