//! Admin changes: one typed value per change an operator can make, committed by
//! [`crate::Store::apply_admin`] together with its audit event.

use time::OffsetDateTime;

use crate::{
    AgentPatch, AgentRecord, AgentStatus, ApprovalDecision, ApprovalRecord, AuditEvent, NewAgent,
    NewAuditEvent, NewOperator, NewPolicy, OperatorRecord, PolicyUpsert, StoredPolicy, TokenRecord,
};

/// A token to remember for an agent the change names (its id may not exist yet: a new agent
/// gets its first token in the same transaction that creates it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// The JWT's `jti`.
    pub jti: String,
    /// The JWT's `iat`.
    pub issued_at: OffsetDateTime,
    /// The JWT's `exp`, if any.
    pub expires_at: Option<OffsetDateTime>,
}

/// A change an operator makes. Each one is committed in one transaction with its audit event,
/// so a change whose event cannot be written does not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminMutation {
    /// Creates an agent with its first token ([`AdminOutcome::Token`]).
    CreateAgent {
        /// The agent.
        agent: NewAgent,
        /// Its first token.
        token: TokenGrant,
    },
    /// Changes trust, tags or description ([`AdminOutcome::Agent`]).
    UpdateAgent {
        /// Id or name.
        agent: String,
        /// The fields to change.
        patch: AgentPatch,
    },
    /// Revokes or restores an agent ([`AdminOutcome::Agent`]).
    SetAgentStatus {
        /// Id or name.
        agent: String,
        /// The new status.
        status: AgentStatus,
    },
    /// Deletes an agent with its tokens and approvals ([`AdminOutcome::Agent`], what was
    /// deleted).
    PurgeAgent {
        /// Id or name.
        agent: String,
    },
    /// Issues a token to an existing agent; with `rotate`, every other unrevoked token of the
    /// agent is revoked ([`AdminOutcome::Token`]).
    IssueToken {
        /// Id or name.
        agent: String,
        /// The new token.
        token: TokenGrant,
        /// Revoke the agent's older tokens.
        rotate: bool,
    },
    /// Stores a policy by name ([`AdminOutcome::Policy`]); a body equal to the current one
    /// changes nothing and writes no event.
    UpsertPolicy(NewPolicy),
    /// Removes a policy from force ([`AdminOutcome::PolicyDeleted`]).
    DeletePolicy {
        /// The policy name.
        name: String,
    },
    /// A human's decision on a pending approval ([`AdminOutcome::Approval`]).
    DecideApproval {
        /// The approval id.
        id: String,
        /// The decision.
        decision: ApprovalDecision,
    },
    /// Creates a console operator ([`AdminOutcome::Operator`]).
    CreateOperator(NewOperator),
    /// Deletes a console operator ([`AdminOutcome::Operator`], what was deleted).
    DeleteOperator {
        /// The operator's name.
        name: String,
    },
}

/// What an [`AdminMutation`] did, as committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminOutcome {
    /// The agent after the change (or as deleted).
    Agent(AgentRecord),
    /// A token was issued to `agent`; `revoked` older tokens were revoked.
    Token {
        /// The agent (new or existing).
        agent: AgentRecord,
        /// The token id remembered.
        token: TokenRecord,
        /// How many older tokens were revoked (0 unless rotating).
        revoked: u64,
    },
    /// The policy as stored.
    Policy(PolicyUpsert),
    /// The policy removed from force.
    PolicyDeleted(StoredPolicy),
    /// The approval as decided.
    Approval(ApprovalRecord),
    /// The operator as created (or as deleted).
    Operator(OperatorRecord),
}

impl AdminOutcome {
    /// Whether anything was written: re-applying an unchanged policy is not a change, and gets
    /// no audit event.
    pub fn changed(&self) -> bool {
        match self {
            Self::Policy(upsert) => upsert.changed,
            Self::Agent(_)
            | Self::Token { .. }
            | Self::PolicyDeleted(_)
            | Self::Approval(_)
            | Self::Operator(_) => true,
        }
    }
}

/// Builds the audit event of a change from what the change did; called inside the transaction,
/// after the change and before its event is appended. `None` (an outcome it cannot describe)
/// rolls the change back like a refused event.
pub type AdminAudit = Box<dyn FnOnce(&AdminOutcome) -> Option<NewAuditEvent> + Send>;

/// A committed admin change: what it did, and its audit event (none when nothing changed).
#[derive(Debug, Clone, PartialEq)]
pub struct AdminCommit {
    /// What the change did.
    pub outcome: AdminOutcome,
    /// The event committed with it, as chained.
    pub event: Option<AuditEvent>,
}
