//! SPEC 3 decision semantics, table-driven: `tests/cases/*.yaml` in the conformance format,
//! plus what a table cannot say (oracles, approvals, explanations, permissions).

use std::path::Path;

use meshguard_policy::corpus::Corpus;

#[test]
fn semantics_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/semantics.yaml");
    let corpus = Corpus::parse("semantics.yaml", &std::fs::read_to_string(path).unwrap()).unwrap();
    let outcomes = corpus
        .run_offline(time::OffsetDateTime::now_utc(), &mut |name| {
            Err(format!("no file `{name}` expected"))
        })
        .unwrap();
    assert!(outcomes.len() >= 80, "{}", outcomes.len());
    let failures: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.passed)
        .map(ToString::to_string)
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

use meshguard_policy::{
    Admission, AgentProfile, ApprovalState, CheckRequest, Code, Effect, LimitCharge, LimitKey,
    PolicySet, RateLimitOracle, RuleOutcome, TrustTier, Unlimited, Window,
};
use serde_json::{Map, Value, json};

/// Records every call and answers with a scripted admission.
struct ScriptedOracle {
    calls: Vec<Vec<LimitCharge>>,
    answer: Admission,
}

impl RateLimitOracle for ScriptedOracle {
    fn admit(&mut self, charges: &[LimitCharge]) -> Admission {
        self.calls.push(charges.to_vec());
        self.answer
    }
}

fn agent(name: &str, trust: TrustTier, tags: &[&str]) -> AgentProfile {
    AgentProfile {
        id: format!("agent_{name}"),
        name: name.to_owned(),
        trust,
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
    }
}

fn set(sources: &[&str]) -> PolicySet {
    PolicySet::from_sources(sources.iter().enumerate().map(|(i, text)| {
        let origin: &'static str = Box::leak(format!("p{i}.yaml").into_boxed_str());
        (origin, *text)
    }))
    .unwrap()
}

const LIMITED: &str = r#"
name: limited
version: "1"
rateLimits: {requestsPerMinute: 30, requestsPerHour: 500}
rules:
  - {name: api, effect: allow, actions: ["api:*"], conditions: {rateLimit: {requestsPerMinute: 5}}}
  - {name: shell, effect: deny, actions: ["execute:shell"], reason: "no shell access"}
"#;

const OTHER: &str = r#"
name: other
version: "1"
rateLimits: {requestsPerHour: 100}
defaultEffect: allow
"#;

fn check<'a>(
    action: &'a str,
    resource: &'a str,
    context: &'a Map<String, Value>,
) -> CheckRequest<'a> {
    CheckRequest {
        action,
        resource,
        context,
        now: time::OffsetDateTime::now_utc(),
    }
}

#[test]
fn oracle_gets_every_applicable_limit_in_one_call() {
    let set = set(&[OTHER, LIMITED]);
    let dev = agent("dev", TrustTier::Verified, &[]);
    let ctx = Map::new();
    let mut oracle = ScriptedOracle {
        calls: Vec::new(),
        answer: Admission::Admitted,
    };
    let decision = set.decide(&dev, &check("api:x", "*", &ctx), &mut oracle);
    assert_eq!(decision.code, Code::Allowed);
    assert_eq!(
        decision.reason,
        "Action 'api:x' allowed by rule 'api' of policy 'limited'"
    );
    assert_eq!(oracle.calls.len(), 1);
    let keys: Vec<(LimitKey, u64, Window)> = oracle.calls[0]
        .iter()
        .map(|c| (c.key.clone(), c.max, c.window))
        .collect();
    let key = LimitKey::requests;
    assert_eq!(
        keys,
        vec![
            (key("limited", None), 30, Window::Minute),
            (key("limited", None), 500, Window::Hour),
            (key("limited", Some("api")), 5, Window::Minute),
            (key("other", None), 100, Window::Hour),
        ]
    );
}

