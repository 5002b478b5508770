//! The values a decision is made from and the decision itself.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How far an agent is trusted; ordered so that `minTrust` is a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum TrustTier {
    /// The lowest tier; `untrusted` is accepted as another name for it.
    #[serde(alias = "untrusted")]
    Unverified,
    /// An agent whose owner has been checked.
    Verified,
    /// An agent allowed more than a verified one.
    Trusted,
    /// The highest tier.
    Privileged,
}

impl TrustTier {
    /// Every tier, lowest first: lets indexes hold one slot per tier.
    pub const ALL: [TrustTier; 4] = [
        TrustTier::Unverified,
        TrustTier::Verified,
        TrustTier::Trusted,
        TrustTier::Privileged,
    ];

    /// The canonical lowercase name used in YAML, JSON and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            TrustTier::Unverified => "unverified",
            TrustTier::Verified => "verified",
            TrustTier::Trusted => "trusted",
            TrustTier::Privileged => "privileged",
        }
    }

    pub(crate) fn slot(self) -> usize {
        match self {
            TrustTier::Unverified => 0,
            TrustTier::Verified => 1,
            TrustTier::Trusted => 2,
            TrustTier::Privileged => 3,
        }
    }
}

impl fmt::Display for TrustTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of [`TrustTier::from_str`]: names what was given so callers can report it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown trust tier `{0}`; expected one of \"unverified\" (or \"untrusted\"), \"verified\", \"trusted\", \"privileged\""
)]
pub struct UnknownTrustTier(pub String);

impl FromStr for TrustTier {
    type Err = UnknownTrustTier;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "unverified" | "untrusted" => Ok(TrustTier::Unverified),
            "verified" => Ok(TrustTier::Verified),
            "trusted" => Ok(TrustTier::Trusted),
            "privileged" => Ok(TrustTier::Privileged),
            other => Err(UnknownTrustTier(other.to_owned())),
        }
    }
}

/// What the engine knows about the agent asking: read from the store on every check,
/// so a change of trust or tags takes effect on the next request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentProfile {
    /// The agent's id (`agent_…`); `appliesTo.agentIds` matches it or the name.
    pub id: String,
    /// The agent's unique name.
    pub name: String,
    /// The agent's trust tier.
    pub trust: TrustTier,
    /// The agent's tags, matched by `appliesTo.tags`.
    pub tags: BTreeSet<String>,
}

/// One action an agent wants to take, as received (normalisation happens inside the engine).
#[derive(Debug, Clone, Copy)]
pub struct CheckRequest<'a> {
    /// `verb:object`, e.g. `write:workspace/notes.txt`.
    pub action: &'a str,
    /// What the action acts on; `*` when the agent did not say.
    pub resource: &'a str,
    /// Free-form facts about the request, matched by `sandbox` and `context` conditions.
    pub context: &'a serde_json::Map<String, serde_json::Value>,
    /// When the check is asked, read by `schedule` conditions: the caller's clock, so that the
    /// engine stays pure and tests can set the time.
    pub now: time::OffsetDateTime,
}

/// The three answers a check can get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// The action may go ahead.
    Allow,
    /// The action must not happen.
    Deny,
    /// A human must decide first.
    RequireApproval,
}

impl Effect {
    /// Reads a wire name back; `None` for anything else.
    pub fn parse(text: &str) -> Option<Effect> {
        [Effect::Allow, Effect::Deny, Effect::RequireApproval]
            .into_iter()
            .find(|effect| effect.as_str() == text)
    }

