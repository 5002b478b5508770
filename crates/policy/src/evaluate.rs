//! Where a decision is made: SPEC 3's evaluation steps 1–7, in order.
//!
//! Policies are visited in name order and every "first" below means first in that order, so a
//! decision never depends on load order. The engine fails closed: a text with no canonical form,
//! no applicable policy, or nothing that allows are all denials.

use std::borrow::Cow;

use jiff::Timestamp;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::canonical::{
    Fault, NotCanonical, Part, canonical_action, canonical_resource, is_relative,
};
use crate::conditions::lookup;
use crate::conditions::{ContextCondition, Schedule, ValueTest, instant};
use crate::history::{History, HistoryCondition, NO_HISTORY};
use crate::limits::{
    Admission, LimitCharge, LimitKey, RateLimitOracle, Unlimited, Window, amount_of, format_amount,
};
use crate::model::{AgentProfile, ApprovalNeed, CheckRequest, Code, Decision, TrustTier};
use crate::pattern::Pattern;
use crate::policy::{Budget, Conditions, Policy, PolicyMode, RateLimits, Rule, RuleEffect};
use crate::set::{BrokenIndex, IndexedPolicy, PolicySet, Scope, VerbKey};

/// A request in canonical form (SPEC 3), ready for matching.
pub(crate) struct Prepared<'r> {
    pub action: Cow<'r, str>,
    pub resource: Cow<'r, str>,
    /// `action + "/" + resource`, formed only when the resource is relative and not empty: only
    /// then does the resource lie under the action's object.
    pub qualified: Option<String>,
    /// Lower-cased action, qualified action and resource when they differ from the above: deny
    /// rules and approval entries match these.
    folded_action: Option<String>,
    folded_qualified: Option<String>,
    folded_resource: Option<String>,
    pub context: &'r Map<String, Value>,
    /// When the check is asked.
    pub now: Timestamp,
    /// The same instant, for history windows.
    pub asked_at: OffsetDateTime,
    /// The agent's past allowed checks, by history pattern.
    pub history: &'r History,
}

/// The lower-cased text, when it differs.
fn fold(text: &str) -> Option<String> {
    // One pass settles the common case: lower-case ASCII folds to itself.
    if !text
        .bytes()
        .any(|b| b.is_ascii_uppercase() || !b.is_ascii())
    {
        return None;
    }
    let lower = text.to_lowercase();
    (lower != text).then_some(lower)
}

impl<'r> Prepared<'r> {
    pub fn new(req: &CheckRequest<'r>, history: &'r History) -> Result<Prepared<'r>, NotCanonical> {
        let action = canonical_action(req.action)?;
        let resource = canonical_resource(req.resource)?;
        let qualified = (is_relative(&resource) && !resource.is_empty())
            .then(|| format!("{action}/{resource}"));
        let folded_action = fold(&action);
        let folded_resource = fold(&resource);
        let folded_qualified = match (&qualified, &folded_action, &folded_resource) {
            (None, ..) | (Some(_), None, None) => None,
            (Some(_), a, r) => Some(format!(
                "{}/{}",
                a.as_deref().unwrap_or(&action),
                r.as_deref().unwrap_or(&resource)
            )),
        };
        Ok(Prepared {
            folded_action,
            folded_qualified,
            folded_resource,
            action,
            resource,
            qualified,
            context: req.context,
            now: instant(req.now),
            asked_at: req.now,
            history,
        })
    }

    pub fn verb(&self) -> Option<&str> {
        self.action.split_once(':').map(|(verb, _)| verb)
    }

    /// Whether `pattern` matches the action or the qualified action. `folded` (deny rules,
    /// approval entries, rate-limit charging) ignores case and always lets a `…/*` pattern match
    /// its bare prefix; otherwise (allow rules) matching is case-sensitive and the bare prefix
    /// matches only when no resource is named (`*`).
    pub fn action_matches(&self, pattern: &Pattern, folded: bool) -> bool {
        if folded {
            let action = self.folded_action.as_deref().unwrap_or(&self.action);
            let qualified = self
                .folded_qualified
                .as_deref()
                .or(self.qualified.as_deref());
            return pattern.matches_folded(action)
                || qualified.is_some_and(|qualified| pattern.matches_folded(qualified));
        }
        pattern.matches_with_bare(&self.action, self.resource == "*")
            || self
                .qualified
                .as_deref()
                .is_some_and(|qualified| pattern.matches(qualified))
    }

    /// Whether `pattern` matches the resource (ignoring case when `folded`).
    fn resource_matches(&self, pattern: &Pattern, folded: bool) -> bool {
        if folded {
            pattern.matches_folded(self.folded_resource.as_deref().unwrap_or(&self.resource))
        } else {
            pattern.matches(&self.resource)
        }
    }
}

