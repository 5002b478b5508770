//! OpenID AuthZEN evaluations: MeshGuard as the decision point of an AuthZEN enforcement point.

use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};

use crate::common::{Reply, TestGateway};

const POLICY: &str = r#"name: tools
version: "1"
appliesTo: {tags: [bot]}
rules:
  - name: no-shell
    effect: deny
    actions: ["execute:shell"]
  - name: reads
    effect: allow
    actions: ["read:*"]
"#;

async fn post(gw: &TestGateway, path: &str, token: &str, body: Value) -> Reply {
    let request = Request::post(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    gw.send(request).await
}

#[tokio::test]
async fn an_evaluation_is_a_check_answered_in_authzen_shape() {
    let gw = TestGateway::new().await;
    gw.policy(POLICY).await;
    let (id, token) = gw.agent("bot", "verified", &["bot"]).await;

    let allowed = post(
        &gw,
        "/access/v1/evaluation",
        &token,
        json!({"subject": {"type": "agent", "id": "bot"}, "action": {"name": "read:docs"},
               "resource": {"type": "file", "id": "a.md"}, "context": {"ticket": 7}}),
    )
    .await;
    assert_eq!(allowed.status, 200, "{}", allowed.text);
    assert_eq!(allowed.body["decision"], true);
    assert_eq!(allowed.body["context"]["rule"], "reads");

    let denied = post(
        &gw,
        "/access/v1/evaluation",
        &token,
        json!({"subject": {"type": "agent", "id": id}, "action": {"name": "execute:shell"}}),
    )
    .await;
    assert_eq!(
        denied.status, 200,
        "an AuthZEN denial is a decision: {}",
        denied.text
    );
    assert_eq!(denied.body["decision"], false);
    assert_eq!(denied.body["context"]["code"], "denied_by_rule");

    let someone_else = post(
        &gw,
        "/access/v1/evaluation",
        &token,
        json!({"subject": {"type": "agent", "id": "root"}, "action": {"name": "read:docs"}}),
    )
    .await;
    assert_eq!(someone_else.status, 403, "{}", someone_else.text);
    let nameless = post(&gw, "/access/v1/evaluation", &token, json!({"action": {}})).await;
    assert_eq!(nameless.status, 400);
    assert!(nameless.text.contains("action.name"), "{}", nameless.text);
    let anonymous = post(
        &gw,
        "/access/v1/evaluation",
        "forged",
        json!({"action": {"name": "read:x"}}),
    )
    .await;
    assert_eq!(anonymous.status, 401);

    // Each evaluation is a check in the audit trail, with its resource and context.
    let checks: Vec<(String, Option<String>)> = gw
        .events()
        .await
        .into_iter()
        .filter(|e| e.event.kind == meshguard_store::AuditKind::Check)
        .map(|e| (e.event.action.clone(), e.event.resource.clone()))
        .collect();
    assert_eq!(
        checks,
        [
            ("read:docs".to_owned(), Some("a.md".to_owned())),
            ("execute:shell".to_owned(), Some("*".to_owned()))
        ]
    );
}

#[tokio::test]
async fn a_batch_takes_defaults_and_stops_as_its_semantic_says() {
    let gw = TestGateway::new().await;
    gw.policy(POLICY).await;
    let (_, token) = gw.agent("bot", "verified", &["bot"]).await;
    let batch = |semantic: &str| {
        json!({
            "subject": {"type": "agent", "id": "bot"},
            "action": {"name": "read:docs"},
            "evaluations": [
                {"resource": {"type": "file", "id": "a.md"}},
                {"action": {"name": "execute:shell"}},
                {"resource": {"type": "file", "id": "b.md"}}
            ],
            "options": {"evaluations_semantic": semantic}
        })
    };
    let all = post(&gw, "/access/v1/evaluations", &token, batch("execute_all")).await;
    assert_eq!(all.status, 200, "{}", all.text);
    let decisions: Vec<Value> = all.body["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["decision"].clone())
        .collect();
    assert_eq!(decisions, [json!(true), json!(false), json!(true)]);

    let first_deny = post(
        &gw,
        "/access/v1/evaluations",
        &token,
        batch("deny_on_first_deny"),
    )
    .await;
    assert_eq!(first_deny.body["evaluations"].as_array().unwrap().len(), 2);
    let first_permit = post(
        &gw,
        "/access/v1/evaluations",
        &token,
        batch("permit_on_first_permit"),
    )
    .await;
    assert_eq!(
        first_permit.body["evaluations"].as_array().unwrap().len(),
        1
    );

    let bad = post(
        &gw,
        "/access/v1/evaluations",
        &token,
        json!({"evaluations": [{"action": {"name": "read:x"}}, {}]}),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.text.contains("evaluations[1].action.name"),
        "{}",
        bad.text
    );
}
