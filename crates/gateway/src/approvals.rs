//! Applies SPEC 3's approval table to a decision that needs a human: finds the approval for
//! (agent, normalised action, normalised resource, arguments digest), creates one when there is
//! none, and consumes
//! an approved one (single use). An agent may have only so many approvals pending at once
//! ([`ApprovalSettings::max_pending`]): a check that would create one more is denied with
//! `too_many_pending_approvals` and creates nothing.

use std::hash::{Hash as _, Hasher as _};

use meshguard_policy::{ApprovalState, Code, Decision};
use meshguard_store::{
    ApprovalRecord, ApprovalStatus, BoundArguments, NewApproval, PendingApproval, Store, StoreError,
};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tokio::sync::Mutex;

/// Number of locks that [`SETTLING`] spreads requests over.
const STRIPES: usize = 64;

/// Serialises the read-then-write of one (agent, action, resource, arguments) within this gateway,
/// so that
/// concurrent checks for the same request settle one after the other: the second sees the
/// pending approval the first created and answers `approval_pending` without trying to create
/// one. Striped by a hash of the request, so checks for different requests rarely wait on each
/// other. It guards no data and is not what makes the answers right: the store keeps at most one
/// pending approval per request and its "use" is single, which is all that several gateways
/// sharing one database rely on.
static SETTLING: [Mutex<()>; STRIPES] = [const { Mutex::const_new(()) }; STRIPES];

fn stripe(
    agent_id: &str,
    action: &str,
    resource: &str,
    digest: Option<&str>,
) -> &'static Mutex<()> {
    let mut hasher = std::hash::DefaultHasher::new();
    (agent_id, action, resource, digest).hash(&mut hasher);
    let index = usize::try_from(hasher.finish() % STRIPES as u64).unwrap_or(0);
    #[expect(
        clippy::indexing_slicing,
        reason = "the index is reduced modulo the length"
    )]
    &SETTLING[index]
}

/// Whether the lookup may change the store: checks create and consume approvals, the admin
/// `decide` only reports the would-be answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalMode {
    /// Create pending approvals and consume approved ones.
    Apply,
    /// Change nothing.
    Peek,
}

/// How approvals are created: the gateway's settings, the same for every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApprovalSettings {
    /// Timeout when no policy sets one.
    pub default_timeout_secs: u64,
    /// Most pending approvals one agent may have at once.
    pub max_pending: u32,
}

impl ApprovalSettings {
    /// The settings of a gateway.
    pub fn of(gateway: &crate::state::Gateway) -> ApprovalSettings {
        ApprovalSettings {
            default_timeout_secs: gateway.approval_timeout.as_secs(),
            max_pending: gateway.quotas.max_pending_approvals,
        }
    }
}

/// Who asks, for what: the parts of a check that the approval table needs beyond its decision.
#[derive(Debug, Clone, Copy)]
pub struct Asking<'a> {
    /// The agent that asks.
    pub agent_id: &'a str,
    /// The approval the check names (`approval_id`), if any.
    pub named: Option<&'a str>,
    /// The check's trace, stored with an approval it creates.
    pub trace_id: Option<&'a str>,
    /// The check's context: an approval holds for its `arguments` only (bound only when a
    /// human is needed, so that other checks never hash them).
    pub context: &'a Map<String, Value>,
}

/// Settles a decision whose code is `approval_required`; other decisions pass unchanged.
pub async fn settle(
    store: &dyn Store,
    asking: Asking<'_>,
    decision: Decision,
    settings: ApprovalSettings,
    mode: ApprovalMode,
) -> Result<Decision, StoreError> {
    if decision.code != Code::ApprovalRequired {
        return Ok(decision);
    }
    let Some(need) = decision.approval.clone() else {
        return Ok(decision);
    };
    let (agent_id, named) = (asking.agent_id, asking.named);
    let bound = BoundArguments::from_context(asking.context);
    let arguments = bound.as_ref();
    let digest = arguments.map(|a| a.digest.as_str());
    let _settling = match mode {
        ApprovalMode::Apply => Some(
            stripe(agent_id, &need.action, &need.resource, digest)
                .lock()
                .await,
        ),
        ApprovalMode::Peek => None,
    };
    let now = OffsetDateTime::now_utc();
    let mut ignored_note = None;
    let mut record = None;
    if let Some(id) = named {
        match store.get_approval(id).await {
            // An older approval of the same request that is no longer in force (used, expired)
            // says nothing: the latest one below decides, as for a plain retry.
            Ok(r)
                if r.agent_id == agent_id
                    && r.action == need.action
                    && r.resource == need.resource
                    && r.arguments.as_ref().map(|a| a.digest.as_str()) == digest =>
            {
                if state_of(&r, now) != ApprovalState::None {
                    record = Some(r);
                }
            }
            Ok(_) | Err(StoreError::NotFound { .. }) => {
                ignored_note = Some(format!(
                    " (approval id '{id}' ignored: it is not an approval of this agent for this action, resource and arguments)"
                ));
            }
            Err(other) => return Err(other),
        }
    }
    if record.is_none() {
        record = store
            .latest_approval(agent_id, &need.action, &need.resource, arguments)
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
                    create(store, asking, arguments, decision, settings, now).await?
                }
                Err(other) => return Err(other),
            }
        }
        (ApprovalState::None, ApprovalMode::Apply) => {
            create(store, asking, arguments, decision, settings, now).await?
        }
        _ => decision.with_approval(state),
    };
    // The agent (often a language model) is told why the human said no, not only that they did.
    if decision.code == Code::ApprovalDenied
        && let Some(said) = record
            .as_ref()
            .and_then(|r| r.reason.as_deref())
            .filter(|r| !r.trim().is_empty())
    {
        decision.reason.push_str(": ");
        decision.reason.push_str(said);
    }
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
    asking: Asking<'_>,
    arguments: Option<&BoundArguments>,
    mut decision: Decision,
    settings: ApprovalSettings,
    now: OffsetDateTime,
) -> Result<Decision, StoreError> {
    let Some(need) = decision.approval.clone() else {
        return Ok(decision);
    };
    let timeout_secs = need.timeout_or(settings.default_timeout_secs);
    let pending = store
        .create_approval(NewApproval {
            agent_id: asking.agent_id.to_owned(),
            action: need.action,
            resource: need.resource,
            timeout_secs,
            trace_id: asking.trace_id.map(str::to_owned),
            arguments: arguments.cloned(),
            created_at: now,
            max_pending: settings.max_pending,
        })
        .await?;
    match pending {
        PendingApproval::Created(created) => {
            decision.approval_id = Some(created.id);
            Ok(decision)
        }
        // Another check created it after this one looked (on another gateway: this one's checks
        // of one request are serialised above): the answer this check would give had it seen it.
        PendingApproval::Existing(existing) => {
            Ok(decision.with_approval(ApprovalState::Pending { id: existing.id }))
        }
        // The reason names the cap, not the action: the action is in the event already.
        PendingApproval::TooMany { max_pending } => {
            decision.code = Code::TooManyPendingApprovals;
            decision.reason = format!(
                "Action denied: this agent already has {max_pending} approvals pending, the most one agent may have; \
                 a new one is created once a human decides one or one expires"
            );
            decision.approval = None;
            Ok(decision)
        }
    }
}
