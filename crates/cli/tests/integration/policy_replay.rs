//! `meshguard policy replay`: the audited checks of a period decided again with candidate
//! policies, against the real gateway.

use crate::support::Gateway;

const LIVE: &str = r#"name: reads
version: "1"
appliesTo: {tags: [reader]}
rules:
  - name: all-reads
    effect: allow
    actions: ["read:*"]
"#;

const CANDIDATE: &str = r#"name: reads
version: "2"
appliesTo: {tags: [reader]}
rules:
  - name: no-secrets
    effect: deny
    actions: ["read:secrets/*"]
  - name: all-reads
    effect: allow
    actions: ["read:*"]
"#;

#[tokio::test]
async fn replay_counts_what_a_candidate_would_change_and_can_fail_a_pipeline() {
    let gw = Gateway::start().await;
    let live = gw.scratch().join("live.yaml");
    std::fs::write(&live, LIVE).unwrap();
    gw.cli(&["policy", "apply", live.to_str().unwrap()])
        .assert_code(0);
    let token = gw.create_agent("reader", "verified", "reader");
    let mut secret_traces = Vec::new();
    for file in ["a.pem", "b.pem", "c.pem"] {
        let answer = gw.check(&token, "read:secrets", file).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        secret_traces.push(answer.body["trace_id"].as_str().unwrap().to_owned());
    }
    for file in ["x.md", "y.md"] {
        assert_eq!(gw.check(&token, "read:docs", file).await.status, 200);
    }

    let candidate = gw.scratch().join("candidate.yaml");
    std::fs::write(&candidate, CANDIDATE).unwrap();
    let report = gw.cli_json(&[
        "policy",
        "replay",
        candidate.to_str().unwrap(),
        "--since",
        "1h",
    ]);
    assert_eq!(report["checked"], 5, "{report}");
    assert_eq!(report["changed"], 3, "{report}");
    assert_eq!(report["replaced"], serde_json::json!(["reads"]));
    assert_eq!(
        report["transitions"],
        serde_json::json!([{"from": "allow", "to": "deny", "count": 3}])
    );
    assert_eq!(
        report["topChangedActions"],
        serde_json::json!([{"action": "read:secrets", "count": 3}])
    );
    let examples: Vec<&str> = report["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["traceId"].as_str().unwrap())
        .collect();
    assert_eq!(examples, secret_traces);
    assert_eq!(report["examples"][0]["to"]["rule"], "no-secrets");

    // The live policy itself changes nothing; a pipeline gate passes on it and fails on the
    // candidate, and the human-readable form names the transition.
    let same = gw.cli(&[
        "policy",
        "replay",
        live.to_str().unwrap(),
        "--fail-on-change",
    ]);
    same.assert_code(0);
    let gate = gw.cli(&[
        "policy",
        "replay",
        candidate.to_str().unwrap(),
        "--fail-on-change",
    ]);
    gate.assert_code(1);
    assert!(
        gate.stdout
            .contains("5 checks decided again, 3 would change"),
        "{}",
        gate.stdout
    );
    assert!(gate.stdout.contains("read:secrets"), "{}", gate.stdout);

    // A broken candidate is refused locally with its position; nothing reaches the gateway.
    let broken = gw.scratch().join("broken.yaml");
    std::fs::write(
        &broken,
        "name: reads\nversion: \"3\"\nrules:\n  - effect: alow\n    actions: [\"x\"]\n",
    )
    .unwrap();
    let refused = gw.cli(&["policy", "replay", broken.to_str().unwrap()]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("broken.yaml:4:13"),
        "{}",
        refused.stderr
    );
}
