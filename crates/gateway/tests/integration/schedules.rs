//! `conditions.schedule` reads the gateway's wall clock on a check, and the time a `decide`
//! names when it names one.

use std::sync::{Arc, Mutex};

use axum::http::Method;
use meshguard_gateway::GatewayOptions;
use serde_json::json;
use time::OffsetDateTime;
use time::macros::datetime;

use crate::common::TestGateway;

const OFFICE_HOURS: &str = r#"name: office-hours
version: "1"
appliesTo: {tags: [deployer]}
rules:
  - name: office-deploys
    effect: allow
    actions: ["deploy:*"]
    conditions:
      schedule: {days: [mon, tue, wed, thu, fri], hours: "09:00-18:00", timezone: Europe/Berlin}
defaultEffect: deny
"#;

#[tokio::test]
async fn a_check_is_decided_at_the_gateway_clock_and_a_decide_at_the_time_it_names() {
    // Wednesday 2026-03-04, 10:00 UTC = 11:00 in Berlin: open.
    let now = Arc::new(Mutex::new(datetime!(2026-03-04 10:00 UTC)));
    let clock = Arc::clone(&now);
    let gw = TestGateway::with_options(GatewayOptions {
        wall_clock: Arc::new(move || *clock.lock().unwrap()),
        ..GatewayOptions::default()
    })
    .await;
    gw.policy(OFFICE_HOURS).await;
    let (_, token) = gw.agent("ops", "verified", &["deployer"]).await;

    let open = gw.check(&token, json!({"action": "deploy:api"})).await;
    assert_eq!(open.status, 200, "{}", open.body);
    assert_eq!(open.body["rule"], "office-deploys");

    // 17:30 UTC = 18:30 in Berlin: closed, and the explanation says why.
    *now.lock().unwrap() = datetime!(2026-03-04 17:30 UTC);
    let closed = gw.check(&token, json!({"action": "deploy:api"})).await;
    assert_eq!(closed.status, 403);
    assert_eq!(closed.body["code"], "default_deny");

    let asked: OffsetDateTime = datetime!(2026-03-05 08:00 UTC);
    let at = gw
        .admin(
            Method::POST,
            "/admin/decide",
            Some(json!({
                "agent": "ops",
                "action": "deploy:api",
                "now": asked.format(&time::format_description::well_known::Rfc3339).unwrap(),
            })),
        )
        .await;
    assert_eq!(at.status, 200, "{}", at.body);
    assert_eq!(at.body["decision"], "allow");

    let explained = gw
        .admin(
            Method::POST,
            "/admin/decide",
            Some(json!({"agent": "ops", "action": "deploy:api"})),
        )
        .await;
    assert_eq!(explained.body["decision"], "deny");
    let why = explained.body["explanation"].to_string();
    assert!(why.contains("outside the schedule"), "{why}");

    let bad = gw
        .admin(
            Method::POST,
            "/admin/decide",
            Some(json!({"agent": "ops", "action": "deploy:api", "now": "tomorrow"})),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.body["message"].as_str().unwrap().contains("now"),
        "{}",
        bad.body
    );
}
