//! Warnings for policies that load but probably do not say what their author meant
//! (`meshguard policy validate`). Every check is sound: a warning names a real problem; some
//! problems go unreported when proving them would need a full pattern-inclusion solver.

use std::fmt;

use serde::Serialize;

use crate::error::Loc;
use crate::model::AgentProfile;
use crate::pattern::Pattern;
use crate::policy::{AppliesTo, ApprovalRequirement, Conditions, Policy, Rule, RuleEffect};

/// One warning, with where it points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LintWarning {
    /// The policy's origin (file name).
    pub origin: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
    /// The policy the warning is about.
    pub policy: String,
    /// Which check fired.
    pub kind: LintKind,
    /// What is wrong and what the policy will do instead.
    pub message: String,
}

impl fmt::Display for LintWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: warning: {}",
            self.origin, self.line, self.column, self.message
        )
    }
}

/// The lint checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LintKind {
    /// An earlier rule of the same policy matches everything this rule does.
    ShadowedRule,
    /// One pattern of a rule is matched by an earlier rule first.
    ShadowedPattern,
    /// An explicit deny always beats this `requireApproval` entry.
    UnreachableApproval,
    /// A pattern with a `.` or `..` segment (canonical requests never contain one), or an allow
    /// pattern with an upper-case verb (canonical verbs are lower-case).
    UnmatchablePattern,
    /// No `appliesTo`: the policy applies to every agent.
    NoAppliesTo,
    /// `version` written as a bare number.
    NumericVersion,
    /// Another policy's allow overrides this policy's default deny.
    DefaultDenyOverridden,
    /// Given agents, none is selected by the policy.
    AppliesToNoAgent,
    /// A `sandbox` or `context` condition: it rests on what the agent says about itself.
    AgentAssertedContext,
    /// A `context` condition that no value can satisfy, or a `schedule` that never opens: the
    /// rule never matches.
    ImpossibleCondition,
    /// A budget's field is tested by no `context` condition of its policy: a check without it is
    /// denied `invalid_context` instead of being told by a rule what it must carry.
    UncheckedBudgetField,
}

impl LintKind {
    /// Whether `meshguard policy validate --strict` refuses the policies for this warning: an
    /// allow that quietly beats another policy's deny is a hole, not a style matter.
    pub fn is_error_when_strict(self) -> bool {
        match self {
            LintKind::DefaultDenyOverridden => true,
            LintKind::ShadowedRule
            | LintKind::ShadowedPattern
            | LintKind::UnreachableApproval
            | LintKind::UnmatchablePattern
            | LintKind::NoAppliesTo
            | LintKind::NumericVersion
            | LintKind::AppliesToNoAgent
            | LintKind::AgentAssertedContext
            | LintKind::ImpossibleCondition
            | LintKind::UncheckedBudgetField => false,
        }
    }
}

struct Linter<'a> {
    warnings: Vec<LintWarning>,
    policy: &'a Policy,
}

impl Linter<'_> {
    fn warn(&mut self, loc: Loc, kind: LintKind, message: String) {
        self.warnings.push(LintWarning {
            origin: self.policy.origin.clone(),
            line: loc.line,
            column: loc.column,
            policy: self.policy.name.clone(),
            kind,
            message,
        });
    }
}

/// Lints `policies` (and, given `agents`, reports policies that select none of them).
/// Warnings come per policy in the order given, each policy's in source order.
pub fn lint(policies: &[Policy], agents: Option<&[AgentProfile]>) -> Vec<LintWarning> {
    let mut warnings = Vec::new();
    for policy in policies {
        let mut linter = Linter {
            warnings: Vec::new(),
            policy,
        };
        if policy.applies_to.is_none() {
            linter.warn(
                policy.positions.name,
                LintKind::NoAppliesTo,
                format!(
                    "policy '{}' has no `appliesTo`: it applies to every agent",
                    policy.name
                ),
            );
        }
        if policy.positions.version_is_number {
            linter.warn(
                policy.positions.version,
                LintKind::NumericVersion,
                format!(
                    "`version: {}` is a bare number; quote it (\"{}\") so every YAML tool keeps it as written",
                    policy.version, policy.version
                ),
            );
        }
        if let Some(agents) = agents
            && !agents.iter().any(|agent| policy.applies(agent))
        {
            linter.warn(
                policy.positions.name,
                LintKind::AppliesToNoAgent,
                format!(
                    "policy '{}' applies to none of the {} given agents",
                    policy.name,
                    agents.len()
                ),
            );
        }
        agent_asserted_context(&mut linter);
        impossible_conditions(&mut linter);
        unchecked_budget_fields(&mut linter);
        unmatchable_patterns(&mut linter);
        shadowed_rules(&mut linter);
        unreachable_approvals(&mut linter, policies);
        overridden_default(&mut linter, policies, agents);
        warnings.append(&mut linter.warnings);
    }
    warnings
}

