//! The agent endpoints as a client sees them: status codes, headers and every JSON field.

use crate::common::{AUTOGPT, AUTOGPT_PRODUCTION, TestGateway};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use meshguard_gateway::config::Mode;
use meshguard_store::AuditKind;
use serde_json::json;

const FIELDS: [&str; 15] = [
    "allowed",
    "decision",
    "code",
    "reason",
    "message",
    "action",
    "resource",
    "policy",
    "rule",
    "requires_approval",
    "approval_id",
    "retry_after_seconds",
    "enforced",
    "trace_id",
    "audit_id",
];

#[tokio::test]
async fn allowed_check_answers_200_with_every_field_and_is_audited_before_the_answer() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT).await;
    let (id, token) = gw.agent("dev", "verified", &["autogpt"]).await;

    let reply = gw
        .check(
            &token,
            json!({"action": "read:workspace", "resource": "notes.txt"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    for field in FIELDS {
        assert!(
            reply.body.get(field).is_some(),
            "missing {field}: {}",
            reply.text
        );
    }
    let b = &reply.body;
    assert_eq!(b["allowed"], true);
    assert_eq!(b["decision"], "allow");
    assert_eq!(b["code"], "allowed");
    assert_eq!(b["policy"], "autogpt-policy");
    assert_eq!(b["rule"], "rule-1");
    assert_eq!(b["resource"], "notes.txt");
    assert_eq!(b["enforced"], true);
    assert_eq!(b["requires_approval"], false);
    assert_eq!(b["message"], b["reason"]);
    let trace = b["trace_id"].as_str().unwrap();
    assert_eq!(reply.headers["x-trace-id"], trace);
    assert_eq!(reply.headers["x-meshguard-trace-id"], trace);

    let events = gw.events().await;
    let event = events
        .iter()
        .find(|e| Some(e.event.id.as_str()) == b["audit_id"].as_str())
        .expect("the answer's audit event is committed");
    assert_eq!(event.event.kind, AuditKind::Check);
    assert_eq!(event.event.agent.as_ref().unwrap().id, id);
    assert_eq!(
        event.event.decision.map(meshguard_policy::Effect::as_str),
        Some("allow")
    );
    assert_eq!(event.event.trace_id.as_deref(), Some(trace));
    assert!(event.event.latency_us.is_some());
}

#[tokio::test]
async fn denial_is_403_with_policy_rule_and_reason() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT).await;
    let (_, token) = gw.agent("dev", "verified", &["autogpt"]).await;
    let reply = gw
        .check(
            &token,
            json!({"action": "execute:shell", "resource": "ls -la"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.body["allowed"], false);
    assert_eq!(reply.body["decision"], "deny");
    assert_eq!(reply.body["code"], "denied_by_rule");
    assert_eq!(
        reply.body["reason"],
        "Action 'execute:shell' denied by rule 'rule-4' of policy 'autogpt-policy'"
    );
    assert_eq!(reply.body["resource"], "ls -la");

    let none = gw.check(&token, json!({"action": "launch:rocket"})).await;
    assert_eq!(none.status, StatusCode::FORBIDDEN);
    assert_eq!(none.body["code"], "default_deny");
    assert_eq!(none.body["resource"], "*");
    assert!(none.body["rule"].is_null());

    let (_, stranger) = gw.agent("crew", "verified", &["crewai"]).await;
    let reply = gw.check(&stranger, json!({"action": "read:x"})).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.body["code"], "no_policy");
    assert!(reply.body["policy"].is_null());
}

#[tokio::test]
async fn trace_ids_are_echoed_in_both_headers_from_either_header() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT).await;
    let (_, token) = gw.agent("dev", "verified", &["autogpt"]).await;
    for header in ["x-trace-id", "x-meshguard-trace-id"] {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/proxy/governance/check")
            .header("authorization", format!("Bearer {token}"))
            .header(header, "trace-42")
            .body(Body::from(r#"{"action":"read:x"}"#))
            .unwrap();
        let reply = gw.send(request).await;
        assert_eq!(reply.body["trace_id"], "trace-42");
        assert_eq!(reply.headers["x-trace-id"], "trace-42");
        assert_eq!(reply.headers["x-meshguard-trace-id"], "trace-42");
    }
    // Errors carry the trace too.
    let reply = gw.check_raw("nope", "{}").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.headers.contains_key("x-trace-id"));
}