    /// The wire name (`allow`, `deny`, `require_approval`).
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
            Effect::RequireApproval => "require_approval",
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a decision came out as it did, for machines (the `code` of the check response).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// An explicit allow rule, or every applicable policy defaults to allow.
    Allowed,
    /// A human approved this (agent, action, resource); the approval is now used.
    AllowedWithApproval,
    /// An explicit deny rule matched in some applicable policy.
    DeniedByRule,
    /// Nothing allowed the action and some applicable policy defaults to deny.
    DefaultDeny,
    /// No policy applies to the agent: nothing is allowed.
    NoPolicy,
    /// The resource has no canonical form (SPEC 3), or the action's object or the resource
    /// escapes its root with `..`.
    InvalidResource,
    /// The action is not `verb:object` or has no canonical form (SPEC 3).
    InvalidAction,
    /// A policy or rule rate limit is exhausted.
    RateLimited,
    /// A policy or rule budget has no room for the check's amount.
    BudgetExceeded,
    /// A budget applies to the check, but its context holds no amount at the budget's field.
    InvalidContext,
    /// A human said no.
    ApprovalDenied,
    /// A human must decide; a new approval is (to be) created.
    ApprovalRequired,
    /// A human must decide; the approval already exists and waits.
    ApprovalPending,
    /// A human would have to decide, but the agent already has as many approvals pending as
    /// the gateway allows one agent: none was created.
    TooManyPendingApprovals,
}

impl Code {
    /// Every code, so that reading a stored one back needs no second list of spellings.
    pub const ALL: [Code; 14] = [
        Code::Allowed,
        Code::AllowedWithApproval,
        Code::DeniedByRule,
        Code::DefaultDeny,
        Code::NoPolicy,
        Code::InvalidResource,
        Code::InvalidAction,
        Code::RateLimited,
        Code::BudgetExceeded,
        Code::InvalidContext,
        Code::ApprovalDenied,
        Code::ApprovalRequired,
        Code::ApprovalPending,
        Code::TooManyPendingApprovals,
    ];

    /// Reads a wire name back; `None` for anything else.
    pub fn parse(text: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|code| code.as_str() == text)
    }

    /// The wire name (`denied_by_rule`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Allowed => "allowed",
            Code::AllowedWithApproval => "allowed_with_approval",
            Code::DeniedByRule => "denied_by_rule",
            Code::DefaultDeny => "default_deny",
            Code::NoPolicy => "no_policy",
            Code::InvalidResource => "invalid_resource",
            Code::InvalidAction => "invalid_action",
            Code::RateLimited => "rate_limited",
            Code::BudgetExceeded => "budget_exceeded",
            Code::InvalidContext => "invalid_context",
            Code::ApprovalDenied => "approval_denied",
            Code::ApprovalRequired => "approval_required",
            Code::ApprovalPending => "approval_pending",
            Code::TooManyPendingApprovals => "too_many_pending_approvals",
        }
    }

    /// The effect every decision with this code has.
    pub fn effect(self) -> Effect {
        match self {
            Code::Allowed | Code::AllowedWithApproval => Effect::Allow,
            Code::DeniedByRule
            | Code::DefaultDeny
            | Code::NoPolicy
            | Code::InvalidResource
            | Code::InvalidAction
            | Code::RateLimited
            | Code::BudgetExceeded
            | Code::InvalidContext
            | Code::ApprovalDenied => Effect::Deny,
            Code::ApprovalRequired | Code::ApprovalPending => Effect::RequireApproval,
            Code::TooManyPendingApprovals => Effect::Deny,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to one check, carrying its reasons: the response body, the audit event and
/// `policy test` are all built from this one value. Its effect is its code's ([`Code::effect`]),
/// never stored beside it, so the two cannot disagree; the JSON form still carries `effect`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Decision {
    /// The machine-readable cause; it fixes the effect.
    pub code: Code,
    /// The human-readable cause, naming the action, rule and policy.
    pub reason: String,
    /// The policy that decided (SPEC 2, "Which policy and rule a decision reports").
    pub policy: Option<String>,
    /// The rule that decided, when a rule did.
    pub rule: Option<String>,
    /// Whole seconds until a rate-limited check would be admitted.
    pub retry_after_secs: Option<u64>,
    /// Set when a `requireApproval` entry decided: what the approval is about.
    pub approval: Option<ApprovalNeed>,
    /// The approval this decision refers to, once the gateway has one.
    pub approval_id: Option<String>,
}

impl Serialize for Decision {
    /// The documented JSON form: `effect` first, derived from the code.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let Decision {
            code,
            reason,
            policy,
            rule,
            retry_after_secs,
            approval,
            approval_id,
        } = self;
        let mut out = serializer.serialize_struct("Decision", 8)?;
        out.serialize_field("effect", &code.effect())?;
        out.serialize_field("code", code)?;
        out.serialize_field("reason", reason)?;
        out.serialize_field("policy", policy)?;
        out.serialize_field("rule", rule)?;
        out.serialize_field("retry_after_secs", retry_after_secs)?;
        out.serialize_field("approval", approval)?;
        out.serialize_field("approval_id", approval_id)?;
        out.end()
    }
}

