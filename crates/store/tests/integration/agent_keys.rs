//! A key names at most one agent: an `agent_` key is an id, anything else a name. Even a
//! database written before names were checked, holding an agent named like another agent's id,
//! never answers an id lookup with the wrong agent.

use crate::common::{TestDb, new_agent};
use crate::on_every_backend;
use meshguard_store::{AgentPatch, AgentStatus, StoreError};

on_every_backend!(a_name_shaped_like_an_id_never_shadows_that_id);

async fn a_name_shaped_like_an_id_never_shadows_that_id(db: TestDb) {
    let store = db.open().await;
    let victim = store
        .create_agent(new_agent("victim", "verified", &[]))
        .await
        .unwrap();
    // Created today: refused.
    let refused = store
        .create_agent(new_agent(&victim.id, "privileged", &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::Invalid { field: "name", .. }),
        "{refused}"
    );
    // Written by an older version: an agent whose name is the victim's id.
    db.raw(&format!(
        "INSERT INTO agents (id, name, trust, tags, status, created_at, updated_at) \
         VALUES ('agent_impostor', '{}', 'privileged', '[]', 'active', 0, 0)",
        victim.id
    ))
    .await;
    for _ in 0..3 {
        let found = store.get_agent(&victim.id).await.unwrap();
        assert_eq!(found.name, "victim");
        assert_eq!(found.trust, "verified");
    }
    let changed = store
        .update_agent(
            &victim.id,
            AgentPatch {
                description: Some(Some("checked".into())),
                ..AgentPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(changed.name, "victim");
    let revoked = store
        .set_agent_status(&victim.id, AgentStatus::Revoked)
        .await
        .unwrap();
    assert_eq!(revoked.name, "victim");
    let impostor = store.get_agent("agent_impostor").await.unwrap();
    assert_eq!(impostor.status, AgentStatus::Active, "untouched");
    let purged = store.purge_agent(&victim.id).await.unwrap();
    assert_eq!(purged.name, "victim");
    assert!(store.get_agent("agent_impostor").await.is_ok());
}
