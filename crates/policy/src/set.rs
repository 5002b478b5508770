//! An immutable, indexed set of policies: the value the gateway swaps atomically on reload.
//!
//! Two indexes keep a decision's cost independent of unrelated policies and rules:
//! policies are bucketed by one `appliesTo` key (agent id/name, else tag, else tier, else
//! "every agent"), and each policy's rules are bucketed by the verb of their action patterns
//! (the literal text before `:`), with patterns that start with a wildcard kept in a small
//! bucket checked for every action.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::PolicySetError;
use crate::model::{AgentProfile, TrustTier};
use crate::pattern::Pattern;
use crate::policy::{Policy, PolicyMode, Rule};

/// Policies ordered by name (byte-wise), indexed for fast decisions. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PolicySet {
    pub(crate) inner: Arc<SetInner>,
}

#[derive(Debug, Default)]
pub(crate) struct SetInner {
    pub policies: Vec<IndexedPolicy>,
    by_name: HashMap<String, usize>,
    /// Every verb of a keyed pattern, interned once so each policy's lookup is a binary search.
    verbs: HashMap<String, u32>,
    by_agent: HashMap<String, Vec<usize>>,
    by_tag: HashMap<String, Vec<usize>>,
    by_tier: [Vec<usize>; 4],
    everyone: Vec<usize>,
    /// Whether any policy is in shadow mode: without one, no check pays for a shadow decision.
    pub has_shadow: bool,
    /// The patterns of every `after` / `notAfter` condition, one per text, with the longest
    /// window any of them is given: what the caller must remember of an agent's past.
    pub history: Vec<(Pattern, time::Duration)>,
}

#[derive(Debug)]
pub(crate) struct IndexedPolicy {
    pub policy: Policy,
    rules: RuleIndex,
}

/// A position in the set's indexes that names no policy or rule. Only a bug can make one; a
/// decision that meets it denies with this as the reason (fail closed) rather than deciding
/// without the policy or rule the index meant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BrokenIndex {
    /// An `appliesTo` index names a policy position past the end of the set.
    #[error("the policy index names policy #{0}, which the set does not hold")]
    Policy(usize),
    /// A policy's rule index names a rule position past the end of its rules.
    #[error("the rule index of policy '{policy}' names rule #{position}, which it does not hold")]
    Rule {
        /// The policy whose rule index is broken.
        policy: String,
        /// The position that does not resolve.
        position: usize,
    },
}

/// Rule positions by verb id (sorted by id), each list ascending so the first match is found
/// in rule order.
#[derive(Debug, Default)]
struct RuleIndex {
    by_verb: Vec<(u32, Vec<usize>)>,
    /// Rules with a pattern whose literal prefix does not reach a `:` (e.g. `*` or `re?d:x`).
    unkeyed: Vec<usize>,
}

/// The verb a pattern commits to, if its literal prefix reaches the first `:`; lower-cased like
/// the verbs of canonical actions, so that deny rules, which ignore case, find their rules.
fn pattern_verb(pattern: &Pattern) -> Option<String> {
    pattern
        .literal_prefix()
        .split_once(':')
        .map(|(verb, _)| verb.to_lowercase())
}

/// How a request's verb selects rules, computed once per decision.
#[derive(Debug, Clone, Copy)]
pub(crate) enum VerbKey {
    /// The action has no `:`: every rule is a candidate.
    NoVerb,
    /// No keyed pattern uses this verb: only unkeyed rules are candidates.
    Unused,
    /// The interned verb.
    Id(u32),
}

impl RuleIndex {
    fn build(rules: &[Rule], verbs: &mut HashMap<String, u32>) -> RuleIndex {
        let mut by_verb: HashMap<u32, Vec<usize>> = HashMap::new();
        let mut unkeyed = Vec::new();
        for (position, rule) in rules.iter().enumerate() {
            let keys: Option<Vec<String>> = rule.actions.iter().map(pattern_verb).collect();
            match keys {
                Some(mut keys) => {
                    keys.sort_unstable();
                    keys.dedup();
                    for verb in keys {
                        let next = u32::try_from(verbs.len()).unwrap_or(u32::MAX);
                        let id = *verbs.entry(verb).or_insert(next);
                        by_verb.entry(id).or_default().push(position);
                    }
                }
                None => unkeyed.push(position),
            }
        }
        let mut by_verb: Vec<(u32, Vec<usize>)> = by_verb.into_iter().collect();
        by_verb.sort_unstable_by_key(|(id, _)| *id);
        RuleIndex { by_verb, unkeyed }
    }
}

