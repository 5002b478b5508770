//! Properties over generated policies and requests: no panics, deny overrides, and decisions
//! independent of load order, of pattern order, and of the rule index.

use meshguard_policy::{
    AgentProfile, ApprovalState, CheckRequest, Code, Decision, Effect, Fault, Policy, PolicySet,
    RuleEffect, TrustTier, Unlimited, canonical_action, canonical_resource, parse_policy,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

#[derive(Debug, Clone)]
struct GenRule {
    deny: bool,
    actions: Vec<String>,
    resource_pattern: Option<String>,
    sandbox: Option<bool>,
    /// An operator condition on `context.arguments.amount`: (`le` or `gt`, bound).
    amount: Option<(bool, u8)>,
}

#[derive(Debug, Clone)]
struct GenPolicy {
    name: String,
    tagged: bool,
    rules: Vec<GenRule>,
    default_allow: bool,
    approvals: Vec<String>,
}

fn pattern() -> impl Strategy<Value = String> {
    let verb = prop::sample::select(vec!["read", "write", "send", "x", "*", "r?ad", "re*"]);
    let object = prop::sample::select(vec!["*", "a", "a/*", "a/b", "?", "b*", "a/b/*", "*/b"]);
    (verb, object).prop_map(|(v, o)| {
        if v.ends_with('*') {
            v.to_owned()
        } else {
            format!("{v}:{o}")
        }
    })
}

fn rule() -> impl Strategy<Value = GenRule> {
    (
        any::<bool>(),
        prop::collection::vec(pattern(), 1..4),
        prop::option::of(prop::sample::select(vec!["a/*", "*.txt", "b"]).prop_map(str::to_owned)),
        prop::option::of(any::<bool>()),
        prop::option::of((any::<bool>(), prop::sample::select(vec![5u8, 7, 10]))),
    )
        .prop_map(
            |(deny, actions, resource_pattern, sandbox, amount)| GenRule {
                deny,
                actions,
                resource_pattern,
                sandbox,
                amount,
            },
        )
}

fn policies() -> impl Strategy<Value = Vec<GenPolicy>> {
    prop::collection::vec(
        (
            any::<bool>(),
            prop::collection::vec(rule(), 0..5),
            any::<bool>(),
            prop::collection::vec(pattern(), 0..2),
        ),
        1..5,
    )
    .prop_map(|items| {
        items
            .into_iter()
            .enumerate()
            .map(|(i, (tagged, rules, default_allow, approvals))| GenPolicy {
                name: format!("p{i}"),
                tagged,
                rules,
                default_allow,
                approvals,
            })
            .collect()
    })
}

fn quoted(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", inner.join(", "))
}

fn to_yaml(p: &GenPolicy) -> String {
    let mut out = format!("name: {}\nversion: \"1\"\n", p.name);
    if p.tagged {
        out.push_str("appliesTo: {tags: [t]}\n");
    }
    out.push_str(&format!(
        "defaultEffect: {}\n",
        if p.default_allow { "allow" } else { "deny" }
    ));
    if !p.approvals.is_empty() {
        out.push_str(&format!(
            "humanInTheLoop: {{requireApproval: {}}}\n",
            quoted(&p.approvals)
        ));
    }
    out.push_str("rules:\n");
    if p.rules.is_empty() {
        out.push_str("  []\n");
    }
    for r in &p.rules {
        out.push_str(&format!(
            "  - effect: {}\n    actions: {}\n",
            if r.deny { "deny" } else { "allow" },
            quoted(&r.actions)
        ));
        if r.resource_pattern.is_some() || r.sandbox.is_some() || r.amount.is_some() {
            out.push_str("    conditions:\n");
            if let Some((le, bound)) = r.amount {
                let op = if le { "le" } else { "gt" };
                out.push_str(&format!(
                    "      context: {{arguments.amount: {{{op}: {bound}}}}}\n"
                ));
            }
            if let Some(rp) = &r.resource_pattern {
                out.push_str(&format!("      resourcePattern: \"{rp}\"\n"));
            }
            if let Some(sb) = r.sandbox {
                out.push_str(&format!("      sandbox: {sb}\n"));
            }
        }
    }
    out
}

fn build(policies: &[GenPolicy]) -> PolicySet {
    let parsed: Vec<Policy> = policies
        .iter()
        .map(|p| {
            parse_policy(&format!("{}.yaml", p.name), &to_yaml(p))
                .unwrap_or_else(|e| panic!("{e}\n{}", to_yaml(p)))
        })
        .collect();
    PolicySet::new(parsed).unwrap()
}

fn request_parts() -> impl Strategy<Value = (String, String, bool)> {
    let verb = prop::sample::select(vec!["read", "write", "send", "x", "rxad", "ping"]);
    let object = prop::sample::select(vec![
        "a", "a/b", "a/../b", "b", "ab", "", "a/./b/c", "../x", "?",
    ]);
    let resource = prop::sample::select(vec!["*", "a", "a/b", "../x", "b.txt", "a/x.txt", "/abs"]);
    (verb, object, resource, any::<bool>()).prop_map(|(v, o, r, sandbox)| {
        let action = if v == "ping" {
            v.to_owned()
        } else {
            format!("{v}:{o}")
        };
        (action, r.to_owned(), sandbox)
    })
}

fn agent(tagged: bool) -> AgentProfile {
    AgentProfile {
        id: "agent_1".into(),
        name: "dev".into(),
        trust: TrustTier::Verified,
        tags: if tagged {
            ["t".to_owned()].into()
        } else {
            Default::default()
        },
    }
}

/// The context of a generated request: the sandbox flag, and an amount that is a number in a
/// sandbox and a string (which no number test matches) outside one.
fn context(sandbox: bool) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("sandbox".into(), Value::Bool(sandbox));
    let amount = if sandbox {
        Value::from(7)
    } else {
        Value::from("7")
    };
    map.insert("arguments".into(), serde_json::json!({ "amount": amount }));
    map
}

