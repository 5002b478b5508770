//! What one agent may consume or touch: approvals it leaves pending, records and refusals it
//! makes the gateway write, other agents' checks, and other agents' names. Each attack is
//! bounded or refused, and what is refused writes nothing.

use std::time::Duration;

use crate::common::TestGateway;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use meshguard_gateway::GatewayOptions;
use meshguard_gateway::config::{AgentQuotas, DEFAULT_AGENT_QUOTAS};
use meshguard_store::{AuditKind, MAX_ACTION_BYTES, MAX_REASON_BYTES};
use serde_json::{Value, json};

const HITL: &str = r#"name: hitl
version: "1"
rules:
  - effect: allow
    actions: ["read:*"]
humanInTheLoop:
  requireApproval: ["send:*"]
  timeoutSeconds: 3600
"#;

const LIMITED: &str = r#"name: limited
version: "1"
rules:
  - effect: allow
    actions: ["read:*"]
rateLimits: {requestsPerMinute: 1}
"#;

async fn gateway(quotas: AgentQuotas) -> TestGateway {
    TestGateway::with_options(GatewayOptions {
        quotas,
        body_limit: 1024 * 1024,
        ..GatewayOptions::default()
    })
    .await
}

fn record(token: &str, body: Value, trace: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri("/proxy/governance/record")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json");
    if let Some(trace) = trace {
        builder = builder.header("x-trace-id", trace);
    }
    builder.body(Body::from(body.to_string())).unwrap()
}

async fn pending(gw: &TestGateway) -> usize {
    let listed = gw
        .admin(Method::GET, "/admin/approvals?status=pending", None)
        .await;
    listed.body["approvals"].as_array().unwrap().len()
}

/// One agent asking for a thousand different approvals gets only as many pending as the cap;
/// the rest are denied with their own code and create nothing, while a request that already
/// waits still gets its approval back, and other agents are not affected.
#[tokio::test]
async fn one_agent_cannot_flood_the_approvers() {
    let gw = gateway(AgentQuotas {
        max_pending_approvals: 3,
        ..DEFAULT_AGENT_QUOTAS
    })
    .await;
    gw.policy(HITL).await;
    let (_, flooder) = gw.agent("flooder", "verified", &[]).await;
    let (_, other) = gw.agent("other", "verified", &[]).await;
    for i in 0..3 {
        let reply = gw
            .check(&flooder, json!({"action": format!("send:mail-{i}")}))
            .await;
        assert_eq!(reply.body["code"], "approval_required", "{}", reply.text);
    }
    for i in 3..40 {
        let reply = gw
            .check(&flooder, json!({"action": format!("send:mail-{i}")}))
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
        assert_eq!(reply.body["code"], "too_many_pending_approvals");
        assert_eq!(reply.body["decision"], "deny");
        assert_eq!(reply.body["approval_id"], Value::Null);
        assert!(
            reply.body["reason"]
                .as_str()
                .unwrap()
                .contains("3 approvals pending"),
            "{}",
            reply.text
        );
    }
    assert_eq!(pending(&gw).await, 3);
    let again = gw.check(&flooder, json!({"action": "send:mail-0"})).await;
    assert_eq!(again.body["code"], "approval_pending", "{}", again.text);
    let theirs = gw.check(&other, json!({"action": "send:mail-0"})).await;
    assert_eq!(theirs.body["code"], "approval_required", "{}", theirs.text);
    assert_eq!(pending(&gw).await, 4);
    let denials = gw
        .events()
        .await
        .into_iter()
        .filter(|e| {
            e.event.code.map(meshguard_store::EventCode::as_str)
                == Some("too_many_pending_approvals")
        })
        .count();
    assert_eq!(denials, 37, "every refused check is in the trail");
}

