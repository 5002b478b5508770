//! `meshguard policy test --file`: the conformance corpus offline (no gateway), and MeshGuard's
//! `tests:` format against a running gateway.

use crate::support::{CliRun, Gateway, repo_root};
use meshguard_policy::corpus::Corpus;

/// The closing line, parsed: (passed, failed).
fn closing_line(stdout: &str) -> (usize, usize) {
    let last = stdout.lines().last().expect("some output");
    let (passed, failed) = last
        .split_once(" passed, ")
        .unwrap_or_else(|| panic!("closing line: {last:?}"));
    let failed = failed
        .strip_suffix(" failed")
        .unwrap_or_else(|| panic!("closing line: {last:?}"));
    (passed.parse().unwrap(), failed.parse().unwrap())
}

#[test]
fn the_conformance_corpus_passes_offline() {
    let corpus_path = repo_root().join("tests/conformance/decisions.yaml");
    let text = std::fs::read_to_string(&corpus_path).unwrap();
    let cases = Corpus::parse("decisions.yaml", &text).unwrap().case_count();
    assert!(cases > 40, "the corpus has its cases");

    // No gateway runs: an unreachable URL proves the run is offline.
    let run = CliRun::bare(&[
        "--url",
        "http://127.0.0.1:9",
        "policy",
        "test",
        "--file",
        corpus_path.to_str().unwrap(),
    ]);
    run.assert_code(0);
    assert_eq!(closing_line(&run.stdout), (cases, 0), "{}", run.stdout);
    assert_eq!(
        run.stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        cases,
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("seed policy for AutoGPT / shell denied"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_wrong_expectation_in_the_corpus_fails_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let examples = dir.path().join("examples/policies");
    std::fs::create_dir_all(&examples).unwrap();
    std::fs::copy(
        repo_root().join("examples/policies/autogpt.yaml"),
        examples.join("autogpt.yaml"),
    )
    .unwrap();
    let corpus_dir = dir.path().join("tests/conformance");
    std::fs::create_dir_all(&corpus_dir).unwrap();
    let corpus = corpus_dir.join("mine.yaml");
    std::fs::write(
        &corpus,
        r#"suites:
  - name: mine
    policies: [autogpt.yaml]
    agents:
      dev: {trust: verified, tags: [autogpt]}
    cases:
      - {name: shell denied, agent: dev, action: "execute:shell", expect: {decision: deny, rule: rule-4}}
      - {name: shell wrongly expected, agent: dev, action: "execute:shell", expect: {decision: allow}}
"#,
    )
    .unwrap();
    let run = CliRun::bare(&["policy", "test", "--file", corpus.to_str().unwrap()]);
    run.assert_code(1);
    assert_eq!(closing_line(&run.stdout), (1, 1), "{}", run.stdout);
    let failure = run.stdout.lines().find(|l| l.starts_with("FAIL")).unwrap();
    assert!(
        failure.contains("mine / shell wrongly expected")
            && failure.contains("expected allow, got deny"),
        "{failure}"
    );
    assert!(
        failure.contains("mine.yaml:"),
        "the failure names the case's position: {failure}"
    );
}

#[test]
fn a_corpus_naming_a_missing_policy_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("c.yaml");
    std::fs::write(
        &corpus,
        "suites:\n  - name: s\n    policies: [nowhere.yaml]\n    agents: {}\n    cases: []\n",
    )
    .unwrap();
    let run = CliRun::bare(&["policy", "test", "--file", corpus.to_str().unwrap()]);
    run.assert_code(2);
    assert!(run.stderr.contains("nowhere.yaml"), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tests_file_runs_against_the_gateway() {
    let gateway = Gateway::start().await;
    gateway.create_agent("autogpt-agent", "verified", "autogpt,autonomous");
    let prod_token = gateway.create_agent("prod-agent", "trusted", "autogpt,production");
    let policies = repo_root().join("examples/policies");
    gateway
        .cli(&["policy", "apply", policies.to_str().unwrap()])
        .assert_code(0);

    let tests = gateway.scratch().join("gateway-tests.yaml");
    std::fs::write(
        &tests,
        r#"tests:
  - name: browsing is allowed
    agent: autogpt-agent
    action: browse:web
    resource: https://python.org
    expect: allow
  - name: shell is denied by the deny rule
    agent: autogpt-agent
    action: execute:shell
    expect: {decision: deny, code: denied_by_rule, policy: autogpt-policy, rule: rule-4}
  - name: social posts wait for a human
    agent: prod-agent
    action: post:social
    resource: twitter
    expect: require_approval
  - name: sandboxed python is allowed in production
    agent: prod-agent
    action: execute:python
    context: {sandbox: true}
    expect: {decision: allow}
  - name: nothing matches
    agent: autogpt-agent
    action: launch:rocket
    expect: {decision: deny, code: default_deny, rule: null}
"#,
    )
    .unwrap();
    let run = gateway.cli(&["policy", "test", "--file", tests.to_str().unwrap()]);
    run.assert_code(0);
    assert_eq!(closing_line(&run.stdout), (5, 0), "{}", run.stdout);

    // Running the tests charged nothing: `browse:web` is limited to 10 a minute for a
    // production agent, and it still has all 10.
    for i in 0..10 {
        assert_eq!(
            gateway.check(&prod_token, "browse:web", "*").await.status,
            200,
            "check {i}"
        );
    }
    let eleventh = gateway.check(&prod_token, "browse:web", "*").await;
    assert_eq!(
        (eleventh.status, eleventh.body["code"].as_str()),
        (403, Some("rate_limited"))
    );

    let failing = gateway.scratch().join("failing-tests.yaml");
    std::fs::write(
        &failing,
        "tests:\n  - {name: expects too much, agent: autogpt-agent, action: execute:shell, expect: allow}\n  - {name: unknown agent, agent: nobody, action: read:x, expect: deny}\n  - {name: fine, agent: autogpt-agent, action: read:x, expect: allow}\n",
    )
    .unwrap();
    let run = gateway.cli(&["policy", "test", "--file", failing.to_str().unwrap()]);
    run.assert_code(1);
    assert_eq!(closing_line(&run.stdout), (1, 2), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("FAIL expects too much: expected decision allow, got deny"),
        "{}",
        run.stdout
    );

    let typo = gateway.scratch().join("typo-tests.yaml");
    std::fs::write(
        &typo,
        "tests:\n  - {name: t, agent: autogpt-agent, action: read:x, expect: alow}\n",
    )
    .unwrap();
    let run = gateway.cli(&["policy", "test", "--file", typo.to_str().unwrap()]);
    run.assert_code(2);
    assert!(run.stderr.contains("alow"), "{}", run.stderr);
}
