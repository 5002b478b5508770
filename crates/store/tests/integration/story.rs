//! The life of a store, as the gateway drives it, one test per concern: agents, tokens, policies,
//! approvals, purge, and the audit trail (append and verify, query and paging, stats, export,
//! tampering, retention), each on a fresh store with what it needs set up first.
//!
//! Runs on SQLite in a temp dir, and on PostgreSQL when `MESHGUARD_TEST_DATABASE_URL` is set.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use crate::common::{TestDb, check_event, new_agent};
use crate::on_every_backend;
use futures::TryStreamExt;
use meshguard_store::{
    AgentPatch, AgentStatus, ApprovalDecision, ApprovalStatus, ApprovalVerdict, AuditEvent,
    AuditFilter, AuditKind, AuditOrder, ExportLine, MAX_RESULT_BYTES, NewApproval, NewAuditEvent,
    NewPolicy, NewToken, PageRequest, PolicyOrigin, StatsQuery, Store, StoreError, chain,
    export_audit,
};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

// One test per concern, each on a fresh store with only what it needs before it, so that one
// failure does not hide the others.
on_every_backend!(
    agents_story,
    tokens_story,
    policies_story,
    approvals_story,
    purge_story,
    audit_append_story,
    audit_query_story,
    audit_stats_story,
    audit_export_story,
    audit_tampering_story,
    audit_retention_story,
);

async fn agents_story(db: TestDb) {
    let store = db.open().await;
    store.ping().await.unwrap();
    agents(&store).await;
}

async fn tokens_story(db: TestDb) {
    let store = db.open().await;
    let agent_id = agents(&store).await;
    tokens(&store, &agent_id).await;
}

async fn policies_story(db: TestDb) {
    policies(&db.open().await).await;
}

async fn approvals_story(db: TestDb) {
    let store = db.open().await;
    let agent_id = agents(&store).await;
    approvals(&store, &agent_id).await;
}

async fn purge_story(db: TestDb) {
    let store = db.open().await;
    let agent_id = agents(&store).await;
    tokens(&store, &agent_id).await;
    approvals(&store, &agent_id).await;
    purge(&store).await;
}

async fn audit_append_story(db: TestDb) {
    let store = db.open().await;
    append_fixture(&store).await;
    verify_fixture(&store).await;
}

async fn audit_query_story(db: TestDb) {
    let store = db.open().await;
    let committed = append_fixture(&store).await;
    query_and_paging(&store, &committed).await;
}

async fn audit_stats_story(db: TestDb) {
    let store = db.open().await;
    let committed = append_fixture(&store).await;
    stats(&store, &committed).await;
}

async fn audit_export_story(db: TestDb) {
    let store = db.open().await;
    let committed = append_fixture(&store).await;
    export(&store, &committed).await;
}

async fn audit_tampering_story(db: TestDb) {
    let store = db.open().await;
    append_fixture(&store).await;
    tampering(&store, &db).await;
}

async fn audit_retention_story(db: TestDb) {
    let store = db.open().await;
    append_fixture(&store).await;
    retention(&store, &db).await;
}