/// Why a rule did or did not match; shared by `decide` and `explain` so both agree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RuleCheck<'p> {
    Matched(&'p Pattern),
    NoActionMatch,
    ResourcePattern,
    Sandbox {
        required: bool,
    },
    MinTrust {
        required: TrustTier,
    },
    Context {
        condition: &'p ContextCondition,
        test: &'p ValueTest,
    },
    Schedule(&'p Schedule),
    /// `after` (`wanted`) or `notAfter` did not hold.
    History {
        condition: &'p HistoryCondition,
        wanted: bool,
    },
}

/// Whether `rule` matches: a deny rule ignores case (when in doubt, deny), an allow rule does not.
pub(crate) fn check_rule<'p>(
    rule: &'p Rule,
    req: &Prepared<'_>,
    agent: &AgentProfile,
) -> RuleCheck<'p> {
    check_rule_as(rule, req, agent, rule.effect == RuleEffect::Deny)
}

fn check_rule_as<'p>(
    rule: &'p Rule,
    req: &Prepared<'_>,
    agent: &AgentProfile,
    folded: bool,
) -> RuleCheck<'p> {
    let Some(pattern) = rule.actions.iter().find(|p| req.action_matches(p, folded)) else {
        return RuleCheck::NoActionMatch;
    };
    match failed_condition(&rule.conditions, req, agent, folded) {
        Some(failed) => failed,
        None => RuleCheck::Matched(pattern),
    }
}

/// The first of `conditions` that does not hold for the request, as the reason; `None` when
/// all hold. Shared by rules and conditional approvals.
pub(crate) fn failed_condition<'p>(
    conditions: &'p Conditions,
    req: &Prepared<'_>,
    agent: &AgentProfile,
    folded: bool,
) -> Option<RuleCheck<'p>> {
    if let Some(patterns) = &conditions.resource_pattern
        && !patterns.iter().any(|p| req.resource_matches(p, folded))
    {
        return Some(RuleCheck::ResourcePattern);
    }
    if let Some(required) = conditions.sandbox {
        let actual = req.context.get("sandbox").unwrap_or(&Value::Bool(false));
        if actual != &Value::Bool(required) {
            return Some(RuleCheck::Sandbox { required });
        }
    }
    if let Some(required) = conditions.min_trust
        && agent.trust < required
    {
        return Some(RuleCheck::MinTrust { required });
    }
    for condition in &conditions.context {
        if let Some(test) = condition.failing(req.context) {
            return Some(RuleCheck::Context { condition, test });
        }
    }
    if let Some(schedule) = &conditions.schedule
        && !schedule.is_open(req.now)
    {
        return Some(RuleCheck::Schedule(schedule));
    }
    if let Some(after) = &conditions.after
        && !after.happened(req.history, req.asked_at)
    {
        return Some(RuleCheck::History {
            condition: after,
            wanted: true,
        });
    }
    if let Some(not_after) = &conditions.not_after
        && not_after.happened(req.history, req.asked_at)
    {
        return Some(RuleCheck::History {
            condition: not_after,
            wanted: false,
        });
    }
    None
}

/// What one policy's rules say about a request (step 3).
#[derive(Default)]
struct PolicyMatch<'s> {
    /// The first matching rule: the policy's verdict.
    verdict: Option<&'s Rule>,
    /// The first rule with a `rateLimit` that matches ignoring case, up to the verdict: its
    /// limit is charged, so `browse:Web` pays the limit of an allow written for `browse:web`.
    limited: Option<&'s Rule>,
}

