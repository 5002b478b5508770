//! An admin change and its audit event commit together: when the event is refused, the change is
//! rolled back and the chain is unchanged.

use crate::common::{TestDb, check_event, new_agent};
use crate::on_every_backend;
use meshguard_store::{
    AdminMutation, AdminOutcome, AgentStatus, AuditFilter, AuditKind, NewAuditEvent, NewPolicy,
    PolicyOrigin, Store, StoreError, TokenGrant,
};
use time::OffsetDateTime;

on_every_backend!(
    a_change_commits_with_its_event,
    a_refused_event_rolls_the_change_back
);

/// The admin event of gateway `gw-1`, with the given id.
fn admin_event(id: &str) -> NewAuditEvent {
    let mut event = check_event("gw-1", OffsetDateTime::now_utc(), "agent.change", "allow");
    event.id = id.to_owned();
    event.kind = AuditKind::Admin;
    event
}

fn grant(jti: &str) -> TokenGrant {
    TokenGrant {
        jti: jti.to_owned(),
        issued_at: OffsetDateTime::now_utc(),
        expires_at: None,
    }
}

async fn admin_events(store: &dyn Store) -> Vec<String> {
    store
        .query_audit(&AuditFilter::default())
        .await
        .unwrap()
        .entries
        .into_iter()
        .filter(|e| e.event.kind == AuditKind::Admin)
        .map(|e| e.event.id)
        .collect()
}

async fn a_change_commits_with_its_event(db: TestDb) {
    let store = db.open().await;
    // An event appended before the change: the change's event continues the chain after it.
    store
        .append_audit(&[check_event(
            "gw-1",
            OffsetDateTime::now_utc(),
            "read:file",
            "allow",
        )])
        .await
        .unwrap();
    let commit = store
        .apply_admin(
            AdminMutation::CreateAgent {
                agent: new_agent("builder", "verified", &["ci"]),
                token: grant("tok-builder"),
            },
            Box::new(|outcome| {
                let mut event = admin_event("evt-create");
                if let AdminOutcome::Token { agent, .. } = outcome {
                    event.resource = Some(agent.id.clone());
                }
                Some(event)
            }),
        )
        .await
        .unwrap();
    let AdminOutcome::Token { agent, token, .. } = &commit.outcome else {
        panic!("expected a token outcome, got {:?}", commit.outcome);
    };
    let event = commit.event.unwrap();
    assert_eq!(event.seq, 2);
    assert_eq!(event.event.resource.as_deref(), Some(agent.id.as_str()));
    assert_eq!(store.get_agent("builder").await.unwrap().id, agent.id);
    assert!(
        store
            .active_token(&token.jti, OffsetDateTime::now_utc())
            .await
            .unwrap()
            .is_some()
    );

    // Re-applying an unchanged policy is no change: no event.
    let policy = NewPolicy {
        name: "ci".into(),
        version: "1".into(),
        origin: PolicyOrigin::Api,
        source: "name: ci\n".into(),
    };
    let first = store
        .apply_admin(
            AdminMutation::UpsertPolicy(policy.clone()),
            Box::new(|_| Some(admin_event("evt-policy-1"))),
        )
        .await
        .unwrap();
    assert!(first.event.is_some());
    let again = store
        .apply_admin(
            AdminMutation::UpsertPolicy(policy),
            Box::new(|_| Some(admin_event("evt-policy-2"))),
        )
        .await
        .unwrap();
    assert!(again.event.is_none());
    assert_eq!(admin_events(&*store).await, ["evt-policy-1", "evt-create"]);
    assert!(
        store
            .verify_audit(&meshguard_store::VerifyOptions::full(Default::default()))
            .await
            .unwrap()
            .ok
    );
}

async fn a_refused_event_rolls_the_change_back(db: TestDb) {
    let store = db.open().await;
    let agent = store
        .create_agent(new_agent("worker", "verified", &[]))
        .await
        .unwrap();
    store
        .apply_admin(
            AdminMutation::IssueToken {
                agent: agent.name.clone(),
                token: grant("tok-worker"),
                rotate: false,
            },
            Box::new(|_| Some(admin_event("evt-taken"))),
        )
        .await
        .unwrap();

    // Each change's event reuses a stored event id: the database refuses the event inside the
    // transaction, after the change was written.
    let refused = [
        AdminMutation::SetAgentStatus {
            agent: agent.name.clone(),
            status: AgentStatus::Revoked,
        },
        AdminMutation::PurgeAgent {
            agent: agent.id.clone(),
        },
        AdminMutation::IssueToken {
            agent: agent.name.clone(),
            token: grant("tok-rotated"),
            rotate: true,
        },
        AdminMutation::UpsertPolicy(NewPolicy {
            name: "ops".into(),
            version: "1".into(),
            origin: PolicyOrigin::Api,
            source: "name: ops\n".into(),
        }),
    ];
    for mutation in refused {
        let err = store
            .apply_admin(
                mutation.clone(),
                Box::new(|_| Some(admin_event("evt-taken"))),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Unavailable(cause) if cause.contains("audit event")),
            "{mutation:?}: {err}"
        );
    }

    let now = OffsetDateTime::now_utc();
    let kept = store.get_agent(&agent.id).await.unwrap();
    assert_eq!(kept.status, AgentStatus::Active);
    assert!(
        store
            .active_token("tok-worker", now)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .active_token("tok-rotated", now)
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        store.get_policy("ops").await.unwrap_err(),
        StoreError::NotFound { .. }
    ));
    assert_eq!(admin_events(&*store).await, ["evt-taken"]);
    let report = store
        .verify_audit(&meshguard_store::VerifyOptions::full(Default::default()))
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");

    // The same change with an event the store accepts goes through.
    store
        .apply_admin(
            AdminMutation::SetAgentStatus {
                agent: agent.name.clone(),
                status: AgentStatus::Revoked,
            },
            Box::new(|_| Some(admin_event("evt-revoke"))),
        )
        .await
        .unwrap();
    assert_eq!(
        store.get_agent(&agent.id).await.unwrap().status,
        AgentStatus::Revoked
    );
}
