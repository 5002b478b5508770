//! Bad policies are refused with `file:line:col: path: message`, never a panic.

use meshguard_policy::{LoadError, PolicySet, PolicySetError, parse_policy};

/// Parses `text` and returns the full error line.
fn error(text: &str) -> String {
    match parse_policy("autogpt.yaml", text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

const HEAD: &str = "name: autogpt-policy\nversion: \"1.0\"\n";

#[test]
fn bad_effect_names_file_line_column_and_path() {
    let text = format!(
        "{HEAD}rules:\n  - effect: allow\n    actions: [\"read:*\"]\n  - effect: deny\n    actions: [\"x:*\"]\n  - effect: alow\n    actions: [\"y:*\"]\n"
    );
    assert_eq!(
        error(&text),
        "autogpt.yaml:8:13: rules[2].effect: expected \"allow\" or \"deny\", got \"alow\""
    );
    let err = parse_policy("autogpt.yaml", &text).unwrap_err();
    assert_eq!(
        (err.origin(), err.line(), err.column(), err.path()),
        ("autogpt.yaml", 8, 13, "rules[2].effect")
    );
    assert_eq!(
        err.message(),
        "expected \"allow\" or \"deny\", got \"alow\""
    );
}

#[test]
fn error_table() {
    let cases: Vec<(String, &str)> = vec![
        // budgets: a field, a positive maximum, never on a deny rule
        (
            format!("{HEAD}budget: {{perHour: 100}}\n"),
            "autogpt.yaml:3:9: budget.field: missing required field `field`",
        ),
        (
            format!("{HEAD}budget: {{field: arguments.amount}}\n"),
            "autogpt.yaml:3:9: budget: a budget needs `perHour`, `perDay` or both",
        ),
        (
            format!("{HEAD}budget: {{field: arguments.amount, perDay: -5}}\n"),
            "autogpt.yaml:3:43: budget.perDay: expected a positive number, got the number `-5`",
        ),
        (
            format!("{HEAD}budget: {{field: arguments..amount, perDay: 5}}\n"),
            "autogpt.yaml:3:17: budget.field: `arguments..amount` is not a dotted path such as `arguments.amount`",
        ),
        (
            format!("{HEAD}budget: {{field: amount, perWeek: 5}}\n"),
            "autogpt.yaml:3:25: budget.perWeek: unknown key `perWeek`; expected one of `field`, `perHour`, `perDay`",
        ),
        (
            format!(
                "{HEAD}rules:\n  - effect: deny\n    actions: [\"pay:*\"]\n    budget: {{field: amount, perDay: 5}}\n"
            ),
            "autogpt.yaml:6:13: rules[0].budget: a deny rule lets nothing through, so it spends no budget: put `budget` on an allow rule or on the policy",
        ),
        // unknown keys, at every level
        (
            format!("{HEAD}appliesto: {{tags: [a]}}\n"),
            "autogpt.yaml:3:1: appliesto: unknown key `appliesto`; expected one of `name`, `version`, `description`, `appliesTo`, `rules`, `defaultEffect`, `rateLimits`, `budget`, `humanInTheLoop`, `mode`",
        ),
        (
            format!("{HEAD}mode: dry-run\n"),
            "autogpt.yaml:3:7: mode: expected \"enforce\" or \"shadow\", got the string \"dry-run\"",
        ),
        (
            format!("{HEAD}rules:\n  - effect: allow\n    action: [\"x\"]\n"),
            "autogpt.yaml:5:5: rules[0].action: unknown key `action`; expected one of `name`, `effect`, `actions`, `conditions`, `reason`, `budget`",
        ),
        (
            format!(
                "{HEAD}rules:\n  - effect: allow\n    actions: [\"x\"]\n    conditions: {{sandbx: true}}\n"
            ),
            "autogpt.yaml:6:18: rules[0].conditions.sandbx: unknown key `sandbx`; expected one of `resourcePattern`, `sandbox`, `minTrust`, `context`, `schedule`, `after`, `notAfter`, `rateLimit`",
        ),
        // conditional approvals
        (
            format!(
                "{HEAD}humanInTheLoop:\n  requireApproval:\n    - {{action: \"pay:*\", when: {{rateLimit: {{requestsPerMinute: 1}}}}}}\n"
            ),
            "autogpt.yaml:5:32: humanInTheLoop.requireApproval[0].when.rateLimit: an approval has no rate limit: put `rateLimit` on a rule",
        ),
        (
            format!(
                "{HEAD}humanInTheLoop:\n  requireApproval:\n    - {{when: {{sandbox: true}}}}\n"
            ),
            "autogpt.yaml:5:7: humanInTheLoop.requireApproval[0].action: missing required field `action`",
        ),
        // conditions on the context and the time
        (
            format!(
                "{HEAD}rules:\n  - effect: allow\n    actions: [\"x\"]\n    conditions: {{context: {{arguments.amount: {{lt: ten}}}}}}\n"
            ),
            "autogpt.yaml:6:51: rules[0].conditions.context.arguments.amount.lt: expected a number or an RFC 3339 time such as \"2026-03-01T09:00:00Z\", got the string \"ten\"",
        ),
        (
            format!(
                "{HEAD}rules:\n  - effect: allow\n    actions: [\"x\"]\n    conditions: {{context: {{amount: {{lt: 5, max: 9}}}}}}\n"
            ),
            "autogpt.yaml:6:36: rules[0].conditions.context.amount: mixes operators with plain keys: to compare with a mapping, write it under `eq`",
        ),
        (
            format!(
                "{HEAD}rules:\n  - effect: allow\n    actions: [\"x\"]\n    conditions: {{context: {{a..b: 1}}}}\n"
            ),
            "autogpt.yaml:6:28: rules[0].conditions.context.a..b: `a..b` is not a dotted path: a segment is empty",
        ),
        (
            format!(
                "{HEAD}rules:\n  - effect: allow\n    actions: [\"x\"]\n    conditions: {{schedule: {{days: [mon, fry]}}}}\n"
            ),
            "autogpt.yaml:6:41: rules[0].conditions.schedule.days[1]: unknown day `fry`; expected one of mon, tue, wed, thu, fri, sat, sun",
        ),
        (
            format!(
                "{HEAD}rules:\n  - effect: allow\n    actions: [\"x\"]\n    conditions: {{schedule: {{hours: \"9-18\"}}}}\n"
            ),
            "autogpt.yaml:6:36: rules[0].conditions.schedule.hours: expected a window `HH:MM-HH:MM` such as \"09:00-18:00\", got \"9-18\"",
        ),
        (
            format!(
                "{HEAD}rules:\n  - effect: allow\n    actions: [\"x\"]\n    conditions: {{schedule: {{timezone: Europe/Berlni}}}}\n"
            ),
            "autogpt.yaml:6:39: rules[0].conditions.schedule.timezone: unknown time zone `Europe/Berlni`; expected an IANA name such as \"Europe/Berlin\" or \"UTC\"",
        ),
        (
            format!("{HEAD}rateLimits: {{requestsPerSecond: 5}}\n"),
            "autogpt.yaml:3:14: rateLimits.requestsPerSecond: unknown key `requestsPerSecond`; expected one of `requestsPerMinute`, `requestsPerHour`",
        ),
        // wrong types
        (
            format!("{HEAD}rules: {{effect: allow}}\n"),
            "autogpt.yaml:3:8: rules: expected a list of rules, got a mapping",
        ),
        (
            format!("{HEAD}rules:\n  - effect: allow\n    actions: \"read:*\"\n"),
            "autogpt.yaml:5:14: rules[0].actions: expected a list of patterns, got the string \"read:*\"",
        ),
        (
            format!(
                "{HEAD}rules:\n  - effect: allow\n    actions: [\"x\"]\n    conditions: {{sandbox: \"yes\"}}\n"
            ),
            "autogpt.yaml:6:27: rules[0].conditions.sandbox: expected `true` or `false`, got the string \"yes\"",
        ),
        (
            format!("{HEAD}rateLimits: {{requestsPerMinute: many}}\n"),
            "autogpt.yaml:3:33: rateLimits.requestsPerMinute: expected a positive whole number, got the string \"many\"",
        ),
        (
            format!("{HEAD}rateLimits: {{requestsPerMinute: 0}}\n"),
            "autogpt.yaml:3:33: rateLimits.requestsPerMinute: expected a positive whole number, got the number `0`",
        ),
        (
            format!("{HEAD}humanInTheLoop: {{timeoutSeconds: 1.5}}\n"),
            "autogpt.yaml:3:34: humanInTheLoop.timeoutSeconds: expected a positive whole number, got the number `1.5`",
        ),
        (
            format!("{HEAD}appliesTo: {{tags: autogpt}}\n"),
            "autogpt.yaml:3:19: appliesTo.tags: expected a list of strings, got the string \"autogpt\"",
        ),
        (
            format!("{HEAD}description: [a]\n"),
            "autogpt.yaml:3:14: description: expected a string, got a list",
        ),
        (
            "name: x\nversion: true\n".to_owned(),
            "autogpt.yaml:2:10: version: expected a string such as \"1.0\", got the boolean `true`",
        ),
        (
            format!("{HEAD}defaultEffect: maybe\n"),
            "autogpt.yaml:3:16: defaultEffect: expected \"allow\" or \"deny\", got \"maybe\"",
        ),
        // tiers
        (
            format!("{HEAD}appliesTo: {{trustTiers: [verified, admin]}}\n"),
            "autogpt.yaml:3:36: appliesTo.trustTiers[1]: unknown trust tier `admin`; expected one of \"unverified\" (or \"untrusted\"), \"verified\", \"trusted\", \"privileged\"",
        ),
        (
            format!(
                "{HEAD}rules:\n  - effect: allow\n    actions: [\"x\"]\n    conditions: {{minTrust: root}}\n"
            ),
            "autogpt.yaml:6:28: rules[0].conditions.minTrust: unknown trust tier `root`; expected one of \"unverified\" (or \"untrusted\"), \"verified\", \"trusted\", \"privileged\"",
        ),
        // patterns
        (
            format!("{HEAD}rules:\n  - effect: allow\n    actions: [\"read:*\", \"read:[ab]\"]\n"),
            "autogpt.yaml:5:25: rules[0].actions[1]: `[` is reserved in patterns (in `read:[ab]`); only `*` and `?` are wildcards",
        ),
        (
            format!("{HEAD}rules:\n  - effect: allow\n    actions: [\"\"]\n"),
            "autogpt.yaml:5:15: rules[0].actions[0]: a pattern cannot be empty",
        ),
        (
            format!("{HEAD}rules:\n  - effect: allow\n    actions: []\n"),
            "autogpt.yaml:5:14: rules[0].actions: expected at least one pattern",
        ),
        (
            format!(
                "{HEAD}rules:\n  - effect: allow\n    actions: [\"x\"]\n    conditions: {{resourcePattern: \"a{{b,c}}\"}}\n"
            ),
            "autogpt.yaml:6:35: rules[0].conditions.resourcePattern: `{` is reserved in patterns (in `a{b,c}`); only `*` and `?` are wildcards",
        ),
        (
            format!("{HEAD}humanInTheLoop: {{requireApproval: [\"pay:\\\\*\"]}}\n"),
            "autogpt.yaml:3:36: humanInTheLoop.requireApproval[0]: `\\` is reserved in patterns (in `pay:\\*`); only `*` and `?` are wildcards",
        ),
        // missing required fields
        (
            "version: \"1\"\n".to_owned(),
            "autogpt.yaml:1:1: name: missing required field `name`",
        ),
        (
            "name: x\n".to_owned(),
            "autogpt.yaml:1:1: version: missing required field `version`",
        ),
        (
            format!("{HEAD}rules:\n  - actions: [\"x\"]\n"),
            "autogpt.yaml:4:5: rules[0].effect: missing required field `effect`",
        ),
        (
            format!("{HEAD}rules:\n  - effect: deny\n"),
            "autogpt.yaml:4:5: rules[0].actions: missing required field `actions`",
        ),
        // names
        (
            "name: AutoGPT\nversion: \"1\"\n".to_owned(),
            "autogpt.yaml:1:7: name: invalid policy name \"AutoGPT\": use 1 to 64 of `a-z`, `0-9`, `.`, `_`, `-`, starting with a letter or digit",
        ),
        (
            format!(
                "{HEAD}rules:\n  - {{name: r, effect: allow, actions: [\"x\"]}}\n  - {{name: r, effect: deny, actions: [\"y\"]}}\n"
            ),
            "autogpt.yaml:5:5: rules[1].name: duplicate rule name \"r\" (also rules[0]); every rule needs its own name",
        ),
        // YAML itself
        (
            format!("{HEAD}name: again\n"),
            "autogpt.yaml:3:1: name: duplicate key `name` (first at line 1)",
        ),
        (
            format!(
                "{HEAD}rules:\n  - effect: allow\n    actions: [\"x\"]\n    actions: [\"y\"]\n"
            ),
            "autogpt.yaml:6:5: rules[0].actions: duplicate key `actions` (first at line 5)",
        ),
        ("".to_owned(), "autogpt.yaml:1:1: the document is empty"),
        (
            "- just\n- a list\n".to_owned(),
            "autogpt.yaml:1:1: expected a mapping, got a list",
        ),
        (
            format!("{HEAD}rules: [\n"),
            "autogpt.yaml:4:1: invalid YAML: while parsing a node, did not find expected node content",
        ),
        (
            format!("{HEAD}x: &a 1\n"),
            "autogpt.yaml:3:4: YAML anchors (`&name`) are not supported",
        ),
        (
            format!("{HEAD}---\nname: second\n"),
            "autogpt.yaml:3:1: expected one YAML document, found a second one (`---`)",
        ),
    ];
    let mut failures = Vec::new();
    for (text, expected) in &cases {
        let got = error(text);
        if got != *expected {
            failures.push(format!(
                "input:\n{text}\nexpected: {expected}\n     got: {got}\n"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn json_is_accepted_and_bare_number_version_kept_as_written() {
    let policy = parse_policy(
        "p.json",
        r#"{"name": "json-policy", "version": 1.10, "rules": [{"effect": "allow", "actions": ["read:*"]}]}"#,
    )
    .unwrap();
    assert_eq!(policy.version(), "1.10");
    assert_eq!(policy.name(), "json-policy");
    let json = serde_json::to_value(&policy).unwrap();
    assert_eq!(json["version"], "1.10");
    assert_eq!(json["defaultEffect"], "deny");
    assert_eq!(json["rules"][0]["name"], "rule-1");
}

#[test]
fn every_field_is_read() {
    let text = r#"
name: full
version: "2"
description: every field
appliesTo: {tags: [t], trustTiers: [untrusted, privileged], agentIds: [a]}
rules:
  - name: r
    effect: deny
    actions: ["x:*"]
    conditions:
      resourcePattern: "a/*"
      sandbox: false
      minTrust: trusted
      context: {env: prod, n: 3, nested: {ok: true}}
      rateLimit: {requestsPerMinute: 10, requestsPerHour: 100}
    reason: "because"
defaultEffect: allow
rateLimits: {requestsPerMinute: 30, requestsPerHour: 500}
humanInTheLoop: {requireApproval: ["send:email", "pay:*"], timeoutSeconds: 3600}
"#;
    let policy = parse_policy("full.yaml", text).unwrap();
    let json = serde_json::to_value(&policy).unwrap();
    let expected = serde_json::json!({
        "name": "full", "version": "2", "description": "every field",
        "appliesTo": {"tags": ["t"], "trustTiers": ["unverified", "privileged"], "agentIds": ["a"]},
        "rules": [{"name": "r", "effect": "deny", "actions": ["x:*"],
                   "conditions": {"resourcePattern": ["a/*"], "sandbox": false, "minTrust": "trusted",
                                  "context": {"env": "prod", "n": 3, "nested": {"ok": true}},
                                  "rateLimit": {"requestsPerMinute": 10, "requestsPerHour": 100}},
                   "reason": "because"}],
        "defaultEffect": "allow",
        "rateLimits": {"requestsPerMinute": 30, "requestsPerHour": 500},
        "humanInTheLoop": {"requireApproval": ["send:email", "pay:*"], "timeoutSeconds": 3600}
    });
    assert_eq!(json, expected);
    assert_eq!(policy.source_text(), text);
}

#[test]
fn duplicate_policy_names_in_a_set_name_both_origins() {
    let a = parse_policy("a.yaml", "version: \"1\"\nname: shared\n").unwrap();
    let b = parse_policy("b.yaml", "name: shared\nversion: \"2\"\n").unwrap();
    let err = PolicySet::new(vec![a, b]).unwrap_err();
    let PolicySetError::DuplicateName { name, .. } = &err;
    assert_eq!(name, "shared");
    assert_eq!(
        err.to_string(),
        "b.yaml:1:7: name: duplicate policy name `shared`, first defined at a.yaml:2:7"
    );
    let via_sources = PolicySet::from_sources([("x.yaml", "name: x\nversion: \"1\"\nrules: 3\n")]);
    assert!(matches!(via_sources, Err(LoadError::Policy(_))));
}

#[test]
fn hostile_input_is_an_error_not_a_crash() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_error = error(&deep);
    assert!(deep_error.starts_with("autogpt.yaml:1:"), "{deep_error}");
    let alias = format!("{HEAD}description: *a\n");
    assert!(parse_policy("p.yaml", &alias).is_err());
    let tag = format!("{HEAD}description: !secret x\n");
    assert!(error(&tag).contains("tags"));
}

#[test]
fn nesting_is_bounded() {
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    assert_eq!(
        error(&deep),
        "autogpt.yaml:1:66: nesting deeper than 64 levels"
    );
}
