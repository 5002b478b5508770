//! Admin changes: the change and its audit event in one write transaction.
//!
//! The transaction holds `append_lock` like an audit batch does, and appends the event with the
//! same code, so the event joins its gateway's chain gap-free. When the event cannot be appended
//! the transaction is dropped unfinished, which rolls the change back.

use super::approvals::Decided;
use super::{SqlStore, agents, approvals, audit, operators, policies, tokens};
use crate::{
    AdminAudit, AdminCommit, AdminMutation, AdminOutcome, NewToken, StoreChange, StoreError,
    TokenGrant,
};

/// Commits `mutation` with the event `audit` describes; returns it with the changes to
/// announce.
pub(super) async fn apply(
    store: &SqlStore,
    mutation: AdminMutation,
    audit: AdminAudit,
) -> Result<(AdminCommit, Vec<StoreChange>), StoreError> {
    let _one_append_at_a_time = store.append_lock.lock().await;
    let mut tx = store.begin_write().await?;
    let outcome = match mutation {
        AdminMutation::CreateAgent { agent, token } => {
            let agent = agents::create(&mut tx, agent).await?;
            let token = tokens::insert(&mut tx, new_token(&agent.id, token)).await?;
            AdminOutcome::Token {
                agent,
                token,
                revoked: 0,
            }
        }
        AdminMutation::UpdateAgent { agent, patch } => {
            AdminOutcome::Agent(agents::update(&mut tx, &agent, patch).await?)
        }
        AdminMutation::SetAgentStatus { agent, status } => {
            AdminOutcome::Agent(agents::set_status(&mut tx, &agent, status).await?)
        }
        AdminMutation::PurgeAgent { agent } => {
            AdminOutcome::Agent(agents::purge(&mut tx, &agent).await?)
        }
        AdminMutation::IssueToken {
            agent,
            token,
            rotate,
        } => {
            let agent = agents::get_in(&mut tx, store.dialect, &agent).await?;
            let token = tokens::insert(&mut tx, new_token(&agent.id, token)).await?;
            let revoked = if rotate {
                tokens::revoke_all(&mut tx, &agent.id, Some(&token.jti), token.issued_at).await?
            } else {
                0
            };
            AdminOutcome::Token {
                agent,
                token,
                revoked,
            }
        }
        AdminMutation::UpsertPolicy(policy) => {
            AdminOutcome::Policy(policies::upsert(&mut tx, store.dialect, policy).await?)
        }
        AdminMutation::DeletePolicy { name } => {
            AdminOutcome::PolicyDeleted(policies::delete(&mut tx, &name).await?)
        }
        AdminMutation::CreateOperator(operator) => {
            AdminOutcome::Operator(operators::create(&mut tx, operator).await?)
        }
        AdminMutation::DeleteOperator { name } => {
            AdminOutcome::Operator(operators::delete(&mut tx, &name).await?)
        }
        AdminMutation::DecideApproval { id, decision } => {
            match approvals::record_verdict(&mut tx, store.dialect, &id, &decision).await? {
                Decided::Recorded(record) => AdminOutcome::Approval(*record),
                Decided::Expired => {
                    // The expiry is housekeeping, not the admin change: it is kept, unaudited.
                    tx.commit().await.map_err(super::db_error)?;
                    return Err(approvals::expired_before_decided(&id));
                }
            }
        }
    };
    let event = if outcome.changed() {
        let event = audit(&outcome).ok_or_else(|| {
            not_audited(StoreError::invalid(
                "event",
                format!("no audit event describes {outcome:?}"),
            ))
        })?;
        let mut chained = audit::append_in(
            &mut tx,
            store.dialect,
            &store.audit_numbers,
            std::slice::from_ref(&event),
        )
        .await
        .map_err(not_audited)?;
        chained.pop()
    } else {
        None
    };
    tx.commit().await.map_err(super::db_error)?;
    let changes = changes_of(&outcome);
    Ok((AdminCommit { outcome, event }, changes))
}

fn new_token(agent_id: &str, grant: TokenGrant) -> NewToken {
    NewToken {
        jti: grant.jti,
        agent_id: agent_id.to_owned(),
        issued_at: grant.issued_at,
        expires_at: grant.expires_at,
    }
}

/// A change whose event was refused is not made: whatever the cause (even an event the store
/// finds invalid), the caller must see that nothing happened and may retry, not that its input
/// was wrong.
fn not_audited(err: StoreError) -> StoreError {
    StoreError::Unavailable(format!(
        "the audit event of the change was not committed, so neither was the change: {err}"
    ))
}

/// What other gateways (and this one's caches) must hear about.
fn changes_of(outcome: &AdminOutcome) -> Vec<StoreChange> {
    match outcome {
        AdminOutcome::Agent(agent) => vec![StoreChange::Agent {
            id: agent.id.clone(),
        }],
        AdminOutcome::Token { agent, revoked, .. } => {
            let mut changes = vec![StoreChange::Agent {
                id: agent.id.clone(),
            }];
            if *revoked > 0 {
                changes.push(StoreChange::Tokens {
                    agent_id: agent.id.clone(),
                });
            }
            changes
        }
        AdminOutcome::Policy(upsert) if upsert.changed => vec![StoreChange::Policy {
            name: upsert.policy.name.clone(),
        }],
        AdminOutcome::Policy(_) => Vec::new(),
        AdminOutcome::PolicyDeleted(policy) => vec![StoreChange::Policy {
            name: policy.name.clone(),
        }],
        AdminOutcome::Approval(record) => vec![StoreChange::Approval {
            id: record.id.clone(),
        }],
        // Operators are read at sign-in; nothing holds a copy to refresh.
        AdminOutcome::Operator(_) => Vec::new(),
    }
}
