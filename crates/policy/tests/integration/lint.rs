//! Lint warnings a user of `meshguard policy validate` would see.

use std::path::Path;

use meshguard_policy::{
    AgentProfile, LintKind, LintWarning, Policy, TrustTier, lint, parse_policy,
};

fn example(name: &str) -> Policy {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/policies")
        .join(name);
    parse_policy(name, &std::fs::read_to_string(path).unwrap()).unwrap()
}

fn policy(origin: &str, text: &str) -> Policy {
    parse_policy(origin, text).unwrap_or_else(|e| panic!("{e}"))
}

fn of_kind(warnings: &[LintWarning], kind: LintKind) -> Vec<String> {
    warnings
        .iter()
        .filter(|w| w.kind == kind)
        .map(ToString::to_string)
        .collect()
}

#[test]
fn production_example_has_two_unreachable_approvals() {
    let warnings = lint(&[example("autogpt-production.yaml")], None);
    assert_eq!(
        of_kind(&warnings, LintKind::UnreachableApproval),
        vec![
            "autogpt-production.yaml:68:7: warning: requireApproval entry `send:email` is unreachable: rule 'rule-4' of policy 'autogpt-production' (line 39) denies it, and an explicit deny always wins",
            "autogpt-production.yaml:70:7: warning: requireApproval entry `pay:*` is unreachable: rule 'rule-4' of policy 'autogpt-production' (line 39) denies it, and an explicit deny always wins",
        ]
    );
    // `post:social` is reachable: nothing denies it.
    assert!(!warnings.iter().any(|w| w.message.contains("post:social")));
}

#[test]
fn approval_behind_an_earlier_allow_is_reachable() {
    let p = policy(
        "mail.yaml",
        r#"
name: mail
version: "1"
appliesTo: {tags: [a]}
rules:
  - {effect: allow, actions: ["send:email"], conditions: {resourcePattern: "*@example.com"}}
  - {effect: deny, actions: ["send:*"]}
humanInTheLoop: {requireApproval: ["send:email"]}
"#,
    );
    assert!(of_kind(&lint(&[p], None), LintKind::UnreachableApproval).is_empty());
}

#[test]
fn deny_in_a_global_policy_makes_approval_unreachable() {
    let asks = policy(
        "asks.yaml",
        "name: asks\nversion: \"1\"\nappliesTo: {tags: [a]}\nhumanInTheLoop: {requireApproval: [\"pay:*\"]}\n",
    );
    let global = policy(
        "global.yaml",
        "name: global\nversion: \"1\"\nrules:\n  - {name: no-pay, effect: deny, actions: [\"*\"]}\n",
    );
    let warnings = lint(&[asks, global], None);
    let unreachable = of_kind(&warnings, LintKind::UnreachableApproval);
    assert_eq!(unreachable.len(), 1, "{warnings:#?}");
    assert!(
        unreachable[0].starts_with("asks.yaml:4:36: warning:"),
        "{}",
        unreachable[0]
    );
    assert!(unreachable[0].contains("rule 'no-pay' of policy 'global'"));
}

#[test]
fn shadowed_rules_and_patterns() {
    let p = policy(
        "shadow.yaml",
        r#"
name: shadow
version: "1"
appliesTo: {tags: [a]}
rules:
  - {name: reads, effect: allow, actions: ["read:*"]}
  - {name: docs, effect: deny, actions: ["read:docs/*", "read:?"]}
  - {name: mixed, effect: deny, actions: ["read:x", "write:x"]}
  - {name: narrow, effect: allow, actions: ["exec:*"], conditions: {sandbox: true}}
  - {name: wider, effect: allow, actions: ["exec:python"]}
  - {name: same-cond, effect: deny, actions: ["exec:lua"], conditions: {sandbox: true, minTrust: trusted}}
"#,
    );
    let warnings = lint(&[p], None);
    assert_eq!(
        of_kind(&warnings, LintKind::ShadowedRule),
        vec![
            "shadow.yaml:7:5: warning: rule 'docs' can never match: rule 'reads' (line 6) comes first and matches everything it does",
            "shadow.yaml:11:5: warning: rule 'same-cond' can never match: rule 'narrow' (line 9) comes first and matches everything it does",
        ]
    );
    assert_eq!(
        of_kind(&warnings, LintKind::ShadowedPattern),
        vec![
            "shadow.yaml:8:43: warning: pattern `read:x` of rule 'mixed' never decides: rule 'reads' (line 6) comes first and matches it",
        ]
    );
}

#[test]
fn unmatchable_resource_pattern() {
    let p = policy(
        "dots.yaml",
        r#"
name: dots
version: "1"
appliesTo: {tags: [a]}
rules:
  - effect: allow
    actions: ["read:*"]
    conditions: {resourcePattern: ["docs/*", "docs/../secret", "./x*"]}
"#,
    );
    let found = of_kind(&lint(&[p], None), LintKind::UnmatchablePattern);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].starts_with("dots.yaml:8:46: warning: resourcePattern `docs/../secret`"));
    assert!(found[1].contains("`./x*`"));
}