#[test]
fn exhausted_limit_reports_its_policy_rule_and_retry() {
    let set = set(&[OTHER, LIMITED]);
    let dev = agent("dev", TrustTier::Verified, &[]);
    let ctx = Map::new();
    let mut oracle = ScriptedOracle {
        calls: Vec::new(),
        answer: Admission::Exhausted {
            charge: 2,
            used: 0,
            retry_after_secs: Some(17),
        },
    };
    let decision = set.decide(&dev, &check("api:x", "*", &ctx), &mut oracle);
    assert_eq!(decision.effect(), Effect::Deny);
    assert_eq!(decision.code, Code::RateLimited);
    assert_eq!(decision.policy.as_deref(), Some("limited"));
    assert_eq!(decision.rule.as_deref(), Some("api"));
    assert_eq!(decision.retry_after_secs, Some(17));
    assert!(
        decision.reason.contains("rate limit"),
        "{}",
        decision.reason
    );

    // An explicit deny still wins over an exhausted limit, and its reason carries the rule's text.
    let denied = set.decide(&dev, &check("execute:shell", "ls", &ctx), &mut oracle);
    assert_eq!(denied.code, Code::DeniedByRule);
    assert_eq!(denied.retry_after_secs, None);
    assert_eq!(
        denied.reason,
        "Action 'execute:shell' denied by rule 'shell' of policy 'limited': no shell access"
    );
}

#[test]
fn explanation_shows_the_charges_and_the_answer() {
    let set = set(&[OTHER, LIMITED]);
    let dev = agent("dev", TrustTier::Verified, &[]);
    let ctx = Map::new();
    let mut oracle = ScriptedOracle {
        calls: Vec::new(),
        answer: Admission::Exhausted {
            charge: 0,
            used: 0,
            retry_after_secs: Some(3),
        },
    };
    let explanation = set.explain(&dev, &check("web:x", "*", &ctx), &mut oracle);
    assert_eq!(
        oracle.calls.len(),
        1,
        "explain asks the oracle exactly once, like decide"
    );
    assert_eq!(explanation.charges, oracle.calls[0]);
    assert_eq!(explanation.admission, Some(oracle.answer));
    assert_eq!(explanation.decision.code, Code::RateLimited);
    let json = serde_json::to_value(&explanation).unwrap();
    assert_eq!(json["charges"][0]["key"]["policy"], "limited");
    assert_eq!(json["admission"]["result"], "exhausted");
    assert_eq!(json["admission"]["retry_after_secs"], 3);
}

#[test]
fn no_limits_means_no_oracle_call() {
    let set = set(&["name: free\nversion: \"1\"\ndefaultEffect: allow\n"]);
    let ctx = Map::new();
    let mut oracle = ScriptedOracle {
        calls: Vec::new(),
        answer: Admission::Exhausted {
            charge: 0,
            used: 0,
            retry_after_secs: Some(1),
        },
    };
    let decision = set.decide(
        &agent("a", TrustTier::Unverified, &[]),
        &check("x:y", "*", &ctx),
        &mut oracle,
    );
    assert_eq!(decision.code, Code::Allowed);
    assert!(oracle.calls.is_empty());
}

const APPROVALS: &str = r#"
name: approvals
version: "1"
appliesTo: {tags: [ap]}
humanInTheLoop: {requireApproval: ["send:*"], timeoutSeconds: 600}
"#;

const APPROVALS_SHORT: &str = r#"
name: approvals-short
version: "1"
appliesTo: {tags: [short]}
humanInTheLoop: {requireApproval: ["send:email/*"], timeoutSeconds: 120}
"#;

#[test]
fn approval_need_is_normalised_and_takes_the_smallest_timeout() {
    let set = set(&[APPROVALS, APPROVALS_SHORT]);
    let ctx = Map::new();
    let both = agent("both", TrustTier::Verified, &["ap", "short"]);
    let decision = set.decide(
        &both,
        &check("send:email/./x/..", "a/../bob@example.com", &ctx),
        &mut Unlimited,
    );
    assert_eq!(decision.code, Code::ApprovalRequired);
    assert_eq!(decision.effect(), Effect::RequireApproval);
    assert_eq!(decision.policy.as_deref(), Some("approvals"));
    let need = decision.approval.clone().unwrap();
    assert_eq!(need.action, "send:email");
    assert_eq!(need.resource, "bob@example.com");
    assert_eq!(need.timeout_secs, Some(120));

    let only = agent("only", TrustTier::Verified, &["ap"]);
    let single = set.decide(&only, &check("send:sms", "*", &ctx), &mut Unlimited);
    assert_eq!(single.approval.unwrap().timeout_secs, Some(600));
}

