//! SPEC 3's approval table, row by row, through the real binary: an agent's checks over HTTP, the
//! operator's `meshguard approval` commands, the agent's long poll, a restart, and the audit trail.

use std::time::{Duration, Instant};

use crate::support::{CheckAnswer, CliRun, Gateway, http};
use serde_json::{Value, json};

/// `send:email` and `pay:*` need a human; `pay:wire` is denied outright.
const HITL: &str = r#"name: hitl
version: "1"
appliesTo:
  agentIds: [mailer, other]
rules:
  - effect: allow
    actions: ["read:*"]
  - name: no-wire
    effect: deny
    actions: ["pay:wire"]
humanInTheLoop:
  requireApproval: ["send:email", "pay:*"]
  timeoutSeconds: 3600
"#;

/// Seconds an approval of the `hasty` agent stays in force: short, so that expiry is observable.
const QUICK_TIMEOUT_SECS: u64 = 3;

fn quick_policy() -> String {
    format!(
        "name: quick\nversion: \"1\"\nappliesTo:\n  agentIds: [hasty]\nhumanInTheLoop:\n  requireApproval: [\"send:email\"]\n  timeoutSeconds: {QUICK_TIMEOUT_SECS}\n"
    )
}

/// A gateway with both policies applied through the CLI.
async fn gateway() -> Gateway {
    let gateway = Gateway::start().await;
    for (name, text) in [
        ("hitl.yaml", HITL.to_owned()),
        ("quick.yaml", quick_policy()),
    ] {
        let path = gateway.scratch().join(name);
        std::fs::write(&path, text).unwrap();
        gateway
            .cli(&["policy", "apply", path.to_str().unwrap()])
            .assert_code(0);
    }
    gateway
}