#[test]
fn missing_applies_to_and_bare_number_version() {
    let p = policy(
        "open.yaml",
        "name: open\nversion: 1.10\ndefaultEffect: allow\n",
    );
    let warnings = lint(&[p], None);
    assert_eq!(
        of_kind(&warnings, LintKind::NoAppliesTo),
        vec!["open.yaml:1:7: warning: policy 'open' has no `appliesTo`: it applies to every agent"]
    );
    let version = of_kind(&warnings, LintKind::NumericVersion);
    assert_eq!(version.len(), 1);
    assert!(version[0].starts_with("open.yaml:2:10: warning: `version: 1.10` is a bare number"));
}

#[test]
fn default_deny_overridden_by_another_policy() {
    let warnings = lint(
        &[example("autogpt.yaml"), example("autogpt-production.yaml")],
        None,
    );
    // The shipped examples settle every pattern the other allows with an unconditional rule.
    let overridden = of_kind(&warnings, LintKind::DefaultDenyOverridden);
    assert!(overridden.is_empty(), "{overridden:#?}");

    // The production policy as first published did not: `execute:python` was settled only by a
    // rule conditioned on `sandbox`, so without a sandbox autogpt.yaml's allow won.
    let seed =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("compare/policies/autogpt-production.yaml");
    let seed = policy("seed.yaml", &std::fs::read_to_string(seed).unwrap());
    let warnings = lint(&[example("autogpt.yaml"), seed], None);
    let overridden = of_kind(&warnings, LintKind::DefaultDenyOverridden);
    assert_eq!(overridden.len(), 1, "{overridden:#?}");
    assert!(overridden[0].starts_with("seed.yaml:49:16: warning: policy 'autogpt-production' defaults to deny, but policy 'autogpt-policy' allows `read:*` (rule 'rule-1'), `browse:*` (rule 'rule-1'), `write:workspace/*` (rule 'rule-2') and 3 more"), "{}", overridden[0]);
    assert!(LintKind::DefaultDenyOverridden.is_error_when_strict());

    // Policies no agent shares do not override each other.
    let a = policy(
        "a.yaml",
        "name: a\nversion: \"1\"\nappliesTo: {trustTiers: [trusted]}\n",
    );
    let b = policy(
        "b.yaml",
        "name: b\nversion: \"1\"\nappliesTo: {trustTiers: [verified]}\nrules: [{effect: allow, actions: [\"x:*\"]}]\n",
    );
    assert!(of_kind(&lint(&[a, b], None), LintKind::DefaultDenyOverridden).is_empty());
}

#[test]
fn with_agents_policies_that_apply_to_none_of_them() {
    let agents = [AgentProfile {
        id: "agent_1".into(),
        name: "dev".into(),
        trust: TrustTier::Verified,
        tags: ["production".to_owned()].into(),
    }];
    let warnings = lint(
        &[example("autogpt.yaml"), example("autogpt-production.yaml")],
        Some(&agents),
    );
    assert_eq!(
        of_kind(&warnings, LintKind::AppliesToNoAgent),
        vec![
            "autogpt.yaml:1:7: warning: policy 'autogpt-policy' applies to none of the 1 given agents"
        ]
    );
    // With agents given, overriding is judged on real agents: `dev` has only one policy.
    assert!(of_kind(&warnings, LintKind::DefaultDenyOverridden).is_empty());
    let json = serde_json::to_value(&warnings).unwrap();
    assert_eq!(json[0]["kind"], "applies_to_no_agent");
}

#[test]
fn clean_policy_has_no_warnings() {
    let p = policy(
        "clean.yaml",
        r#"
name: clean
version: "2.0"
appliesTo: {tags: [a]}
rules:
  - {effect: deny, actions: ["execute:shell"]}
  - {effect: allow, actions: ["read:*", "execute:*"]}
humanInTheLoop: {requireApproval: ["send:*"]}
"#,
    );
    assert_eq!(lint(&[p], None), vec![]);
}

#[test]
fn conditions_on_agent_asserted_context_are_flagged() {
    let warnings = lint(&[example("autogpt-production.yaml")], None);
    assert_eq!(
        of_kind(&warnings, LintKind::AgentAssertedContext),
        vec![
            "autogpt-production.yaml:31:5: warning: rule 'rule-3' rests on `sandbox` from the check's context, which the agent asserts itself: it allows when the agent says so; decide on what an enforcement point sees where it matters"
        ]
    );
    let p = policy(
        "ctx.yaml",
        "name: ctx\nversion: \"1\"\nappliesTo: {tags: [x]}\nrules:\n  - {effect: deny, actions: [\"db:*\"], conditions: {context: {env: prod}}}\n  - {effect: allow, actions: [\"db:*\"], conditions: {minTrust: trusted}}\n",
    );
    let warnings = lint(&[p], None);
    let asserted = of_kind(&warnings, LintKind::AgentAssertedContext);
    assert_eq!(asserted.len(), 1, "{asserted:#?}");
    assert!(
        asserted[0].contains("rule 'rule-1' rests on `context.env`"),
        "{}",
        asserted[0]
    );
    assert!(asserted[0].contains("denies only when the agent says so"));
    assert!(!LintKind::AgentAssertedContext.is_error_when_strict());
}

