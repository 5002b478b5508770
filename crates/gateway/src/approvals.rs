//! Applies SPEC 3's approval table to a decision that needs a human: finds the approval for
//! (agent, normalised action, normalised resource), creates one when there is none, and consumes
//! an approved one (single use).

use meshguard_policy::{ApprovalState, Code, Decision};
use meshguard_store::{ApprovalRecord, ApprovalStatus, NewApproval, Store, StoreError};
use time::OffsetDateTime;

/// Whether the lookup may change the store: checks create and consume approvals, the admin
/// `decide` only reports the would-be answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalMode {
    /// Create pending approvals and consume approved ones.
    Apply,
    /// Change nothing.
    Peek,
}

/// Settles a decision whose code is `approval_required`; other decisions pass unchanged.
pub async fn settle(
    store: &dyn Store,
    agent_id: &str,
    decision: Decision,
    named: Option<&str>,
    trace_id: Option<&str>,
    default_timeout_secs: u64,
    mode: ApprovalMode,
) -> Result<Decision, StoreError> {
    if decision.code != Code::ApprovalRequired {
        return Ok(decision);
    }
    let Some(need) = decision.approval.clone() else {
        return Ok(decision);
    };
    let now = OffsetDateTime::now_utc();
    let mut ignored_note = None;
    let mut record = None;
    if let Some(id) = named {
        match store.get_approval(id).await {
            Ok(r)
                if r.agent_id == agent_id
                    && r.action == need.action
                    && r.resource == need.resource =>
            {
                record = Some(r);
            }
            Ok(_) | Err(StoreError::NotFound { .. }) => {
                ignored_note = Some(format!(
                    " (approval id '{id}' ignored: it is not an approval of this agent for this action and resource)"
                ));
            }
            Err(other) => return Err(other),
        }
    }
    if record.is_none() {
        record = store
            .latest_approval(agent_id, &need.action, &need.resource)
            .await?;
    }
    let state = record
        .as_ref()
        .map_or(ApprovalState::None, |r| state_of(r, now));
    let mut decision = match (&state, mode) {
        (ApprovalState::Approved { id }, ApprovalMode::Apply) => {
            match store.mark_approval_used(id, now).await {
                Ok(_) => decision.with_approval(state),
                // Another request used it first: this one needs a new approval.
                Err(StoreError::Conflict { .. }) => {
                    create(
                        store,
                        agent_id,
                        decision,
                        trace_id,
                        default_timeout_secs,
                        now,
                    )
                    .await?
                }
                Err(other) => return Err(other),
            }
        }
        (ApprovalState::None, ApprovalMode::Apply) => {
            create(
                store,
                agent_id,
                decision,
                trace_id,
                default_timeout_secs,
                now,
            )
            .await?
        }
        _ => decision.with_approval(state),
    };
    if let Some(note) = ignored_note {
        decision.reason.push_str(&note);
    }
    Ok(decision)
}

fn state_of(record: &ApprovalRecord, now: OffsetDateTime) -> ApprovalState {
    let live = record.expires_at > now;
    let id = record.id.clone();
    match record.status {
        ApprovalStatus::Pending if live => ApprovalState::Pending { id },
        ApprovalStatus::Approved if live => ApprovalState::Approved { id },
        ApprovalStatus::Denied if live => ApprovalState::Denied { id },
        ApprovalStatus::Pending
        | ApprovalStatus::Approved
        | ApprovalStatus::Denied
        | ApprovalStatus::Expired
        | ApprovalStatus::Used => ApprovalState::None,
    }
}

async fn create(
    store: &dyn Store,
    agent_id: &str,
    mut decision: Decision,
    trace_id: Option<&str>,
    default_timeout_secs: u64,
    now: OffsetDateTime,
) -> Result<Decision, StoreError> {
    let Some(need) = decision.approval.clone() else {
        return Ok(decision);
    };
    let created = store
        .create_approval(NewApproval {
            agent_id: agent_id.to_owned(),
            action: need.action,
            resource: need.resource,
            timeout_secs: need.timeout_secs.unwrap_or(default_timeout_secs),
            trace_id: trace_id.map(str::to_owned),
            created_at: now,
        })
        .await?;
    decision.approval_id = Some(created.id);
    Ok(decision)
}