/// The (action, resource) an approval is about, normalised so that retries find it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalNeed {
    /// The normalised action.
    pub action: String,
    /// The normalised resource.
    pub resource: String,
    /// The smallest `timeoutSeconds` among the matching policies that give one; `None` when
    /// none does. Use [`ApprovalNeed::timeout_or`] to fold in the gateway default.
    pub timeout_secs: Option<u64>,
    /// Whether some matching policy gives no `timeoutSeconds`, so the gateway default competes
    /// for the smallest timeout.
    #[serde(default)]
    pub default_timeout_applies: bool,
}

impl ApprovalNeed {
    /// The timeout to use: the smallest among the matching policies, where a policy without
    /// `timeoutSeconds` stands for the gateway's `default_secs`.
    pub fn timeout_or(&self, default_secs: u64) -> u64 {
        match (self.timeout_secs, self.default_timeout_applies) {
            (Some(explicit), false) => explicit,
            (Some(explicit), true) => explicit.min(default_secs),
            (None, _) => default_secs,
        }
    }
}

/// What the approval store holds for (agent, action, resource), as looked up by the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "id")]
pub enum ApprovalState {
    /// No usable approval: none yet, or the last one expired or was used.
    None,
    /// An approval waits for a human.
    Pending {
        /// The approval id.
        id: String,
    },
    /// A human approved and the approval is not used yet.
    Approved {
        /// The approval id.
        id: String,
    },
    /// A human denied and the denial has not timed out.
    Denied {
        /// The approval id.
        id: String,
    },
}

impl Decision {
    pub(crate) fn new(code: Code, reason: String) -> Decision {
        Decision {
            code,
            reason,
            policy: None,
            rule: None,
            retry_after_secs: None,
            approval: None,
            approval_id: None,
        }
    }

    /// Allow, deny or require approval: what the code means.
    pub fn effect(&self) -> Effect {
        self.code.effect()
    }

    /// True only when the action may go ahead.
    pub fn is_allowed(&self) -> bool {
        self.effect() == Effect::Allow
    }

    /// Applies SPEC 3's approval table to a decision whose code is
    /// [`Code::ApprovalRequired`]; any other decision is returned unchanged, so an explicit deny
    /// can never be turned into an allow by an approval.
    pub fn with_approval(mut self, state: ApprovalState) -> Decision {
        if self.code != Code::ApprovalRequired {
            return self;
        }
        let action = self
            .approval
            .as_ref()
            .map(|need| need.action.clone())
            .unwrap_or_default();
        let (code, id, reason) = match state {
            ApprovalState::None => return self,
            ApprovalState::Pending { id } => {
                let reason = format!(
                    "Action '{action}' requires human approval: approval '{id}' is pending"
                );
                (Code::ApprovalPending, id, reason)
            }
            ApprovalState::Approved { id } => {
                let reason =
                    format!("Action '{action}' allowed: approved by a human (approval '{id}')");
                (Code::AllowedWithApproval, id, reason)
            }
            ApprovalState::Denied { id } => {
                let reason = format!("Action '{action}' denied by a human (approval '{id}')");
                (Code::ApprovalDenied, id, reason)
            }
        };
        self.code = code;
        self.reason = reason;
        self.approval_id = Some(id);
        self
    }
}
