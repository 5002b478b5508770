//! Changes reach subscribers: on PostgreSQL across stores (gateways) sharing a database, on
//! SQLite within the store that made them.

use std::time::Duration;

use crate::common::{TestDb, new_agent};
use crate::on_every_backend;
use meshguard_store::{AgentStatus, NewPolicy, PolicyOrigin, StoreChange, StoreLocation};
use tokio::sync::broadcast::Receiver;

/// The next change other than `Resync`, within 5 s.
async fn next_change(changes: &mut Receiver<StoreChange>) -> StoreChange {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match changes.recv().await.unwrap() {
                StoreChange::Resync => continue,
                change => return change,
            }
        }
    })
    .await
    .expect("no change announced within 5 s")
}

on_every_backend!(committed_changes_are_announced);

async fn committed_changes_are_announced(db: TestDb) {
    let writer = db.open().await;
    // On PostgreSQL a second store stands for another gateway; SQLite announces in-process.
    let reader = match db.location {
        StoreLocation::Postgres { .. } => db.open().await,
        StoreLocation::Sqlite { .. } => std::sync::Arc::clone(&writer),
    };
    let mut changes = reader.subscribe_changes();

    let agent = writer
        .create_agent(new_agent("autogpt", "verified", &[]))
        .await
        .unwrap();
    assert_eq!(
        next_change(&mut changes).await,
        StoreChange::Agent {
            id: agent.id.clone()
        }
    );
    writer
        .set_agent_status("autogpt", AgentStatus::Revoked)
        .await
        .unwrap();
    assert_eq!(
        next_change(&mut changes).await,
        StoreChange::Agent {
            id: agent.id.clone()
        }
    );

    let policy = NewPolicy {
        name: "base".into(),
        version: "1".into(),
        origin: PolicyOrigin::Api,
        source: "name: base\nversion: \"1\"\n".into(),
    };
    writer.upsert_policy(policy.clone()).await.unwrap();
    assert_eq!(
        next_change(&mut changes).await,
        StoreChange::Policy {
            name: "base".into()
        }
    );
    // Re-applying the same body changes nothing, so nothing is announced: the next change seen
    // is the deletion.
    writer.upsert_policy(policy).await.unwrap();
    writer.delete_policy("base").await.unwrap();
    assert_eq!(
        next_change(&mut changes).await,
        StoreChange::Policy {
            name: "base".into()
        }
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), next_change(&mut changes))
            .await
            .is_err(),
        "nothing else was announced"
    );
}
