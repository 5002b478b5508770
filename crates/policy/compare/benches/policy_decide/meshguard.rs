//! The MeshGuard side: `meshguard-policy` exactly as the gateway calls it, with the `Unlimited`
//! oracle because Cedar and Rego decisions carry no rate limits.

use meshguard_policy::{
    AgentProfile, CheckRequest, Code, PolicySet, TrustTier, Unlimited, parse_policy,
};

use crate::workload::{Agent, Verdict};

/// Parses and indexes `(origin, yaml)` documents into one policy set.
pub fn policy_set(documents: &[(String, String)]) -> PolicySet {
    let policies = documents
        .iter()
        .map(|(origin, text)| {
            parse_policy(origin, text).unwrap_or_else(|e| panic!("{origin} does not parse: {e}"))
        })
        .collect();
    PolicySet::new(policies).expect("policy names are unique")
}

pub fn agent(agent: &Agent) -> AgentProfile {
    AgentProfile {
        id: agent.id.to_owned(),
        name: agent.id.to_owned(),
        trust: match agent.trust {
            0 => TrustTier::Unverified,
            1 => TrustTier::Verified,
            2 => TrustTier::Trusted,
            _ => TrustTier::Privileged,
        },
        tags: agent.tags.clone(),
    }
}

/// One check, reduced to the answer the other engines can express.
pub fn decide(
    set: &PolicySet,
    agent: &AgentProfile,
    action: &str,
    resource: &str,
    context: &serde_json::Map<String, serde_json::Value>,
    now: time::OffsetDateTime,
) -> Verdict {
    let request = CheckRequest {
        action,
        resource,
        context,
        now,
    };
    let decision = set.decide(agent, &request, &mut Unlimited);
    let named = |s: Option<String>| s.unwrap_or_default();
    match decision.code {
        Code::Allowed => Verdict::Allow {
            policy: named(decision.policy),
            rule: named(decision.rule),
        },
        Code::DeniedByRule => Verdict::Deny {
            policy: named(decision.policy),
            rule: named(decision.rule),
        },
        Code::ApprovalRequired => Verdict::RequireApproval {
            policy: named(decision.policy),
        },
        Code::DefaultDeny | Code::NoPolicy => Verdict::DenyWithoutRule,
        other => Verdict::Other(other.as_str().to_owned()),
    }
}
