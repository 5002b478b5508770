//! MeshGuard policy engine: parse → validate/lint → compile → evaluate agent policies.
//!
//! # Model
//!
//! A [`Policy`] is a YAML document (SPEC 3) parsed into typed, compiled structures: every
//! pattern becomes a matcher and every limit a typed spec at load, and any mistake is a
//! [`PolicyError`] naming `file:line:col` and the field path. A [`PolicySet`] orders policies by
//! name and indexes them, so a decision costs the same whatever the number of unrelated rules.
//!
//! [`PolicySet::decide`] turns (agent, action, resource, context) into a [`Decision`]:
//!
//! 1. bring the action and the resource to their canonical form (none → `invalid_action` or
//!    `invalid_resource`);
//! 2. the applicable policies are those whose `appliesTo` selects the agent (none → `no_policy`);
//! 3. each applicable policy's verdict is its first matching rule, else its weak default;
//! 4. any explicit deny wins (`denied_by_rule`), then any exhausted rate limit (`rate_limited`);
//! 5. a matching `humanInTheLoop.requireApproval` entry asks a human (`approval_required`);
//! 6. any explicit allow allows (`allowed`);
//! 7. otherwise allow only if every applicable policy defaults to allow, else `default_deny`.
//!
//! The crate is pure: no IO, no clock, no async. Rate-limit counting is the caller's
//! [`RateLimitOracle`]; approval storage is the caller's, fed back through
//! [`Decision::with_approval`]. The engine fails closed: whatever it cannot decide is a deny.
//!
//! # Interface notes
//!
//! The interface follows the workspace contract. Additions: [`BurstCounter`] (an oracle on a
//! clock the caller sets, for offline runs), [`PolicySet::from_sources`] (build a set from YAML strings, for
//! tests and benchmarks), [`LoadError`], [`ApprovalNeed::default_timeout_applies`] with
//! [`ApprovalNeed::timeout_or`] (a matching policy without `timeoutSeconds` stands for the
//! gateway default), [`lint`]'s [`LintKind`], [`canonical_action`], [`canonical_resource`] and
//! [`is_relative`] (SPEC 3's canonical form, for enforcement points that must act on exactly the
//! text that was decided), and typed access to compiled policies
//! ([`Rule`], [`Conditions`], [`Pattern`]). [`PolicySetError`] is an enum (one variant today),
//! and the corpus runner is the method [`corpus::Corpus::run_offline`].
//!
//! # Example
//!
//! ```
//! use meshguard_policy::{AgentProfile, CheckRequest, Code, PolicySet, TrustTier, Unlimited, parse_policy};
//!
//! let policy = parse_policy("agents.yaml", r#"
//! name: agents
//! version: "1.0"
//! appliesTo: {tags: [autogpt]}
//! rules:
//!   - effect: allow
//!     actions: ["read:*", "write:workspace/*"]
//!   - name: no-shell
//!     effect: deny
//!     actions: ["execute:shell"]
//! "#)?;
//! let set = PolicySet::new(vec![policy])?;
//! let agent = AgentProfile {
//!     id: "agent_1".into(),
//!     name: "dev".into(),
//!     trust: TrustTier::Verified,
//!     tags: ["autogpt".to_string()].into(),
//! };
//! let context = serde_json::Map::new();
//! let check = |action, resource| CheckRequest { action, resource, context: &context, now: time::OffsetDateTime::now_utc() };
//!
//! let write = set.decide(&agent, &check("write:workspace", "notes.txt"), &mut Unlimited);
//! assert!(write.is_allowed());
//! assert_eq!(write.rule.as_deref(), Some("rule-1"));
//!
//! let shell = set.decide(&agent, &check("execute:shell", "ls"), &mut Unlimited);
//! assert_eq!(shell.code, Code::DeniedByRule);
//! assert_eq!(shell.reason, "Action 'execute:shell' denied by rule 'no-shell' of policy 'agents'");
//!
//! let escape = set.decide(&agent, &check("read:workspace", "../../etc/shadow"), &mut Unlimited);
//! assert_eq!(escape.code, Code::InvalidResource);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod canonical;
mod conditions;
pub mod corpus;
mod error;
mod evaluate;
mod explain;
mod history;
mod limits;
mod lint;
mod model;
#[cfg(feature = "openapi")]
mod openapi;
mod parse;
mod pattern;
mod policy;
mod set;
mod yaml;

pub use canonical::{Fault, NotCanonical, Part, canonical_action, canonical_resource, is_relative};
pub use conditions::{
    Comparison, ContextCondition, DAY_NAMES, OPERATORS, Operand, Schedule, ScheduleText, ValueTest,
};
pub use error::{LoadError, Loc, PolicyError, PolicySetError};
pub use explain::{
    ApprovalEntry, BudgetEntry, Explanation, LimitEntry, PermissionEntry, Permissions, PolicyTrace,
    RuleOutcome, RuleTrace,
};
pub use history::{
    History, HistoryCondition, HistoryLog, HistoryScope, LastSeen, MAX_SESSIONS_PER_AGENT,
    NO_HISTORY,
};
pub use limits::{
    AMOUNT_SCALE, Admission, BurstCounter, LimitCharge, LimitKey, LimitKind, RateLimitOracle,
    Unlimited, Window, amount_of, format_amount,
};
pub use lint::{LintKind, LintWarning, lint};
pub use model::{
    AgentProfile, ApprovalNeed, ApprovalState, CheckRequest, Code, Decision, Effect, TrustTier,
    UnknownTrustTier,
};
pub use parse::{is_valid_name, parse_policy};
pub use pattern::Pattern;
pub use policy::{
    AppliesTo, ApprovalRequirement, Budget, Conditions, HumanInTheLoop, Policy, PolicyMode,
    RateLimits, Rule, RuleEffect,
};
pub use set::PolicySet;
