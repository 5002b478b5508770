//! The records the store keeps, as the rest of MeshGuard sees them.
//!
//! Agent, token, policy and approval records serialise in camelCase, the shape of the admin API;
//! audit events serialise in the snake_case shape that the hash chain covers (see `chain`).

pub(crate) mod admin;
pub(crate) mod agent;
pub(crate) mod approval;
pub(crate) mod audit;
pub(crate) mod change;
pub(crate) mod operator;
pub(crate) mod page;
pub(crate) mod policy;
pub(crate) mod token;

pub use admin::{AdminAudit, AdminCommit, AdminMutation, AdminOutcome, TokenGrant};
pub use agent::{
    AGENT_ID_PREFIX, AgentKey, AgentPatch, AgentRecord, AgentStatus, NewAgent, TRUST_TIERS,
    validate_agent_name, validate_name,
};
pub use approval::{
    ApprovalDecision, ApprovalRecord, ApprovalStatus, ApprovalVerdict, BoundArguments, NewApproval,
    PendingApproval,
};
pub use audit::{
    ActionCount, AuditAgent, AuditEvent, AuditFilter, AuditKind, AuditOrder, AuditPage, AuditStats,
    ChainAnchor, ChainBreak, ChainReport, EventCode, HourlyBucket, MAX_ACTION_BYTES,
    MAX_REASON_BYTES, MAX_RESULT_BYTES, NewAuditEvent, RetentionReport, ShadowChange,
    ShadowVerdict, StatsQuery, VerifyOptions, VerifyReport,
};
pub use change::StoreChange;
pub use operator::{NewOperator, OPERATOR_ROLES, OperatorRecord};
pub use page::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page, PageRequest};
pub use policy::{NewPolicy, PolicyOrigin, PolicyRevision, PolicyUpsert, StoredPolicy};
pub use token::{NewToken, TokenRecord};
