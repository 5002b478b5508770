//! Any bytes given to `parse_policy` must give a policy or a positioned error, never a panic or a
//! hang; whatever parses must also survive being indexed, linted, serialised and consulted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshguard_policy::{
    AgentProfile, CheckRequest, PolicySet, TrustTier, Unlimited, lint, parse_policy,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let policy = match parse_policy("fuzz.yaml", text) {
        Ok(policy) => policy,
        Err(error) => {
            // Rendering the message slices the source around the position: it must not panic.
            let _ = error.to_string();
            return;
        }
    };
    let _ = serde_json::to_string(&policy);
    for warning in lint(std::slice::from_ref(&policy), None) {
        let _ = warning.to_string();
    }
    let Ok(set) = PolicySet::new(vec![policy]) else {
        return;
    };
    let agent = AgentProfile {
        id: "agent_fuzz".to_owned(),
        name: "fuzz".to_owned(),
        trust: TrustTier::Verified,
        tags: ["autogpt".to_owned()].into(),
    };
    let context = serde_json::Map::new();
    for (action, resource) in [("read:workspace", "notes.txt"), ("execute:shell", "*")] {
        let request = CheckRequest {
            action,
            resource,
            context: &context,
            now: time::OffsetDateTime::now_utc(),
        };
        let _ = set.decide(&agent, &request, &mut Unlimited);
    }
    let _ = serde_json::to_string(&set.permissions(&agent));
});