impl IndexedPolicy {
    /// The rules that may match an action with this verb, in rule order. An action without
    /// `:` can be matched by rules of any verb through its qualified form, so it gets every
    /// rule. A position that does not resolve is yielded as an error, never skipped.
    pub(crate) fn candidate_rules(
        &self,
        verb: VerbKey,
    ) -> impl Iterator<Item = Result<&Rule, BrokenIndex>> + '_ {
        let all = self.policy.rules.len();
        let (keyed, unkeyed, everything): (&[usize], &[usize], bool) = match verb {
            VerbKey::Id(id) => {
                let keyed = self
                    .rules
                    .by_verb
                    .binary_search_by_key(&id, |(verb, _)| *verb)
                    .ok()
                    .and_then(|i| self.rules.by_verb.get(i))
                    .map_or(&[][..], |(_, rules)| rules.as_slice());
                (keyed, &self.rules.unkeyed, false)
            }
            VerbKey::Unused => (&[], &self.rules.unkeyed, false),
            VerbKey::NoVerb => (&[], &[], true),
        };
        MergeAscending {
            a: keyed,
            b: unkeyed,
        }
        .chain((0..all).filter(move |_| everything))
        .map(|position| {
            self.policy
                .rules
                .get(position)
                .ok_or_else(|| BrokenIndex::Rule {
                    policy: self.policy.name.clone(),
                    position,
                })
        })
    }
}

/// Merges two ascending lists of rule positions.
struct MergeAscending<'a> {
    a: &'a [usize],
    b: &'a [usize],
}

impl Iterator for MergeAscending<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let (a, b) = (self.a.first().copied(), self.b.first().copied());
        let take_a = match (a, b) {
            (Some(x), Some(y)) => x <= y,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        if take_a {
            self.a = self.a.get(1..).unwrap_or(&[]);
            a
        } else {
            self.b = self.b.get(1..).unwrap_or(&[]);
            b
        }
    }
}

impl PolicySet {
    /// Builds the set; two policies with one name are an error naming both origins.
    pub fn new(policies: Vec<Policy>) -> Result<PolicySet, PolicySetError> {
        let mut policies = policies;
        policies.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        for pair in policies.windows(2) {
            if let [first, second] = pair
                && first.name == second.name
            {
                return Err(PolicySetError::DuplicateName {
                    name: second.name.clone(),
                    first_origin: first.origin.clone(),
                    first_loc: first.positions.name,
                    second_origin: second.origin.clone(),
                    second_loc: second.positions.name,
                });
            }
        }
        let mut inner = SetInner::default();
        for (position, policy) in policies.into_iter().enumerate() {
            inner.by_name.insert(policy.name.clone(), position);
            if let Some(applies_to) = &policy.applies_to {
                if let Some(ids) = &applies_to.agent_ids {
                    for id in ids {
                        push_unique(inner.by_agent.entry(id.clone()).or_default(), position);
                    }
                } else if let Some(tags) = &applies_to.tags {
                    for tag in tags {
                        push_unique(inner.by_tag.entry(tag.clone()).or_default(), position);
                    }
                } else if let Some(tiers) = &applies_to.trust_tiers {
                    for tier in tiers {
                        if let Some(slot) = inner.by_tier.get_mut(tier.slot()) {
                            push_unique(slot, position);
                        }
                    }
                } else {
                    inner.everyone.push(position);
                }
            } else {
                inner.everyone.push(position);
            }
            inner.has_shadow |= policy.mode == PolicyMode::Shadow;
            let conditions = policy
                .rules
                .iter()
                .map(|rule| &rule.conditions)
                .chain(policy.approval_requirements().iter().map(|a| a.when()));
            for condition in conditions.flat_map(|c| [&c.after, &c.not_after]).flatten() {
                let text = condition.action().as_str();
                match inner.history.iter_mut().find(|(p, _)| p.as_str() == text) {
                    Some((_, window)) => *window = (*window).max(condition.within),
                    None => inner
                        .history
                        .push((condition.action().clone(), condition.within)),
                }
            }
            let rules = RuleIndex::build(&policy.rules, &mut inner.verbs);
            inner.policies.push(IndexedPolicy { policy, rules });
        }
        Ok(PolicySet {
            inner: Arc::new(inner),
        })
    }

