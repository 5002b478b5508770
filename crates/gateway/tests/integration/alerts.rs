//! Alerts reach real HTTP receivers on loopback: signed webhook bodies, readable Slack text,
//! every trigger, retries with backoff, a full queue that drops and counts, and checks that stay
//! answered while a receiver never answers; `error` alerts for a broken policy file and for audit
//! batches that cannot be committed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::TestGateway;
use crate::common::severable::Severable;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::post;
use meshguard_gateway::alerts::{Alert, AlertSettings, Trigger, WebhookReceiver, sign};
use meshguard_gateway::config::{AuditDurability, Mode, Secret};
use meshguard_gateway::data_dir::DataDir;
use meshguard_gateway::rate_limit::ManualClock;
use meshguard_gateway::{AppState, GatewayOptions};
use meshguard_store::StoreLocation;
use serde_json::{Value, json};
use tokio::sync::mpsc;

const SECRET: &str = "webhook-hmac-secret";

const ALERTING: &str = r#"
name: alerting
version: "1"
appliesTo:
  tags: [ops]
rules:
  - name: no-shell
    effect: deny
    actions: ["execute:shell"]
  - name: search
    effect: allow
    actions: ["search:*"]
    conditions:
      rateLimit: {requestsPerMinute: 1}
  - effect: allow
    actions: ["read:*"]
humanInTheLoop:
  requireApproval: ["send:email"]
defaultEffect: deny
"#;

/// What the receiver does with the next request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Status(u16),
    /// Accepts the request and never answers.
    Hang,
}

#[derive(Debug)]
struct Seen {
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

#[derive(Clone)]
struct Plan {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    then: Answer,
    seen: mpsc::UnboundedSender<Seen>,
}

async fn receive(State(plan): State<Plan>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let _ = plan.seen.send(Seen {
        headers,
        body,
        at: Instant::now(),
    });
    let answer = plan
        .answers
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(plan.then);
    match answer {
        Answer::Status(code) => StatusCode::from_u16(code).unwrap(),
        Answer::Hang => std::future::pending().await,
    }
}

/// A recording HTTP receiver on 127.0.0.1:0 that answers `answers` in turn, then `then`.
async fn receiver(answers: &[Answer], then: Answer) -> (String, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let plan = Plan {
        answers: Arc::new(Mutex::new(answers.iter().copied().collect())),
        then,
        seen: tx,
    };
    let app = Router::new().route("/hook", post(receive)).with_state(plan);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

async fn next(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .expect("no alert arrived within 10 s")
        .expect("receiver stopped")
}

fn webhook(url: &str) -> Option<WebhookReceiver> {
    Some(WebhookReceiver {
        url: Secret::new(url),
        secret: Some(Secret::new(SECRET)),
    })
}

fn fast(settings: AlertSettings) -> AlertSettings {
    AlertSettings {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        request_timeout: Duration::from_secs(2),
        ..settings
    }
}

/// The common test gateway, with alert settings.
async fn gateway(alerts: AlertSettings) -> TestGateway {
    gateway_with(alerts, AuditDurability::Sync, true).await
}

/// The common test gateway, with alert settings, an audit durability, and with or without the
/// audit write-ahead log.
async fn gateway_with(
    alerts: AlertSettings,
    audit_durability: AuditDurability,
    audit_log: bool,
) -> TestGateway {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path(), None).unwrap();
    let store = meshguard_store::open(&StoreLocation::in_data_dir(dir.path()))
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new());
    let options = GatewayOptions {
        mode: Mode::Enforce,
        audit_durability,
        clock: clock.clone(),
        alerts,
        audit_log,
        ..GatewayOptions::default()
    };
    let link = Arc::new(Severable::new(store.clone()));
    let (state, background) = AppState::new(link.clone(), &data, options).await.unwrap();
    let gw = TestGateway {
        state,
        background: Some(background),
        clock,
        store,
        link,
        admin: data.admin_token.expose().to_owned(),
        dir,
    };
    gw.policy(ALERTING).await;
    gw
}