#[test]
fn approval_table() {
    let set = set(&[APPROVALS]);
    let ctx = Map::new();
    let ap = agent("ap", TrustTier::Verified, &["ap"]);
    let required = set.decide(&ap, &check("send:email", "bob", &ctx), &mut Unlimited);
    let id = || "appr_1".to_owned();

    let none = required.clone().with_approval(ApprovalState::None);
    assert_eq!(
        (none.effect(), none.code, none.approval_id.clone()),
        (Effect::RequireApproval, Code::ApprovalRequired, None)
    );

    let pending = required
        .clone()
        .with_approval(ApprovalState::Pending { id: id() });
    assert_eq!(
        (pending.effect(), pending.code),
        (Effect::RequireApproval, Code::ApprovalPending)
    );
    assert_eq!(pending.approval_id.as_deref(), Some("appr_1"));

    let approved = required
        .clone()
        .with_approval(ApprovalState::Approved { id: id() });
    assert_eq!(
        (approved.effect(), approved.code),
        (Effect::Allow, Code::AllowedWithApproval)
    );
    assert!(approved.is_allowed());
    assert_eq!(approved.policy.as_deref(), Some("approvals"));

    let denied = required.with_approval(ApprovalState::Denied { id: id() });
    assert_eq!(
        (denied.effect(), denied.code),
        (Effect::Deny, Code::ApprovalDenied)
    );
    assert!(denied.reason.contains("denied"), "{}", denied.reason);
    assert_eq!(denied.approval_id.as_deref(), Some("appr_1"));

    // Only an approval-required decision can change: an approval never lifts another denial.
    let other = set.decide(&ap, &check("read:x", "*", &ctx), &mut Unlimited);
    assert_eq!(other.code, Code::DefaultDeny);
    assert_eq!(
        other
            .clone()
            .with_approval(ApprovalState::Approved { id: id() }),
        other
    );
}

#[test]
fn explanation_names_every_policy_rule_and_condition() {
    let set = set(&[
        r#"
name: explained
version: "1"
appliesTo: {tags: [x]}
rules:
  - {name: docs, effect: allow, actions: ["read:*"], conditions: {resourcePattern: "docs/*"}}
  - {name: trusted, effect: allow, actions: ["read:*"], conditions: {minTrust: trusted}}
  - {name: sandboxed, effect: allow, actions: ["read:*"], conditions: {sandbox: true}}
  - {name: ctx, effect: allow, actions: ["read:*"], conditions: {context: {env: prod}}}
  - {name: other, effect: allow, actions: ["write:*"]}
  - {name: fallback, effect: deny, actions: ["read:*", "*"]}
  - {name: never, effect: allow, actions: ["read:*"]}
"#,
        "name: unrelated\nversion: \"1\"\nappliesTo: {tags: [y]}\n",
    ]);
    let ctx: Map<String, Value> = json!({"env": "dev"}).as_object().unwrap().clone();
    let x = agent("x", TrustTier::Verified, &["x"]);
    let explanation = set.explain(
        &x,
        &check("read:file", "notes/../a.txt", &ctx),
        &mut Unlimited,
    );
    assert_eq!(
        explanation.decision,
        set.decide(
            &x,
            &check("read:file", "notes/../a.txt", &ctx),
            &mut Unlimited
        )
    );
    assert_eq!(explanation.decision.rule.as_deref(), Some("fallback"));
    assert_eq!(explanation.normalised_resource.as_deref(), Some("a.txt"));
    let [explained, unrelated] = &explanation.policies[..] else {
        panic!()
    };
    assert!(explained.applies);
    assert!(!unrelated.applies);
    assert!(
        unrelated.applies_because.contains("tags"),
        "{}",
        unrelated.applies_because
    );
    let outcomes: Vec<(&str, &RuleOutcome)> = explained
        .rules
        .iter()
        .map(|r| (r.rule.as_str(), &r.outcome))
        .collect();
    let condition = |o: &RuleOutcome| match o {
        RuleOutcome::ConditionFailed { condition, .. } => condition.clone(),
        other => format!("{other:?}"),
    };
    assert_eq!(condition(outcomes[0].1), "resourcePattern");
    assert_eq!(condition(outcomes[1].1), "minTrust");
    assert_eq!(condition(outcomes[2].1), "sandbox");
    assert_eq!(condition(outcomes[3].1), "context");
    assert_eq!(*outcomes[4].1, RuleOutcome::NoActionMatch);
    assert_eq!(
        *outcomes[5].1,
        RuleOutcome::Matched {
            pattern: "read:*".to_owned()
        }
    );
    assert_eq!(
        outcomes.len(),
        6,
        "rules after the first match are not considered"
    );
    assert_eq!(explained.verdict_rule.as_deref(), Some("fallback"));
    let json = serde_json::to_value(&explanation).unwrap();
    assert_eq!(json["decision"]["code"], "denied_by_rule");
    assert_eq!(
        json["policies"][0]["rules"][0]["outcome"],
        "condition_failed"
    );
}