    /// A set with no policies: every check is denied `no_policy`.
    pub fn empty() -> PolicySet {
        PolicySet {
            inner: Arc::new(SetInner::default()),
        }
    }

    /// Parses every `(origin, text)` pair and builds the set: handy for tests and benchmarks
    /// that generate thousands of policies.
    pub fn from_sources<'a>(
        sources: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<PolicySet, crate::LoadError> {
        let policies = sources
            .into_iter()
            .map(|(origin, text)| crate::parse_policy(origin, text))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PolicySet::new(policies)?)
    }

    /// The policies, ordered by name.
    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.inner.policies.iter().map(|p| &p.policy)
    }

    /// The policy named `name`.
    pub fn get(&self, name: &str) -> Option<&Policy> {
        self.inner
            .by_name
            .get(name)
            .and_then(|&i| self.inner.policies.get(i))
            .map(|p| &p.policy)
    }

    /// The patterns of the set's history conditions (`after`, `notAfter`) and the longest window
    /// each is used with: the gateway remembers, per agent, when an allowed check last matched
    /// each, for that long. Empty when no policy looks at history.
    pub fn history_patterns(&self) -> &[(Pattern, time::Duration)] {
        &self.inner.history
    }

    /// How many policies the set holds.
    pub fn len(&self) -> usize {
        self.inner.policies.len()
    }

    /// Whether the set holds no policy.
    pub fn is_empty(&self) -> bool {
        self.inner.policies.is_empty()
    }

    /// How `verb` (the part of a normalised action before `:`) selects rules.
    pub(crate) fn verb_key(&self, verb: Option<&str>) -> VerbKey {
        match verb {
            None => VerbKey::NoVerb,
            Some(verb) => self
                .inner
                .verbs
                .get(verb)
                .map_or(VerbKey::Unused, |&id| VerbKey::Id(id)),
        }
    }

    /// The policies that apply to `agent`, by name: the enforced ones, or (`Scope::Shadow`)
    /// the enforced and the shadow ones together. A position of the indexes that does not
    /// resolve is an error, so a policy the index meant is never left out silently.
    pub(crate) fn applicable(
        &self,
        agent: &AgentProfile,
        scope: Scope,
    ) -> Result<Vec<&IndexedPolicy>, BrokenIndex> {
        let inner = &*self.inner;
        let mut candidates: Vec<usize> = inner.everyone.clone();
        for key in [&agent.id, &agent.name] {
            if let Some(found) = inner.by_agent.get(key.as_str()) {
                candidates.extend_from_slice(found);
            }
        }
        for tag in &agent.tags {
            if let Some(found) = inner.by_tag.get(tag.as_str()) {
                candidates.extend_from_slice(found);
            }
        }
        if let Some(found) = inner.by_tier.get(tier_slot(agent.trust)) {
            candidates.extend_from_slice(found);
        }
        candidates.sort_unstable();
        candidates.dedup();
        let mut applicable = Vec::with_capacity(candidates.len());
        for position in candidates {
            let indexed = inner
                .policies
                .get(position)
                .ok_or(BrokenIndex::Policy(position))?;
            let in_scope = scope == Scope::Shadow || indexed.policy.mode == PolicyMode::Enforce;
            if in_scope && indexed.policy.applies(agent) {
                applicable.push(indexed);
            }
        }
        Ok(applicable)
    }
}

/// Which policies a decision is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The enforced policies: the decision the gateway answers.
    Enforced,
    /// The enforced policies with the shadow ones as if they were enforced: the decision a
    /// shadow rollout would bring.
    Shadow,
}

fn tier_slot(tier: TrustTier) -> usize {
    tier.slot()
}

fn push_unique(list: &mut Vec<usize>, position: usize) {
    if list.last() != Some(&position) {
        list.push(position);
    }
}