fn decide(
    set: &PolicySet,
    agent: &AgentProfile,
    action: &str,
    resource: &str,
    ctx: &Map<String, Value>,
) -> Decision {
    set.decide(
        agent,
        &CheckRequest {
            action,
            resource,
            context: ctx,
            now: time::OffsetDateTime::now_utc(),
        },
        &mut Unlimited,
    )
}

/// SPEC 3 steps computed from `explain`'s linear scan of every rule: checks the rule index.
fn reference(
    set: &PolicySet,
    agent: &AgentProfile,
    action: &str,
    resource: &str,
    ctx: &Map<String, Value>,
) -> (Code, Option<String>, Option<String>) {
    let explanation = set.explain(
        agent,
        &CheckRequest {
            action,
            resource,
            context: ctx,
            now: time::OffsetDateTime::now_utc(),
        },
        &mut Unlimited,
    );
    if explanation.normalised_action.is_none() {
        // Only a `..` escaping its root is `invalid_resource` when the action is at fault.
        let code = match canonical_action(action) {
            Err(refusal) if refusal.fault != Fault::EscapesRoot => Code::InvalidAction,
            _ => Code::InvalidResource,
        };
        return (code, None, None);
    }
    let applicable: Vec<_> = explanation.policies.iter().filter(|p| p.applies).collect();
    if applicable.is_empty() {
        return (Code::NoPolicy, None, None);
    }
    let first = |effect: RuleEffect| {
        applicable
            .iter()
            .find(|p| !p.verdict_is_default && p.verdict == effect)
    };
    if let Some(p) = first(RuleEffect::Deny) {
        return (
            Code::DeniedByRule,
            Some(p.policy.clone()),
            p.verdict_rule.clone(),
        );
    }
    if let Some(p) = applicable.iter().find(|p| p.approval_pattern.is_some()) {
        return (Code::ApprovalRequired, Some(p.policy.clone()), None);
    }
    if let Some(p) = first(RuleEffect::Allow) {
        return (
            Code::Allowed,
            Some(p.policy.clone()),
            p.verdict_rule.clone(),
        );
    }
    let set_policies: Vec<_> = set.policies().filter(|p| p.applies(agent)).collect();
    match set_policies
        .iter()
        .find(|p| p.default_effect() == RuleEffect::Deny)
    {
        Some(p) => (Code::DefaultDeny, Some(p.name().to_owned()), None),
        None => (Code::Allowed, Some(applicable[0].policy.clone()), None),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_arbitrary_requests(
        action in "\\PC{0,40}",
        resource in "[a-z./*:?\\\\]{0,20}|\\PC{0,20}",
        key in "[a-z]{0,6}",
        value in prop_oneof![any::<bool>().prop_map(Value::Bool), any::<i64>().prop_map(Value::from), "\\PC{0,8}".prop_map(Value::String)],
    ) {
        let text = [
            include_str!("../../../../examples/policies/autogpt.yaml"),
            include_str!("../../../../examples/policies/autogpt-production.yaml"),
        ];
        let set = PolicySet::from_sources([("a.yaml", text[0]), ("b.yaml", text[1])]).unwrap();
        let mut ctx = Map::new();
        ctx.insert(key, value);
        let agent = AgentProfile { id: "agent_x".into(), name: "x".into(), trust: TrustTier::Trusted, tags: ["autogpt".to_owned(), "production".to_owned()].into() };
        let request = CheckRequest { action: &action, resource: &resource, context: &ctx, now: time::OffsetDateTime::now_utc() };
        let decision = set.decide(&agent, &request, &mut Unlimited);
        let explained = set.explain(&agent, &request, &mut Unlimited);
        prop_assert_eq!(&explained.decision, &decision);
        let _ = set.permissions(&agent);
        let after = decision.clone().with_approval(ApprovalState::Approved { id: "x".into() });
        prop_assert!(decision.code == Code::ApprovalRequired || after == decision);
    }

    #[test]
    fn arbitrary_policy_text_never_panics(text in "\\PC{0,200}") {
        let _ = parse_policy("fuzz.yaml", &text);
    }

    #[test]
    fn index_agrees_with_a_linear_scan(generated in policies(), (action, resource, sandbox) in request_parts(), tagged in any::<bool>()) {
        let set = build(&generated);
        let agent = agent(tagged);
        let ctx = context(sandbox);
        let decision = decide(&set, &agent, &action, &resource, &ctx);
        prop_assert_eq!(
            (decision.code, decision.policy.clone(), decision.rule.clone()),
            reference(&set, &agent, &action, &resource, &ctx)
        );
    }

    #[test]
    fn a_first_matching_deny_wins_whatever_other_policies_say(
        generated in policies(),
        (action, resource, sandbox) in request_parts(),
        deny_name in prop::sample::select(vec!["a-deny", "p2a", "zz-deny"]),
    ) {
        let set_without = build(&generated);
        let agent = agent(true);
        let ctx = context(sandbox);
        // A policy whose first rule denies exactly this action.
        let verb = action.split(':').next().unwrap_or("").to_owned();
        let deny = GenPolicy {
            name: deny_name.to_owned(),
            tagged: false,
            rules: vec![
                GenRule { deny: true, actions: vec![format!("{verb}:*"), verb.clone()], resource_pattern: None, sandbox: None, amount: None },
                GenRule { deny: false, actions: vec!["*".into()], resource_pattern: None, sandbox: None, amount: None },
            ],
            default_allow: true,
            approvals: vec!["*".into()],
        };
        let mut with = generated.clone();
        with.push(deny);
        let decision = decide(&build(&with), &agent, &action, &resource, &ctx);
        prop_assert_eq!(decision.effect(), Effect::Deny);
        let without = decide(&set_without, &agent, &action, &resource, &ctx);
        if !matches!(without.code, Code::InvalidResource | Code::InvalidAction) {
            prop_assert_eq!(decision.code, Code::DeniedByRule);
        }
    }

    #[test]
    fn decision_independent_of_load_order(
        (generated, shuffled) in policies().prop_flat_map(|g| (Just(g.clone()), Just(g).prop_shuffle())),
        (action, resource, sandbox) in request_parts(),
        tagged in any::<bool>(),
    ) {
        let agent = agent(tagged);
        let ctx = context(sandbox);
        let a = decide(&build(&generated), &agent, &action, &resource, &ctx);
        let b = decide(&build(&shuffled), &agent, &action, &resource, &ctx);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn decision_independent_of_pattern_order_within_a_rule(
        generated in policies(),
        (action, resource, sandbox) in request_parts(),
        tagged in any::<bool>(),
    ) {
        let mut reversed = generated.clone();
        for policy in &mut reversed {
            for rule in &mut policy.rules {
                rule.actions.reverse();
                rule.actions.rotate_left(1);
            }
        }
        let agent = agent(tagged);
        let ctx = context(sandbox);
        let a = decide(&build(&generated), &agent, &action, &resource, &ctx);
        let b = decide(&build(&reversed), &agent, &action, &resource, &ctx);
        prop_assert_eq!(a, b);
    }
}

/// One way of spelling a canonical path differently; indexes wrap around the parts.
#[derive(Debug, Clone)]
enum Respelling {
    /// Upper-case one part.
    Upper(usize),
    /// Percent-encode the first character of one part (upper- or lower-case hex).
    Encode(usize, bool),
    /// Insert an empty part after the first (a doubled `/`).
    DoubleSlash(usize),
    /// Insert a `.` part.
    Dot(usize),
    /// Insert `detour` and a fullwidth or two-dot-leader `..` after it.
    Detour(usize, bool),
    /// Append an empty part (a trailing `/`).
    TrailingSlash,
}

fn respelling() -> impl Strategy<Value = Respelling> {
    prop_oneof![
        (0..8usize).prop_map(Respelling::Upper),
        (0..8usize, any::<bool>()).prop_map(|(i, upper)| Respelling::Encode(i, upper)),
        (0..8usize).prop_map(Respelling::DoubleSlash),
        (0..8usize).prop_map(Respelling::Dot),
        (0..8usize, any::<bool>()).prop_map(|(i, fullwidth)| Respelling::Detour(i, fullwidth)),
        Just(Respelling::TrailingSlash),
    ]
}

fn respell(parts: &[String], respellings: &[Respelling]) -> String {
    let mut parts = parts.to_vec();
    for respelling in respellings {
        let at = |i: usize| i % parts.len();
        match respelling {
            Respelling::Upper(i) => {
                let i = at(*i);
                parts[i] = parts[i].to_uppercase();
            }
            Respelling::Encode(i, upper) => {
                let i = at(*i);
                if let Some(c) = parts[i].chars().next() {
                    let mut bytes = [0; 4];
                    let encoded: String = c
                        .encode_utf8(&mut bytes)
                        .bytes()
                        .map(|b| {
                            if *upper {
                                format!("%{b:02X}")
                            } else {
                                format!("%{b:02x}")
                            }
                        })
                        .collect();
                    parts[i] = format!("{encoded}{}", &parts[i][c.len_utf8()..]);
                }
            }
            // Not in front: a leading `/` roots the path, which makes it another path.
            Respelling::DoubleSlash(i) => parts.insert(1 + at(*i), String::new()),
            Respelling::Dot(i) => parts.insert(at(*i), ".".to_owned()),
            Respelling::Detour(i, fullwidth) => {
                let i = at(*i);
                let dots = if *fullwidth {
                    "\u{ff0e}\u{ff0e}"
                } else {
                    "\u{2025}"
                };
                parts.insert(i, dots.to_owned());
                parts.insert(i, "detour".to_owned());
            }
            Respelling::TrailingSlash => parts.push(String::new()),
        }
    }
    parts.join("/")
}

fn canonical_path_parts() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("[a-z][a-z0-9_-]{0,5}", 1..4)
}

/// What a user sees of a decision, without the reason (which quotes the action as received).
fn outcome(d: &Decision) -> (Effect, Code, Option<String>, Option<String>) {
    (d.effect(), d.code, d.policy.clone(), d.rule.clone())
}

fn deny_then_allow_everything(deny: &str) -> PolicySet {
    let text = format!(
        "name: p\nversion: \"1\"\nrules:\n  - {{name: no, effect: deny, actions: [\"{deny}\"]}}\n  - {{name: yes, effect: allow, actions: [\"*\"]}}\ndefaultEffect: allow\n"
    );
    PolicySet::from_sources([("p.yaml", text.as_str())]).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever the spelling (case, doubled or trailing `/`, escapes, fullwidth dots, `./`),
    /// an action that a deny names exactly is never allowed, and neither is a resource under an
    /// object that a `/*` deny names.
    #[test]
    fn no_respelling_of_a_denied_action_is_allowed(
        verb in prop::sample::select(vec!["read", "write", "execute", "delete"]),
        parts in canonical_path_parts(),
        respellings in prop::collection::vec(respelling(), 1..5),
        upper_verb in any::<bool>(),
    ) {
        let agent = agent(false);
        let ctx = Map::new();
        let canonical = format!("{verb}:{}", parts.join("/"));
        let set = deny_then_allow_everything(&canonical);
        let written_verb = if upper_verb { verb.to_uppercase() } else { verb.to_owned() };
        let action = format!("{written_verb}:{}", respell(&parts, &respellings));
        let decision = decide(&set, &agent, &action, "*", &ctx);
        prop_assert_eq!(decision.effect(), Effect::Deny, "{:?} → {:?}", action, decision);

        // The same through the resource: deny `verb:first/*`, ask for `verb:first` + the rest.
        if let [first, rest @ ..] = parts.as_slice() && !rest.is_empty() {
            let set = deny_then_allow_everything(&format!("{verb}:{first}/*"));
            let resource = respell(rest, &respellings);
            let decision = decide(&set, &agent, &format!("{written_verb}:{first}"), &resource, &ctx);
            prop_assert_eq!(decision.effect(), Effect::Deny, "{:?} → {:?}", resource, decision);
        }
    }

    /// The canonical form of a canonical text is itself, and a text decides as its canonical form.
    #[test]
    fn the_canonical_form_is_idempotent_and_decides_alike(
        action in "[a-zA-Z]{0,3}:?[a-zA-Z./%2eEfF5cC\\\\ ]{0,12}|\\PC{0,16}",
        resource in "[a-zA-Z./%2eEfF5cC\\\\ :]{0,12}|\\PC{0,16}|\\*",
        generated in policies(),
    ) {
        if let Ok(canonical) = canonical_action(&action) {
            prop_assert_eq!(canonical_action(&canonical).unwrap(), canonical.clone());
        }
        if let Ok(canonical) = canonical_resource(&resource) {
            prop_assert_eq!(canonical_resource(&canonical).unwrap(), canonical.clone());
        }
        if let (Ok(a), Ok(r)) = (canonical_action(&action), canonical_resource(&resource)) {
            let set = build(&generated);
            let agent = agent(true);
            let ctx = Map::new();
            prop_assert_eq!(
                outcome(&decide(&set, &agent, &action, &resource, &ctx)),
                outcome(&decide(&set, &agent, &a, &r, &ctx))
            );
        }
    }
}
