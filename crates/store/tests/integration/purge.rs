//! Purging an agent deletes it with its tokens and approvals, and leaves its audit trail intact.

use crate::common::{TestDb, check_event, new_agent};
use crate::on_every_backend;
use meshguard_store::{AuditAgent, AuditFilter, NewToken, StoreError};
use time::OffsetDateTime;

on_every_backend!(purging_an_agent_keeps_its_audit_events);

async fn purging_an_agent_keeps_its_audit_events(db: TestDb) {
    let store = db.open().await;
    let agent = store
        .create_agent(new_agent("short-lived", "verified", &[]))
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc();
    store
        .insert_token(NewToken {
            jti: "jti-short".into(),
            agent_id: agent.id.clone(),
            issued_at: now,
            expires_at: None,
        })
        .await
        .unwrap();
    let mut event = check_event("gw-1", now, "read:file", "allow");
    event.agent = Some(AuditAgent {
        id: agent.id.clone(),
        name: agent.name.clone(),
    });
    store.append_audit(&[event]).await.unwrap();

    store.purge_agent(&agent.name).await.unwrap();
    assert!(matches!(
        store.get_agent(&agent.id).await.unwrap_err(),
        StoreError::NotFound { .. }
    ));
    assert!(
        store
            .active_token("jti-short", now)
            .await
            .unwrap()
            .is_none()
    );

    let trail = store
        .query_audit(&AuditFilter {
            agent: Some("short-lived".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(trail.entries.len(), 1);
    assert_eq!(trail.entries[0].event.agent.as_ref().unwrap().id, agent.id);
    assert!(
        store
            .verify_audit(&meshguard_store::VerifyOptions::full(Default::default()))
            .await
            .unwrap()
            .ok
    );

    // The name is free again, for a new agent with a new id.
    let again = store
        .create_agent(new_agent("short-lived", "verified", &[]))
        .await
        .unwrap();
    assert_ne!(again.id, agent.id);
}