fn first_match<'s>(
    indexed: &'s IndexedPolicy,
    verb: VerbKey,
    req: &Prepared<'_>,
    agent: &AgentProfile,
) -> Result<PolicyMatch<'s>, BrokenIndex> {
    let mut found = PolicyMatch::default();
    for rule in indexed.candidate_rules(verb) {
        let rule = rule?;
        let limited = rule.conditions.rate_limit.is_some();
        if matches!(check_rule(rule, req, agent), RuleCheck::Matched(_)) {
            found.verdict = Some(rule);
            if limited {
                found.limited.get_or_insert(rule);
            }
            break;
        }
        if limited
            && found.limited.is_none()
            && rule.effect == RuleEffect::Allow
            && matches!(check_rule_as(rule, req, agent, true), RuleCheck::Matched(_))
        {
            found.limited = Some(rule);
        }
    }
    Ok(found)
}

pub(crate) fn push_charges(charges: &mut Vec<LimitCharge>, key: LimitKey, limits: &RateLimits) {
    let windows = [
        (Window::Minute, limits.requests_per_minute),
        (Window::Hour, limits.requests_per_hour),
    ];
    for (window, max) in windows {
        if let Some(max) = max {
            charges.push(LimitCharge {
                key: key.clone(),
                max: u64::from(max),
                window,
                cost: 1,
            });
        }
    }
}

/// The amount a check spends from `budget`: the non-negative number at its field, in
/// millionths; `None` when the field is missing or holds anything else.
pub(crate) fn amount(budget: &Budget, context: &Map<String, Value>) -> Option<u64> {
    lookup(context, budget.path())
        .and_then(Value::as_f64)
        .and_then(amount_of)
}

/// A budget that applies to the check: whose it is, and what it would be charged.
struct Spending<'s> {
    policy: &'s Policy,
    rule: Option<&'s Rule>,
    budget: &'s Budget,
    /// The amount, or `None` when the check does not carry one.
    cost: Option<u64>,
}

/// The first `requireApproval` entry of `policy` that the request matches: its pattern
/// (ignoring case, like a deny) and its conditions, if any.
pub(crate) fn approval_matches<'p>(
    policy: &'p Policy,
    req: &Prepared<'_>,
    agent: &AgentProfile,
) -> Option<&'p Pattern> {
    policy
        .approval_requirements()
        .iter()
        .find(|entry| {
            req.action_matches(&entry.action, true)
                && failed_condition(&entry.when, req, agent, true).is_none()
        })
        .map(|entry| &entry.action)
}

/// What the applicable policies say before limits and approvals are considered.
struct Verdicts<'s> {
    charges: Vec<LimitCharge>,
    /// The budgets of the allow rules (and their policies) that are verdicts, in policy order.
    spending: Vec<Spending<'s>>,
    first_deny: Option<(&'s Policy, &'s Rule)>,
    first_allow: Option<(&'s Policy, &'s Rule)>,
    first_default_deny: Option<&'s Policy>,
}

impl PolicySet {
    /// Decides one check (SPEC 3 steps 1–7) with the enforced policies. Calls `limits` once
    /// with every charge that applies; pass an oracle that only peeks for dry runs (admin
    /// `decide`, `policy test`).
    pub fn decide(
        &self,
        agent: &AgentProfile,
        req: &CheckRequest<'_>,
        limits: &mut dyn RateLimitOracle,
    ) -> Decision {
        self.decide_in(agent, req, &NO_HISTORY, limits, Scope::Enforced)
    }

    /// [`PolicySet::decide`] for an agent with a past: `after` and `notAfter` conditions read
    /// `history` (see [`PolicySet::history_patterns`]).
    pub fn decide_with_history(
        &self,
        agent: &AgentProfile,
        req: &CheckRequest<'_>,
        history: &History,
        limits: &mut dyn RateLimitOracle,
    ) -> Decision {
        self.decide_in(agent, req, history, limits, Scope::Enforced)
    }

