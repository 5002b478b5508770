//! Rate limits through the HTTP API, with the gateway's clock driven by the test (no sleeping).

use std::time::Duration;

use crate::common::TestGateway;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;

const LIMITED: &str = r#"
name: limited
version: "1"
rules:
  - name: search
    effect: allow
    actions: ["search:*"]
    conditions:
      rateLimit: {requestsPerMinute: 2}
  - effect: allow
    actions: ["read:*"]
rateLimits: {requestsPerMinute: 3}
"#;

#[tokio::test]
async fn n_checks_are_admitted_then_403_with_retry_after_until_the_window_slides() {
    let gw = TestGateway::new().await;
    gw.policy(LIMITED).await;
    let (_, token) = gw.agent("dev", "verified", &[]).await;
    for i in 0..3 {
        let reply = gw.check(&token, json!({"action": "read:a"})).await;
        assert_eq!(reply.status, StatusCode::OK, "check {i}");
        gw.clock.advance(Duration::from_secs(10));
    }
    // Checks at 0 s, 10 s, 20 s; now 30 s: the first leaves the window at 60 s.
    let reply = gw.check(&token, json!({"action": "read:a"})).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.body["code"], "rate_limited");
    assert_eq!(reply.body["decision"], "deny");
    assert!(
        reply.body["reason"]
            .as_str()
            .unwrap()
            .contains("rate limit")
    );
    assert_eq!(reply.body["retry_after_seconds"], 30);
    assert_eq!(reply.headers["retry-after"], "30");
    assert_eq!(reply.body["policy"], "limited");
    assert!(reply.body["rule"].is_null());

    // The SDK's GET endpoint answers the same limit with 429.
    let get = Request::builder()
        .uri("/proxy/check")
        .header("authorization", format!("Bearer {token}"))
        .header("x-meshguard-action", "read:a")
        .body(Body::empty())
        .unwrap();
    let reply = gw.send(get).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.headers["retry-after"], "30");

    gw.clock.advance(Duration::from_secs(30));
    assert_eq!(
        gw.check(&token, json!({"action": "read:a"})).await.status,
        StatusCode::OK
    );
    // Still full: the 10 s check leaves at 70 s.
    let reply = gw.check(&token, json!({"action": "read:a"})).await;
    assert_eq!(reply.body["retry_after_seconds"], 10);
}

#[tokio::test]
async fn a_rule_limit_reports_its_rule_and_a_rejected_check_charges_nothing() {
    let gw = TestGateway::new().await;
    gw.policy(LIMITED).await;
    let (_, token) = gw.agent("dev", "verified", &[]).await;
    for _ in 0..2 {
        assert_eq!(
            gw.check(&token, json!({"action": "search:web"}))
                .await
                .status,
            StatusCode::OK
        );
    }
    // The rule's limit (2) is exhausted; the policy's (3) has one slot left.
    for _ in 0..5 {
        let reply = gw.check(&token, json!({"action": "search:web"})).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert_eq!(reply.body["code"], "rate_limited");
        assert_eq!(reply.body["rule"], "search");
    }
    // Those rejections charged nothing on the policy limit: one more read fits, then no more.
    assert_eq!(
        gw.check(&token, json!({"action": "read:a"})).await.status,
        StatusCode::OK
    );
    assert_eq!(
        gw.check(&token, json!({"action": "read:a"})).await.body["code"],
        "rate_limited"
    );
}

