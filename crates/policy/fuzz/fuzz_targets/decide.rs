//! Any agent, action, resource and context checked against the example policies (plus, when the
//! input carries one that parses, a fuzzed policy) must give a decision, never a panic; so must
//! `explain`, `permissions` and the approval table, under any rate-limit answers.
#![no_main]

use std::sync::LazyLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use meshguard_policy::{
    Admission, AgentProfile, ApprovalState, CheckRequest, LimitCharge, Policy, PolicySet,
    RateLimitOracle, TrustTier, parse_policy,
};

/// The policies users start from, parsed once.
static EXAMPLES: LazyLock<Vec<Policy>> = LazyLock::new(|| {
    [
        (
            "autogpt.yaml",
            include_str!("../../../../examples/policies/autogpt.yaml"),
        ),
        (
            "autogpt-production.yaml",
            include_str!("../../../../examples/policies/autogpt-production.yaml"),
        ),
    ]
    .into_iter()
    .filter_map(|(origin, text)| parse_policy(origin, text).ok())
    .collect()
});

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    extra_policy: Option<&'a str>,
    trust: u8,
    tags: Vec<&'a str>,
    agent_name: &'a str,
    action: &'a str,
    resource: &'a str,
    context: Vec<(&'a str, ContextValue<'a>)>,
    limits: Vec<LimitAnswer>,
    approval: Approval<'a>,
}

#[derive(Arbitrary, Debug)]
enum ContextValue<'a> {
    Null,
    Bool(bool),
    Number(i64),
    Text(&'a str),
    List(Vec<&'a str>),
}

impl From<ContextValue<'_>> for serde_json::Value {
    fn from(value: ContextValue<'_>) -> Self {
        match value {
            ContextValue::Null => serde_json::Value::Null,
            ContextValue::Bool(b) => serde_json::Value::Bool(b),
            ContextValue::Number(n) => n.into(),
            ContextValue::Text(s) => s.into(),
            ContextValue::List(items) => items.into(),
        }
    }
}

/// What the rate-limit oracle answers on each successive call.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum LimitAnswer {
    Admit,
    Exhaust { charge: u8, retry_after_secs: u64 },
}

#[derive(Arbitrary, Debug)]
enum Approval<'a> {
    None,
    Pending(&'a str),
    Approved(&'a str),
    Denied(&'a str),
}

/// An oracle that replays fuzzed answers, always naming one of the charges it was given.
struct ScriptedLimits {
    answers: Vec<LimitAnswer>,
    calls: usize,
}

impl RateLimitOracle for ScriptedLimits {
    fn admit(&mut self, charges: &[LimitCharge]) -> Admission {
        let answer = self
            .answers
            .get(self.calls)
            .copied()
            .unwrap_or(LimitAnswer::Admit);
        self.calls += 1;
        match answer {
            LimitAnswer::Exhaust {
                charge,
                retry_after_secs,
            } if !charges.is_empty() => Admission::Exhausted {
                charge: usize::from(charge) % charges.len(),
                retry_after_secs,
            },
            _ => Admission::Admitted,
        }
    }
}

fuzz_target!(|input: Input<'_>| {
    let mut policies = EXAMPLES.clone();
    if let Some(text) = input.extra_policy
        && let Ok(policy) = parse_policy("extra.yaml", text)
    {
        policies.push(policy);
    }
    let Ok(set) = PolicySet::new(policies) else {
        return;
    };
    let agent = AgentProfile {
        id: format!("agent_{}", input.agent_name),
        name: input.agent_name.to_owned(),
        trust: match input.trust % 4 {
            0 => TrustTier::Unverified,
            1 => TrustTier::Verified,
            2 => TrustTier::Trusted,
            _ => TrustTier::Privileged,
        },
        tags: input.tags.iter().map(|t| (*t).to_owned()).collect(),
    };
    let context: serde_json::Map<String, serde_json::Value> = input
        .context
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into()))
        .collect();
    let request = CheckRequest {
        action: input.action,
        resource: input.resource,
        context: &context,
        now: time::OffsetDateTime::now_utc(),
    };
    let mut limits = ScriptedLimits {
        answers: input.limits,
        calls: 0,
    };
    let decision = set.decide(&agent, &request, &mut limits);
    let state = match input.approval {
        Approval::None => ApprovalState::None,
        Approval::Pending(id) => ApprovalState::Pending { id: id.to_owned() },
        Approval::Approved(id) => ApprovalState::Approved { id: id.to_owned() },
        Approval::Denied(id) => ApprovalState::Denied { id: id.to_owned() },
    };
    let _ = serde_json::to_string(&decision.with_approval(state));
    limits.calls = 0;
    let _ = serde_json::to_string(&set.explain(&agent, &request, &mut limits));
    let _ = serde_json::to_string(&set.permissions(&agent));
});
