//! Why a decision came out as it did (`meshguard policy test`, the admin `decide`), and what an
//! agent may do overall (`meshguard policy allowed AGENT`).

use serde::Serialize;

use crate::conditions::lookup;
use crate::evaluate::{Prepared, RuleCheck, approval_matches, check_rule};
use crate::history::{History, HistoryScope, NO_HISTORY};
use crate::limits::{Admission, LimitCharge, RateLimitOracle};
use crate::model::{AgentProfile, CheckRequest, Decision, Effect};
use crate::policy::{AppliesTo, Budget, Conditions, Policy, PolicyMode, RuleEffect};
use crate::set::PolicySet;

/// A decision with every policy and rule that was considered and why each did or did not count.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Explanation {
    /// The decision, exactly as [`PolicySet::decide`] returns it.
    pub decision: Decision,
    /// The action in canonical form; `None` when it has none (or the resource has none).
    pub normalised_action: Option<String>,
    /// The resource in canonical form; `None` when it has none (or the action has none).
    pub normalised_resource: Option<String>,
    /// Every policy of the set, in name order.
    pub policies: Vec<PolicyTrace>,
    /// The rate limits the check was charged against (empty when none applies).
    pub charges: Vec<LimitCharge>,
    /// The oracle's answer; `None` when no limit applied and the oracle was not asked.
    pub admission: Option<Admission>,
}

/// Forwards to the caller's oracle and remembers what was asked and answered.
struct RecordingOracle<'o> {
    inner: &'o mut dyn RateLimitOracle,
    charges: Vec<LimitCharge>,
    admission: Option<Admission>,
}

impl RateLimitOracle for RecordingOracle<'_> {
    fn admit(&mut self, charges: &[LimitCharge]) -> Admission {
        let admission = self.inner.admit(charges);
        self.charges = charges.to_vec();
        self.admission = Some(admission);
        admission
    }
}

/// One policy's part in a decision.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyTrace {
    /// The policy's name.
    pub policy: String,
    /// Whether its `appliesTo` selects the agent.
    pub applies: bool,
    /// Why it applies or not.
    pub applies_because: String,
    /// Its rules in order, up to and including the first match.
    pub rules: Vec<RuleTrace>,
    /// The policy's verdict: the first matching rule's name, or `None` (its default then).
    pub verdict_rule: Option<String>,
    /// The verdict's effect: the matching rule's, or the weak default's.
    pub verdict: RuleEffect,
    /// Whether the verdict comes from `defaultEffect`.
    pub verdict_is_default: bool,
    /// The `requireApproval` entry that matched, if any.
    pub approval_pattern: Option<String>,
}

/// One rule's part in a decision.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RuleTrace {
    /// The rule's reported name.
    pub rule: String,
    /// Its effect.
    pub effect: RuleEffect,
    /// What happened when it was tried (flattened into the rule's JSON object).
    #[serde(flatten)]
    pub outcome: RuleOutcome,
}

/// What happened to one rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum RuleOutcome {
    /// It matched through this action pattern: it is the policy's verdict.
    Matched {
        /// The first pattern (as written) that matched.
        pattern: String,
    },
    /// None of its action patterns matches the action or the qualified action.
    NoActionMatch,
    /// An action pattern matched but a condition does not hold.
    ConditionFailed {
        /// The condition's YAML key.
        condition: String,
        /// What was required and what was found.
        detail: String,
    },
}

fn describe_applies(policy: &Policy, agent: &AgentProfile) -> String {
    if policy.mode == PolicyMode::Shadow {
        return "shadow mode: decided beside the enforced policies and recorded, never enforced"
            .to_owned();
    }
    let Some(applies_to) = &policy.applies_to else {
        return "no `appliesTo`: applies to every agent".to_owned();
    };
    let AppliesTo {
        tags,
        trust_tiers,
        agent_ids,
    } = applies_to;
    let mut failed = Vec::new();
    if let Some(tags) = tags
        && !tags.iter().any(|t| agent.tags.contains(t))
    {
        failed.push(format!("the agent has none of the tags {tags:?}"));
    }
    if let Some(tiers) = trust_tiers
        && !tiers.contains(&agent.trust)
    {
        let names: Vec<&str> = tiers.iter().map(|t| t.as_str()).collect();
        failed.push(format!(
            "the agent's tier `{}` is not in {names:?}",
            agent.trust
        ));
    }
    if let Some(ids) = agent_ids
        && !ids.iter().any(|id| *id == agent.id || *id == agent.name)
    {
        failed.push(format!("the agent's id and name are not in {ids:?}"));
    }
    if failed.is_empty() {
        "`appliesTo` selects the agent".to_owned()
    } else {
        format!("does not apply: {}", failed.join("; "))
    }
}