#[tokio::test]
async fn get_proxy_check_reads_headers_like_the_published_sdk() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT).await;
    let (_, token) = gw.agent("dev", "verified", &["autogpt"]).await;
    let get = |action: &'static str, resource: Option<&'static str>| {
        let mut builder = Request::builder()
            .uri("/proxy/check")
            .header("authorization", format!("Bearer {token}"))
            .header("x-meshguard-trace-id", "sdk-trace")
            .header("x-meshguard-action", action);
        if let Some(resource) = resource {
            builder = builder.header("x-meshguard-resource", resource);
        }
        builder.body(Body::empty()).unwrap()
    };
    let reply = gw.send(get("read:contacts", None)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["policy"], "autogpt-policy");
    assert_eq!(reply.body["resource"], "*");
    assert_eq!(reply.headers["x-meshguard-trace-id"], "sdk-trace");

    let reply = gw.send(get("execute:shell", Some("ls"))).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.body["rule"], "rule-4");
    assert_eq!(reply.body["resource"], "ls");

    let missing = Request::builder()
        .uri("/proxy/check")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let reply = gw.send(missing).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.body["error"], "bad_request");
    assert_eq!(reply.body["message"], "X-MeshGuard-Action: required");
}

#[tokio::test]
async fn record_answers_201_and_appends_a_record_event() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT).await;
    let (_, token) = gw.agent("dev", "verified", &["autogpt"]).await;
    let checked = gw.check(&token, json!({"action": "browse:web"})).await;
    let check_id = checked.body["audit_id"].as_str().unwrap().to_owned();
    let long = "x".repeat(10_000);
    let request = Request::builder()
        .method(Method::POST)
        .uri("/proxy/governance/record")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(
            json!({"action": "browse_website", "resource": "autogpt-output", "status": "success",
                   "result": long, "audit_id": check_id, "duration_ms": 12})
            .to_string(),
        ))
        .unwrap();
    let reply = gw.send(request).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.body["recorded"], true);
    let id = reply.body["audit_id"].as_str().unwrap();
    let events = gw.events().await;
    let event = events.iter().find(|e| e.event.id == id).unwrap();
    assert_eq!(event.event.kind, AuditKind::Record);
    assert_eq!(event.event.status.as_deref(), Some("success"));
    assert_eq!(event.event.result.as_ref().unwrap().len(), 4096);
    assert_eq!(event.event.context["check_audit_id"], check_id.as_str());
    assert!(event.event.decision.is_none());

    let bad = Request::builder()
        .method(Method::POST)
        .uri("/proxy/governance/record")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(r#"{"resource": "x"}"#))
        .unwrap();
    let reply = gw.send(bad).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.body["message"], "action: required");
}

#[tokio::test]
async fn approvals_are_required_then_pending_with_the_same_id() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT_PRODUCTION).await;
    let (_, token) = gw
        .agent("prod", "trusted", &["autogpt", "production"])
        .await;
    let first = gw
        .check(
            &token,
            json!({"action": "post:social", "resource": "twitter"}),
        )
        .await;
    assert_eq!(first.status, StatusCode::FORBIDDEN, "{}", first.text);
    assert_eq!(first.body["decision"], "require_approval");
    assert_eq!(first.body["code"], "approval_required");
    assert_eq!(first.body["requires_approval"], true);
    let id = first.body["approval_id"].as_str().unwrap().to_owned();
    assert!(first.body["policy"].is_string());

    let second = gw
        .check(
            &token,
            json!({"action": "post:social", "resource": "twitter"}),
        )
        .await;
    assert_eq!(second.body["code"], "approval_pending");
    assert_eq!(second.body["approval_id"], id.as_str());
}

#[tokio::test]
async fn audit_mode_answers_200_with_the_decision_as_computed() {
    let gw = TestGateway::with(Mode::Audit, 64 * 1024).await;
    gw.policy(AUTOGPT).await;
    let (_, token) = gw.agent("dev", "verified", &["autogpt"]).await;
    let reply = gw.check(&token, json!({"action": "execute:shell"})).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["allowed"], true);
    assert_eq!(reply.body["enforced"], false);
    assert_eq!(reply.body["decision"], "deny");
    assert_eq!(reply.body["code"], "denied_by_rule");
    let events = gw.events().await;
    assert_eq!(
        events
            .last()
            .unwrap()
            .event
            .decision
            .map(meshguard_policy::Effect::as_str),
        Some("deny")
    );
}