/// Budgets whose field no rule of the policy tests: the budget is the only thing that asks for
/// the amount, so an agent learns of it only from `invalid_context` denials.
fn unchecked_budget_fields(linter: &mut Linter<'_>) {
    let policy = linter.policy;
    let tested = |field: &str| {
        policy
            .rules
            .iter()
            .any(|rule| rule.conditions.context.iter().any(|c| c.key() == field))
    };
    let budgets = policy
        .budget
        .iter()
        .map(|b| (b, format!("policy '{}'", policy.name)))
        .chain(policy.rules.iter().filter_map(|rule| {
            rule.budget
                .as_ref()
                .map(|b| (b, format!("rule '{}'", rule.name)))
        }));
    let mut unchecked: Vec<_> = budgets.filter(|(b, _)| !tested(&b.field)).collect();
    unchecked.sort_by_key(|(b, _)| b.loc);
    for (budget, owner) in unchecked {
        linter.warn(
            budget.loc,
            LintKind::UncheckedBudgetField,
            format!(
                "the budget of {owner} counts `{}`, which no rule's `context` condition tests: checks without it are denied `invalid_context`; say what the rule needs, e.g. `context: {{{}: {{ge: 0}}}}`",
                budget.field, budget.field
            ),
        );
    }
}

/// `sandbox` and `context` are read from the check's `context`, which the agent writes: through
/// the SDK they prove only what the agent claims (docs/threat-model.md).
fn agent_asserted_context(linter: &mut Linter<'_>) {
    let policy = linter.policy;
    for rule in &policy.rules {
        let conditions = &rule.conditions;
        let keys: Vec<String> = conditions
            .sandbox
            .map(|_| "`sandbox`".to_owned())
            .into_iter()
            .chain(
                conditions
                    .context
                    .iter()
                    .map(|condition| format!("`context.{}`", condition.key())),
            )
            .collect();
        if keys.is_empty() {
            continue;
        }
        let effect = match rule.effect {
            RuleEffect::Allow => "allows when the agent says so",
            RuleEffect::Deny => "denies only when the agent says so",
        };
        linter.warn(
            rule.loc,
            LintKind::AgentAssertedContext,
            format!(
                "rule '{}' rests on {} from the check's context, which the agent asserts itself: it {effect}; decide on what an enforcement point sees where it matters",
                rule.name,
                keys.join(", ")
            ),
        );
    }
}

/// A condition no check can satisfy makes its rule dead, which its author did not mean.
fn impossible_conditions(linter: &mut Linter<'_>) {
    let policy = linter.policy;
    for rule in &policy.rules {
        for condition in &rule.conditions.context {
            if let Some(why) = condition.contradiction() {
                linter.warn(
                    rule.loc,
                    LintKind::ImpossibleCondition,
                    format!(
                        "rule '{}' can never match: its condition on `context.{}` never holds ({why})",
                        rule.name,
                        condition.key()
                    ),
                );
            }
        }
        if let Some(why) = rule
            .conditions
            .schedule
            .as_ref()
            .and_then(|s| s.never_opens())
        {
            linter.warn(
                rule.loc,
                LintKind::ImpossibleCondition,
                format!(
                    "rule '{}' can never match: its schedule never opens ({why})",
                    rule.name
                ),
            );
        }
    }
    for entry in policy.approval_requirements() {
        let when = entry.when();
        let contradiction = when
            .context
            .iter()
            .find_map(|c| {
                c.contradiction().map(|why| {
                    format!("its condition on `context.{}` never holds ({why})", c.key())
                })
            })
            .or_else(|| {
                when.schedule
                    .as_ref()
                    .and_then(|s| s.never_opens())
                    .map(|why| format!("its schedule never opens ({why})"))
            });
        if let Some(why) = contradiction {
            linter.warn(
                entry.action().loc(),
                LintKind::ImpossibleCondition,
                format!(
                    "requireApproval entry `{}` never asks for approval: {why}",
                    entry.action()
                ),
            );
        }
    }
}