#[test]
fn an_allow_with_an_upper_case_verb_can_never_match() {
    let p = policy(
        "upper.yaml",
        "name: upper\nversion: \"1\"\nappliesTo: {tags: [x]}\nrules:\n  - {effect: allow, actions: [\"READ:*\"]}\n  - {effect: deny, actions: [\"DELETE:*\"]}\n",
    );
    let unmatchable = of_kind(&lint(&[p], None), LintKind::UnmatchablePattern);
    assert_eq!(
        unmatchable,
        vec![
            "upper.yaml:5:31: warning: action pattern `READ:*` of rule 'rule-1' can never match: verbs are lower-cased in requests, and allow rules match case-sensitively"
        ]
    );
}

#[test]
fn conditions_that_never_hold_are_reported() {
    let text = r#"name: dead
version: "1"
appliesTo: {tags: [t]}
rules:
  - name: empty-range
    effect: allow
    actions: ["pay:*"]
    conditions:
      context:
        arguments.amount: {gt: 100, le: 50}
  - name: empty-list
    effect: allow
    actions: ["push:git"]
    conditions:
      context:
        arguments.repo: {in: []}
  - name: absent-and-compared
    effect: allow
    actions: ["merge:git"]
    conditions:
      context:
        arguments.branch: {exists: false, ne: main}
  - name: equal-outside-its-range
    effect: allow
    actions: ["deploy:*"]
    conditions:
      context:
        arguments.replicas: {eq: 3, ge: 5}
  - name: closed-schedule
    effect: allow
    actions: ["run:*"]
    conditions:
      schedule: {days: [], hours: "09:00-18:00"}
  - name: fine
    effect: allow
    actions: ["read:*"]
    conditions:
      context:
        arguments.amount: {gt: 0, le: 50}
      schedule: {days: [mon], hours: "22:00-06:00", timezone: Europe/Berlin}
"#;
    let warnings = lint(&[policy("dead.yaml", text)], None);
    assert_eq!(
        of_kind(&warnings, LintKind::ImpossibleCondition),
        vec![
            "dead.yaml:5:5: warning: rule 'empty-range' can never match: its condition on `context.arguments.amount` never holds (its lower bound is not below its upper bound)",
            "dead.yaml:11:5: warning: rule 'empty-list' can never match: its condition on `context.arguments.repo` never holds (`in` lists no value)",
            "dead.yaml:17:5: warning: rule 'absent-and-compared' can never match: its condition on `context.arguments.branch` never holds (`exists: false` and a test that needs the value)",
            "dead.yaml:23:5: warning: rule 'equal-outside-its-range' can never match: its condition on `context.arguments.replicas` never holds (its `eq` value 3 fails its own `ge` test)",
            "dead.yaml:29:5: warning: rule 'closed-schedule' can never match: its schedule never opens (it lists no day)",
        ]
    );
}

#[test]
fn a_conditional_approval_that_never_holds_is_reported() {
    let text = r#"name: pay
version: "1"
appliesTo: {tags: [t]}
rules:
  - effect: allow
    actions: ["pay:*"]
humanInTheLoop:
  requireApproval:
    - "send:email"
    - action: "pay:*"
      when:
        context:
          arguments.amount: {gt: 500, lt: 100}
"#;
    let warnings = lint(&[policy("pay.yaml", text)], None);
    assert_eq!(
        of_kind(&warnings, LintKind::ImpossibleCondition),
        vec![
            "pay.yaml:10:15: warning: requireApproval entry `pay:*` never asks for approval: its condition on `context.arguments.amount` never holds (its lower bound is not below its upper bound)",
        ]
    );
}

#[test]
fn a_budget_on_a_field_no_rule_tests_is_reported() {
    let text = r#"name: spend
version: "1"
appliesTo: {tags: [t]}
rules:
  - name: calls
    effect: allow
    actions: ["call:*"]
    budget: {field: arguments.cost, perDay: 20}
  - name: payments
    effect: allow
    actions: ["pay:*"]
    conditions:
      context:
        arguments.amount: {ge: 0}
    budget: {field: arguments.amount, perDay: 100}
budget: {field: arguments.tokens, perHour: 1000}
"#;
    let warnings = lint(&[policy("spend.yaml", text)], None);
    assert_eq!(
        of_kind(&warnings, LintKind::UncheckedBudgetField),
        vec![
            "spend.yaml:8:13: warning: the budget of rule 'calls' counts `arguments.cost`, which no rule's `context` condition tests: checks without it are denied `invalid_context`; say what the rule needs, e.g. `context: {arguments.cost: {ge: 0}}`",
            "spend.yaml:16:9: warning: the budget of policy 'spend' counts `arguments.tokens`, which no rule's `context` condition tests: checks without it are denied `invalid_context`; say what the rule needs, e.g. `context: {arguments.tokens: {ge: 0}}`",
        ]
    );
    // The example payments policy says what its budget counts.
    assert!(
        of_kind(
            &lint(&[example("payments.yaml")], None),
            LintKind::UncheckedBudgetField
        )
        .is_empty()
    );
}