#[tokio::test]
async fn bypass_mode_allows_everything_unenforced() {
    let gw = TestGateway::with(Mode::Bypass, 64 * 1024).await;
    let (_, token) = gw.agent("dev", "verified", &[]).await;
    let reply = gw.check(&token, json!({"action": "execute:shell"})).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["allowed"], true);
    assert_eq!(reply.body["enforced"], false);
    assert!(reply.body["reason"].as_str().unwrap().contains("bypass"));
}

#[tokio::test]
async fn malformed_bodies_are_400_naming_the_field_and_not_audited() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT).await;
    let (_, token) = gw.agent("dev", "verified", &["autogpt"]).await;
    let before = gw.events().await.len();
    let cases = [
        ("not json", "body: not valid JSON"),
        (
            r#"{"action": 5}"#,
            "action: invalid type: integer `5`, expected a string",
        ),
        (
            r#"{"action": "a", "context": [1]}"#,
            "context: invalid type",
        ),
        (
            r#"{"action": "a", "resource": {}}"#,
            "resource: invalid type",
        ),
        (r#"{"resource": "x"}"#, "action: required"),
        (r#"{"action": ""}"#, "action: must not be empty"),
    ];
    for (body, message) in cases {
        let reply = gw.check_raw(&token, body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.body["error"], "bad_request");
        assert!(
            reply.body["message"].as_str().unwrap().starts_with(message),
            "{body}: {}",
            reply.text
        );
    }
    assert_eq!(gw.events().await.len(), before);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_before_anything_else() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT).await;
    let (_, token) = gw.agent("dev", "verified", &["autogpt"]).await;
    let before = gw.events().await.len();
    let huge = format!(
        r#"{{"action": "read:x", "context": {{"blob": "{}"}}}}"#,
        "a".repeat(10 * 1024 * 1024)
    );
    let reply = gw.check_raw(&token, huge.clone()).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.body["error"], "payload_too_large");
    // Without a Content-Length (chunked), the limit still holds.
    let stream = futures::stream::iter(
        huge.into_bytes()
            .chunks(65_536)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let reply = gw.check_raw(&token, Body::from_stream(stream)).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(gw.events().await.len(), before);
}

#[tokio::test]
async fn health_root_and_metrics() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT).await;
    let (_, token) = gw.agent("dev", "verified", &["autogpt"]).await;
    gw.check(&token, json!({"action": "execute:shell"})).await;
    gw.check_raw("garbage", "{}").await;

    let get = |path: &str| Request::builder().uri(path).body(Body::empty()).unwrap();
    let health = gw.send(get("/health")).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], "healthy");
    assert_eq!(health.body["mode"], "enforce");
    assert!(health.body["version"].is_string());
    assert!(health.body["uptime"].is_u64());
    assert_eq!(health.body["checks"]["store"]["status"], "ok");

    let root = gw.send(get("/")).await;
    assert_eq!(root.body["name"], "meshguard");
    assert_eq!(root.body["mode"], "enforce");

    let metrics = gw.send(get("/metrics")).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics
            .text
            .contains(r#"meshguard_decisions_total{code="denied_by_rule",decision="deny"} 1"#),
        "{}",
        metrics.text
    );
    assert!(
        metrics
            .text
            .contains(r#"meshguard_http_rejections_total{status="401"} 1"#)
    );
    assert!(
        metrics
            .text
            .contains("meshguard_check_duration_seconds_bucket")
    );
    assert!(metrics.text.contains("meshguard_audit_batch_size_bucket"));
    assert!(
        metrics
            .text
            .contains("meshguard_audit_commit_duration_seconds_bucket")
    );
}

#[tokio::test]
async fn unknown_paths_are_404_in_the_error_shape() {
    let gw = TestGateway::new().await;
    let reply = gw
        .send(
            Request::builder()
                .uri("/nowhere")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.body["error"], "not_found");
    assert_eq!(reply.body["message"], "no endpoint `GET /nowhere`");
}