/// Canonical actions and resources never hold a `.` or `..` segment.
fn unmatchable_patterns(linter: &mut Linter<'_>) {
    let policy = linter.policy;
    for rule in &policy.rules {
        let actions = rule.actions.iter().map(|p| (p, "action pattern", true));
        let resources = rule
            .conditions
            .resource_pattern
            .iter()
            .flatten()
            .map(|p| (p, "resourcePattern", false));
        for (pattern, what, is_action) in actions.chain(resources) {
            let segments = if is_action {
                pattern
                    .as_str()
                    .split_once(':')
                    .map_or("", |(_, object)| object)
            } else {
                pattern.as_str()
            };
            let dotted = segments
                .split('/')
                .filter(|s| !s.contains(['*', '?']))
                .any(|s| s == "." || s == "..");
            let upper_verb = is_action
                && rule.effect == RuleEffect::Allow
                && pattern
                    .as_str()
                    .split_once(':')
                    .is_some_and(|(verb, _)| verb.chars().any(char::is_uppercase));
            if upper_verb {
                linter.warn(
                    pattern.loc(),
                    LintKind::UnmatchablePattern,
                    format!(
                        "action pattern `{pattern}` of rule '{}' can never match: verbs are lower-cased in requests, and allow rules match case-sensitively",
                        rule.name
                    ),
                );
            }
            if dotted {
                linter.warn(
                    pattern.loc(),
                    LintKind::UnmatchablePattern,
                    format!(
                        "{what} `{pattern}` of rule '{}' can never match: requests are canonical, so they never contain a `.` or `..` segment",
                        rule.name
                    ),
                );
            }
        }
    }
}

/// Whenever `later`'s conditions hold, `earlier`'s hold too.
fn conditions_implied(earlier: &Conditions, later: &Conditions) -> bool {
    let resource = match (&earlier.resource_pattern, &later.resource_pattern) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(mine), Some(theirs)) => theirs.iter().all(|t| mine.iter().any(|m| m.covers(t))),
    };
    let sandbox = earlier.sandbox.is_none() || earlier.sandbox == later.sandbox;
    let trust = match (earlier.min_trust, later.min_trust) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(mine), Some(theirs)) => theirs >= mine,
    };
    let context = earlier.context.iter().all(|mine| {
        later
            .context
            .iter()
            .any(|theirs| theirs.key() == mine.key() && theirs.written() == mine.written())
    });
    let schedule = earlier.schedule.is_none() || earlier.schedule == later.schedule;
    let history = (earlier.after.is_none() || earlier.after == later.after)
        && (earlier.not_after.is_none() || earlier.not_after == later.not_after);
    resource && sandbox && trust && context && schedule && history
}

fn covering<'r>(earlier: &'r Rule, pattern: &Pattern) -> Option<&'r Pattern> {
    earlier.actions.iter().find(|mine| mine.covers(pattern))
}

fn shadowed_rules(linter: &mut Linter<'_>) {
    let rules = &linter.policy.rules;
    for (j, later) in rules.iter().enumerate() {
        let earlier_rules = rules.get(..j).unwrap_or(&[]);
        let mut reported = vec![false; later.actions.len()];
        for earlier in earlier_rules {
            if !conditions_implied(&earlier.conditions, &later.conditions) {
                continue;
            }
            let covered: Vec<bool> = later
                .actions
                .iter()
                .map(|p| covering(earlier, p).is_some())
                .collect();
            if covered.iter().all(|&c| c) {
                linter.warn(
                    later.loc,
                    LintKind::ShadowedRule,
                    format!(
                        "rule '{}' can never match: rule '{}' (line {}) comes first and matches everything it does",
                        later.name, earlier.name, earlier.loc.line
                    ),
                );
                break;
            }
            for ((pattern, covered), done) in later.actions.iter().zip(&covered).zip(&mut reported)
            {
                if *covered && !*done {
                    *done = true;
                    linter.warn(
                        pattern.loc(),
                        LintKind::ShadowedPattern,
                        format!(
                            "pattern `{pattern}` of rule '{}' never decides: rule '{}' (line {}) comes first and matches it",
                            later.name, earlier.name, earlier.loc.line
                        ),
                    );
                }
            }
        }
    }
}

