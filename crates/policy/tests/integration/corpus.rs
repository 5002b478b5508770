//! The corpus reader and offline runner, as `meshguard policy test --file` uses them.

use std::path::Path;

use meshguard_policy::corpus::{Corpus, CorpusError, PolicyFile, policy_search_dirs};

const CORPUS: &str = r#"
suites:
  - name: mail
    policies:
      - mail.yaml
      - |
        name: inline
        version: "1"
        appliesTo: {agentIds: [bot]}
        rules: [{effect: deny, actions: ["send:fax"]}]
    agents:
      bot: {trust: verified, tags: [mail]}
    cases:
      - {name: passes, agent: bot, action: "send:email", expect: allow}
      - {name: wrong code, agent: bot, action: "send:sms", expect: {code: allowed, rule: null}}
      - {name: wrong policy, agent: bot, action: "send:fax", expect: {decision: deny, policy: mail, rule: rule-1}}
"#;

const MAIL: &str = "name: mail\nversion: \"1\"\nappliesTo: {tags: [mail]}\nrules: [{effect: allow, actions: [\"send:email\"]}]\n";

fn resolve(name: &str) -> Result<PolicyFile, String> {
    match name {
        "mail.yaml" => Ok(PolicyFile {
            origin: "policies/mail.yaml".into(),
            text: MAIL.into(),
        }),
        other => Err(format!("no such file `{other}`")),
    }
}

#[test]
fn outcomes_print_one_line_per_case() {
    let corpus = Corpus::parse("suite.yaml", CORPUS).unwrap();
    let outcomes = corpus
        .run_offline(time::OffsetDateTime::now_utc(), &mut resolve)
        .unwrap();
    let lines: Vec<String> = outcomes.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        vec![
            "ok   mail / passes".to_owned(),
            "FAIL mail / wrong code (suite.yaml:15:9): code: expected allowed, got default_deny"
                .to_owned(),
            "FAIL mail / wrong policy (suite.yaml:16:9): policy: expected \"mail\", got \"inline\""
                .to_owned(),
        ]
    );
    assert!(outcomes[0].passed && !outcomes[1].passed);
    let json = serde_json::to_value(&outcomes[2]).unwrap();
    assert_eq!(json["expected"]["policy"], "mail");
    assert_eq!(json["actual"]["policy"], "inline");
    assert_eq!(json["mismatches"][0]["field"], "policy");
}

#[test]
fn corpus_errors_have_positions() {
    let unknown_agent = CORPUS.replace(
        "agent: bot, action: \"send:sms\"",
        "agent: robot, action: \"send:sms\"",
    );
    assert_eq!(
        Corpus::parse("suite.yaml", &unknown_agent)
            .unwrap_err()
            .to_string(),
        "suite.yaml:15:35: suites[0].cases[1].agent: unknown agent `robot`; the suite's `agents` does not define it"
    );
    let bad_code = CORPUS.replace("code: allowed", "code: allowd");
    assert_eq!(
        Corpus::parse("suite.yaml", &bad_code)
            .unwrap_err()
            .to_string(),
        "suite.yaml:15:75: suites[0].cases[1].expect.code: unknown code \"allowd\""
    );
    let bad_decision = CORPUS.replace("expect: allow}", "expect: permit}");
    assert!(
        Corpus::parse("suite.yaml", &bad_decision)
            .unwrap_err()
            .to_string()
            .contains("suites[0].cases[0].expect: expected \"allow\", \"deny\" or \"require_approval\", got \"permit\"")
    );
}

#[test]
fn unresolved_files_and_bad_policies_name_the_suite() {
    let corpus = Corpus::parse("suite.yaml", &CORPUS.replace("mail.yaml", "missing.yaml")).unwrap();
    let err = corpus
        .run_offline(time::OffsetDateTime::now_utc(), &mut resolve)
        .unwrap_err();
    assert!(matches!(err, CorpusError::Unresolved { .. }));
    assert_eq!(
        err.to_string(),
        "suite.yaml:5:9: suite `mail`: policy file `missing.yaml`: no such file `missing.yaml`"
    );
    let corpus = Corpus::parse(
        "suite.yaml",
        &CORPUS.replace("effect: deny", "effect: nope"),
    )
    .unwrap();
    let err = corpus
        .run_offline(time::OffsetDateTime::now_utc(), &mut resolve)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("suite `mail`: suite.yaml:suites[0].policies[1]:4:18: rules[0].effect:"),
        "{err}"
    );
}

#[test]
fn search_dirs_follow_the_documented_order() {
    let dirs = policy_search_dirs(Path::new("/repo/tests/conformance/decisions.yaml"));
    let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    assert_eq!(
        shown,
        vec![
            "/repo/tests/conformance",
            "/repo/tests/conformance/../examples/policies",
            "/repo/tests/conformance/examples/policies",
            "/repo/tests/examples/policies",
            "/repo/examples/policies",
            "/examples/policies",
        ]
    );
}