    /// The history patterns an allowed check of `action` on `resource` matches (ignoring case,
    /// like a deny rule): the ones the caller records it under. Empty for a text with no
    /// canonical form.
    pub fn history_matches(&self, action: &str, resource: &str) -> Vec<&Pattern> {
        if self.inner.history.is_empty() {
            return Vec::new();
        }
        let context = Map::new();
        let req = CheckRequest {
            action,
            resource,
            context: &context,
            now: OffsetDateTime::UNIX_EPOCH,
        };
        let Ok(prepared) = Prepared::new(&req, &NO_HISTORY) else {
            return Vec::new();
        };
        self.inner
            .history
            .iter()
            .map(|(pattern, _)| pattern)
            .filter(|pattern| prepared.action_matches(pattern, true))
            .collect()
    }

    /// What the check would get if the shadow policies that apply to the agent were enforced
    /// too; `None` when none applies (the common case costs one flag test). Limits are not
    /// consulted: a shadow decision charges nothing, so it never reports `rate_limited`.
    pub fn decide_shadow(
        &self,
        agent: &AgentProfile,
        req: &CheckRequest<'_>,
        history: &History,
    ) -> Option<Decision> {
        if !self.inner.has_shadow {
            return None;
        }
        let shadow_applies = self
            .applicable(agent, Scope::Shadow)
            .ok()?
            .iter()
            .any(|indexed| indexed.policy.mode == PolicyMode::Shadow);
        shadow_applies.then(|| self.decide_in(agent, req, history, &mut Unlimited, Scope::Shadow))
    }

    pub(crate) fn decide_in(
        &self,
        agent: &AgentProfile,
        req: &CheckRequest<'_>,
        history: &History,
        limits: &mut dyn RateLimitOracle,
        scope: Scope,
    ) -> Decision {
        let action = req.action;
        // Canonical form before anything else: a text without one is denied whoever asks. The
        // reason names the fault, not the text, which may hold control characters.
        let prepared = match Prepared::new(req, history) {
            Ok(prepared) => prepared,
            Err(refusal) => {
                return Decision::new(refusal_code(refusal), format!("Action denied: {refusal}"));
            }
        };
        // Step 1: the applicable policies, in name order.
        let applicable = match self.applicable(agent, scope) {
            Ok(applicable) => applicable,
            Err(broken) => return broken_index(action, &broken),
        };
        if applicable.is_empty() {
            return Decision::new(
                Code::NoPolicy,
                format!(
                    "Action '{action}' denied: no policy applies to agent '{}'",
                    agent.name
                ),
            );
        }
        // Steps 2 and 3: every policy's limits and its first matching rule.
        let verdicts = match self.verdicts(&applicable, &prepared, agent) {
            Ok(verdicts) => verdicts,
            Err(broken) => return broken_index(action, &broken),
        };
        // A budget is spent only by a check that goes through without a human: no explicit deny,
        // no approval entry, and an amount for every budget that applies.
        let approval = match verdicts.first_deny {
            None => self.approval(&applicable, &prepared, agent, action),
            Some(_) => None,
        };
        let missing_amount = verdicts.spending.iter().find(|s| s.cost.is_none());
        let mut charges = verdicts.charges;
        let rate_limits = charges.len();
        let spends =
            verdicts.first_deny.is_none() && approval.is_none() && missing_amount.is_none();
        if spends {
            for spending in &verdicts.spending {
                let key = LimitKey::budget(&spending.policy.name, spending.rule.map(Rule::name));
                for (window, max) in spending.budget.windows() {
                    charges.push(LimitCharge {
                        key: key.clone(),
                        max,
                        window,
                        cost: spending.cost.unwrap_or(0),
                    });
                }
            }
        }
        // Every check counts against its rate limits, denied or not, so the oracle is asked
        // first, once, with the budgets too: all are charged or none.
        let admission = if charges.is_empty() {
            Admission::Admitted
        } else {
            limits.admit(&charges)
        };
        // Step 4: an explicit deny anywhere wins, then a missing amount, then an exhausted limit
        // or budget.
        if let Some((policy, rule)) = verdicts.first_deny {
            return by_rule(Code::DeniedByRule, action, policy, rule);
        }
        if let Some(spending) = missing_amount {
            return invalid_amount(spending);
        }
        if let Admission::Exhausted {
            charge,
            used,
            retry_after_secs,
        } = admission
        {
            if charge < rate_limits {
                return rate_limited(charges.get(charge), retry_after_secs);
            }
            return budget_exceeded(
                charges.get(charge),
                used,
                retry_after_secs,
                &verdicts.spending,
            );
        }
        // Step 5: a matching approval entry sends the action to a human.
        if let Some(decision) = approval {
            return decision;
        }
        // Step 6: an explicit allow anywhere beats every weak default.
        if let Some((policy, rule)) = verdicts.first_allow {
            return by_rule(Code::Allowed, action, policy, rule);
        }
        // Step 7: weak defaults; allow only if every applicable policy says so.
        let first_applicable = applicable.first().map(|p| &p.policy);
        by_default(action, verdicts.first_default_deny, first_applicable)
    }

