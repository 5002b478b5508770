//! A parsed and compiled policy (SPEC 3). Fields mirror the YAML; serialising gives the YAML's
//! camelCase keys back, for the admin API.

use serde::Serialize;

use crate::conditions::{ContextCondition, Schedule};
use crate::error::Loc;
use crate::history::HistoryCondition;
use crate::limits::Window;
use crate::model::{AgentProfile, TrustTier};
use crate::pattern::Pattern;

/// One policy document, compiled: patterns are matchers and limits typed specs, so nothing is
/// parsed on the request path.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    pub(crate) name: String,
    pub(crate) version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) applies_to: Option<AppliesTo>,
    pub(crate) rules: Vec<Rule>,
    pub(crate) default_effect: RuleEffect,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rate_limits: Option<RateLimits>,
    /// Spent by every check one of the policy's allow rules lets through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) budget: Option<Budget>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) human_in_the_loop: Option<HumanInTheLoop>,
    /// Enforced, or decided beside the enforced set and only recorded.
    #[serde(skip_serializing_if = "PolicyMode::is_enforce")]
    pub(crate) mode: PolicyMode,
    #[serde(skip)]
    pub(crate) origin: String,
    #[serde(skip)]
    pub(crate) source: String,
    #[serde(skip)]
    pub(crate) positions: PolicyPositions,
}

/// Whether a policy decides checks, or is tried beside them before it is switched on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// The policy takes part in every decision it applies to.
    #[default]
    Enforce,
    /// The policy is decided on every check it applies to but never enforced: where it would
    /// change the verdict, the audit event says how (`shadow`).
    Shadow,
}

impl PolicyMode {
    /// Whether this is the default mode (not written out).
    pub fn is_enforce(&self) -> bool {
        *self == PolicyMode::Enforce
    }
}

/// Where the top-level parts of a policy were written, for lints.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PolicyPositions {
    pub name: Loc,
    pub version: Loc,
    pub version_is_number: bool,
    pub default_effect: Option<Loc>,
}

/// Which agents a policy is for: every given key must match (AND), any value within a key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AppliesTo {
    /// The agent has one of these tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// The agent's tier is one of these.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_tiers: Option<Vec<TrustTier>>,
    /// The agent's id or name is one of these.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_ids: Option<Vec<String>>,
}

impl AppliesTo {
    /// Whether an agent is selected.
    pub fn matches(&self, agent: &AgentProfile) -> bool {
        self.tags
            .as_ref()
            .is_none_or(|tags| tags.iter().any(|tag| agent.tags.contains(tag)))
            && self
                .trust_tiers
                .as_ref()
                .is_none_or(|tiers| tiers.contains(&agent.trust))
            && self
                .agent_ids
                .as_ref()
                .is_none_or(|ids| ids.iter().any(|id| *id == agent.id || *id == agent.name))
    }
}

/// What a rule (or a policy's default) says when it decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RuleEffect {
    /// Allow the action.
    Allow,
    /// Deny the action.
    Deny,
}

impl RuleEffect {
    /// The YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleEffect::Allow => "allow",
            RuleEffect::Deny => "deny",
        }
    }
}

/// One rule; the first rule of a policy whose patterns and conditions match is its verdict.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// The name reported as `rule`; `rule-N` (N from 1) when the YAML gives none.
    pub(crate) name: String,
    pub(crate) effect: RuleEffect,
    pub(crate) actions: Vec<Pattern>,
    #[serde(skip_serializing_if = "Conditions::is_empty")]
    pub(crate) conditions: Conditions,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    /// Spent by every check this (allow) rule lets through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) budget: Option<Budget>,
    #[serde(skip)]
    pub(crate) loc: Loc,
}

impl Rule {
    /// The reported name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Allow or deny.
    pub fn effect(&self) -> RuleEffect {
        self.effect
    }

    /// The action patterns (any may match).
    pub fn actions(&self) -> &[Pattern] {
        &self.actions
    }

    /// The conditions (all must hold).
    pub fn conditions(&self) -> &Conditions {
        &self.conditions
    }

    /// The author's text for denials.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// The budget this rule spends, if any.
    pub fn budget(&self) -> Option<&Budget> {
        self.budget.as_ref()
    }
}

/// A rule's conditions; `rate_limit` is not a match condition but a limit charged when the
/// rule is its policy's verdict.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Conditions {
    /// The (normalised) resource matches one of these.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_pattern: Option<Vec<Pattern>>,
    /// The context's `sandbox` equals this (absent counts as false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<bool>,
    /// The agent's tier is at least this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_trust: Option<TrustTier>,
    /// Tests on the check's context, by dotted path; all must hold.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "serialize_context"
    )]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Object, additional_properties = true)
    )]
    pub context: Vec<ContextCondition>,
    /// When the rule applies.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_schedule"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::ScheduleText>))]
    pub schedule: Option<Schedule>,
    /// An allowed check of the agent matched this before, within its window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<HistoryCondition>,
    /// No allowed check of the agent matched this before, within its window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<HistoryCondition>,
    /// Limits charged when this rule decides for its policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimits>,
}

impl Conditions {
    /// No condition at all.
    pub fn is_empty(&self) -> bool {
        self == &Conditions::default()
    }