/// Records are charged to a per-agent budget: past it, 429 `rate_limited` with `Retry-After`,
/// nothing written; the budget slides like a rate limit. Checks are not charged to it.
#[tokio::test]
async fn records_are_charged_to_a_per_agent_budget() {
    let gw = gateway(AgentQuotas {
        records_per_minute: 5,
        ..DEFAULT_AGENT_QUOTAS
    })
    .await;
    gw.policy(HITL).await;
    let (_, token) = gw.agent("dev", "verified", &[]).await;
    let (_, other) = gw.agent("other", "verified", &[]).await;
    for i in 0..5 {
        let reply = gw
            .send(record(&token, json!({"action": format!("read:{i}")}), None))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
    let before = gw.events().await.len();
    for _ in 0..20 {
        let reply = gw
            .send(record(&token, json!({"action": "read:x"}), None))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            reply.text
        );
        assert_eq!(reply.body["code"], "rate_limited");
        assert_eq!(reply.headers["retry-after"], "60");
        assert_eq!(reply.body["retry_after_seconds"], 60);
    }
    assert_eq!(
        gw.events().await.len(),
        before,
        "over budget writes nothing"
    );
    // Another agent's budget is its own; checks are not records.
    let theirs = gw
        .send(record(&other, json!({"action": "read:x"}), None))
        .await;
    assert_eq!(theirs.status, StatusCode::CREATED);
    let check = gw.check(&token, json!({"action": "read:x"})).await;
    assert_eq!(check.status, StatusCode::OK);
    gw.clock.advance(Duration::from_secs(60));
    let later = gw
        .send(record(&token, json!({"action": "read:x"}), None))
        .await;
    assert_eq!(later.status, StatusCode::CREATED, "{}", later.text);
}

/// A rate-limited check with a huge action stores a bounded row: the reason does not repeat
/// the action, and the stored action is cut.
#[tokio::test]
async fn a_rate_limited_denial_does_not_store_the_action_twice() {
    let gw = gateway(DEFAULT_AGENT_QUOTAS).await;
    gw.policy(LIMITED).await;
    let (_, token) = gw.agent("dev", "verified", &[]).await;
    let huge = format!("read:{}", "a".repeat(60_000));
    assert_eq!(
        gw.check(&token, json!({"action": "read:x"})).await.status,
        StatusCode::OK
    );
    let reply = gw.check(&token, json!({"action": huge})).await;
    assert_eq!(reply.body["code"], "rate_limited", "{}", reply.status);
    let reason = reply.body["reason"].as_str().unwrap();
    assert!(!reason.contains("aaaa"), "the reason repeats the action");
    assert!(reason.contains("rate limit"), "{reason}");
    let event = gw.events().await.pop().unwrap().event;
    assert_eq!(
        event.code.map(meshguard_store::EventCode::as_str),
        Some("rate_limited")
    );
    assert!(
        event.action.len() <= MAX_ACTION_BYTES,
        "{}",
        event.action.len()
    );
    assert!(event.action.starts_with("read:aaa"));
    assert!(event.reason.unwrap().len() <= MAX_REASON_BYTES);
    let row = serde_json::to_string(&gw.events().await.pop().unwrap()).unwrap();
    assert!(row.len() < 8 * 1024, "a stored row of {} bytes", row.len());
}