    fn verdicts<'s>(
        &self,
        applicable: &[&'s IndexedPolicy],
        prepared: &Prepared<'_>,
        agent: &AgentProfile,
    ) -> Result<Verdicts<'s>, BrokenIndex> {
        let verb = self.verb_key(prepared.verb());
        let mut verdicts = Verdicts {
            charges: Vec::new(),
            spending: Vec::new(),
            first_deny: None,
            first_allow: None,
            first_default_deny: None,
        };
        for &indexed in applicable {
            let policy = &indexed.policy;
            if let Some(limits) = &policy.rate_limits {
                let key = LimitKey::requests(&policy.name, None);
                push_charges(&mut verdicts.charges, key, limits);
            }
            let PolicyMatch { verdict, limited } = first_match(indexed, verb, prepared, agent)?;
            if let Some(rule) = limited
                && let Some(limits) = &rule.conditions.rate_limit
            {
                let key = LimitKey::requests(&policy.name, Some(&rule.name));
                push_charges(&mut verdicts.charges, key, limits);
            }
            if let Some(rule) = verdict.filter(|rule| rule.effect == RuleEffect::Allow) {
                let budgets = [
                    (policy.budget.as_ref(), None),
                    (rule.budget.as_ref(), Some(rule)),
                ];
                for (budget, rule) in budgets {
                    if let Some(budget) = budget {
                        verdicts.spending.push(Spending {
                            policy,
                            rule,
                            budget,
                            cost: amount(budget, prepared.context),
                        });
                    }
                }
            }
            if let Some(rule) = verdict {
                let slot = match rule.effect {
                    RuleEffect::Deny => &mut verdicts.first_deny,
                    RuleEffect::Allow => &mut verdicts.first_allow,
                };
                slot.get_or_insert((policy, rule));
            }
            if policy.default_effect == RuleEffect::Deny {
                verdicts.first_default_deny.get_or_insert(policy);
            }
        }
        Ok(verdicts)
    }

    /// Step 5: the first policy whose `requireApproval` matches decides; the timeout is the
    /// smallest among every matching policy.
    fn approval(
        &self,
        applicable: &[&IndexedPolicy],
        prepared: &Prepared<'_>,
        agent: &AgentProfile,
        action: &str,
    ) -> Option<Decision> {
        let mut first: Option<&Policy> = None;
        let mut timeout_secs: Option<u64> = None;
        let mut default_timeout_applies = false;
        let matching = applicable
            .iter()
            .map(|indexed| &indexed.policy)
            .filter(|policy| approval_matches(policy, prepared, agent).is_some());
        for policy in matching {
            match policy
                .human_in_the_loop
                .as_ref()
                .and_then(|h| h.timeout_seconds)
            {
                Some(timeout) => {
                    timeout_secs = Some(timeout_secs.map_or(timeout, |t: u64| t.min(timeout)));
                }
                None => default_timeout_applies = true,
            }
            first.get_or_insert(policy);
        }
        let policy = first?;
        let mut decision = Decision::new(
            Code::ApprovalRequired,
            format!(
                "Action '{action}' requires human approval (policy '{}')",
                policy.name
            ),
        );
        decision.policy = Some(policy.name.clone());
        decision.approval = Some(ApprovalNeed {
            action: prepared.action.clone().into_owned(),
            resource: prepared.resource.clone().into_owned(),
            timeout_secs,
            default_timeout_applies,
        });
        Some(decision)
    }
}

