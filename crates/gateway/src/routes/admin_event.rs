//! The one path of an admin change: [`apply`] commits the change and its audit event (kind
//! `admin`, or `approval` for a human's decision) in one transaction, through the audit writer
//! so the event takes its place in this gateway's chain, then clears the auth cache. A change
//! whose event cannot be committed is not made, and is answered 503.

use axum::http::HeaderMap;
use meshguard_policy::{Code, Effect};
use meshguard_store::{
    AdminMutation, AdminOutcome, ApprovalVerdict, AuditAgent, AuditKind, EventCode, NewAuditEvent,
};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::state::AppState;

/// What changed, for the trail, built from what the change did.
pub struct AdminChange {
    /// `agent.create`, `policy.apply`, …; for a decision, the action the approval is for.
    pub action: String,
    /// The agent concerned, if any.
    pub agent: Option<AuditAgent>,
    /// The agent or policy name; for a decision, the approval's resource.
    pub resource: String,
    /// One human sentence.
    pub reason: String,
    /// Details (revision numbers, fields changed).
    pub context: Map<String, Value>,
    /// An operator's change, or a human's decision on an approval.
    pub by: ChangedBy,
}

/// Who made a change, which sets the event's kind.
pub enum ChangedBy {
    /// An operator changed agents, tokens or policies (kind `admin`).
    Operator,
    /// A human decided an approval (kind `approval`).
    Approver {
        /// Approve or deny.
        verdict: ApprovalVerdict,
        /// The approval decided.
        approval_id: String,
        /// The trace of the request that asked, used when the admin call carries none.
        request_trace: Option<String>,
    },
}

/// The trace id a client sent on an admin call, if any.
pub fn trace_of(headers: &HeaderMap) -> Option<String> {
    ["x-trace-id", "x-meshguard-trace-id"]
        .iter()
        .filter_map(|name| headers.get(*name))
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .find(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
}

/// Makes an admin change: the store write and its audit event commit together, then the auth
/// cache is cleared so the change holds from the next request on. `describe` says what changed,
/// from what the change did; when it cannot (`None`, an outcome of another kind than the
/// mutation's) the change is rolled back. Every admin handler that changes something goes
/// through here.
pub async fn apply(
    state: &AppState,
    headers: &HeaderMap,
    mutation: AdminMutation,
    describe: impl FnOnce(&AdminOutcome) -> Option<AdminChange> + Send + 'static,
) -> Result<AdminOutcome, ApiError> {
    let gateway = state.instance_id.clone();
    let trace = trace_of(headers);
    let committed = state
        .audit
        .commit_admin(
            mutation,
            Box::new(move |outcome| Some(event_of(gateway, trace, describe(outcome)?))),
        )
        .await;
    // Cleared whatever the outcome, before the answer leaves: an error may follow a commit (an
    // answer to COMMIT lost on the way), and a cached copy must never outlive a change.
    state.auth_cache.clear();
    Ok(committed?.outcome)
}

/// The answer when the store reports a different kind of outcome than the change asked for.
pub fn unexpected(outcome: &AdminOutcome) -> ApiError {
    ApiError::Internal(format!("admin change answered with {outcome:?}"))
}

/// The audit event of an admin change.
fn event_of(gateway: String, trace: Option<String>, change: AdminChange) -> NewAuditEvent {
    let event = NewAuditEvent {
        agent: change.agent,
        resource: Some(change.resource),
        reason: Some(change.reason),
        context: change.context,
        ..NewAuditEvent::new(AuditKind::Admin, change.action, gateway)
    };
    match change.by {
        ChangedBy::Operator => NewAuditEvent {
            status: Some("success".to_owned()),
            trace_id: trace,
            ..event
        },
        ChangedBy::Approver {
            verdict,
            approval_id,
            request_trace,
        } => {
            let (decision, code) = match verdict {
                ApprovalVerdict::Approve => (Effect::Allow, EventCode::ApprovalApproved),
                ApprovalVerdict::Deny => (Effect::Deny, EventCode::Decided(Code::ApprovalDenied)),
            };
            NewAuditEvent {
                kind: AuditKind::Approval,
                decision: Some(decision),
                code: Some(code),
                approval_id: Some(approval_id),
                trace_id: trace.or(request_trace),
                ..event
            }
        }
    }
}