/// A revoked agent's token replayed N times writes one audit event with the count, not N rows;
/// every request is still answered 401.
#[tokio::test]
async fn refusals_of_a_revoked_token_are_one_event_per_minute_with_a_count() {
    let gw = gateway(DEFAULT_AGENT_QUOTAS).await;
    gw.policy(HITL).await;
    let (id, token) = gw.agent("dev", "verified", &[]).await;
    gw.admin(Method::POST, "/admin/agents/dev/revoke", None)
        .await;
    let before = gw.events().await.len();
    for _ in 0..50 {
        let reply = gw.check(&token, json!({"action": "read:x"})).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    for _ in 0..10 {
        let reply = gw
            .send(record(&token, json!({"action": "read:x"}), None))
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(gw.events().await.len(), before, "nothing per request");
    // The minute ends; the gateway writes the count within about a second.
    gw.clock.advance(Duration::from_secs(60));
    let mut events = Vec::new();
    for _ in 0..50 {
        events = gw.events().await.split_off(before);
        if !events.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0].event;
    assert_eq!(
        event.code.map(meshguard_store::EventCode::as_str),
        Some("unauthorized")
    );
    assert_eq!(
        event.decision.map(meshguard_policy::Effect::as_str),
        Some("deny")
    );
    assert_eq!(event.agent.as_ref().unwrap().id, id);
    assert_eq!(event.context["count"], 60);
    assert!(event.context["since"].is_string());
}

/// A record may only follow the agent's own checks: another agent's `audit_id` or trace id is
/// refused and nothing is written.
#[tokio::test]
async fn a_record_cannot_join_another_agents_check() {
    let gw = gateway(DEFAULT_AGENT_QUOTAS).await;
    gw.policy(HITL).await;
    let (_, victim) = gw.agent("victim", "verified", &[]).await;
    let (_, intruder) = gw.agent("intruder", "verified", &[]).await;
    let checked = gw
        .send(
            Request::builder()
                .method(Method::POST)
                .uri("/proxy/governance/check")
                .header("authorization", format!("Bearer {victim}"))
                .header("x-trace-id", "victim-trace")
                .body(Body::from(json!({"action": "read:x"}).to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(checked.status, StatusCode::OK);
    let check_id = checked.body["audit_id"].as_str().unwrap();
    let before = gw.events().await.len();

    let by_id = gw
        .send(record(
            &intruder,
            json!({"action": "read:x", "audit_id": check_id}),
            None,
        ))
        .await;
    assert_eq!(by_id.status, StatusCode::FORBIDDEN, "{}", by_id.text);
    assert!(by_id.body["message"].as_str().unwrap().contains("audit_id"));
    let by_trace = gw
        .send(record(
            &intruder,
            json!({"action": "read:x"}),
            Some("victim-trace"),
        ))
        .await;
    assert_eq!(by_trace.status, StatusCode::FORBIDDEN, "{}", by_trace.text);
    assert!(by_trace.body["message"].as_str().unwrap().contains("trace"));
    let unknown = gw
        .send(record(
            &intruder,
            json!({"action": "read:x", "audit_id": "0190-not-a-check"}),
            None,
        ))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);
    assert_eq!(
        gw.events().await.len(),
        before,
        "a refused record writes nothing"
    );

    // The owner records into its own check and trace.
    let own = gw
        .send(record(
            &victim,
            json!({"action": "read:x", "audit_id": check_id}),
            Some("victim-trace"),
        ))
        .await;
    assert_eq!(own.status, StatusCode::CREATED, "{}", own.text);
    let last = gw.events().await.pop().unwrap().event;
    assert_eq!(last.kind, AuditKind::Record);
}

/// A name can never be an id: an agent named like another agent's id (or anything with the id
/// prefix) is refused, so lookups by id always find the agent with that id.
#[tokio::test]
async fn an_agent_name_can_never_be_another_agents_id() {
    let gw = gateway(DEFAULT_AGENT_QUOTAS).await;
    gw.policy(HITL).await;
    let (id, token) = gw.agent("victim", "verified", &[]).await;
    for name in [id.as_str(), "agent_x"] {
        let reply = gw
            .admin(
                Method::POST,
                "/admin/agents",
                Some(json!({"name": name, "trustTier": "privileged"})),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{name}: {}",
            reply.text
        );
        assert!(
            reply.body["message"].as_str().unwrap().contains("agent_"),
            "{}",
            reply.text
        );
    }
    let listed = gw.admin(Method::GET, "/admin/agents", None).await;
    assert_eq!(listed.body["agents"].as_array().unwrap().len(), 1);
    let shown = gw
        .admin(Method::GET, &format!("/admin/agents/{id}"), None)
        .await;
    assert_eq!(shown.body["name"], "victim");
    assert_eq!(shown.body["trustTier"], "verified");
    let ok = gw.check(&token, json!({"action": "read:x"})).await;
    assert_eq!(ok.status, StatusCode::OK);
}

/// Refused requests are charged to a per-agent budget too: whoever replays a dead token past it
/// is answered 429 with `Retry-After` (never anything that could read as an allow), and every
/// refusal is still counted in the minute's event.
#[tokio::test]
async fn a_dead_token_replayed_past_the_refusal_budget_is_told_to_back_off() {
    let gw = gateway(AgentQuotas {
        refusals_per_minute: 10,
        ..DEFAULT_AGENT_QUOTAS
    })
    .await;
    gw.policy(HITL).await;
    let (_, token) = gw.agent("dev", "verified", &[]).await;
    let (_, other) = gw.agent("other", "verified", &[]).await;
    gw.admin(Method::POST, "/admin/agents/dev/revoke", None)
        .await;
    for _ in 0..10 {
        let reply = gw.check(&token, json!({"action": "read:x"})).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    for _ in 0..5 {
        let reply = gw.check(&token, json!({"action": "read:x"})).await;
        assert_eq!(
            reply.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            reply.text
        );
        assert_eq!(reply.body["code"], "rate_limited");
        assert_eq!(reply.headers["retry-after"], "60");
        assert!(reply.body["message"].as_str().unwrap().contains("revoked"));
    }
    // The approval long poll shares the budget.
    let poll = gw
        .send(
            Request::builder()
                .uri("/proxy/governance/approvals/apr_x")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(poll.status, StatusCode::TOO_MANY_REQUESTS, "{}", poll.text);
    // Another agent is not affected.
    let ok = gw.check(&other, json!({"action": "read:x"})).await;
    assert_eq!(ok.status, StatusCode::OK);
    let before = gw.events().await.len();
    gw.flush_refusals().await;
    let events = gw.events().await.split_off(before);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.context["count"], 15);
}