fn outcome(check: RuleCheck<'_>, req: &Prepared<'_>, agent: &AgentProfile) -> RuleOutcome {
    let failed = |condition: &str, detail: String| RuleOutcome::ConditionFailed {
        condition: condition.to_owned(),
        detail,
    };
    match check {
        RuleCheck::Matched(pattern) => RuleOutcome::Matched {
            pattern: pattern.as_str().to_owned(),
        },
        RuleCheck::NoActionMatch => RuleOutcome::NoActionMatch,
        RuleCheck::ResourcePattern => failed(
            "resourcePattern",
            format!("resource `{}` matches none of the patterns", req.resource),
        ),
        RuleCheck::Sandbox { required } => failed(
            "sandbox",
            format!(
                "requires sandbox {required}, context has {}",
                req.context
                    .get("sandbox")
                    .map_or_else(|| "none".to_owned(), ToString::to_string)
            ),
        ),
        RuleCheck::MinTrust { required } => failed(
            "minTrust",
            format!("requires `{required}`, the agent is `{}`", agent.trust),
        ),
        RuleCheck::Context { condition, test } => failed(
            "context",
            format!(
                "requires `{}` {} (`{}` failed), context has {}",
                condition.key(),
                condition.written(),
                test.operator(),
                lookup(req.context, &condition.path)
                    .map_or_else(|| "none".to_owned(), ToString::to_string)
            ),
        ),
        RuleCheck::History { condition, wanted } => failed(
            if wanted { "after" } else { "notAfter" },
            format!(
                "{} allowed check of {} matched `{}` within {}",
                if wanted { "no" } else { "an" },
                match condition.scope {
                    HistoryScope::Agent => "the agent",
                    HistoryScope::Session => "this session",
                },
                condition.action(),
                condition.within_text
            ),
        ),
        RuleCheck::Schedule(schedule) => {
            let written = schedule.written();
            failed(
                "schedule",
                format!(
                    "outside the schedule (days {}, hours {}, {}); the check was asked at {}",
                    written
                        .days
                        .as_ref()
                        .map_or_else(|| "every day".to_owned(), |d| d.join(", ")),
                    written.hours.as_deref().unwrap_or("all day"),
                    written.timezone,
                    req.now
                ),
            )
        }
    }
}

/// Everything an agent may do according to the set: the combined view of
/// `meshguard policy allowed AGENT`.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Permissions {
    /// The applicable policies, in name order.
    pub policies: Vec<String>,
    /// Patterns an allow rule grants (subject to the rule's conditions).
    pub allowed: Vec<PermissionEntry>,
    /// Patterns a deny rule refuses (subject to the rule's conditions); deny wins everywhere.
    pub denied: Vec<PermissionEntry>,
    /// Patterns that need a human.
    pub approvals: Vec<ApprovalEntry>,
    /// Limits that apply.
    pub rate_limits: Vec<LimitEntry>,
    /// Budgets the agent's allowed checks spend.
    pub budgets: Vec<BudgetEntry>,
    /// What happens to an action nothing matches: allow only if every applicable policy
    /// defaults to allow.
    pub default_effect: Effect,
}

/// One pattern granted or refused by a rule.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PermissionEntry {
    /// The action pattern.
    pub pattern: String,
    /// The policy of the rule.
    pub policy: String,
    /// The rule.
    pub rule: String,
    /// The rule's conditions (without `minTrust`, already checked against the agent).
    #[serde(skip_serializing_if = "Conditions::is_empty")]
    pub conditions: Conditions,
}

/// One pattern needing approval.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalEntry {
    /// The `requireApproval` pattern.
    pub pattern: String,
    /// The policy that asks for it.
    pub policy: String,
    /// The policy's approval timeout.
    pub timeout_seconds: Option<u64>,
    /// Only when these conditions hold (a conditional entry); empty: always.
    #[serde(skip_serializing_if = "Conditions::is_empty")]
    pub when: Conditions,
}

/// One rate limit.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitEntry {
    /// The policy.
    pub policy: String,
    /// The rule, for a rule's own limit.
    pub rule: Option<String>,
    /// Checks per rolling minute.
    pub requests_per_minute: Option<u32>,
    /// Checks per rolling hour.
    pub requests_per_hour: Option<u32>,
}

/// A budget of a policy or of one of its allow rules.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BudgetEntry {
    /// The policy.
    pub policy: String,
    /// The rule, for a rule's own budget.
    pub rule: Option<String>,
    /// The budget as written.
    #[serde(flatten)]
    pub budget: Budget,
}

impl PolicySet {
    /// Decides like [`PolicySet::decide`] (same oracle call) and records every policy and rule
    /// considered.
    pub fn explain(
        &self,
        agent: &AgentProfile,
        req: &CheckRequest<'_>,
        limits: &mut dyn RateLimitOracle,
    ) -> Explanation {
        self.explain_with_history(agent, req, &NO_HISTORY, limits)
    }