/// A path that escapes its root is `invalid_resource` wherever it is (SPEC 2's response table);
/// any other fault is `invalid_action` or `invalid_resource` by the part it is in.
pub(crate) fn refusal_code(refusal: NotCanonical) -> Code {
    match (refusal.fault, refusal.part) {
        (Fault::EscapesRoot, _) | (_, Part::Resource) => Code::InvalidResource,
        (_, Part::Action) => Code::InvalidAction,
    }
}

/// The set's indexes name a policy or rule it does not hold (only a bug can): deny, naming the
/// fault, rather than decide without what the index meant. No wire code is added for a state
/// the gateway cannot reach by input; `default_deny` says what happened: nothing allowed it.
fn broken_index(action: &str, broken: &BrokenIndex) -> Decision {
    Decision::new(
        Code::DefaultDeny,
        format!("Action '{action}' denied: {broken}; nothing is allowed while it is so"),
    )
}

/// An explicit rule decided: `denied_by_rule` (with the rule's own reason) or `allowed`.
fn by_rule(code: Code, action: &str, policy: &Policy, rule: &Rule) -> Decision {
    let verb = if code == Code::Allowed {
        "allowed"
    } else {
        "denied"
    };
    let mut reason = format!(
        "Action '{action}' {verb} by rule '{}' of policy '{}'",
        rule.name, policy.name
    );
    if let (Code::DeniedByRule, Some(text)) = (code, &rule.reason) {
        reason.push_str(": ");
        reason.push_str(text);
    }
    let mut decision = Decision::new(code, reason);
    decision.policy = Some(policy.name.clone());
    decision.rule = Some(rule.name.clone());
    decision
}

/// No rule decided anywhere: `default_deny` from the first policy defaulting to deny, or a
/// default allow reported from the first applicable policy.
fn by_default(
    action: &str,
    first_deny: Option<&Policy>,
    first_applicable: Option<&Policy>,
) -> Decision {
    let mut decision = match first_deny {
        Some(policy) => Decision::new(
            Code::DefaultDeny,
            format!(
                "Action '{action}' denied by default: no rule allows it and policy '{}' defaults to deny",
                policy.name
            ),
        ),
        None => Decision::new(
            Code::Allowed,
            format!(
                "Action '{action}' allowed by default: every applicable policy defaults to allow"
            ),
        ),
    };
    decision.policy = first_deny.or(first_applicable).map(|p| p.name.clone());
    decision
}

/// A budget applies but the check carries no amount for it: `invalid_context`, naming the field.
fn invalid_amount(spending: &Spending<'_>) -> Decision {
    let owner = LimitKey::budget(&spending.policy.name, spending.rule.map(Rule::name));
    let mut decision = Decision::new(
        Code::InvalidContext,
        format!(
            "Action denied: the budget of {owner} counts `{}`, and the check's context holds no non-negative number there",
            spending.budget.field
        ),
    );
    decision.policy = Some(spending.policy.name.clone());
    decision.rule = spending.rule.map(|r| r.name.clone());
    decision
}

