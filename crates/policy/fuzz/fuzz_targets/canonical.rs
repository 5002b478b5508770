//! The canonical form of SPEC 3 on any action and resource: never a panic; canonicalising a
//! canonical text changes nothing; and a request decides exactly as its canonical form does
//! (against the example policies and a deny-everything-named policy), so no spelling can get a
//! different answer from the one its canonical form gets.
#![no_main]

use std::sync::LazyLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use meshguard_policy::{
    AgentProfile, CheckRequest, Decision, PolicySet, TrustTier, Unlimited, canonical_action,
    canonical_resource,
};

/// The example policies plus one that denies, ignoring case, what the examples allow.
static SET: LazyLock<Option<PolicySet>> = LazyLock::new(|| {
    PolicySet::from_sources([
        (
            "autogpt.yaml",
            include_str!("../../../../examples/policies/autogpt.yaml"),
        ),
        (
            "autogpt-production.yaml",
            include_str!("../../../../examples/policies/autogpt-production.yaml"),
        ),
        (
            "denies.yaml",
            "name: denies\nversion: \"1\"\nappliesTo: {tags: [autogpt]}\nrules:\n  - {effect: deny, actions: [\"write:workspace/secret/*\", \"read:/etc/*\", \"browse:https://evil.example/*\"]}\ndefaultEffect: allow\n",
        ),
    ])
    .ok()
});

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    action: &'a str,
    resource: &'a str,
    production: bool,
}

/// Everything a user sees of a decision except the reason, which quotes the action as received.
fn outcome(d: &Decision) -> impl PartialEq + std::fmt::Debug + '_ {
    (d.effect, d.code, &d.policy, &d.rule, &d.approval)
}

fuzz_target!(|input: Input<'_>| {
    let action = canonical_action(input.action);
    let resource = canonical_resource(input.resource);
    if let Ok(canonical) = &action {
        assert_eq!(canonical_action(canonical).as_deref(), Ok(&**canonical));
    }
    if let Ok(canonical) = &resource {
        assert_eq!(canonical_resource(canonical).as_deref(), Ok(&**canonical));
    }
    let Some(set) = SET.as_ref() else {
        return;
    };
    let mut tags = vec!["autogpt".to_owned()];
    if input.production {
        tags.push("production".to_owned());
    }
    let agent = AgentProfile {
        id: "agent_1".to_owned(),
        name: "dev".to_owned(),
        trust: TrustTier::Verified,
        tags: tags.into_iter().collect(),
    };
    let context = serde_json::Map::new();
    let decide = |action: &str, resource: &str| {
        set.decide(
            &agent,
            &CheckRequest {
                action,
                resource,
                context: &context,
                now: time::OffsetDateTime::now_utc(),
            },
            &mut Unlimited,
        )
    };
    let raw = decide(input.action, input.resource);
    if let (Ok(action), Ok(resource)) = (&action, &resource) {
        let canonical = decide(action, resource);
        assert_eq!(outcome(&raw), outcome(&canonical));
    } else {
        assert!(!raw.is_allowed(), "a text with no canonical form was allowed");
    }
});
