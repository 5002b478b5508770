//! `POST /proxy/governance/preview`: the agent asks what a check would get; nothing is charged,
//! no approval is created, and the question is audited as kind `test`.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use meshguard_store::AuditKind;
use serde_json::{Value, json};

use crate::common::{AUTOGPT_PRODUCTION, Reply, TestGateway};

async fn preview(gw: &TestGateway, token: &str, body: Value) -> Reply {
    let request = Request::builder()
        .method(Method::POST)
        .uri("/proxy/governance/preview")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    gw.send(request).await
}

#[tokio::test]
async fn a_preview_answers_like_a_check_without_approvals_or_charges() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT_PRODUCTION).await;
    let (_, token) = gw
        .agent("prod", "trusted", &["autogpt", "production"])
        .await;

    let denied = preview(&gw, &token, json!({"action": "execute:shell"})).await;
    assert_eq!(denied.status, StatusCode::OK, "{}", denied.text);
    assert_eq!(denied.body["allowed"], false);
    assert_eq!(denied.body["decision"], "deny");
    assert_eq!(denied.body["code"], "denied_by_rule");
    assert!(denied.body["rule"].is_string());

    // Approval needed, but none is created: the operator's list stays empty.
    let approval = preview(
        &gw,
        &token,
        json!({"action": "post:social", "resource": "x"}),
    )
    .await;
    assert_eq!(approval.body["decision"], "require_approval");
    assert_eq!(approval.body["requires_approval"], true);
    let pending = gw
        .admin(Method::GET, "/admin/approvals?status=pending", None)
        .await;
    assert_eq!(pending.body["approvals"], json!([]));

    // Nothing charged: more previews than the policy's 30 a minute, and a check still passes.
    for _ in 0..35 {
        let allowed = preview(&gw, &token, json!({"action": "search:web"})).await;
        assert_eq!(allowed.body["allowed"], true, "{}", allowed.text);
    }
    let check = gw.check(&token, json!({"action": "search:web"})).await;
    assert_eq!(check.status, StatusCode::OK, "{}", check.text);

    let events = gw.events().await;
    let tests = events
        .iter()
        .filter(|e| e.event.kind == AuditKind::Test)
        .count();
    assert_eq!(tests, 37);
}

#[tokio::test]
async fn a_preview_needs_the_agent_token() {
    let gw = TestGateway::new().await;
    let reply = preview(&gw, "not-a-token", json!({"action": "read:x"})).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let (_, token) = gw.agent("a", "verified", &[]).await;
    let bad = preview(&gw, &token, json!({"action": ""})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}