/// A budget has no room for this check's amount: `budget_exceeded`, saying how much is used and
/// left, and when (if ever) the window makes room.
fn budget_exceeded(
    charge: Option<&LimitCharge>,
    used: u64,
    retry_after_secs: Option<u64>,
    spending: &[Spending<'_>],
) -> Decision {
    let Some(charge) = charge else {
        return Decision::new(
            Code::BudgetExceeded,
            "Action denied: a budget is spent".to_owned(),
        );
    };
    let field = spending
        .iter()
        .find(|s| LimitKey::budget(&s.policy.name, s.rule.map(Rule::name)) == charge.key)
        .map_or("", |s| s.budget.field.as_str());
    let left = charge.max.saturating_sub(used);
    let mut reason = format!(
        "Action denied: the budget of {} (`{field}`, {} per {}) has {} used and {} left; this check needs {}",
        charge.key,
        format_amount(charge.max),
        charge.window.unit(),
        format_amount(used),
        format_amount(left),
        format_amount(charge.cost),
    );
    match retry_after_secs {
        Some(secs) => reason.push_str(&format!("; retry in {secs} s")),
        None => reason.push_str("; more than the whole budget, so never within it"),
    }
    let mut decision = Decision::new(Code::BudgetExceeded, reason);
    decision.policy = Some(charge.key.policy.clone());
    decision.rule = charge.key.rule.clone();
    decision.retry_after_secs = retry_after_secs;
    decision
}

fn rate_limited(charge: Option<&LimitCharge>, retry_after_secs: Option<u64>) -> Decision {
    let retry_after_secs = retry_after_secs.unwrap_or(0);
    let what = charge.map_or_else(
        || "a rate limit".to_owned(),
        |c| {
            format!(
                "the rate limit of {} requests per {} of {}",
                c.max,
                c.window.unit(),
                c.key
            )
        },
    );
    let mut decision = Decision::new(
        Code::RateLimited,
        format!("Action denied: {what} is exhausted; retry in {retry_after_secs} s"),
    );
    decision.policy = charge.map(|c| c.key.policy.clone());
    decision.rule = charge.and_then(|c| c.key.rule.clone());
    decision.retry_after_secs = Some(retry_after_secs);
    decision
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::limits::Unlimited;

    fn agent() -> AgentProfile {
        AgentProfile {
            id: "agent_1".into(),
            name: "dev".into(),
            trust: TrustTier::Verified,
            tags: ["t".to_owned()].into(),
        }
    }

    fn decide(set: &PolicySet, action: &str) -> Decision {
        let context = Map::new();
        let req = CheckRequest {
            action,
            resource: "",
            context: &context,
            now: time::OffsetDateTime::now_utc(),
        };
        set.decide(&agent(), &req, &mut Unlimited)
    }

    /// `a-open` allows, `b-shut` denies: a deny anywhere wins while both are in the set.
    fn set() -> PolicySet {
        PolicySet::from_sources([
            (
                "a.yaml",
                "name: a-open\nversion: \"1\"\nappliesTo: {tags: [t]}\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n",
            ),
            (
                "b.yaml",
                "name: b-shut\nversion: \"1\"\nappliesTo: {tags: [t]}\nrules:\n  - name: shut\n    effect: deny\n    actions: [\"read:*\"]\n",
            ),
        ])
        .unwrap()
    }

    #[test]
    fn a_policy_position_that_does_not_resolve_denies_instead_of_skipping_the_policy() {
        let mut set = set();
        assert_eq!(decide(&set, "read:x").code, Code::DeniedByRule);
        // The index still names `b-shut`, which the set no longer holds.
        Arc::get_mut(&mut set.inner).unwrap().policies.truncate(1);
        let decision = decide(&set, "read:x");
        assert!(!decision.is_allowed(), "{decision:?}");
        assert_eq!(
            decision.reason,
            "Action 'read:x' denied: the policy index names policy #1, which the set does not hold; nothing is allowed while it is so"
        );
    }

    #[test]
    fn a_rule_position_that_does_not_resolve_denies_instead_of_skipping_the_rule() {
        let mut set = set();
        // The rule index of `b-shut` still names its deny rule, which it no longer holds.
        let inner = Arc::get_mut(&mut set.inner).unwrap();
        inner.policies.get_mut(1).unwrap().policy.rules.clear();
        let decision = decide(&set, "read:x");
        assert!(!decision.is_allowed(), "{decision:?}");
        assert_eq!(
            decision.reason,
            "Action 'read:x' denied: the rule index of policy 'b-shut' names rule #0, which it does not hold; nothing is allowed while it is so"
        );
    }
}