#[tokio::test]
async fn limits_are_per_agent_and_record_and_decide_never_count() {
    let gw = TestGateway::new().await;
    gw.policy(LIMITED).await;
    let (_, a) = gw.agent("a", "verified", &[]).await;
    let (_, b) = gw.agent("b", "verified", &[]).await;
    for _ in 0..10 {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/proxy/governance/record")
            .header("authorization", format!("Bearer {a}"))
            .body(Body::from(r#"{"action":"read:a","status":"success"}"#))
            .unwrap();
        assert_eq!(gw.send(request).await.status, StatusCode::CREATED);
        let decide = gw
            .admin(
                Method::POST,
                "/admin/decide",
                Some(json!({"agent": "a", "action": "read:a"})),
            )
            .await;
        assert_eq!(decide.status, StatusCode::OK, "{}", decide.text);
        assert_eq!(decide.body["decision"], "allow");
    }
    for _ in 0..3 {
        assert_eq!(
            gw.check(&a, json!({"action": "read:a"})).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        gw.check(&a, json!({"action": "read:a"})).await.status,
        StatusCode::FORBIDDEN
    );
    // The admin decide now reports the limit, still without charging.
    let decide = gw
        .admin(
            Method::POST,
            "/admin/decide",
            Some(json!({"agent": "a", "action": "read:a"})),
        )
        .await;
    assert_eq!(decide.body["code"], "rate_limited");
    // Agent b has its own counters.
    assert_eq!(
        gw.check(&b, json!({"action": "read:a"})).await.status,
        StatusCode::OK
    );
}

const PAYMENTS: &str = r#"
name: payments
version: "1"
rules:
  - name: small
    effect: allow
    actions: ["pay:*"]
    conditions:
      context:
        arguments.amount: {le: 100}
    budget: {field: arguments.amount, perHour: 100, perDay: 150}
  - name: tips
    effect: allow
    actions: ["tip:*"]
    budget: {field: arguments.amount, perDay: 10}
"#;

fn pay(amount: serde_json::Value) -> serde_json::Value {
    json!({"action": "pay:vendor", "context": {"arguments": {"amount": amount}}})
}

#[tokio::test]
async fn a_budget_sums_amounts_over_its_windows_and_answers_when_it_makes_room() {
    let gw = TestGateway::new().await;
    gw.policy(PAYMENTS).await;
    let (_, token) = gw.agent("payer", "verified", &[]).await;
    assert_eq!(
        gw.check(&token, pay(json!(60))).await.status,
        StatusCode::OK
    );
    gw.clock.advance(Duration::from_secs(600));
    assert_eq!(
        gw.check(&token, pay(json!(30))).await.status,
        StatusCode::OK
    );

    // 90 of the hour's 100 used: 20 waits until the 60 leaves the hour, 50 minutes from now.
    let refused = gw.check(&token, pay(json!(20))).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    assert_eq!(refused.body["decision"], "deny");
    assert_eq!(refused.body["code"], "budget_exceeded");
    assert_eq!(refused.body["policy"], "payments");
    assert_eq!(refused.body["rule"], "small");
    assert_eq!(refused.body["retry_after_seconds"], 3000);
    assert_eq!(refused.headers["retry-after"], "3000");
    assert_eq!(
        refused.body["reason"],
        "Action denied: the budget of rule 'small' of policy 'payments' (`arguments.amount`, 100 per hour) has 90 used and 10 left; this check needs 20; retry in 3000 s"
    );
    // A check with no amount where a budget applies: 403 `invalid_context`, on GET too.
    let get = Request::builder()
        .uri("/proxy/check")
        .header("authorization", format!("Bearer {token}"))
        .header("x-meshguard-action", "tip:waiter")
        .body(Body::empty())
        .unwrap();
    let reply = gw.send(get).await;
    assert_eq!(reply.body["code"], "invalid_context", "{}", reply.text);
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    // The hour rolls: 60 left it, so 60 fit again, but the day's 150 now holds only 150 - 90.
    gw.clock.advance(Duration::from_secs(3000));
    assert_eq!(
        gw.check(&token, pay(json!(40))).await.status,
        StatusCode::OK
    );
    let day = gw.check(&token, pay(json!(20.5))).await;
    assert_eq!(day.body["code"], "budget_exceeded", "{}", day.text);
    assert!(
        day.body["reason"]
            .as_str()
            .unwrap()
            .contains("150 per day) has 130 used and 20 left; this check needs 20.5"),
        "{}",
        day.text
    );
    // More than the whole budget never fits: no Retry-After.
    let never = gw
        .check(
            &token,
            json!({"action": "tip:waiter", "context": {"arguments": {"amount": 11}}}),
        )
        .await;
    assert_eq!(never.body["code"], "budget_exceeded", "{}", never.text);
    assert!(
        never.body["retry_after_seconds"].is_null(),
        "{}",
        never.text
    );
    assert!(never.headers.get("retry-after").is_none());
    assert!(
        never.text.contains("more than the whole budget"),
        "{}",
        never.text
    );

    // Every refusal is audited with its code.
    let codes: Vec<String> = gw
        .events()
        .await
        .iter()
        .filter_map(|e| e.event.code.map(|c| c.as_str().to_owned()))
        .collect();
    assert_eq!(
        codes,
        [
            "allowed",
            "allowed",
            "budget_exceeded",
            "invalid_context",
            "allowed",
            "budget_exceeded",
            "budget_exceeded"
        ]
    );
}