    /// No condition that can make the rule not match (a rate limit does not).
    pub fn is_unconditional(&self) -> bool {
        self.resource_pattern.is_none()
            && self.sandbox.is_none()
            && self.min_trust.is_none()
            && self.context.is_empty()
            && self.schedule.is_none()
            && self.after.is_none()
            && self.not_after.is_none()
    }
}

/// `context` as written: key → plain value or mapping of operators.
fn serialize_context<S: serde::Serializer>(
    context: &[ContextCondition],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(context.iter().map(|c| (c.key(), c.written())))
}

/// `schedule` as written.
fn serialize_schedule<S: serde::Serializer>(
    schedule: &Option<Schedule>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match schedule {
        Some(schedule) => schedule.written().serialize(serializer),
        None => serializer.serialize_none(),
    }
}

/// At most N checks per rolling minute and/or hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RateLimits {
    /// Checks per rolling minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Checks per rolling hour.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_hour: Option<u32>,
}

/// A sum that the checks an agent is allowed may spend per rolling hour and/or day: the amount
/// of each is the number at `field` in its context (for MCP calls, an argument such as
/// `arguments.amount`). Amounts are counted in millionths ([`crate::AMOUNT_SCALE`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// The dotted path as written.
    pub field: String,
    #[serde(skip)]
    pub(crate) path: Vec<String>,
    /// The most per rolling hour, in millionths.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_amount"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    pub per_hour: Option<u64>,
    /// The most per rolling day, in millionths.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_amount"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    pub per_day: Option<u64>,
    #[serde(skip)]
    pub(crate) loc: Loc,
}

impl Budget {
    /// The windows and their maxima, hour first.
    pub fn windows(&self) -> impl Iterator<Item = (Window, u64)> + '_ {
        [(Window::Hour, self.per_hour), (Window::Day, self.per_day)]
            .into_iter()
            .filter_map(|(window, max)| max.map(|max| (window, max)))
    }

    /// The path into the context, split at dots.
    pub fn path(&self) -> &[String] {
        &self.path
    }
}

/// An amount in millionths as the decimal number it was written as.
fn serialize_amount<S: serde::Serializer>(
    amount: &Option<u64>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match amount {
        Some(millionths) => {
            let text = crate::limits::format_amount(*millionths);
            match text.parse::<u64>() {
                Ok(whole) => serializer.serialize_u64(whole),
                Err(_) => serializer.serialize_f64(text.parse::<f64>().unwrap_or(f64::NAN)),
            }
        }
        None => serializer.serialize_none(),
    }
}

/// Actions a human must approve.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HumanInTheLoop {
    /// What needs approval: action patterns (matched like deny rules), each perhaps only when
    /// its conditions hold.
    pub require_approval: Vec<ApprovalRequirement>,
    /// How long an approval stays valid; `None` means the gateway's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

/// One entry of `requireApproval`: a pattern, or `{action, when}` so that only the checks whose
/// conditions hold wait for a human (the large payments, not every payment).
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRequirement {
    /// The action pattern.
    pub(crate) action: Pattern,
    /// The conditions; empty for a plain pattern.
    pub(crate) when: Conditions,
}

impl ApprovalRequirement {
    /// The action pattern.
    pub fn action(&self) -> &Pattern {
        &self.action
    }

    /// The conditions under which the action needs approval (empty: always).
    pub fn when(&self) -> &Conditions {
        &self.when
    }
}

impl Serialize for ApprovalRequirement {
    /// A plain entry as its pattern, a conditional one as `{action, when}`, as written.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        if self.when.is_empty() {
            return self.action.serialize(serializer);
        }
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("action", &self.action)?;
        map.serialize_entry("when", &self.when)?;
        map.end()
    }
}

impl Policy {
    /// The unique name (agent-name syntax).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The author's version label, as written.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The optional description.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The YAML text the policy was parsed from, for storage and display.
    pub fn source_text(&self) -> &str {
        &self.source
    }

    /// The file name (or other origin) given at parse time.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Which agents it is for; `None` means every agent.
    pub fn applies_to(&self) -> Option<&AppliesTo> {
        self.applies_to.as_ref()
    }

    /// The rules, top to bottom.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The weak default used when no rule matches.
    pub fn default_effect(&self) -> RuleEffect {
        self.default_effect
    }

    /// Policy-level limits, per agent.
    pub fn rate_limits(&self) -> Option<&RateLimits> {
        self.rate_limits.as_ref()
    }

    /// The policy-level budget, if any.
    pub fn budget(&self) -> Option<&Budget> {
        self.budget.as_ref()
    }

    /// Approval settings.
    pub fn human_in_the_loop(&self) -> Option<&HumanInTheLoop> {
        self.human_in_the_loop.as_ref()
    }

    /// Enforced or shadow.
    pub fn mode(&self) -> PolicyMode {
        self.mode
    }

    /// Whether the policy applies to `agent`.
    pub fn applies(&self, agent: &AgentProfile) -> bool {
        self.applies_to.as_ref().is_none_or(|a| a.matches(agent))
    }

    /// Approval requirements, empty when there are none.
    pub(crate) fn approval_requirements(&self) -> &[ApprovalRequirement] {
        self.human_in_the_loop
            .as_ref()
            .map_or(&[][..], |h| h.require_approval.as_slice())
    }
}