/// `POST /proxy/governance/check`, naming an approval in the body when given.
async fn check(
    gateway: &Gateway,
    token: &str,
    action: &str,
    resource: &str,
    approval_id: Option<&str>,
) -> CheckAnswer {
    let mut body = json!({"action": action, "resource": resource});
    if let Some(id) = approval_id {
        body["approval_id"] = json!(id);
    }
    let response = http(Duration::from_secs(10))
        .post(format!("{}/proxy/governance/check", gateway.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    CheckAnswer {
        status,
        retry_after: None,
        body,
    }
}

/// Asserts the answer's status and code and returns its approval id.
fn expect(answer: &CheckAnswer, status: u16, code: &str) -> String {
    assert_eq!(answer.status, status, "{:#}", answer.body);
    assert_eq!(answer.body["code"], code, "{:#}", answer.body);
    answer.body["approval_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `GET /proxy/governance/approvals/{id}?wait=…` as an agent: status and body.
async fn poll(gateway: &Gateway, token: &str, id: &str, wait: u64) -> (u16, Value) {
    crate::support::approval_poll(&gateway.url, token, id, wait).await
}

/// `meshguard --json approval list --status STATUS`: the ids listed.
fn listed_ids(gateway: &Gateway, status: &str) -> Vec<String> {
    let listed = gateway.cli_json(&["approval", "list", "--status", status]);
    listed["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every audit event, oldest first, read with `meshguard audit export`.
fn audit_events(gateway: &Gateway) -> Vec<Value> {
    let run = gateway.cli(&["audit", "export"]);
    run.assert_code(0);
    run.stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Sleeps until an approval created or decided now has run out (a little margin for a slow host).
async fn outlive_quick_timeout() {
    tokio::time::sleep(Duration::from_millis(QUICK_TIMEOUT_SECS * 1000 + 700)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_lets_exactly_one_request_through_and_every_step_is_audited() {
    let gateway = gateway().await;
    let mailer = gateway.create_agent("mailer", "verified", "");

    // No approval yet: a new pending one.
    let first = check(&gateway, &mailer, "send:email", "bob@example.com", None).await;
    let id = expect(&first, 403, "approval_required");
    assert_eq!(first.body["decision"], "require_approval");
    assert_eq!(first.body["requires_approval"], true);
    assert_eq!(first.body["allowed"], false);
    assert_eq!(first.body["policy"], "hitl");
    assert!(id.starts_with("apr_"), "{id}");

    // The operator sees it, with the agent's name.
    let listed = gateway.cli(&["approval", "list"]);
    listed.assert_code(0);
    let header = listed.stdout.lines().next().unwrap();
    for column in [
        "ID",
        "AGENT",
        "ACTION",
        "RESOURCE",
        "STATUS",
        "CREATED",
        "EXPIRES",
        "DECIDED BY",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let row = listed
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not listed:\n{}", listed.stdout));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[..5],
        [
            id.as_str(),
            "mailer",
            "send:email",
            "bob@example.com",
            "pending"
        ]
    );
    assert_eq!(listed_ids(&gateway, "pending"), [id.as_str()]);

    let approved = gateway.cli(&["approval", "approve", &id, "--by", "alice"]);
    approved.assert_code(0);
    assert!(
        approved
            .stdout
            .contains(&format!("approval `{id}` approved by alice")),
        "{}",
        approved.stdout
    );
    assert!(approved.stdout.contains("`mailer`"), "{}", approved.stdout);
    let none = gateway.cli(&["approval", "list"]);
    none.assert_code(0);
    assert_eq!(none.stdout.trim(), "no pending approvals");
    assert_eq!(listed_ids(&gateway, "approved"), [id.as_str()]);

    // Named by id: allowed once; a second use needs a new approval.
    let allowed = check(
        &gateway,
        &mailer,
        "send:email",
        "bob@example.com",
        Some(&id),
    )
    .await;
    assert_eq!(expect(&allowed, 200, "allowed_with_approval"), id);
    assert_eq!(allowed.body["decision"], "allow");
    assert_eq!(allowed.body["allowed"], true);
    let reused = check(
        &gateway,
        &mailer,
        "send:email",
        "bob@example.com",
        Some(&id),
    )
    .await;
    let second = expect(&reused, 403, "approval_required");
    assert_ne!(second, id);
    assert_eq!(listed_ids(&gateway, "used"), [id.as_str()]);
    // Naming the used one again finds the pending one, as a plain retry would.
    let stale = check(
        &gateway,
        &mailer,
        "send:email",
        "bob@example.com",
        Some(&id),
    )
    .await;
    assert_eq!(expect(&stale, 403, "approval_pending"), second);
    assert_eq!(listed_ids(&gateway, "pending"), [second.as_str()]);

    // A used approval cannot be decided again; the error names its state.
    let again = gateway.cli(&["approval", "approve", &id]);
    again.assert_code(1);
    assert_eq!(
        again.stderr.trim(),
        format!("error: approval `{id}` is already used (decided by alice); nothing changed")
    );

    // A plain retry (no id) of an approved request is allowed once too. The default operator is
    // the account the command runs as.
    let approved = gateway.cli(&["--json", "approval", "approve", &second]);
    approved.assert_code(0);
    let decided: Value = serde_json::from_str(&approved.stdout).unwrap();
    assert_eq!(decided["status"], "approved");
    let operator = decided["decidedBy"].as_str().unwrap().to_owned();
    assert!(!operator.is_empty() && operator != "admin", "{operator}");
    let plain = check(&gateway, &mailer, "send:email", "bob@example.com", None).await;
    assert_eq!(expect(&plain, 200, "allowed_with_approval"), second);
    let plain_again = check(&gateway, &mailer, "send:email", "bob@example.com", None).await;
    let third = expect(&plain_again, 403, "approval_required");
    assert!(third != id && third != second);

    // The trail: each check carries its approval id, each decision is an `approval` event.
    let events = audit_events(&gateway);
    let checks: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["kind"] == "check" && e["action"] == "send:email")
        .map(|e| {
            (
                e["code"].as_str().unwrap(),
                e["approval_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        checks,
        [
            ("approval_required", id.as_str()),
            ("allowed_with_approval", id.as_str()),
            ("approval_required", second.as_str()),
            ("approval_pending", second.as_str()),
            ("allowed_with_approval", second.as_str()),
            ("approval_required", third.as_str()),
        ]
    );
    let decisions: Vec<(&str, &str, &str, &str)> = events
        .iter()
        .filter(|e| e["kind"] == "approval")
        .map(|e| {
            (
                e["approval_id"].as_str().unwrap(),
                e["decision"].as_str().unwrap(),
                e["code"].as_str().unwrap(),
                e["agent"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [
            (id.as_str(), "allow", "approval_approved", "mailer"),
            (second.as_str(), "allow", "approval_approved", "mailer"),
        ]
    );
    let by_alice = events
        .iter()
        .find(|e| e["kind"] == "approval" && e["approval_id"] == id.as_str())
        .unwrap();
    assert!(
        by_alice["reason"].as_str().unwrap().contains("alice"),
        "{by_alice:#}"
    );
    gateway.cli(&["audit", "verify"]).assert_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_approval_is_reused_and_a_denied_one_is_refused_with_its_id() {
    let gateway = gateway().await;
    let mailer = gateway.create_agent("mailer", "verified", "");

    let id = expect(
        &check(&gateway, &mailer, "pay:invoice", "inv-7", None).await,
        403,
        "approval_required",
    );
    // Pending: the same id, whether the retry names it or not.
    let pending = check(&gateway, &mailer, "pay:invoice", "inv-7", None).await;
    assert_eq!(expect(&pending, 403, "approval_pending"), id);
    assert_eq!(pending.body["decision"], "require_approval");
    assert_eq!(pending.body["requires_approval"], true);
    let named = check(&gateway, &mailer, "pay:invoice", "inv-7", Some(&id)).await;
    assert_eq!(expect(&named, 403, "approval_pending"), id);
    // Normalisation: the same resource spelled differently is the same approval.
    let spelled = check(&gateway, &mailer, "pay:invoice", "./inv-7", None).await;
    assert_eq!(expect(&spelled, 403, "approval_pending"), id);
    assert_eq!(listed_ids(&gateway, "pending"), [id.as_str()]);

    let denied = gateway.cli(&[
        "approval",
        "deny",
        &id,
        "--reason",
        "not on a Friday",
        "--by",
        "bob",
    ]);
    denied.assert_code(0);
    assert!(
        denied
            .stdout
            .contains(&format!("approval `{id}` denied by bob")),
        "{}",
        denied.stdout
    );

    // Denied: refused with the same id, named or plain, and no new approval is created.
    for named in [None, Some(id.as_str())] {
        let refused = check(&gateway, &mailer, "pay:invoice", "inv-7", named).await;
        assert_eq!(expect(&refused, 403, "approval_denied"), id);
        assert_eq!(refused.body["decision"], "deny");
        assert_eq!(refused.body["requires_approval"], false);
        assert!(
            refused.reason().ends_with(": not on a friday"),
            "the human's reason reaches the agent: {}",
            refused.reason()
        );
    }
    assert_eq!(listed_ids(&gateway, "all"), [id.as_str()]);
    assert_eq!(listed_ids(&gateway, "denied"), [id.as_str()]);

    // The agent sees who said no and why.
    let (status, seen) = poll(&gateway, &mailer, &id, 0).await;
    assert_eq!(status, 200);
    assert_eq!(seen["status"], "denied");
    assert_eq!(seen["decided_by"], "bob");
    assert_eq!(seen["reason"], "not on a Friday");

    // A decision is final.
    for verb in ["approve", "deny"] {
        let twice = gateway.cli(&["approval", verb, &id]);
        twice.assert_code(1);
        assert_eq!(
            twice.stderr.trim(),
            format!("error: approval `{id}` is already denied (decided by bob); nothing changed")
        );
    }

    let events = audit_events(&gateway);
    let decision = events.iter().find(|e| e["kind"] == "approval").unwrap();
    assert_eq!(decision["decision"], "deny");
    assert_eq!(decision["code"], "approval_denied");
    assert_eq!(decision["approval_id"], id.as_str());
    assert!(
        decision["reason"]
            .as_str()
            .unwrap()
            .contains("not on a Friday"),
        "{decision:#}"
    );
    let refusals = events
        .iter()
        .filter(|e| e["kind"] == "check" && e["code"] == "approval_denied")
        .filter(|e| e["approval_id"] == id.as_str())
        .count();
    assert_eq!(refusals, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_expire_after_their_timeout() {
    let gateway = gateway().await;
    let hasty = gateway.create_agent("hasty", "verified", "");
    let ask = || check(&gateway, &hasty, "send:email", "ops@example.com", None);

    // Pending, and nobody decides in time: the next check gets a new approval.
    let first = ask().await;
    let pending = expect(&first, 403, "approval_required");
    let expires = time::OffsetDateTime::parse(
        gateway.cli_json(&["approval", "list"])["approvals"][0]["expiresAt"]
            .as_str()
            .unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let created = time::OffsetDateTime::parse(
        gateway.cli_json(&["approval", "list"])["approvals"][0]["createdAt"]
            .as_str()
            .unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(
        (expires - created).whole_seconds(),
        i64::try_from(QUICK_TIMEOUT_SECS).unwrap(),
        "the policy's timeoutSeconds applies"
    );
    outlive_quick_timeout().await;
    assert_eq!(listed_ids(&gateway, "expired"), [pending.as_str()]);
    let late = gateway.cli(&["approval", "approve", &pending]);
    late.assert_code(1);
    assert_eq!(
        late.stderr.trim(),
        format!("error: approval `{pending}` is already expired; nothing changed")
    );
    let renewed = expect(&ask().await, 403, "approval_required");
    assert_ne!(renewed, pending);

    // Approved but never used in time: expired too.
    gateway
        .cli(&["approval", "approve", &renewed])
        .assert_code(0);
    outlive_quick_timeout().await;
    let unused = expect(&ask().await, 403, "approval_required");
    assert!(unused != renewed && unused != pending);
    let expired = listed_ids(&gateway, "expired");
    assert!(
        expired.contains(&pending) && expired.contains(&renewed),
        "{expired:?}"
    );

    // Denied: refused until the timeout since the decision runs out, then asked again.
    gateway
        .cli(&["approval", "deny", &unused, "--reason", "later"])
        .assert_code(0);
    assert_eq!(expect(&ask().await, 403, "approval_denied"), unused);
    outlive_quick_timeout().await;
    let after_denial = expect(&ask().await, 403, "approval_required");
    assert!(![&pending, &renewed, &unused].contains(&&after_denial));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_or_unknown_approval_id_is_ignored() {
    let gateway = gateway().await;
    let mailer = gateway.create_agent("mailer", "verified", "");
    let other = gateway.create_agent("other", "verified", "");

    // Another agent's approved approval for the very same action and resource.
    let theirs = expect(
        &check(&gateway, &other, "send:email", "bob", None).await,
        403,
        "approval_required",
    );
    gateway
        .cli(&["approval", "approve", &theirs])
        .assert_code(0);
    let borrowed = check(&gateway, &mailer, "send:email", "bob", Some(&theirs)).await;
    let mine = expect(&borrowed, 403, "approval_required");
    assert_ne!(mine, theirs);
    assert!(
        borrowed.reason().contains("ignored"),
        "{}",
        borrowed.reason()
    );
    assert!(borrowed.reason().contains(&theirs), "{}", borrowed.reason());
    // It was not used up by the attempt, and the agent cannot even see it.
    assert_eq!(
        expect(
            &check(&gateway, &other, "send:email", "bob", Some(&theirs)).await,
            200,
            "allowed_with_approval"
        ),
        theirs
    );
    let (status, body) = poll(&gateway, &mailer, &theirs, 0).await;
    assert_eq!(status, 404, "{body:#}");

    // The agent's own approval, named for another resource or another action.
    gateway.cli(&["approval", "approve", &mine]).assert_code(0);
    let elsewhere = check(&gateway, &mailer, "send:email", "carol", Some(&mine)).await;
    let carol = expect(&elsewhere, 403, "approval_required");
    assert_ne!(carol, mine);
    assert!(
        elsewhere.reason().contains("ignored"),
        "{}",
        elsewhere.reason()
    );
    let other_action = check(&gateway, &mailer, "pay:invoice", "bob", Some(&mine)).await;
    let invoice = expect(&other_action, 403, "approval_required");
    assert!(invoice != mine && invoice != carol);
    assert!(
        other_action.reason().contains("ignored"),
        "{}",
        other_action.reason()
    );

    // An unknown id: answered as if none was named, so the approved one is found and used.
    let unknown = check(
        &gateway,
        &mailer,
        "send:email",
        "bob",
        Some("apr_0000000000"),
    )
    .await;
    assert_eq!(expect(&unknown, 200, "allowed_with_approval"), mine);
    assert!(unknown.reason().contains("ignored"), "{}", unknown.reason());
    assert!(
        unknown.reason().contains("apr_0000000000"),
        "{}",
        unknown.reason()
    );

    // The operator's side of an unknown id.
    let missing = gateway.cli(&["approval", "approve", "apr_0000000000"]);
    missing.assert_code(1);
    assert_eq!(missing.stderr.trim(), "error: no approval `apr_0000000000`");
    gateway
        .cli(&["approval", "deny", "apr_0000000000", "--reason", "x"])
        .assert_code(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_deny_beats_an_approval_entry() {
    let gateway = gateway().await;
    let mailer = gateway.create_agent("mailer", "verified", "");

    // `pay:*` needs approval, but rule `no-wire` denies `pay:wire`: no approval is created.
    let wire = check(&gateway, &mailer, "pay:wire", "acme", None).await;
    assert_eq!(expect(&wire, 403, "denied_by_rule"), "");
    assert_eq!(wire.body["rule"], "no-wire");
    assert_eq!(wire.body["approval_id"], Value::Null);
    assert_eq!(wire.body["requires_approval"], false);
    assert!(listed_ids(&gateway, "all").is_empty());

    // Not even an approved approval named by id gets it through.
    let invoice = expect(
        &check(&gateway, &mailer, "pay:invoice", "acme", None).await,
        403,
        "approval_required",
    );
    gateway
        .cli(&["approval", "approve", &invoice])
        .assert_code(0);
    let named = check(&gateway, &mailer, "pay:wire", "acme", Some(&invoice)).await;
    expect(&named, 403, "denied_by_rule");
    assert_eq!(listed_ids(&gateway, "approved"), [invoice]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_approval_survives_a_restart() {
    let mut gateway = gateway().await;
    let mailer = gateway.create_agent("mailer", "verified", "");
    let id = expect(
        &check(&gateway, &mailer, "send:email", "board", None).await,
        403,
        "approval_required",
    );

    assert!(gateway.stop(), "graceful stop:\n{}", gateway.log());
    gateway.restart().await;

    assert_eq!(listed_ids(&gateway, "pending"), [id.as_str()]);
    assert_eq!(
        expect(
            &check(&gateway, &mailer, "send:email", "board", None).await,
            403,
            "approval_pending"
        ),
        id
    );
    gateway.cli(&["approval", "approve", &id]).assert_code(0);
    assert_eq!(
        expect(
            &check(&gateway, &mailer, "send:email", "board", Some(&id)).await,
            200,
            "allowed_with_approval"
        ),
        id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_long_poll_returns_as_soon_as_a_human_decides() {
    let gateway = gateway().await;
    let mailer = gateway.create_agent("mailer", "verified", "");
    let other = gateway.create_agent("other", "verified", "");
    let id = expect(
        &check(&gateway, &mailer, "send:email", "all-staff", None).await,
        403,
        "approval_required",
    );

    // Undecided, no wait: the answer is immediate and pending.
    let (status, now) = poll(&gateway, &mailer, &id, 0).await;
    assert_eq!(status, 200);
    assert_eq!(now["status"], "pending");
    assert_eq!(now["approval_id"], id.as_str());
    // Another agent's token: 404, as if it did not exist.
    let (status, _) = poll(&gateway, &other, &id, 30).await;
    assert_eq!(status, 404);

    let started = Instant::now();
    let waiting = {
        let url = gateway.url.clone();
        let token = mailer.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let (status, body) = crate::support::approval_poll(&url, &token, &id, 30).await;
            (status, body, time::OffsetDateTime::now_utc())
        })
    };
    // The poll has reached the gateway and waits for a decision.
    crate::support::approval_polls_waiting(&gateway.url, 1).await;
    assert!(
        !waiting.is_finished(),
        "the poll returned before any decision"
    );

    let approve = {
        let mut command = std::process::Command::new(crate::support::BIN);
        command
            .arg("--url")
            .arg(&gateway.url)
            .arg("--data-dir")
            .arg(gateway.data_dir())
            .args(["approval", "approve", &id, "--by", "carol"]);
        tokio::task::spawn_blocking(move || CliRun::run(command))
    };
    let (status, body, returned_at) = tokio::time::timeout(Duration::from_secs(40), waiting)
        .await
        .expect("the long poll is bounded")
        .unwrap();
    approve.await.unwrap().assert_code(0);
    // Answered, the poll no longer counts as waiting.
    crate::support::approval_polls_waiting(&gateway.url, 0).await;

    assert_eq!(status, 200);
    assert_eq!(body["status"], "approved");
    assert_eq!(body["decided_by"], "carol");
    // Measured against the decision's own timestamp (same host, same clock).
    let approved = gateway.cli_json(&["approval", "list", "--status", "approved"]);
    let decided_at = time::OffsetDateTime::parse(
        approved["approvals"][0]["decidedAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let after_decision = returned_at - decided_at;
    assert!(
        after_decision < time::Duration::seconds(1),
        "the poll returned {after_decision} after the decision"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "far before the 30 s wait"
    );

    // Once decided, a poll answers at once.
    let asked = Instant::now();
    let (_, decided) = poll(&gateway, &mailer, &id, 30).await;
    assert_eq!(decided["status"], "approved");
    assert!(asked.elapsed() < Duration::from_secs(2));
}

#[test]
fn approval_commands_check_their_arguments_and_the_gateway() {
    let bad = CliRun::bare(&["approval", "list", "--status", "maybe"]);
    bad.assert_code(2);
    CliRun::bare(&["approval", "deny"]).assert_code(2);
    let unreachable = CliRun::bare(&[
        "--url",
        "http://127.0.0.1:1",
        "--admin-token",
        "t",
        "approval",
        "approve",
        "apr_1",
    ]);
    unreachable.assert_code(5);
    assert!(
        unreachable.stderr.contains("cannot reach the gateway"),
        "{}",
        unreachable.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_share_one_approval_and_an_approval_is_used_once() {
    let gateway = gateway().await;
    let mailer = gateway.create_agent("mailer", "verified", "");
    // One client with its connections opened beforehand, so that the checks really overlap.
    let client = http(Duration::from_secs(10));
    let url = format!("{}/proxy/governance/check", gateway.url);
    let body = json!({"action": "send:email", "resource": "launch"});
    let warm = (0..8).map(|_| client.get(format!("{}/health", gateway.url)).send());
    futures::future::join_all(warm).await;
    let burst = || {
        futures::future::join_all((0..8).map(|_| async {
            let response = client
                .post(&url)
                .bearer_auth(&mailer)
                .json(&body)
                .send()
                .await
                .unwrap();
            let answer: Value = response.json().await.unwrap();
            (
                answer["code"].as_str().unwrap().to_owned(),
                answer["approval_id"].as_str().unwrap().to_owned(),
            )
        }))
    };
    let answers = burst().await;
    let mut ids: Vec<&str> = answers.iter().map(|(_, id)| id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 1, "{answers:?}");
    let first = ids[0].to_owned();
    assert_eq!(listed_ids(&gateway, "all"), [first.as_str()]);

    // Approved: exactly one of a burst goes through; the others share the next approval.
    gateway.cli(&["approval", "approve", &first]).assert_code(0);
    let answers = burst().await;
    let count = |code: &str| answers.iter().filter(|(c, _)| c == code).count();
    assert_eq!(count("allowed_with_approval"), 1, "{answers:?}");
    assert_eq!(count("approval_required"), 1, "{answers:?}");
    assert_eq!(count("approval_pending"), 6, "{answers:?}");
    let next: Vec<&str> = answers
        .iter()
        .filter(|(c, _)| c != "allowed_with_approval")
        .map(|(_, id)| id.as_str())
        .collect();
    assert!(
        next.iter().all(|id| *id == next[0] && *id != first),
        "{answers:?}"
    );
    assert_eq!(listed_ids(&gateway, "pending"), [next[0]]);
}

/// The bash block between docs/approvals.md's walkthrough markers.
fn walkthrough_block() -> String {
    let guide =
        std::fs::read_to_string(crate::support::repo_root().join("docs/approvals.md")).unwrap();
    let start = guide
        .find("<!-- approvals-walkthrough -->")
        .expect("walkthrough marker");
    let section = &guide[start..];
    let end = section
        .find("<!-- /approvals-walkthrough -->")
        .expect("walkthrough end marker");
    let section = &section[..end];
    let code_start = section.find("```bash\n").expect("a bash block") + "```bash\n".len();
    let code_end = section[code_start..].find("```").unwrap();
    section[code_start..code_start + code_end].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approvals_guide_walkthrough_runs_as_written() {
    for tool in ["curl", "jq"] {
        if std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_err()
        {
            panic!("the approvals walkthrough uses {tool}; install it to run this test");
        }
    }
    let gateway = Gateway::start().await;
    let bin_dir = std::path::Path::new(crate::support::BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = std::process::Command::new("bash");
    command
        .args(["-euo", "pipefail", "-c", &walkthrough_block()])
        .current_dir(crate::support::repo_root());
    let data_dir = gateway.data_dir();
    let run = tokio::task::spawn_blocking(move || {
        CliRun::run_with_env(
            command,
            &[
                ("MESHGUARD_URL", gateway.url.as_str()),
                ("MESHGUARD_HOME", data_dir.to_str().unwrap()),
                ("PATH", path.as_str()),
            ],
        )
    });
    let run = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the walkthrough is bounded")
        .unwrap();
    run.assert_code(0);

    // The answers the guide shows, in its order.
    let answers: Vec<Value> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let polled = &answers[0];
    assert_eq!(polled["status"], "approved", "{}", run.stdout);
    assert_eq!(polled["decided_by"], "alice");
    let first = polled["approval_id"].as_str().unwrap();
    let codes: Vec<(&str, &str)> = answers[1..]
        .iter()
        .map(|a| {
            (
                a["code"].as_str().unwrap(),
                a["approval_id"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    let next = codes[1].1;
    assert_eq!(
        codes,
        [
            ("allowed_with_approval", first),
            ("approval_required", next),
            ("approval_denied", next),
            ("denied_by_rule", "-"),
        ],
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("approval `{first}` approved by alice")),
        "{}",
        run.stdout
    );
    let audit_rows = run
        .stdout
        .lines()
        .filter(|l| l.contains(" approval ") && l.contains("prod-bot"))
        .count();
    assert_eq!(audit_rows, 2, "{}", run.stdout);
}