#[test]
fn permissions_show_the_combined_effect() {
    let autogpt = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/policies/autogpt-production.yaml"),
    )
    .unwrap();
    let set = set(&[&autogpt, OTHER]);
    let prod = agent("prod", TrustTier::Trusted, &["autogpt", "production"]);
    let permissions = set.permissions(&prod);
    assert_eq!(permissions.policies, vec!["autogpt-production", "other"]);
    assert_eq!(permissions.default_effect, Effect::Deny);
    let allowed: Vec<&str> = permissions
        .allowed
        .iter()
        .map(|p| p.pattern.as_str())
        .collect();
    assert_eq!(
        allowed,
        vec![
            "browse:web",
            "search:web",
            "read:workspace/*",
            "write:workspace/*",
            "execute:python"
        ]
    );
    assert!(
        permissions
            .denied
            .iter()
            .any(|p| p.pattern == "pay:*" && p.rule == "rule-4")
    );
    let approvals: Vec<&str> = permissions
        .approvals
        .iter()
        .map(|a| a.pattern.as_str())
        .collect();
    assert_eq!(approvals, vec!["send:email", "post:social", "pay:*"]);
    assert_eq!(
        permissions.rate_limits.len(),
        3,
        "{:?}",
        permissions.rate_limits
    );
    let json = serde_json::to_value(&permissions).unwrap();
    assert_eq!(
        json["allowed"][2]["conditions"]["resourcePattern"],
        json!(["workspace/*"])
    );

    let outsider = agent("outsider", TrustTier::Trusted, &[]);
    let open = set.permissions(&outsider);
    assert_eq!(open.policies, vec!["other"]);
    assert_eq!(open.default_effect, Effect::Allow);
}

#[test]
fn a_policy_without_timeout_lets_the_gateway_default_compete() {
    let no_timeout = "name: ask-default\nversion: \"1\"\nappliesTo: {tags: [d]}\nhumanInTheLoop: {requireApproval: [\"send:*\"]}\n";
    let long = "name: ask-long\nversion: \"1\"\nappliesTo: {tags: [l]}\nhumanInTheLoop: {requireApproval: [\"send:*\"], timeoutSeconds: 7200}\n";
    let set = set(&[no_timeout, long]);
    let ctx = Map::new();
    let need = |tags: &[&str]| {
        set.decide(
            &agent("x", TrustTier::Verified, tags),
            &check("send:sms", "*", &ctx),
            &mut Unlimited,
        )
        .approval
        .unwrap()
    };
    let both = need(&["d", "l"]);
    assert_eq!(
        (both.timeout_secs, both.default_timeout_applies),
        (Some(7200), true)
    );
    assert_eq!(both.timeout_or(3600), 3600);
    assert_eq!(both.timeout_or(9000), 7200);
    assert_eq!(need(&["l"]).timeout_or(3600), 7200);
    assert_eq!(need(&["d"]).timeout_or(3600), 3600);
}

#[test]
fn empty_set_and_escapes_fail_closed() {
    fn shared_across_threads<T: Send + Sync + Clone + 'static>(_: &T) {}
    let empty = PolicySet::empty();
    shared_across_threads(&empty);
    assert!(empty.is_empty());
    let ctx = Map::new();
    let dev = agent("dev", TrustTier::Privileged, &["autogpt"]);
    let decision = empty.decide(&dev, &check("read:x", "*", &ctx), &mut Unlimited);
    assert_eq!(
        (decision.effect(), decision.code),
        (Effect::Deny, Code::NoPolicy)
    );
    assert!(decision.reason.contains("denied"), "{}", decision.reason);
    assert_eq!(empty.permissions(&dev).default_effect, Effect::Deny);

    let set = set(&[OTHER]);
    let explanation = set.explain(
        &dev,
        &check("read:x", "../../etc/passwd", &ctx),
        &mut Unlimited,
    );
    assert_eq!(explanation.decision.code, Code::InvalidResource);
    assert!(explanation.decision.reason.contains("denied"));
    assert_eq!(explanation.normalised_resource, None);
    assert!(explanation.policies.is_empty());
}
