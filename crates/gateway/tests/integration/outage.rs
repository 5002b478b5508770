//! While the store is unreachable nothing is allowed: checks answer 503 deny/unavailable with no
//! audit event, `/health` answers 503, and everything recovers when the store is back.

use std::time::Duration;

use crate::common::{AUTOGPT, TestGateway};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use meshguard_gateway::config::{AuditDurability, Mode};
use serde_json::json;

#[tokio::test]
async fn checks_fail_closed_with_503_and_no_event_while_the_store_is_down() {
    // Audit mode too: an unrecordable check is never allowed, whatever the mode.
    for mode in [Mode::Enforce, Mode::Audit] {
        let gw = TestGateway::with(mode, 64 * 1024).await;
        gw.policy(AUTOGPT).await;
        let (_, token) = gw.agent("dev", "verified", &["autogpt"]).await;
        let before = gw.events().await.len();

        gw.link.cut(true);
        let reply = gw
            .check(&token, json!({"action": "read:x", "resource": "r"}))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.text
        );
        assert_eq!(reply.body["allowed"], false);
        assert_eq!(reply.body["decision"], "deny");
        assert_eq!(reply.body["code"], "unavailable");
        assert_eq!(
            reply.body["reason"],
            "store unavailable: nothing is allowed until it is back"
        );
        assert_eq!(reply.body["action"], "read:x");
        assert!(reply.body["policy"].is_null());
        assert!(reply.body["audit_id"].is_null());
        assert!(reply.headers.contains_key("x-trace-id"));

        let get = Request::builder()
            .uri("/proxy/check")
            .header("authorization", format!("Bearer {token}"))
            .header("x-meshguard-action", "read:x")
            .body(Body::empty())
            .unwrap();
        assert_eq!(gw.send(get).await.status, StatusCode::SERVICE_UNAVAILABLE);

        let health = gw
            .send(
                Request::builder()
                    .uri("/health")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(health.body["status"], "unhealthy");
        assert_eq!(health.body["checks"]["store"]["status"], "unavailable");

        let admin = gw.admin(Method::GET, "/admin/agents", None).await;
        assert_eq!(admin.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(admin.body["error"], "unavailable");
        assert_eq!(admin.body["message"], "store unavailable");

        let metrics = gw.state.metrics.render().unwrap();
        assert!(
            metrics.contains(r#"meshguard_decisions_total{code="unavailable",decision="deny"} 2"#),
            "{metrics}"
        );
        assert!(metrics.contains(r#"meshguard_http_rejections_total{status="503"} 4"#));

        gw.link.cut(false);
        assert_eq!(gw.events().await.len(), before, "no event while down");
        let reply = gw.check(&token, json!({"action": "read:x"})).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn async_durability_answers_before_the_commit_and_still_commits() {
    let gw = TestGateway::with_durability(Mode::Enforce, 64 * 1024, AuditDurability::Async).await;
    gw.policy(AUTOGPT).await;
    let (_, token) = gw.agent("dev", "verified", &["autogpt"]).await;
    let reply = gw.check(&token, json!({"action": "read:x"})).await;
    assert_eq!(reply.status, StatusCode::OK);
    let id = reply.body["audit_id"].as_str().unwrap().to_owned();
    let mut committed = false;
    for _ in 0..100 {
        if gw.events().await.iter().any(|e| e.event.id == id) {
            committed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(committed, "the queued event is committed shortly after");
}