async fn agents(store: &Arc<dyn Store>) -> String {
    let autogpt = store
        .create_agent(new_agent("autogpt", "verified", &["autogpt", "research"]))
        .await
        .unwrap();
    assert!(
        autogpt.id.starts_with("agent_") && autogpt.id.len() == 26,
        "{}",
        autogpt.id
    );
    assert_eq!(autogpt.status, AgentStatus::Active);
    assert_eq!(autogpt.trust, "verified");

    let reviewer = store
        .create_agent(new_agent("reviewer", "untrusted", &[]))
        .await
        .unwrap();
    assert_eq!(
        reviewer.trust, "unverified",
        "`untrusted` is stored as `unverified`"
    );
    assert_ne!(reviewer.id, autogpt.id);

    let err = store
        .create_agent(new_agent("autogpt", "trusted", &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert_eq!(err.to_string(), "agent `autogpt`: the name is taken");
    let err = store
        .create_agent(new_agent("Auto GPT", "verified", &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid { field: "name", .. }),
        "{err}"
    );
    let err = store
        .create_agent(new_agent("bot", "root", &[]))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("`root` is not a trust tier"),
        "{err}"
    );
    let err = store
        .create_agent(new_agent("bot", "verified", &[" "]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid { field: "tags", .. }),
        "{err}"
    );
    let names: Vec<_> = store
        .list_agents(&PageRequest::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|agent| agent.name)
        .collect();
    assert_eq!(
        names,
        ["autogpt", "reviewer"],
        "refused creations changed nothing"
    );

    assert_eq!(store.get_agent(&autogpt.id).await.unwrap(), autogpt);
    assert_eq!(store.get_agent("autogpt").await.unwrap(), autogpt);
    let err = store.get_agent("nobody").await.unwrap_err();
    assert_eq!(err.to_string(), "agent `nobody` not found");

    let updated = store
        .update_agent(
            "autogpt",
            AgentPatch {
                trust: Some("trusted".into()),
                tags: Some(BTreeSet::from(["autogpt".to_owned()])),
                description: Some(Some("research agent".into())),
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.trust, "trusted");
    assert_eq!(updated.tags, BTreeSet::from(["autogpt".to_owned()]));
    assert_eq!(updated.description.as_deref(), Some("research agent"));
    assert!(updated.updated_at >= autogpt.updated_at);
    assert_eq!(updated.created_at, autogpt.created_at);

    let unchanged = store
        .update_agent(&autogpt.id, AgentPatch::default())
        .await
        .unwrap();
    assert_eq!(unchanged.description.as_deref(), Some("research agent"));
    let cleared = store
        .update_agent(
            &autogpt.id,
            AgentPatch {
                description: Some(None),
                ..AgentPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(cleared.description, None);
    assert_eq!(cleared.trust, "trusted");
    let err = store
        .update_agent(
            "autogpt",
            AgentPatch {
                trust: Some("admin".into()),
                ..AgentPatch::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
    assert!(matches!(
        store
            .update_agent("ghost", AgentPatch::default())
            .await
            .unwrap_err(),
        StoreError::NotFound { .. }
    ));

    let revoked = store
        .set_agent_status("autogpt", AgentStatus::Revoked)
        .await
        .unwrap();
    assert_eq!(revoked.status, AgentStatus::Revoked);
    assert_eq!(
        store.get_agent(&autogpt.id).await.unwrap().status,
        AgentStatus::Revoked
    );
    let restored = store
        .set_agent_status(&autogpt.id, AgentStatus::Active)
        .await
        .unwrap();
    assert_eq!(restored.status, AgentStatus::Active);
    autogpt.id
}

async fn tokens(store: &Arc<dyn Store>, agent_id: &str) {
    let now = OffsetDateTime::now_utc();
    let token = |jti: &str, expires_at| NewToken {
        jti: jti.to_owned(),
        agent_id: agent_id.to_owned(),
        issued_at: now - Duration::hours(1),
        expires_at,
    };
    store.insert_token(token("jti-1", None)).await.unwrap();
    store
        .insert_token(token("jti-expired", Some(now - Duration::minutes(1))))
        .await
        .unwrap();
    assert_eq!(
        store
            .active_token("jti-1", now)
            .await
            .unwrap()
            .unwrap()
            .agent_id,
        agent_id
    );
    assert!(
        store
            .active_token("jti-expired", now)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .active_token("jti-unknown", now)
            .await
            .unwrap()
            .is_none()
    );

    let err = store.insert_token(token("jti-1", None)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let err = store
        .insert_token(NewToken {
            agent_id: "agent_nobody".into(),
            ..token("jti-x", None)
        })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "agent `agent_nobody` not found");

    // `token --rotate`: a new token, then every other one revoked.
    store
        .insert_token(token("jti-2", Some(now + Duration::days(30))))
        .await
        .unwrap();
    let revoked = store
        .revoke_tokens(agent_id, Some("jti-2"), now)
        .await
        .unwrap();
    assert_eq!(revoked, 2, "jti-1 and the expired one");
    assert!(store.active_token("jti-1", now).await.unwrap().is_none());
    assert!(store.active_token("jti-2", now).await.unwrap().is_some());
    let listed = store.list_tokens(agent_id).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(
        listed.iter().filter(|t| t.is_active(now)).count(),
        1,
        "{listed:?}"
    );
    assert_eq!(
        store.revoke_tokens(agent_id, None, now).await.unwrap(),
        1,
        "revoking everything touches only the one still active"
    );
    assert!(store.active_token("jti-2", now).await.unwrap().is_none());
}

async fn policies(store: &Arc<dyn Store>) {
    let policy = |name: &str, version: &str, body: &str, origin: PolicyOrigin| NewPolicy {
        name: name.to_owned(),
        version: version.to_owned(),
        origin,
        source: format!("name: {name}\nversion: \"{version}\"\n{body}"),
    };
    let v1 = policy("autogpt-policy", "1.0", "rules: []\n", PolicyOrigin::Api);
    let first = store.upsert_policy(v1.clone()).await.unwrap();
    assert!(first.changed);
    assert_eq!(first.revision, 1);
    assert_eq!(first.policy.source, v1.source);

    let again = store.upsert_policy(v1.clone()).await.unwrap();
    assert!(!again.changed, "the same body is not a new revision");
    assert_eq!(again.revision, 1);

    let v2 = policy(
        "autogpt-policy",
        "1.1",
        "rules:\n  - effect: allow\n    actions: [\"read:*\"]\n",
        PolicyOrigin::Api,
    );
    let second = store.upsert_policy(v2.clone()).await.unwrap();
    assert!(second.changed);
    assert_eq!(second.revision, 2);
    assert_eq!(second.policy.version, "1.1");
    assert_eq!(second.policy.created_at, first.policy.created_at);

    let file = PolicyOrigin::File("policies/base.yaml".into());
    store
        .upsert_policy(policy("base", "7", "rules: []\n", file.clone()))
        .await
        .unwrap();
    let names: Vec<_> = store
        .list_policies(&PageRequest::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| (p.name, p.revision))
        .collect();
    assert_eq!(
        names,
        [("autogpt-policy".to_owned(), 2), ("base".to_owned(), 1)]
    );
    assert_eq!(store.get_policy("base").await.unwrap().origin, file);

    let revisions = store
        .policy_revisions("autogpt-policy", &PageRequest::default())
        .await
        .unwrap()
        .items;
    assert_eq!(revisions.len(), 2);
    assert_eq!(revisions[0].source, v1.source);
    assert_eq!(revisions[1].source, v2.source);
    assert_eq!(revisions[1].version, "1.1");

    let deleted = store.delete_policy("autogpt-policy").await.unwrap();
    assert_eq!(deleted.revision, 2);
    assert!(matches!(
        store.get_policy("autogpt-policy").await.unwrap_err(),
        StoreError::NotFound { .. }
    ));
    assert!(matches!(
        store.delete_policy("autogpt-policy").await.unwrap_err(),
        StoreError::NotFound { .. }
    ));
    assert_eq!(
        store
            .policy_revisions("autogpt-policy", &PageRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        2,
        "history outlives the policy"
    );
    let back = store.upsert_policy(v1).await.unwrap();
    assert_eq!(back.revision, 3, "numbering continues after a delete");
    assert!(back.changed);

    let err = store
        .upsert_policy(policy("Bad_Name", "1", "", PolicyOrigin::Api))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid { field: "name", .. }),
        "{err}"
    );
    assert!(matches!(
        store
            .policy_revisions("never-applied", &PageRequest::default())
            .await
            .unwrap_err(),
        StoreError::NotFound { .. }
    ));
}

async fn approvals(store: &Arc<dyn Store>, agent_id: &str) {
    let now = OffsetDateTime::now_utc();
    let ask = |action: &str, created_at| NewApproval {
        agent_id: agent_id.to_owned(),
        action: action.to_owned(),
        resource: "bob@example.com".to_owned(),
        timeout_secs: 60,
        trace_id: Some("trace-approval".into()),
        created_at,
        max_pending: u32::MAX,
        arguments: None,
    };
    let pending = store
        .create_approval(ask("send:email", now))
        .await
        .unwrap()
        .into_record()
        .unwrap();
    assert!(pending.id.starts_with("apr_"));
    assert_eq!(pending.status, ApprovalStatus::Pending);
    assert_eq!(
        pending.expires_at - pending.created_at,
        Duration::seconds(60),
        "{pending:?}"
    );
    let latest = store
        .latest_approval(agent_id, "send:email", "bob@example.com", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.id, pending.id);
    assert!(
        store
            .latest_approval(agent_id, "send:email", "alice@example.com", None)
            .await
            .unwrap()
            .is_none()
    );

    let decided_at = now + Duration::seconds(10);
    let approved = store
        .decide_approval(
            &pending.id,
            ApprovalDecision {
                verdict: ApprovalVerdict::Approve,
                decided_by: "alice".into(),
                reason: Some("looks fine".into()),
                decided_at,
            },
        )
        .await
        .unwrap();
    assert_eq!(approved.status, ApprovalStatus::Approved);
    assert_eq!(approved.decided_by.as_deref(), Some("alice"));
    assert_eq!(
        approved.expires_at - approved.decided_at.unwrap(),
        Duration::seconds(60)
    );
    let err = store
        .decide_approval(
            &pending.id,
            ApprovalDecision {
                verdict: ApprovalVerdict::Deny,
                decided_by: "mallory".into(),
                reason: None,
                decided_at,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("approval `{}`: it is already approved", pending.id)
    );

    let used = store
        .mark_approval_used(&pending.id, decided_at + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(used.status, ApprovalStatus::Used);
    let err = store
        .mark_approval_used(&pending.id, decided_at + Duration::seconds(2))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("it is used, not approved"),
        "{err}"
    );

    let denied = store
        .create_approval(ask("pay:invoice", now))
        .await
        .unwrap()
        .into_record()
        .unwrap();
    let denied = store
        .decide_approval(
            &denied.id,
            ApprovalDecision {
                verdict: ApprovalVerdict::Deny,
                decided_by: "alice".into(),
                reason: Some("no".into()),
                decided_at,
            },
        )
        .await
        .unwrap();
    assert_eq!(denied.status, ApprovalStatus::Denied);
    assert_eq!(denied.reason.as_deref(), Some("no"));

    let stale = store
        .create_approval(ask("delete:repo", now - Duration::hours(2)))
        .await
        .unwrap()
        .into_record()
        .unwrap();
    let late = store
        .create_approval(ask("delete:branch", now))
        .await
        .unwrap()
        .into_record()
        .unwrap();
    assert_eq!(store.expire_approvals(now).await.unwrap(), 1);
    assert_eq!(
        store.get_approval(&stale.id).await.unwrap().status,
        ApprovalStatus::Expired
    );
    let err = store
        .decide_approval(
            &late.id,
            ApprovalDecision {
                verdict: ApprovalVerdict::Approve,
                decided_by: "alice".into(),
                reason: None,
                decided_at: now + Duration::hours(1),
            },
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("expired before it was decided"),
        "{err}"
    );
    assert_eq!(
        store.get_approval(&late.id).await.unwrap().status,
        ApprovalStatus::Expired
    );

    let by_status = |status| async move {
        store
            .list_approvals(Some(status), &PageRequest::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|a| a.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        by_status(ApprovalStatus::Denied).await,
        [denied.id.as_str()]
    );
    assert_eq!(by_status(ApprovalStatus::Used).await, [pending.id.as_str()]);
    assert!(by_status(ApprovalStatus::Pending).await.is_empty());
    assert_eq!(
        store
            .list_approvals(None, &PageRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        4
    );
    assert!(matches!(
        store.get_approval("apr_unknown").await.unwrap_err(),
        StoreError::NotFound { .. }
    ));
    let err = store
        .create_approval(NewApproval {
            agent_id: "agent_nobody".into(),
            ..ask("x:y", now)
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
}

async fn purge(store: &Arc<dyn Store>) {
    let now = OffsetDateTime::now_utc();
    let reviewer = store.get_agent("reviewer").await.unwrap();
    store
        .insert_token(NewToken {
            jti: "jti-reviewer".into(),
            agent_id: reviewer.id.clone(),
            issued_at: now,
            expires_at: None,
        })
        .await
        .unwrap();
    store
        .create_approval(NewApproval {
            agent_id: reviewer.id.clone(),
            action: "send:email".into(),
            resource: "*".into(),
            timeout_secs: 60,
            trace_id: None,
            created_at: now,
            max_pending: u32::MAX,
            arguments: None,
        })
        .await
        .unwrap();
    let purged = store.purge_agent("reviewer").await.unwrap();
    assert_eq!(purged.id, reviewer.id);
    assert!(matches!(
        store.get_agent(&reviewer.id).await.unwrap_err(),
        StoreError::NotFound { .. }
    ));
    assert!(
        store
            .active_token("jti-reviewer", now)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.list_tokens(&reviewer.id).await.unwrap().is_empty());
    assert!(
        store
            .latest_approval(&reviewer.id, "send:email", "*", None)
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        store.purge_agent("reviewer").await.unwrap_err(),
        StoreError::NotFound { .. }
    ));
}

/// 200 events over two gateways and three hours, appended in batches of 1, 7, 50, 0 and 142.
fn audit_fixture() -> Vec<NewAuditEvent> {
    let start = datetime!(2026-03-01 10:00:00 UTC);
    let actions = ["read:file", "write:file", "execute:shell", "send:email"];
    (0..200_i64)
        .map(|i| {
            let gateway = if i % 3 == 0 { "gw-b" } else { "gw-a" };
            let action = actions[(i % 4) as usize];
            let decision = match action {
                "read:file" | "write:file" => "allow",
                "execute:shell" => "deny",
                _ => "require_approval",
            };
            let ts = start + Duration::seconds(i * 54) + Duration::nanoseconds(123_456_789);
            let mut event = check_event(gateway, ts, action, decision);
            event.trace_id = Some(format!("trace-{}", i / 10));
            if i % 50 == 49 {
                event.kind = AuditKind::Record;
                event.status = Some("success".into());
                event.result = Some("x".repeat(10_000));
            }
            if i == 7 {
                event
                    .context
                    .insert("sandbox".into(), serde_json::json!(true));
                event.context.insert(
                    "nested".into(),
                    serde_json::json!({"b": [1, 2.5], "a": "é\n"}),
                );
            }
            event
        })
        .collect()
}

/// Appends the fixture in batches of several sizes, checks what was stored, and returns it.
async fn append_fixture(store: &Arc<dyn Store>) -> Vec<AuditEvent> {
    let fixture = audit_fixture();
    let mut committed = Vec::new();
    let mut rest = fixture.as_slice();
    for size in [1, 7, 50, 0, 142] {
        let (batch, tail) = rest.split_at(size);
        let events = store.append_audit(batch).await.unwrap();
        assert_eq!(events.len(), size);
        committed.extend(events);
        rest = tail;
    }
    assert!(rest.is_empty());
    check_chains(&committed);
    assert_eq!(committed[7].event.context["nested"]["a"], "é\n");
    let record = &committed[49];
    assert_eq!(
        record.event.result.as_ref().unwrap().len(),
        MAX_RESULT_BYTES
    );
    assert_eq!(
        committed[0].event.ts,
        datetime!(2026-03-01 10:00:00.123456 UTC),
        "stored with microsecond precision"
    );

    let err = store.append_audit(&[fixture[0].clone()]).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { .. }),
        "a reused id: {err}"
    );
    let mut nameless = fixture[0].clone();
    nameless.id = "fresh".into();
    nameless.gateway.clear();
    let err = store.append_audit(&[nameless]).await.unwrap_err();
    assert!(matches!(
        err,
        StoreError::Invalid {
            field: "gateway",
            ..
        }
    ));
    committed
}

/// The fixture's two chains verify.
async fn verify_fixture(store: &Arc<dyn Store>) {
    let report = verify_full(store).await;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events_checked, 200);
    assert_eq!(report.chains.len(), 2);
    assert_eq!(report.chains[0].gateway, "gw-a");
    assert_eq!(report.chains[0].head_seq, 133);
    assert_eq!(report.chains[1].head_seq, 67);
}

/// Every chain starts at 1, has no gap, and links each event to the previous one.
fn check_chains(events: &[AuditEvent]) {
    let mut heads: BTreeMap<&str, (u64, &str)> = BTreeMap::new();
    for event in events {
        let (seq, prev) = heads
            .get(event.event.gateway.as_str())
            .copied()
            .unwrap_or((0, chain::GENESIS_HASH));
        assert_eq!(event.seq, seq + 1, "{}", event.event.id);
        assert_eq!(event.prev_hash, prev);
        assert_eq!(event.hash, chain::event_hash(event));
        heads.insert(&event.event.gateway, (event.seq, &event.hash));
    }
}

async fn query_and_paging(store: &Arc<dyn Store>, committed: &[AuditEvent]) {
    let newest = store.query_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(newest.entries.len(), 100, "default page size");
    assert_eq!(newest.entries[0], committed[199], "newest first");
    assert!(newest.next_cursor.is_some());

    // Paging with a cursor visits every event once, newest first.
    let mut seen = Vec::new();
    let mut filter = AuditFilter {
        limit: 37,
        ..AuditFilter::default()
    };
    loop {
        let page = store.query_audit(&filter).await.unwrap();
        assert!(page.entries.len() <= 37);
        seen.extend(page.entries.into_iter().map(|e| e.event.id));
        match page.next_cursor {
            Some(cursor) => filter.cursor = Some(cursor),
            None => break,
        }
    }
    let expected: Vec<_> = committed.iter().rev().map(|e| e.event.id.clone()).collect();
    assert_eq!(seen, expected);

    let count = |filter: AuditFilter| async move {
        let page = store
            .query_audit(&AuditFilter {
                limit: 1000,
                ..filter
            })
            .await
            .unwrap();
        assert!(page.next_cursor.is_none());
        page.entries
    };
    let denied = count(AuditFilter {
        decision: Some("deny".into()),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(denied.len(), 50);
    assert!(
        denied
            .iter()
            .all(|e| e.event.decision.map(meshguard_policy::Effect::as_str) == Some("deny"))
    );
    assert_eq!(
        count(AuditFilter {
            agent: Some("autogpt".into()),
            ..AuditFilter::default()
        })
        .await
        .len(),
        200
    );
    assert_eq!(
        count(AuditFilter {
            agent: Some("agent_00000000000000000001".into()),
            ..AuditFilter::default()
        })
        .await
        .len(),
        200
    );
    assert!(
        count(AuditFilter {
            agent: Some("someone-else".into()),
            ..AuditFilter::default()
        })
        .await
        .is_empty()
    );
    assert_eq!(
        count(AuditFilter {
            action: Some("execute:shell".into()),
            ..AuditFilter::default()
        })
        .await
        .len(),
        50
    );
    let files = count(AuditFilter {
        action: Some("*:file".into()),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(files.len(), 100);
    assert_eq!(
        count(AuditFilter {
            action: Some("READ:*".into()),
            ..AuditFilter::default()
        })
        .await
        .len(),
        0,
        "patterns are case-sensitive"
    );
    assert_eq!(
        count(AuditFilter {
            action: Some("re?d:fil?".into()),
            ..AuditFilter::default()
        })
        .await
        .len(),
        50
    );
    let trace = count(AuditFilter {
        trace_id: Some("trace-3".into()),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(trace.len(), 10);
    assert_eq!(
        count(AuditFilter {
            kind: Some(AuditKind::Record),
            ..AuditFilter::default()
        })
        .await
        .len(),
        4
    );
    assert_eq!(
        count(AuditFilter {
            gateway: Some("gw-b".into()),
            ..AuditFilter::default()
        })
        .await
        .len(),
        67
    );
    // Events i*54 s after 10:00:00.12; [11:00, 12:00) holds i = 67..=133.
    let hour = count(AuditFilter {
        from: Some(datetime!(2026-03-01 11:00:00 UTC)),
        to: Some(datetime!(2026-03-01 12:00:00 UTC)),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(hour.len(), 67);
    let combined = count(AuditFilter {
        decision: Some("allow".into()),
        gateway: Some("gw-a".into()),
        from: Some(datetime!(2026-03-01 11:00:00 UTC)),
        ..AuditFilter::default()
    })
    .await;
    let expected = committed
        .iter()
        .filter(|e| {
            e.event.decision.map(meshguard_policy::Effect::as_str) == Some("allow")
                && e.event.gateway == "gw-a"
                && e.event.ts >= datetime!(2026-03-01 11:00:00 UTC)
        })
        .count();
    assert_eq!(combined.len(), expected);

    // Oldest first, in pages of 64.
    let mut oldest = Vec::new();
    let mut filter = AuditFilter {
        limit: 64,
        order: AuditOrder::OldestFirst,
        ..AuditFilter::default()
    };
    loop {
        let page = store.query_audit(&filter).await.unwrap();
        oldest.extend(page.entries);
        match page.next_cursor {
            Some(cursor) => filter.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(oldest, committed);

    let err = store
        .query_audit(&AuditFilter {
            cursor: Some("not-a-cursor".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Invalid {
                field: "cursor",
                ..
            }
        ),
        "{err}"
    );
}

async fn stats(store: &Arc<dyn Store>, committed: &[AuditEvent]) {
    let query = StatsQuery {
        from: datetime!(2026-03-01 10:00:00 UTC),
        to: datetime!(2026-03-01 13:00:00 UTC),
        agent: None,
        hourly: true,
    };
    let stats = store.audit_stats(&query).await.unwrap();
    let checks: Vec<_> = committed
        .iter()
        .filter(|e| e.event.kind == AuditKind::Check)
        .collect();
    let count = |decision: &str| {
        checks
            .iter()
            .filter(|e| e.event.decision.map(meshguard_policy::Effect::as_str) == Some(decision))
            .count() as u64
    };
    assert_eq!(stats.total, checks.len() as u64);
    assert_eq!(stats.total, 196, "the 4 record events are not checks");
    assert_eq!(stats.allowed, count("allow"));
    assert_eq!(stats.denied, count("deny"));
    assert_eq!(stats.require_approval, count("require_approval"));
    assert_eq!(
        stats.allowed + stats.denied + stats.require_approval,
        stats.total
    );
    let pct = (count("deny") as f64 * 10_000.0 / 196.0).round() / 100.0;
    assert!(
        (stats.denied_pct - pct).abs() < 1e-9,
        "{}",
        stats.denied_pct
    );
    assert_eq!(stats.top_denied.len(), 1);
    assert_eq!(stats.top_denied[0].action, "execute:shell");
    assert_eq!(stats.top_denied[0].count, count("deny"));
    assert_eq!(stats.hourly.len(), 3);
    assert_eq!(stats.hourly[1].hour, datetime!(2026-03-01 11:00:00 UTC));
    assert_eq!(
        stats.hourly.iter().map(|b| b.total).sum::<u64>(),
        stats.total
    );
    assert_eq!(
        stats.hourly.iter().map(|b| b.denied).sum::<u64>(),
        stats.denied
    );

    let quiet = store
        .audit_stats(&StatsQuery {
            from: datetime!(2026-03-02 00:00:00 UTC),
            to: datetime!(2026-03-02 02:00:00 UTC),
            agent: None,
            hourly: true,
        })
        .await
        .unwrap();
    assert_eq!(quiet.total, 0);
    assert_eq!(quiet.allowed_pct, 0.0);
    assert_eq!(quiet.hourly.len(), 2);
    assert!(quiet.top_denied.is_empty());

    let other_agent = store
        .audit_stats(&StatsQuery {
            agent: Some("reviewer".into()),
            ..query.clone()
        })
        .await
        .unwrap();
    assert_eq!(other_agent.total, 0);
    let err = store
        .audit_stats(&StatsQuery {
            to: query.from,
            ..query
        })
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Invalid {
            field: "period",
            ..
        }
    ));
}

/// The events of an export (no checkpoint was signed in this story).
async fn exported_events(store: &Arc<dyn Store>, filter: AuditFilter) -> Vec<AuditEvent> {
    let lines: Vec<ExportLine> = export_audit(Arc::clone(store), filter)
        .try_collect()
        .await
        .unwrap();
    lines
        .into_iter()
        .map(|line| match line {
            ExportLine::Event(event) => *event,
            ExportLine::Checkpoint { checkpoint } => panic!("unexpected {checkpoint:?}"),
        })
        .collect()
}

async fn export(store: &Arc<dyn Store>, committed: &[AuditEvent]) {
    let exported = exported_events(store, AuditFilter::default()).await;
    assert_eq!(exported, committed);
    // Each JSON line carries everything needed to check its hash without MeshGuard.
    for event in &exported {
        let line = serde_json::to_string(event).unwrap();
        let mut value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let hash = value.as_object_mut().unwrap().remove("hash").unwrap();
        let digest = sha2_hex(&chain::canonical_json(&value));
        assert_eq!(hash, serde_json::Value::String(digest));
    }
    let since = exported_events(
        store,
        AuditFilter {
            from: Some(datetime!(2026-03-01 12:00:00 UTC)),
            ..AuditFilter::default()
        },
    )
    .await;
    assert_eq!(since.len(), 66);
}

fn sha2_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

async fn tampering(store: &Arc<dyn Store>, db: &TestDb) {
    // Rewriting a denial as an allow is caught at that very event.
    db.raw(&format!(
        "UPDATE audit_events SET decision = 'allow' WHERE {} AND seq = 10",
        TestDb::chain_of("gw-a")
    ))
    .await;
    let report = verify_full(store).await;
    assert!(!report.ok);
    let broken = report.first_break().unwrap();
    assert_eq!((broken.gateway.as_str(), broken.seq), ("gw-a", 10));
    assert!(broken.reason.contains("altered"), "{}", broken.reason);
    assert!(
        report.chains[1].broken.is_none(),
        "the other chain is intact"
    );
    // The same decision written into the row reads as the outcome's: nothing is altered.
    db.raw(&format!(
        "UPDATE audit_events SET decision = 'deny' WHERE {} AND seq = 10",
        TestDb::chain_of("gw-a")
    ))
    .await;
    assert!(verify_full(store).await.ok, "restored");
    db.raw(&format!(
        "UPDATE audit_events SET decision = NULL WHERE {} AND seq = 10",
        TestDb::chain_of("gw-a")
    ))
    .await;

    // Recomputing the altered event's hash moves the break to the next link.
    let original: String = hash_of(db, "gw-a", 20).await;
    db.raw(&format!(
        "UPDATE audit_events SET hash = {} WHERE chain = (SELECT chain FROM audit_chains WHERE gateway = 'gw-a') AND seq = 20",
        db.hash_literal(&"f".repeat(64))
    ))
    .await;
    let report = verify_full(store).await;
    let broken = report.first_break().unwrap();
    assert_eq!(broken.seq, 20, "{broken:?}");
    db.raw(&format!(
        "UPDATE audit_events SET hash = {} WHERE chain = (SELECT chain FROM audit_chains WHERE gateway = 'gw-a') AND seq = 20",
        db.hash_literal(&original)
    ))
    .await;
    assert!(verify_full(store).await.ok);

    // The hash covers the context's content, not its spelling: the same object stored with its
    // keys in another order and with whitespace still verifies; a changed value does not.
    let (gateway, seq, context) = stored_context(db, "%nested%").await;
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&context).unwrap();
    let spelled = |object: &serde_json::Map<String, serde_json::Value>| {
        let entries: Vec<String> = object
            .iter()
            .rev()
            .map(|(key, value)| format!("{} : {value}", serde_json::Value::from(key.as_str())))
            .collect();
        format!("{{ {} }}", entries.join(" , ")).replace('\'', "''")
    };
    let set_context = |text: String| {
        format!(
            "UPDATE audit_events SET context = '{text}' \
             WHERE chain = (SELECT chain FROM audit_chains WHERE gateway = '{gateway}') AND seq = {seq}"
        )
    };
    db.raw(&set_context(spelled(&object))).await;
    let report = verify_full(store).await;
    assert!(report.ok, "{:?}", report.first_break());
    let mut changed = object.clone();
    changed.insert("sandbox".into(), serde_json::json!(false));
    db.raw(&set_context(spelled(&changed))).await;
    let report = verify_full(store).await;
    let broken = report.first_break().unwrap();
    assert_eq!(
        (broken.gateway.as_str(), broken.seq),
        (gateway.as_str(), u64::try_from(seq).unwrap())
    );
    assert!(broken.reason.contains("altered"), "{}", broken.reason);
    db.raw(&set_context(context.replace('\'', "''"))).await;

    // A spelling MeshGuard never writes makes the event unreadable: the walk stops there. (The
    // row stores its kind as the number of its outcome; a kind written into the row wins.)
    db.raw(&format!(
        "UPDATE audit_events SET kind = 'CHECK' WHERE {} AND seq = 30",
        TestDb::chain_of("gw-a")
    ))
    .await;
    let report = verify_full(store).await;
    let broken = report.first_break().unwrap();
    assert_eq!((broken.gateway.as_str(), broken.seq), ("gw-a", 30));
    assert!(
        broken.reason.contains("cannot be read"),
        "{}",
        broken.reason
    );
    db.raw(&format!(
        "UPDATE audit_events SET kind = NULL WHERE {} AND seq = 30",
        TestDb::chain_of("gw-a")
    ))
    .await;
    assert!(verify_full(store).await.ok);

    // A row written past the chain's head, behind MeshGuard's back, is a break.
    let columns = "chain, ts, kind, agent, agent_name, action, resource, decision, code, \
                   reason, policy, rule, trace_id, approval_id, status, result, context, \
                   latency_us, prev_hash, hash, reason_ref, outcome";
    db.raw(&format!(
        "INSERT INTO audit_events (id, seq, {columns}) SELECT 'forged', seq + 1, {columns} \
         FROM audit_events WHERE chain = (SELECT chain FROM audit_chains WHERE gateway = 'gw-a') \
         AND seq = (SELECT head_seq FROM audit_chains WHERE gateway = 'gw-a')"
    ))
    .await;
    let report = verify_full(store).await;
    let broken = report.first_break().unwrap();
    assert_eq!(broken.gateway, "gw-a");
    assert!(
        broken.reason.contains("not appended through MeshGuard"),
        "{broken:?}"
    );
    db.raw("DELETE FROM audit_events WHERE id = 'forged'").await;
    assert!(verify_full(store).await.ok);

    // Rows store a reason as the number of its template: a template edited behind MeshGuard's
    // back alters every event that reads it, and verification finds the first.
    db.raw("UPDATE audit_reasons SET template = template || '.'")
        .await;
    let report = verify_full(store).await;
    let broken = report.first_break().unwrap();
    assert!(broken.reason.contains("hash"), "{broken:?}");
    db.raw("UPDATE audit_reasons SET template = substr(template, 1, length(template) - 1)")
        .await;
    assert!(verify_full(store).await.ok);

    // Rows store their kind, decision, code, policy, rule and shadow verdict as the number of
    // an outcome: turning the denials' outcomes into allows alters every event that reads them.
    let denied: Vec<i64> = {
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect(&db.raw_url).await.unwrap();
        sqlx::query_scalar(
            "SELECT CAST(outcome AS BIGINT) FROM audit_outcomes WHERE decision = 'deny'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap()
    };
    assert!(!denied.is_empty());
    let denied = denied
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    db.raw(&format!(
        "UPDATE audit_outcomes SET decision = 'allow' WHERE outcome IN ({denied})"
    ))
    .await;
    let report = verify_full(store).await;
    let broken = report.first_break().unwrap();
    assert!(broken.reason.contains("altered"), "{broken:?}");
    let denials = store
        .query_audit(&AuditFilter {
            decision: Some("deny".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert!(denials.entries.is_empty(), "{:?}", denials.entries.first());
    db.raw(&format!(
        "UPDATE audit_outcomes SET decision = 'deny' WHERE outcome IN ({denied})"
    ))
    .await;
    assert!(verify_full(store).await.ok);
}

/// A full verification of every chain, with no checkpoint keys.
async fn verify_full(store: &Arc<dyn Store>) -> meshguard_store::VerifyReport {
    store
        .verify_audit(&meshguard_store::VerifyOptions::full(Default::default()))
        .await
        .unwrap()
}

/// The gateway, seq and stored context text of the first event whose context is `like`.
async fn stored_context(db: &TestDb, like: &str) -> (String, i64, String) {
    use sqlx::{Connection, Row};
    let mut conn = sqlx::AnyConnection::connect(&db.raw_url).await.unwrap();
    let row = sqlx::query(
        "SELECT c.gateway, e.seq, e.context FROM audit_events e \
         JOIN audit_chains c ON c.chain = e.chain WHERE e.context LIKE $1 ORDER BY c.gateway, e.seq",
    )
    .bind(like)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

async fn hash_of(db: &TestDb, gateway: &str, seq: i64) -> String {
    use sqlx::Connection;
    let mut conn = sqlx::AnyConnection::connect(&db.raw_url).await.unwrap();
    let hash: Vec<u8> = sqlx::query_scalar(
        "SELECT hash FROM audit_events \
         WHERE chain = (SELECT chain FROM audit_chains WHERE gateway = $1) AND seq = $2",
    )
    .bind(gateway)
    .bind(seq)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    hex::encode(hash)
}

async fn retention(store: &Arc<dyn Store>, db: &TestDb) {
    // Everything before 11:00 goes: gw-a keeps seq 45.., gw-b keeps seq 24.. (i = 67 onwards).
    let cutoff = datetime!(2026-03-01 11:00:00 UTC);
    let report = store.apply_retention(cutoff, None).await.unwrap();
    assert_eq!(report.deleted, 67);
    let anchors: Vec<_> = report
        .anchors
        .iter()
        .map(|a| (a.gateway.as_str(), a.seq))
        .collect();
    assert_eq!(anchors, [("gw-a", 44), ("gw-b", 23)]);
    let left = store
        .query_audit(&AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(left.entries.len(), 133);
    assert!(left.entries.iter().all(|e| e.event.ts >= cutoff));

    let report = verify_full(store).await;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events_checked, 133);
    assert_eq!(report.chains[0].anchor_seq, 44);
    assert_eq!(
        store.apply_retention(cutoff, None).await.unwrap().deleted,
        0,
        "running it again deletes nothing"
    );

    // New events continue the chains after retention.
    let more: Vec<_> = (0..5)
        .map(|i| {
            check_event(
                if i % 2 == 0 { "gw-a" } else { "gw-b" },
                datetime!(2026-03-01 14:00:00 UTC),
                "read:file",
                "allow",
            )
        })
        .collect();
    let appended = store.append_audit(&more).await.unwrap();
    assert_eq!(
        appended.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [134, 68, 135, 69, 136]
    );
    assert!(verify_full(store).await.ok);

    // Deleting an event in the middle, or the newest ones, is named by seq.
    db.raw(&format!(
        "DELETE FROM audit_events WHERE {} AND seq = 100",
        TestDb::chain_of("gw-a")
    ))
    .await;
    db.raw(&format!(
        "DELETE FROM audit_events WHERE {} AND seq = 69",
        TestDb::chain_of("gw-b")
    ))
    .await;
    let report = verify_full(store).await;
    assert!(!report.ok);
    let breaks: Vec<_> = report
        .chains
        .iter()
        .map(|c| {
            let b = c.broken.as_ref().unwrap();
            (c.gateway.as_str(), b.seq, b.reason.clone())
        })
        .collect();
    assert_eq!(breaks[0].0, "gw-a");
    assert_eq!(breaks[0].1, 100);
    assert!(
        breaks[0].2.contains("seq 100 is missing"),
        "{}",
        breaks[0].2
    );
    assert_eq!(breaks[1].1, 69);
    assert!(breaks[1].2.contains("head is at seq 69"), "{}", breaks[1].2);
    let unique: HashSet<_> = report.chains.iter().map(|c| &c.gateway).collect();
    assert_eq!(unique.len(), 2);
}
