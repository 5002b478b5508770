use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::chain::canonical_json;

/// The arguments of the call an approval is bound to (SPEC 3): a check that sends
/// `context.arguments` is approved for those exact arguments, so an agent cannot have one call
/// approved and make another. The approver sees `value`; the store matches on `digest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BoundArguments {
    /// SHA-256 (lowercase hex) of the canonical JSON of `value`.
    pub digest: String,
    /// The arguments as the check sent them.
    pub value: Value,
}

impl BoundArguments {
    /// The check context key whose value an approval is bound to.
    pub const CONTEXT_KEY: &'static str = "arguments";

    /// Binds `value`: two values bind alike exactly when their canonical JSON is the same.
    pub fn of(value: Value) -> BoundArguments {
        let digest = hex::encode(Sha256::digest(canonical_json(&value).as_bytes()));
        BoundArguments { digest, value }
    }

    /// The arguments of a check's context, when it sends any.
    pub fn from_context(context: &serde_json::Map<String, Value>) -> Option<BoundArguments> {
        context.get(Self::CONTEXT_KEY).cloned().map(Self::of)
    }
}

/// Where an approval stands (SPEC 3, "Approvals").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    /// Waiting for a human.
    Pending,
    /// A human said yes; one request may use it.
    Approved,
    /// A human said no.
    Denied,
    /// Nobody decided in time, or an approval ran out unused.
    Expired,
    /// The approved request went through; a new request needs a new approval.
    Used,
}

impl ApprovalStatus {
    /// The stored and serialised spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Used => "used",
        }
    }

    /// Reads the stored spelling (also what `?status=` carries).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "approved" => Some(Self::Approved),
            "denied" => Some(Self::Denied),
            "expired" => Some(Self::Expired),
            "used" => Some(Self::Used),
            _ => None,
        }
    }
}

/// One human decision on one (agent, normalised action, normalised resource, arguments).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRecord {
    /// `apr_` + 20 random hex digits.
    pub id: String,
    /// The agent that asked.
    pub agent_id: String,
    /// Normalised action.
    pub action: String,
    /// Normalised resource.
    pub resource: String,
    /// Where it stands.
    pub status: ApprovalStatus,
    /// Seconds a pending approval waits, and an approved or denied one stays in force.
    pub timeout_secs: u64,
    /// When it was asked for.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the current status runs out: `created_at + timeout` while pending, `decided_at +
    /// timeout` once decided.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When a human decided.
    #[serde(with = "time::serde::rfc3339::option")]
    pub decided_at: Option<OffsetDateTime>,
    /// Who decided (from the admin request).
    pub decided_by: Option<String>,
    /// The decider's reason.
    pub reason: Option<String>,
    /// When the approved request went through.
    #[serde(with = "time::serde::rfc3339::option")]
    pub used_at: Option<OffsetDateTime>,
    /// Trace of the request that asked, to find it in the audit trail.
    pub trace_id: Option<String>,
    /// The arguments the approval is bound to, when the check sent any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<BoundArguments>,
}

/// A request for a human decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApproval {
    /// The agent that asks; must exist.
    pub agent_id: String,
    /// Normalised action.
    pub action: String,
    /// Normalised resource.
    pub resource: String,
    /// How long it waits, then how long the decision holds.
    pub timeout_secs: u64,
    /// Trace of the asking request.
    pub trace_id: Option<String>,
    /// The arguments of the asking request: part of its key when present.
    pub arguments: Option<BoundArguments>,
    /// When it was asked for (the gateway's clock).
    pub created_at: OffsetDateTime,
    /// The most pending approvals (not yet expired at `created_at`) the agent may have: a new
    /// one past that is not created, so one agent cannot flood the humans who decide.
    pub max_pending: u32,
}

/// What [`crate::Store::create_approval`] answers: the one pending approval of a request, and
/// whether this call created it, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingApproval {
    /// None was pending: this call created it.
    Created(ApprovalRecord),
    /// One was already pending (another check, perhaps on another gateway, asked first); it is
    /// returned unchanged.
    Existing(ApprovalRecord),
    /// None was pending and the agent already has `max_pending` pending approvals: nothing was
    /// created.
    TooMany {
        /// The cap that was reached ([`NewApproval::max_pending`]).
        max_pending: u32,
    },
}

impl PendingApproval {
    /// The pending approval, created or found; `None` when the cap refused one.
    pub fn record(&self) -> Option<&ApprovalRecord> {
        match self {
            Self::Created(record) | Self::Existing(record) => Some(record),
            Self::TooMany { .. } => None,
        }
    }

    /// The pending approval, created or found; `None` when the cap refused one.
    pub fn into_record(self) -> Option<ApprovalRecord> {
        match self {
            Self::Created(record) | Self::Existing(record) => Some(record),
            Self::TooMany { .. } => None,
        }
    }
}

/// Yes or no.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalVerdict {
    /// Let one request through.
    Approve,
    /// Refuse it until the timeout runs out.
    Deny,
}

/// A human's decision on a pending approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalDecision {
    /// Yes or no.
    pub verdict: ApprovalVerdict,
    /// Who decided.
    pub decided_by: String,
    /// Why (shown to the agent).
    pub reason: Option<String>,
    /// When (the gateway's clock).
    pub decided_at: OffsetDateTime,
}