fn metric(gw: &TestGateway, line: &str) -> bool {
    gw.state.metrics.render().unwrap().contains(line)
}

/// The body of a signed webhook delivery, after checking its signature and event header.
fn verified(seen: &Seen) -> Value {
    let signature = seen.headers["x-meshguard-signature"].to_str().unwrap();
    assert_eq!(signature, sign(SECRET, &seen.body));
    // Recomputed independently, as a receiver would.
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&seen.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(signature, expected);
    let body: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(
        seen.headers["x-meshguard-event"].to_str().unwrap(),
        body["event"].as_str().unwrap()
    );
    body
}

#[tokio::test]
async fn every_trigger_reaches_the_webhook_signed() {
    let (url, mut seen) = receiver(&[], Answer::Status(200)).await;
    let gw = gateway(fast(AlertSettings {
        webhook: webhook(&url),
        ..AlertSettings::default()
    }))
    .await;
    let (agent_id, token) = gw.agent("ops-agent", "verified", &["ops"]).await;

    // An allowed check raises nothing; the next alert must be the deny.
    let allowed = gw.check(&token, json!({"action": "read:docs"})).await;
    assert_eq!(allowed.status, StatusCode::OK);
    let denied = gw
        .check(
            &token,
            json!({"action": "execute:shell", "resource": "rm -rf /"}),
        )
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let body = verified(&next(&mut seen).await);
    assert_eq!(body["event"], "deny");
    assert_eq!(body["agent"], json!({"id": agent_id, "name": "ops-agent"}));
    assert_eq!(body["action"], "execute:shell");
    assert_eq!(body["resource"], "rm -rf /");
    assert_eq!(body["decision"], "deny");
    assert_eq!(body["code"], "denied_by_rule");
    assert_eq!(body["policy"], "alerting");
    assert_eq!(body["rule"], "no-shell");
    assert_eq!(body["reason"], denied.body["reason"]);
    assert_eq!(body["trace_id"], denied.body["trace_id"]);
    assert_eq!(body["audit_id"], denied.body["audit_id"]);
    assert_eq!(body["gateway"], gw.state.instance_id.as_str());
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));

    gw.check(&token, json!({"action": "search:web"})).await;
    let limited = gw.check(&token, json!({"action": "search:web"})).await;
    assert_eq!(limited.body["code"], "rate_limited");
    let body = verified(&next(&mut seen).await);
    assert_eq!(body["event"], "rate_limit");
    assert_eq!(body["code"], "rate_limited");

    let held = gw.check(&token, json!({"action": "send:email"})).await;
    assert_eq!(held.body["decision"], "require_approval");
    let body = verified(&next(&mut seen).await);
    assert_eq!(body["event"], "approval_required");
    assert_eq!(body["approval_id"], held.body["approval_id"]);

    let revoked = gw
        .admin(Method::POST, "/admin/agents/ops-agent/revoke", None)
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text);
    let body = verified(&next(&mut seen).await);
    assert_eq!(body["event"], "agent_revoked");
    assert_eq!(body["agent"]["name"], "ops-agent");

    let (_, other) = gw.agent("ops-two", "verified", &["ops"]).await;
    gw.link.cut(true);
    let down = gw.check(&other, json!({"action": "read:docs"})).await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = verified(&next(&mut seen).await);
    assert_eq!(body["event"], "error");
    assert_eq!(body["code"], "unavailable");
    assert_eq!(body["trace_id"], down.body["trace_id"]);
    gw.link.cut(false);

    // One alert per trigger: the next one the receiver sees is the witness.
    quiet(&gw, &mut [&mut seen]).await;
    // Five alerts and the witness, counted once the witness's delivery has been answered.
    let sent = r#"meshguard_alerts_sent_total{receiver="webhook"} 6"#;
    for _ in 0..100 {
        if metric(&gw, sent) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(metric(&gw, sent));
}