/// An unconditional deny rule covering the entry, with no earlier rule of its policy that could
/// match first, beats the approval for every agent the approval's policy applies to.
fn unreachable_approvals(linter: &mut Linter<'_>, policies: &[Policy]) {
    let policy = linter.policy;
    let deciding: Vec<&Policy> = policies
        .iter()
        .filter(|other| other.name == policy.name || other.applies_to.is_none())
        .collect();
    for entry in policy
        .approval_requirements()
        .iter()
        .map(ApprovalRequirement::action)
    {
        let blocker = deciding.iter().find_map(|other| {
            other.rules.iter().enumerate().find_map(|(i, rule)| {
                let denies = rule.effect == RuleEffect::Deny
                    && rule.conditions.is_unconditional()
                    && covering(rule, entry).is_some();
                let first = other
                    .rules
                    .get(..i)
                    .unwrap_or(&[])
                    .iter()
                    .all(|earlier| !earlier.actions.iter().any(|p| p.may_overlap(entry)));
                (denies && first).then_some((*other, rule))
            })
        });
        if let Some((other, rule)) = blocker {
            linter.warn(
                entry.loc(),
                LintKind::UnreachableApproval,
                format!(
                    "requireApproval entry `{entry}` is unreachable: rule '{}' of policy '{}' (line {}) denies it, and an explicit deny always wins",
                    rule.name, other.name, rule.loc.line
                ),
            );
        }
    }
}

/// Whether some agent could be selected by both (sound for "no").
fn may_co_apply(a: Option<&AppliesTo>, b: Option<&AppliesTo>) -> bool {
    let selects_nobody = |x: Option<&AppliesTo>| {
        x.is_some_and(|x| {
            x.tags.as_ref().is_some_and(Vec::is_empty)
                || x.trust_tiers.as_ref().is_some_and(Vec::is_empty)
                || x.agent_ids.as_ref().is_some_and(Vec::is_empty)
        })
    };
    if selects_nobody(a) || selects_nobody(b) {
        return false;
    }
    match (
        a.and_then(|x| x.trust_tiers.as_ref()),
        b.and_then(|x| x.trust_tiers.as_ref()),
    ) {
        (Some(x), Some(y)) => x.iter().any(|tier| y.contains(tier)),
        _ => true,
    }
}

fn overridden_default(
    linter: &mut Linter<'_>,
    policies: &[Policy],
    agents: Option<&[AgentProfile]>,
) {
    let policy = linter.policy;
    if policy.default_effect != RuleEffect::Deny {
        return;
    }
    for other in policies.iter().filter(|o| o.name != policy.name) {
        let shared = match agents {
            Some(agents) => match agents
                .iter()
                .find(|agent| policy.applies(agent) && other.applies(agent))
            {
                Some(agent) => format!("agent '{}'", agent.name),
                None => continue,
            },
            None if may_co_apply(policy.applies_to.as_ref(), other.applies_to.as_ref()) => {
                "agents both apply to".to_owned()
            }
            None => continue,
        };
        let overriding: Vec<String> = other
            .rules
            .iter()
            .filter(|rule| rule.effect == RuleEffect::Allow)
            .flat_map(|rule| rule.actions.iter().map(move |p| (rule, p)))
            // Only an unconditional rule settles a pattern: when a conditional one fails, the
            // request falls through to the default and the other policy's allow wins.
            .filter(|(_, p)| {
                !policy
                    .rules
                    .iter()
                    .any(|mine| mine.conditions.is_unconditional() && covering(mine, p).is_some())
            })
            .map(|(rule, p)| format!("`{p}` (rule '{}')", rule.name))
            .collect();
        if overriding.is_empty() {
            continue;
        }
        let loc = policy
            .positions
            .default_effect
            .unwrap_or(policy.positions.name);
        let shown: Vec<&str> = overriding.iter().take(3).map(String::as_str).collect();
        let more = overriding.len().saturating_sub(shown.len());
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        linter.warn(
            loc,
            LintKind::DefaultDenyOverridden,
            format!(
                "policy '{}' defaults to deny, but policy '{}' allows {}{more} for {shared}: across policies an allow beats a default deny",
                policy.name,
                other.name,
                shown.join(", ")
            ),
        );
    }
}
