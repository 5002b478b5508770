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