#[tokio::test]
async fn only_the_configured_triggers_alert() {
    let (url, mut seen) = receiver(&[], Answer::Status(200)).await;
    let gw = gateway(fast(AlertSettings {
        webhook: webhook(&url),
        triggers: [Trigger::RateLimit].into_iter().collect(),
        ..AlertSettings::default()
    }))
    .await;
    let (_, token) = gw.agent("ops-agent", "verified", &["ops"]).await;
    gw.check(&token, json!({"action": "execute:shell"})).await;
    gw.check(&token, json!({"action": "search:web"})).await;
    gw.check(&token, json!({"action": "search:web"})).await;
    let body = verified(&next(&mut seen).await);
    assert_eq!(body["event"], "rate_limit");
}

#[tokio::test]
async fn a_failing_receiver_gets_the_alert_on_the_third_try_with_backoff() {
    let (url, mut seen) = receiver(
        &[Answer::Status(500), Answer::Status(500)],
        Answer::Status(200),
    )
    .await;
    let gw = gateway(fast(AlertSettings {
        webhook: webhook(&url),
        max_attempts: 4,
        ..AlertSettings::default()
    }))
    .await;
    let (_, token) = gw.agent("ops-agent", "verified", &["ops"]).await;
    gw.check(&token, json!({"action": "execute:shell"})).await;

    let tries = [
        next(&mut seen).await,
        next(&mut seen).await,
        next(&mut seen).await,
    ];
    let delivery = &tries[0].headers["x-meshguard-delivery"];
    for seen in &tries {
        assert_eq!(&seen.headers["x-meshguard-delivery"], delivery);
        assert_eq!(verified(seen)["event"], "deny");
    }
    // Backoff: 50 ms, then 100 ms.
    assert!(tries[1].at - tries[0].at >= Duration::from_millis(50));
    assert!(tries[2].at - tries[1].at >= Duration::from_millis(100));
    for _ in 0..100 {
        if metric(&gw, r#"meshguard_alerts_sent_total{receiver="webhook"} 1"#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(metric(
        &gw,
        r#"meshguard_alerts_sent_total{receiver="webhook"} 1"#
    ));
    // No attempt after the success: the next request the receiver sees is the witness.
    quiet(&gw, &mut [&mut seen]).await;
}

