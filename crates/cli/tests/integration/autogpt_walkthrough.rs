//! The AutoGPT integration page, followed step by step with the real binary: create the agent,
//! apply the policy, check actions, hit the rate limit, revoke, read the audit trail, and catch a
//! tampered audit row.

use crate::support::{Gateway, repo_root, tamper_audit_reason};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autogpt_page_works_end_to_end() {
    let mut gateway = Gateway::start().await;

    // 1. Create a MeshGuard agent; the token alone is on stdout.
    let created = gateway.cli(&[
        "agent",
        "create",
        "autogpt-agent",
        "--trust",
        "verified",
        "--tags",
        "autogpt,autonomous",
    ]);
    created.assert_code(0);
    let token = created.stdout.trim().to_owned();
    assert_eq!(
        token.split('.').count(),
        3,
        "a JWT on stdout, got {:?}",
        created.stdout
    );
    assert!(
        created.stderr.contains("autogpt-agent"),
        "{}",
        created.stderr
    );

    let listed = gateway.cli(&["agent", "list"]);
    listed.assert_code(0);
    let row = listed
        .stdout
        .lines()
        .find(|l| l.starts_with("autogpt-agent"))
        .expect("the agent is listed");
    assert!(
        row.contains("verified") && row.contains("autogpt,autonomous") && row.contains("active"),
        "{row}"
    );

    // 2. Create the policy.
    let policy = repo_root().join("examples/policies/autogpt.yaml");
    let applied = gateway.cli(&["policy", "apply", policy.to_str().unwrap()]);
    applied.assert_code(0);
    assert!(
        applied.stdout.contains("autogpt-policy"),
        "{}",
        applied.stdout
    );
    let policies = gateway.cli_json(&["policy", "list"]);
    let names: Vec<&str> = policies["policies"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["autogpt-policy"]);

    // The troubleshooting section: what is allowed, and one action tested.
    let allowed = gateway.cli(&["policy", "allowed", "autogpt-agent"]);
    allowed.assert_code(0);
    assert!(
        allowed.stdout.contains("browse:*") && allowed.stdout.contains("execute:shell"),
        "{}",
        allowed.stdout
    );
    let tested = gateway.cli(&["policy", "test", "autogpt-agent", "browse:web"]);
    tested.assert_code(0);
    assert!(
        tested.stdout.contains("allow") && tested.stdout.contains("rule-1"),
        "{}",
        tested.stdout
    );
    let tested = gateway.cli(&[
        "policy",
        "test",
        "autogpt-agent",
        "execute:shell",
        "--resource",
        "ls -la",
        "--verbose",
    ]);
    tested.assert_code(1);
    assert!(
        tested.stdout.contains("denied_by_rule") && tested.stdout.contains("rule-4"),
        "{}",
        tested.stdout
    );

    let verbose = gateway.cli(&[
        "policy",
        "test",
        "autogpt-agent",
        "execute:python",
        "--context",
        "sandbox=true",
        "--verbose",
    ]);
    verbose.assert_code(0);
    assert!(
        verbose.stdout.contains("matched `execute:python`"),
        "{}",
        verbose.stdout
    );

    // "Test Policy Enforcement": allowed, denied with a reason that says so.
    let browse = gateway
        .check(&token, "browse:web", "https://example.com")
        .await;
    assert_eq!(browse.status, 200, "{:?}", browse.body);
    assert_eq!(browse.body["allowed"], true);
    let shell = gateway.check(&token, "execute:shell", "rm -rf /").await;
    assert_eq!(shell.status, 403, "{:?}", shell.body);
    assert!(shell.reason().contains("denied"), "{:?}", shell.body);

    // "Integration Test": a trace id sent by the wrapper, viewed with `audit trace`.
    let trace_id = "walkthrough-6f1d2c";
    let search = gateway
        .check_with(
            &token,
            "search:web",
            "Python tutorials",
            &[("X-Trace-ID", trace_id)],
        )
        .await;
    assert_eq!(search.status, 200);
    let denied_in_trace = gateway
        .check_with(
            &token,
            "execute:shell",
            "ls -la",
            &[("X-Trace-ID", trace_id)],
        )
        .await;
    assert_eq!(denied_in_trace.status, 403);

    // "Rate limiting": 50 quick checks, then the next one is refused for rate.
    let mut statuses = vec![
        browse.status,
        shell.status,
        search.status,
        denied_in_trace.status,
    ];
    for i in 0..50 {
        statuses.push(
            gateway
                .check(&token, "browse:web", &format!("https://example.com/{i}"))
                .await
                .status,
        );
    }
    assert!(
        statuses.iter().skip(4).any(|s| *s == 403),
        "the limit of 30 per minute bites within 50 checks"
    );
    let limited = gateway
        .check(&token, "browse:web", "https://example.com/final")
        .await;
    assert_eq!(limited.status, 403, "{:?}", limited.body);
    assert!(limited.reason().contains("rate"), "{:?}", limited.body);
    assert_eq!(limited.body["code"], "rate_limited");
    let retry_after: u64 = limited
        .retry_after
        .as_deref()
        .expect("Retry-After header")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    statuses.push(limited.status);

    // Monitoring: denials, stats, the trace.
    let denials = gateway.cli(&["audit", "tail", "--decision", "deny", "-n", "100"]);
    denials.assert_code(0);
    assert!(
        denials.stdout.contains("execute:shell") && denials.stdout.contains("rate_limited"),
        "{}",
        denials.stdout
    );
    assert!(
        !denials
            .stdout
            .lines()
            .skip(1)
            .any(|l| l.contains(" allow ")),
        "{}",
        denials.stdout
    );

    let stats = gateway.cli_json(&[
        "audit",
        "stats",
        "--agent",
        "autogpt-agent",
        "--period",
        "1",
    ]);
    // Every check this test made, counted as the agent saw them (`policy test` is not a check).
    let allowed_seen = statuses.iter().filter(|s| **s == 200).count();
    let denied_seen = statuses.iter().filter(|s| **s == 403).count();
    assert_eq!(stats["total"], statuses.len(), "{stats}");
    assert_eq!(stats["allowed"], allowed_seen, "{stats}");
    assert_eq!(stats["denied"], denied_seen, "{stats}");
    assert_eq!(stats["topDenied"][0]["action"], "browse:web", "{stats}");
    let stats_table = gateway.cli(&[
        "audit",
        "stats",
        "--agent",
        "autogpt-agent",
        "--period",
        "1",
    ]);
    stats_table.assert_code(0);
    let total_row = stats_table
        .stdout
        .lines()
        .find(|l| l.starts_with("total"))
        .expect("a total row");
    assert!(
        total_row.contains(&statuses.len().to_string()),
        "{}",
        stats_table.stdout
    );

    let hourly = gateway.cli_json(&[
        "audit",
        "stats",
        "--agent",
        "autogpt-agent",
        "--period",
        "24",
        "--breakdown",
        "hourly",
    ]);
    let buckets = hourly["hourly"].as_array().unwrap();
    assert!(buckets.len() >= 24, "{hourly}");
    let bucketed: u64 = buckets.iter().map(|b| b["total"].as_u64().unwrap()).sum();
    assert_eq!(bucketed, statuses.len() as u64, "{hourly}");

    let trace = gateway.cli(&["audit", "trace", trace_id]);
    trace.assert_code(0);
    let trace_rows: Vec<&str> = trace.stdout.lines().skip(1).collect();
    assert_eq!(trace_rows.len(), 2, "{}", trace.stdout);
    assert!(
        trace_rows[0].contains("search:web") && trace_rows[1].contains("execute:shell"),
        "{}",
        trace.stdout
    );

    // "Emergency Revocation": the next request gets 401.
    gateway
        .cli(&["agent", "revoke", "autogpt-agent"])
        .assert_code(0);
    let after_revoke = gateway
        .check(&token, "browse:web", "https://example.com")
        .await;
    assert_eq!(after_revoke.status, 401, "{:?}", after_revoke.body);
    let shown = gateway.cli_json(&["agent", "show", "autogpt-agent"]);
    assert_eq!(shown["status"], "revoked");

    // The trail verifies; then one row is altered behind the gateway's back.
    let verified = gateway.cli(&["audit", "verify"]);
    verified.assert_code(0);
    assert!(verified.stdout.contains("ok"), "{}", verified.stdout);

    let events = gateway.cli_json(&["audit", "tail", "--decision", "deny", "-n", "1000"]);
    let shell_event = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "execute:shell" && e["kind"] == "check")
        .expect("the shell denial is audited");
    let seq = shell_event["seq"].as_i64().unwrap();

    assert!(
        gateway.stop(),
        "SIGTERM stops the gateway cleanly:\n{}",
        gateway.log()
    );
    tamper_audit_reason(&gateway.data_dir().join("meshguard.db"), seq).await;
    gateway.restart().await;

    let broken = gateway.cli(&["audit", "verify"]);
    broken.assert_code(1);
    assert!(
        broken.stdout.contains(&format!("broken at seq {seq}")),
        "{}\n{}",
        broken.stdout,
        broken.stderr
    );
    let report = gateway.cli(&["--json", "audit", "verify"]);
    assert_eq!(report.code, 1);
    let report: Value = serde_json::from_str(&report.stdout).unwrap();
    assert_eq!(report["ok"], false);
}