    /// [`PolicySet::explain`] for an agent with a past (`after` / `notAfter` conditions).
    pub fn explain_with_history(
        &self,
        agent: &AgentProfile,
        req: &CheckRequest<'_>,
        history: &History,
        limits: &mut dyn RateLimitOracle,
    ) -> Explanation {
        let mut recording = RecordingOracle {
            inner: limits,
            charges: Vec::new(),
            admission: None,
        };
        let decision = self.decide_with_history(agent, req, history, &mut recording);
        let RecordingOracle {
            charges, admission, ..
        } = recording;
        let Ok(prepared) = Prepared::new(req, history) else {
            return Explanation {
                decision,
                normalised_action: None,
                normalised_resource: None,
                policies: Vec::new(),
                charges,
                admission,
            };
        };
        let policies = self
            .policies()
            .map(|policy| {
                let applies = policy.mode == PolicyMode::Enforce && policy.applies(agent);
                let mut rules = Vec::new();
                let mut verdict_rule = None;
                if applies {
                    for rule in &policy.rules {
                        let check = check_rule(rule, &prepared, agent);
                        let matched = matches!(check, RuleCheck::Matched(_));
                        rules.push(RuleTrace {
                            rule: rule.name.clone(),
                            effect: rule.effect,
                            outcome: outcome(check, &prepared, agent),
                        });
                        if matched {
                            verdict_rule = Some(rule);
                            break;
                        }
                    }
                }
                PolicyTrace {
                    policy: policy.name.clone(),
                    applies,
                    applies_because: describe_applies(policy, agent),
                    rules,
                    verdict_rule: verdict_rule.map(|r| r.name.clone()),
                    verdict: verdict_rule.map_or(policy.default_effect, |r| r.effect),
                    verdict_is_default: verdict_rule.is_none(),
                    approval_pattern: applies
                        .then(|| approval_matches(policy, &prepared, agent))
                        .flatten()
                        .map(|p| p.as_str().to_owned()),
                }
            })
            .collect();
        Explanation {
            normalised_action: Some(prepared.action.clone().into_owned()),
            normalised_resource: Some(prepared.resource.clone().into_owned()),
            decision,
            policies,
            charges,
            admission,
        }
    }

    /// What `agent` may do: allowed, denied and approval patterns, limits and the combined
    /// default.
    pub fn permissions(&self, agent: &AgentProfile) -> Permissions {
        let mut permissions = Permissions {
            policies: Vec::new(),
            allowed: Vec::new(),
            denied: Vec::new(),
            approvals: Vec::new(),
            rate_limits: Vec::new(),
            budgets: Vec::new(),
            default_effect: Effect::Deny,
        };
        let mut every_default_allows = true;
        for policy in self
            .policies()
            .filter(|p| p.mode == PolicyMode::Enforce && p.applies(agent))
        {
            permissions.policies.push(policy.name.clone());
            every_default_allows &= policy.default_effect == RuleEffect::Allow;
            if let Some(limits) = &policy.rate_limits {
                permissions.rate_limits.push(LimitEntry {
                    policy: policy.name.clone(),
                    rule: None,
                    requests_per_minute: limits.requests_per_minute,
                    requests_per_hour: limits.requests_per_hour,
                });
            }
            if let Some(budget) = &policy.budget {
                permissions.budgets.push(BudgetEntry {
                    policy: policy.name.clone(),
                    rule: None,
                    budget: budget.clone(),
                });
            }
            for rule in &policy.rules {
                if rule
                    .conditions
                    .min_trust
                    .is_some_and(|required| agent.trust < required)
                {
                    continue;
                }
                let conditions = Conditions {
                    min_trust: None,
                    ..rule.conditions.clone()
                };
                let list = match rule.effect {
                    RuleEffect::Allow => &mut permissions.allowed,
                    RuleEffect::Deny => &mut permissions.denied,
                };
                for pattern in &rule.actions {
                    list.push(PermissionEntry {
                        pattern: pattern.as_str().to_owned(),
                        policy: policy.name.clone(),
                        rule: rule.name.clone(),
                        conditions: conditions.clone(),
                    });
                }
                if let Some(limits) = &rule.conditions.rate_limit {
                    permissions.rate_limits.push(LimitEntry {
                        policy: policy.name.clone(),
                        rule: Some(rule.name.clone()),
                        requests_per_minute: limits.requests_per_minute,
                        requests_per_hour: limits.requests_per_hour,
                    });
                }
                if let Some(budget) = &rule.budget {
                    permissions.budgets.push(BudgetEntry {
                        policy: policy.name.clone(),
                        rule: Some(rule.name.clone()),
                        budget: budget.clone(),
                    });
                }
            }
            for entry in policy.approval_requirements() {
                permissions.approvals.push(ApprovalEntry {
                    pattern: entry.action().as_str().to_owned(),
                    when: entry.when().clone(),
                    policy: policy.name.clone(),
                    timeout_seconds: policy
                        .human_in_the_loop
                        .as_ref()
                        .and_then(|h| h.timeout_seconds),
                });
            }
        }
        if !permissions.policies.is_empty() && every_default_allows {
            permissions.default_effect = Effect::Allow;
        }
        permissions
    }
}