#[tokio::test]
async fn a_receiver_that_keeps_failing_is_given_up_and_counted() {
    let (url, mut seen) = receiver(&[], Answer::Status(503)).await;
    let gw = gateway(fast(AlertSettings {
        webhook: webhook(&url),
        max_attempts: 3,
        ..AlertSettings::default()
    }))
    .await;
    let (_, token) = gw.agent("ops-agent", "verified", &["ops"]).await;
    gw.check(&token, json!({"action": "execute:shell"})).await;
    for _ in 0..3 {
        next(&mut seen).await;
    }
    for _ in 0..100 {
        if metric(
            &gw,
            r#"meshguard_alerts_failed_total{receiver="webhook"} 1"#,
        ) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(metric(
        &gw,
        r#"meshguard_alerts_failed_total{receiver="webhook"} 1"#
    ));
    // Exactly max_attempts tries: the next request the receiver sees is the witness.
    quiet(&gw, &mut [&mut seen]).await;
}

#[tokio::test]
async fn checks_are_answered_while_a_receiver_hangs_and_other_receivers_still_hear() {
    let (hanging, mut hung) = receiver(&[], Answer::Hang).await;
    let (slack, mut heard) = receiver(&[], Answer::Status(200)).await;
    let gw = gateway(AlertSettings {
        webhook: webhook(&hanging),
        slack: Some(Secret::new(slack)),
        request_timeout: Duration::from_secs(60),
        concurrency: 2,
        queue_capacity: 8,
        ..AlertSettings::default()
    })
    .await;
    let (_, token) = gw.agent("ops-agent", "verified", &["ops"]).await;

    // 40 denied checks while every webhook request hangs for a minute: all are answered, and
    // well before the hanging requests could have timed out.
    let answered = tokio::time::timeout(Duration::from_secs(10), async {
        for _ in 0..40 {
            let reply = gw.check(&token, json!({"action": "execute:shell"})).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN);
        }
    })
    .await;
    assert!(answered.is_ok(), "checks waited for a hanging receiver");
    next(&mut hung).await;
    // Slack is not held up by the hanging webhook.
    let first = next(&mut heard).await;
    let text: Value = serde_json::from_slice(&first.body).unwrap();
    assert!(text["text"].as_str().unwrap().contains("execute:shell"));
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_without_waiting() {
    let (hanging, _hung) = receiver(&[], Answer::Hang).await;
    let gw = gateway(AlertSettings {
        webhook: webhook(&hanging),
        queue_capacity: 2,
        request_timeout: Duration::from_secs(60),
        ..AlertSettings::default()
    })
    .await;
    let alert = Alert {
        decision: Some(meshguard_policy::Effect::Deny),
        code: Some("denied_by_rule"),
        ..Alert::new(Trigger::Deny, "g", "execute:shell", "r".into())
    };
    // No await between the hand-overs: the dispatcher cannot take any off the queue, so exactly
    // the queue's capacity is kept and the rest are dropped.
    for _ in 0..50 {
        gw.state.alerts.emit(alert.clone());
    }
    assert!(
        metric(&gw, r#"meshguard_alerts_dropped_total{trigger="deny"} 48"#),
        "{}",
        gw.state.metrics.render().unwrap()
    );
}

#[tokio::test]
async fn alerts_over_the_per_trigger_rate_are_suppressed_and_counted() {
    let (url, mut seen) = receiver(&[], Answer::Status(200)).await;
    let gw = gateway(fast(AlertSettings {
        webhook: webhook(&url),
        per_minute: 2,
        ..AlertSettings::default()
    }))
    .await;
    let (_, token) = gw.agent("ops-agent", "verified", &["ops"]).await;
    for _ in 0..5 {
        gw.check(&token, json!({"action": "execute:shell"})).await;
    }
    gw.check(&token, json!({"action": "send:email"})).await;
    let mut events = Vec::new();
    for _ in 0..3 {
        events.push(verified(&next(&mut seen).await)["event"].clone());
    }
    // The deny budget is spent; approval_required has its own.
    assert_eq!(events, vec!["deny", "deny", "approval_required"]);
    assert!(metric(
        &gw,
        r#"meshguard_alerts_suppressed_total{trigger="deny"} 3"#
    ));
    quiet(&gw, &mut [&mut seen]).await;
}

#[tokio::test]
async fn slack_gets_a_readable_one_liner() {
    let (url, mut seen) = receiver(&[], Answer::Status(200)).await;
    let gw = gateway(fast(AlertSettings {
        slack: Some(Secret::new(url)),
        ..AlertSettings::default()
    }))
    .await;
    let (_, token) = gw.agent("autogpt-agent", "verified", &["ops"]).await;
    gw.check(&token, json!({"action": "execute:shell"})).await;
    let seen = next(&mut seen).await;
    let body: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(
        body,
        json!({"text": ":no_entry: MeshGuard denied `execute:shell` for agent `autogpt-agent` (no-shell of alerting)"})
    );
    assert!(!seen.headers.contains_key("x-meshguard-signature"));
}

#[tokio::test]
async fn the_test_endpoint_reports_each_receiver() {
    let (url, mut seen) = receiver(&[], Answer::Status(200)).await;
    // A port nothing listens on: bound, then released.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/slack", listener.local_addr().unwrap())
    };
    let gw = gateway(fast(AlertSettings {
        webhook: webhook(&url),
        slack: Some(Secret::new(closed)),
        ..AlertSettings::default()
    }))
    .await;
    let reply = gw
        .admin(
            Method::POST,
            "/admin/alerts/test",
            Some(json!({"trigger": "agent_revoked"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["trigger"], "agent_revoked");
    assert_eq!(reply.body["receivers"][0]["receiver"], "webhook");
    assert_eq!(reply.body["receivers"][0]["delivered"], true);
    assert_eq!(reply.body["receivers"][1]["receiver"], "slack");
    assert_eq!(reply.body["receivers"][1]["delivered"], false);
    let error = reply.body["receivers"][1]["error"].as_str().unwrap();
    assert!(error.starts_with("request failed"), "{error}");
    assert!(
        !error.contains("/slack"),
        "the URL is a credential: {error}"
    );
    let body = verified(&next(&mut seen).await);
    assert_eq!(body["event"], "agent_revoked");
    assert_eq!(body["test"], true);

    let bad = gw
        .admin(
            Method::POST,
            "/admin/alerts/test",
            Some(json!({"trigger": "denied"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.text.contains("unknown trigger `denied`"),
        "{}",
        bad.text
    );

    let none = gateway(AlertSettings::default()).await;
    let reply = none.admin(Method::POST, "/admin/alerts/test", None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.text.contains("no alert receiver"), "{}", reply.text);
}

#[tokio::test]
async fn shutdown_delivers_queued_alerts_and_gives_up_on_a_hanging_receiver_within_its_bound() {
    let (url, mut seen) = receiver(&[], Answer::Status(200)).await;
    let mut gw = gateway(fast(AlertSettings {
        webhook: webhook(&url),
        ..AlertSettings::default()
    }))
    .await;
    let (_, token) = gw.agent("ops-agent", "verified", &["ops"]).await;
    for _ in 0..3 {
        gw.check(&token, json!({"action": "execute:shell"})).await;
    }
    gw.state.alerts.shutdown();
    let background = gw.background.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), background.alerts.finish())
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(verified(&next(&mut seen).await)["event"], "deny");
    }
    // After shutdown nothing more is accepted: the alert is dropped at the hand-over (the
    // dispatcher is gone, so nothing can reach the receiver later either).
    gw.check(&token, json!({"action": "execute:shell"})).await;
    assert!(
        metric(&gw, r#"meshguard_alerts_dropped_total{trigger="deny"} 1"#),
        "{}",
        gw.state.metrics.render().unwrap()
    );
    assert!(seen.try_recv().is_err());

    let (hanging, mut hung) = receiver(&[], Answer::Hang).await;
    let mut gw = gateway(AlertSettings {
        webhook: webhook(&hanging),
        request_timeout: Duration::from_secs(60),
        drain_timeout: Duration::from_millis(300),
        ..AlertSettings::default()
    })
    .await;
    let (_, token) = gw.agent("ops-agent", "verified", &["ops"]).await;
    gw.check(&token, json!({"action": "execute:shell"})).await;
    next(&mut hung).await;
    gw.state.alerts.shutdown();
    let background = gw.background.take().unwrap();
    // The hanging delivery would take a minute; shutdown gives up after the drain bound.
    tokio::time::timeout(Duration::from_secs(5), background.alerts.finish())
        .await
        .expect("shutdown waited for a hanging receiver");
}

/// A positive witness that nothing more is on its way: an `error` alert raised now reaches the
/// receiver only after every alert queued before it, each with all of its retries (a receiver
/// delivers one alert at a time), so the next request the receiver sees must be this one.
async fn quiet(gw: &TestGateway, receivers: &mut [&mut mpsc::UnboundedReceiver<Seen>]) {
    gw.state.alerts.queue().failure(
        WITNESS,
        WITNESS_ACTION,
        None,
        "nothing else is pending".into(),
    );
    for seen in receivers.iter_mut() {
        let got = next(seen).await;
        let body = String::from_utf8_lossy(&got.body);
        assert!(
            body.contains(WITNESS_ACTION),
            "unexpected alert before the witness: {body}"
        );
    }
}

/// The action the witness alert names, found in a webhook body and in a Slack line alike.
const WITNESS_ACTION: &str = "test.witness";

/// Waits (bounded) until the event `audit_id` is in the store.
async fn committed(gw: &TestGateway, audit_id: &Value) {
    for _ in 0..200 {
        if gw
            .events()
            .await
            .iter()
            .any(|e| Some(e.event.id.as_str()) == audit_id.as_str())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("event {audit_id} was not committed within 2 s");
}

/// The code of the witness alert of [`quiet`].
const WITNESS: &str = "test_witness";

const GOOD_FILE: &str =
    "name: files\nversion: \"1\"\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n";
const BROKEN_FILE: &str =
    "name: files\nversion: \"2\"\nrules:\n  - effect: alow\n    actions: [\"read:*\"]\n";

#[tokio::test]
async fn a_broken_policy_file_alerts_once_per_distinct_failure() {
    let (url, mut seen) = receiver(&[], Answer::Status(200)).await;
    let (slack, mut heard) = receiver(&[], Answer::Status(200)).await;
    let gw = gateway(fast(AlertSettings {
        webhook: webhook(&url),
        slack: Some(Secret::new(slack)),
        ..AlertSettings::default()
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("files.yaml");
    let path = file.display().to_string();
    std::fs::write(&file, GOOD_FILE).unwrap();
    let mut watched = gw.watch_policies(dir.path()).await;
    quiet(&gw, &mut [&mut seen, &mut heard]).await;

    // Broken: one alert naming the file and the position, however many polls follow.
    std::fs::write(&file, BROKEN_FILE).unwrap();
    for _ in 0..3 {
        watched.poll(&gw.state.policies).await;
    }
    let body = verified(&next(&mut seen).await);
    assert_eq!(body["event"], "error");
    assert_eq!(body["code"], "policy_file_not_applied");
    assert_eq!(body["action"], "policy.load");
    assert_eq!(body["resource"], path.as_str());
    let reason = body["reason"].as_str().unwrap().to_owned();
    // The message the gateway logs: file:line:col, what is wrong, and what stays in force.
    assert_eq!(
        reason,
        format!(
            "{path}:4:13: rules[0].effect: expected \"allow\" or \"deny\", got \"alow\"; \
             the last good version stays in force"
        )
    );
    assert_eq!(body["decision"], Value::Null);
    assert_eq!(body["agent"], Value::Null);
    assert_eq!(body["audit_id"], Value::Null);
    assert_eq!(body["gateway"], gw.state.instance_id.as_str());
    let text: Value = serde_json::from_slice(&next(&mut heard).await.body).unwrap();
    assert_eq!(
        text["text"].as_str().unwrap(),
        format!(
            ":rotating_light: MeshGuard did not apply policy file `{path}`: {}",
            reason.replace('`', "'")
        )
    );
    quiet(&gw, &mut [&mut seen]).await;
    // The last good version stays in force.
    assert_eq!(gw.store.get_policy("files").await.unwrap().version, "1");

    // Fixed, then broken again: a second alert.
    std::fs::write(&file, GOOD_FILE).unwrap();
    watched.poll(&gw.state.policies).await;
    quiet(&gw, &mut [&mut seen]).await;
    std::fs::write(&file, BROKEN_FILE).unwrap();
    watched.poll(&gw.state.policies).await;
    watched.poll(&gw.state.policies).await;
    let again = verified(&next(&mut seen).await);
    assert_eq!(again["code"], "policy_file_not_applied");
    assert_eq!(again["reason"], reason.as_str());
    quiet(&gw, &mut [&mut seen]).await;
}

#[tokio::test]
async fn a_broken_policy_file_at_start_alerts() {
    let (url, mut seen) = receiver(&[], Answer::Status(200)).await;
    let gw = gateway(fast(AlertSettings {
        webhook: webhook(&url),
        ..AlertSettings::default()
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("files.yaml");
    std::fs::write(&file, BROKEN_FILE).unwrap();
    gw.watch_policies(dir.path()).await;
    let body = verified(&next(&mut seen).await);
    assert_eq!(body["code"], "policy_file_not_applied");
    assert_eq!(body["resource"], file.display().to_string().as_str());
}

#[tokio::test]
async fn an_unreadable_policy_directory_alerts_once_per_streak_and_keeps_the_policies() {
    let (url, mut seen) = receiver(&[], Answer::Status(200)).await;
    let gw = gateway(fast(AlertSettings {
        webhook: webhook(&url),
        ..AlertSettings::default()
    }))
    .await;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("policies");
    let away = parent.path().join("elsewhere");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("files.yaml"), GOOD_FILE).unwrap();
    let mut watched = gw.watch_policies(&dir).await;
    let in_force = gw.state.policies.current().len();
    quiet(&gw, &mut [&mut seen]).await;

    // The directory disappears (an unmounted volume, a checkout being replaced): one alert
    // however many polls fail, and the policies in force stay.
    std::fs::rename(&dir, &away).unwrap();
    for _ in 0..3 {
        watched.poll(&gw.state.policies).await;
    }
    let body = verified(&next(&mut seen).await);
    assert_eq!(body["code"], "policy_file_not_applied");
    assert_eq!(body["resource"], dir.display().to_string().as_str());
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!(
            "cannot read the policies directory {}",
            dir.display()
        )),
        "{reason}"
    );
    quiet(&gw, &mut [&mut seen]).await;
    assert_eq!(gw.store.get_policy("files").await.unwrap().version, "1");

    // Back, then gone again: a second alert.
    std::fs::rename(&away, &dir).unwrap();
    watched.poll(&gw.state.policies).await;
    quiet(&gw, &mut [&mut seen]).await;
    std::fs::rename(&dir, &away).unwrap();
    watched.poll(&gw.state.policies).await;
    watched.poll(&gw.state.policies).await;
    assert_eq!(
        verified(&next(&mut seen).await)["code"],
        "policy_file_not_applied"
    );
    quiet(&gw, &mut [&mut seen]).await;
    assert_eq!(gw.state.policies.current().len(), in_force);
}

/// `meshguard_audit_commit_failures_total` of this gateway.
fn audit_failures(gw: &TestGateway) -> u64 {
    let rendered = gw.state.metrics.render().unwrap();
    rendered
        .lines()
        .find(|l| l.starts_with("meshguard_audit_commit_failures_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn an_audit_store_failure_alerts_once_per_streak() {
    let (url, mut seen) = receiver(&[], Answer::Status(200)).await;
    // Async durability: checks are answered before their event is committed, so a failing
    // commit is seen by no one but the operator. No write-ahead log: each batch commits to the
    // store directly, as on PostgreSQL.
    let gw = gateway_with(
        fast(AlertSettings {
            webhook: webhook(&url),
            ..AlertSettings::default()
        }),
        AuditDurability::Async,
        false,
    )
    .await;
    let (_, token) = gw.agent("ops-agent", "verified", &["ops"]).await;
    let first = gw.check(&token, json!({"action": "read:docs"})).await;
    assert_eq!(first.status, StatusCode::OK);
    // Committed before the store goes away (async durability answers before the commit).
    committed(&gw, &first.body["audit_id"]).await;

    gw.link.cut(true);
    for _ in 0..5 {
        let answered = gw.check(&token, json!({"action": "read:docs"})).await;
        assert_eq!(answered.status, StatusCode::OK, "{}", answered.text);
        // Each event in a batch of its own: five failed commits in a row.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = verified(&next(&mut seen).await);
    assert_eq!(body["event"], "error");
    assert_eq!(body["code"], "audit_not_committed");
    assert_eq!(body["action"], "audit.commit");
    assert_eq!(body["resource"], Value::Null);
    assert_eq!(body["decision"], Value::Null);
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.contains(" audit event(s) not committed: ") && reason.contains("connection refused"),
        "{reason}"
    );
    quiet(&gw, &mut [&mut seen]).await;
    assert!(audit_failures(&gw) >= 3, "{}", audit_failures(&gw));

    // A commit succeeds: the next failure starts a new streak, and alerts again.
    gw.link.cut(false);
    let ok = gw.check(&token, json!({"action": "read:docs"})).await;
    committed(&gw, &ok.body["audit_id"]).await;
    gw.link.cut(true);
    gw.check(&token, json!({"action": "read:docs"})).await;
    let again = verified(&next(&mut seen).await);
    assert_eq!(again["code"], "audit_not_committed");
    gw.link.cut(false);
    quiet(&gw, &mut [&mut seen]).await;
}

/// `meshguard_audit_index_failures_total` of this gateway.
fn index_failures(gw: &TestGateway) -> u64 {
    let rendered = gw.state.metrics.render().unwrap();
    rendered
        .lines()
        .find(|l| l.starts_with("meshguard_audit_index_failures_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn a_store_outage_behind_the_audit_log_alerts_once_and_loses_no_acknowledged_event() {
    let (url, mut seen) = receiver(&[], Answer::Status(200)).await;
    // Durable answers: each one is on disk in the audit log before it leaves.
    let gw = gateway_with(
        fast(AlertSettings {
            webhook: webhook(&url),
            ..AlertSettings::default()
        }),
        AuditDurability::Sync,
        true,
    )
    .await;
    let (_, token) = gw.agent("ops-agent", "verified", &["ops"]).await;
    // The agent is in the auth cache: its checks need nothing from the store but the audit.
    let warm = gw.check(&token, json!({"action": "read:docs"})).await;
    assert_eq!(warm.status, StatusCode::OK, "{}", warm.text);

    gw.link.cut(true);
    let mut acknowledged = Vec::new();
    for _ in 0..5 {
        let answered = gw.check(&token, json!({"action": "read:docs"})).await;
        assert_eq!(answered.status, StatusCode::OK, "{}", answered.text);
        acknowledged.push(answered.body["audit_id"].as_str().unwrap().to_owned());
    }
    let body = verified(&next(&mut seen).await);
    assert_eq!(body["code"], "audit_not_committed");
    assert_eq!(body["action"], "audit.index");
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.contains("not indexed") && reason.contains("connection refused"),
        "{reason}"
    );
    // One alert for the outage, however many retries fail.
    quiet(&gw, &mut [&mut seen]).await;
    assert!(index_failures(&gw) >= 1, "{}", index_failures(&gw));

    // The store comes back: every acknowledged event is indexed, in one chain that verifies.
    gw.link.cut(false);
    let events = gw.events().await;
    for id in &acknowledged {
        assert!(
            events.iter().any(|e| &e.event.id == id),
            "acknowledged event {id} is in the trail"
        );
    }
    let report = gw
        .store
        .verify_audit(&meshguard_store::VerifyOptions::full(Default::default()))
        .await
        .unwrap();
    assert!(report.first_break().is_none(), "{report:?}");
}

#[tokio::test]
async fn a_refused_file_retried_with_the_same_failure_does_not_alert_again() {
    let (url, mut seen) = receiver(&[], Answer::Status(200)).await;
    let gw = gateway(fast(AlertSettings {
        webhook: webhook(&url),
        ..AlertSettings::default()
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("1-first.yaml");
    let second = dir.path().join("2-second.yaml");
    let other = dir.path().join("3-other.yaml");
    std::fs::write(&first, GOOD_FILE).unwrap();
    std::fs::write(&second, GOOD_FILE).unwrap();
    std::fs::write(&other, GOOD_FILE.replace("files", "other")).unwrap();
    let mut watched = gw.watch_policies(dir.path()).await;
    let body = verified(&next(&mut seen).await);
    assert_eq!(body["resource"], second.display().to_string().as_str());
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("is already defined by"),
        "{body}"
    );
    // Removing another file's policy retries the refused file, which fails the same way.
    std::fs::remove_file(&other).unwrap();
    watched.poll(&gw.state.policies).await;
    quiet(&gw, &mut [&mut seen]).await;
}
