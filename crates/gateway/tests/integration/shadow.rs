//! `mode: shadow` policies: decided on every check they apply to, never enforced; the audit event
//! and `audit stats` say what they would have changed.

use axum::http::Method;
use serde_json::json;

use crate::common::TestGateway;

const ENFORCED: &str = r#"name: reads
version: "1"
appliesTo: {tags: [reader]}
rules:
  - name: all-reads
    effect: allow
    actions: ["read:*"]
"#;

const SHADOW: &str = r#"name: no-secrets
version: "1"
mode: shadow
appliesTo: {tags: [reader]}
rules:
  - name: secrets
    effect: deny
    actions: ["read:secrets/*"]
defaultEffect: allow
"#;

#[tokio::test]
async fn a_shadow_policy_is_recorded_where_it_would_change_the_verdict_and_never_enforced() {
    let gw = TestGateway::new().await;
    gw.policy(ENFORCED).await;
    gw.policy(SHADOW).await;
    let (_, token) = gw.agent("reader", "verified", &["reader"]).await;

    let secret = gw
        .check(
            &token,
            json!({"action": "read:secrets", "resource": "key.pem"}),
        )
        .await;
    assert_eq!(
        secret.status, 200,
        "the shadow deny is not enforced: {}",
        secret.body
    );
    assert_eq!(secret.body["policy"], "reads");
    let docs = gw
        .check(&token, json!({"action": "read:docs", "resource": "a.md"}))
        .await;
    assert_eq!(docs.status, 200);

    let events = gw.events().await;
    let event_of = |audit_id: &serde_json::Value| {
        events
            .iter()
            .find(|e| e.event.id == audit_id.as_str().unwrap())
            .unwrap()
            .clone()
    };
    let shadowed = event_of(&secret.body["audit_id"]);
    let verdict = shadowed
        .event
        .shadow
        .expect("the shadow verdict is recorded");
    assert_eq!(verdict.decision.as_str(), "deny");
    assert_eq!(verdict.code.as_str(), "denied_by_rule");
    assert_eq!(verdict.policy.as_deref(), Some("no-secrets"));
    assert_eq!(verdict.rule.as_deref(), Some("secrets"));
    assert!(event_of(&docs.body["audit_id"]).event.shadow.is_none());

    let stats = gw
        .admin(Method::GET, "/admin/audit/stats?period=1", None)
        .await;
    assert_eq!(stats.status, 200, "{}", stats.body);
    assert_eq!(
        stats.body["shadow"],
        json!([{"policy": "no-secrets", "from": "allow", "to": "deny", "count": 1}])
    );
    let verify = gw.admin(Method::GET, "/admin/audit/verify", None).await;
    assert_eq!(verify.body["ok"], true, "{}", verify.body);

    let listed = gw.admin(Method::GET, "/admin/policies", None).await;
    let modes: Vec<_> = listed.body["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].clone(), p["mode"].clone()))
        .collect();
    assert_eq!(
        modes,
        [
            (json!("no-secrets"), json!("shadow")),
            (json!("reads"), json!("enforce"))
        ]
    );
}
