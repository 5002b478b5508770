//! The reverse proxy against a real upstream on a loopback port: allowed requests are forwarded
//! with the agent's token stripped, an allow-list of its headers and the target's credentials
//! injected; denied ones never leave. (Attacks on the proxy live in `attacks::proxy`.)

use std::collections::BTreeMap;

use crate::common::TestGateway;
use crate::common::upstream::{Seen, recording_upstream};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::response::IntoResponse;
use meshguard_gateway::config::{Mode, ProxyTarget, Secret};
use meshguard_gateway::proxy::Upstreams;

const POLICY: &str = r#"
name: proxied
version: "1"
rules:
  - effect: allow
    actions: ["read:api/*", "write:github/*"]
  - effect: deny
    actions: ["delete:*"]
rateLimits: {requestsPerMinute: 4}
"#;

/// An upstream that answers every request with what it received, and remembers it.
async fn upstream() -> (String, Seen) {
    recording_upstream(|received| {
        (StatusCode::CREATED, axum::Json(received.clone())).into_response()
    })
    .await
}

fn target(url: &str) -> ProxyTarget {
    ProxyTarget {
        url: url.to_owned(),
        headers: BTreeMap::new(),
        forward_headers: None,
        ca_file: None,
    }
}

async fn gateway(mode: Mode) -> (TestGateway, String, Seen) {
    let (url, seen) = upstream().await;
    let targets = BTreeMap::from([(
        "github".to_owned(),
        ProxyTarget {
            url: format!("{url}/gh/"),
            headers: BTreeMap::from([("authorization".to_owned(), Secret::new("token gh-secret"))]),
            forward_headers: Some(vec!["content-type".into(), "x-custom".into()]),
            ca_file: None,
        },
    )]);
    let upstreams = Upstreams::from_config(Some(&target(&url)), &targets).unwrap();
    let gw = TestGateway::with_upstreams(mode, upstreams).await;
    gw.policy(POLICY).await;
    let (_, token) = gw.agent("dev", "verified", &[]).await;
    (gw, token, seen)
}

fn proxied(method: Method, path: &str, token: &str, body: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("x-trace-id", "proxy-trace")
        .header("x-custom", "custom")
        .header("accept", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

#[tokio::test]
async fn allowed_requests_are_forwarded_with_credentials_swapped() {
    let (gw, token, seen) = gateway(Mode::Enforce).await;

    let reply = gw
        .send(proxied(Method::GET, "/proxy/api/users?page=2", &token, ""))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.body["uri"], "/api/users?page=2");
    // The default allow-list: `accept` goes, a header it does not name stays here.
    assert_eq!(reply.body["headers"]["accept"], "application/json");
    assert!(reply.body["headers"].get("x-custom").is_none());
    assert!(
        reply.body["headers"].get("authorization").is_none(),
        "agent token stripped"
    );
    assert_eq!(reply.headers["x-meshguard-decision"], "allow");
    assert_eq!(reply.headers["x-meshguard-policy"], "proxied");
    assert_eq!(reply.headers["x-meshguard-trace-id"], "proxy-trace");
    assert!(
        reply.headers["x-meshguard-agent-id"]
            .to_str()
            .unwrap()
            .starts_with("agent_")
    );

    // A named target: its first segment picks it, its credentials are injected, and the
    // action includes the target name.
    let reply = gw
        .send(proxied(
            Method::POST,
            "/proxy/github/repos/x/issues",
            &token,
            "{\"t\":1}",
        ))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.body["uri"], "/gh/repos/x/issues");
    assert_eq!(reply.body["headers"]["authorization"], "token gh-secret");
    // The target's own allow-list replaces the default one.
    assert_eq!(reply.body["headers"]["x-custom"], "custom");
    assert!(reply.body["headers"].get("accept").is_none());
    assert_eq!(reply.body["body"], "{\"t\":1}");
    let events = gw.events().await;
    let actions: Vec<&str> = events.iter().map(|e| e.event.action.as_str()).collect();
    assert!(actions.contains(&"read:api/users"), "{actions:?}");
    assert!(
        actions.contains(&"write:github/repos/x/issues"),
        "{actions:?}"
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn denied_and_rate_limited_requests_never_reach_the_upstream() {
    let (gw, token, seen) = gateway(Mode::Enforce).await;
    let reply = gw
        .send(proxied(Method::DELETE, "/proxy/api/users/1", &token, ""))
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.body["code"], "denied_by_rule");
    assert_eq!(reply.body["action"], "delete:api/users/1");
    // Not covered by any rule: default deny.
    let reply = gw
        .send(proxied(Method::PUT, "/proxy/api/users/1", &token, ""))
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.body["code"], "default_deny");
    // Two denied checks counted; two more reads fit, then 429.
    for _ in 0..2 {
        let ok = gw
            .send(proxied(Method::GET, "/proxy/api/x", &token, ""))
            .await;
        assert_eq!(ok.status, StatusCode::CREATED);
    }
    let limited = gw
        .send(proxied(Method::GET, "/proxy/api/x", &token, ""))
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers.contains_key("retry-after"));
    assert_eq!(seen.lock().unwrap().len(), 2);

    // No token: 401, nothing forwarded.
    let anonymous = Request::builder()
        .uri("/proxy/api/x")
        .body(Body::empty())
        .unwrap();
    assert_eq!(gw.send(anonymous).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_claimed_action_only_narrows_and_audit_mode_forwards_denials() {
    let (gw, token, seen) = gateway(Mode::Audit).await;
    let mut request = proxied(Method::GET, "/proxy/api/users", &token, "");
    request
        .headers_mut()
        .insert("x-meshguard-action", "delete:everything".parse().unwrap());
    let reply = gw.send(request).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.headers["x-meshguard-decision"], "deny");
    assert!(reply.body["headers"].get("x-meshguard-action").is_none());
    assert_eq!(seen.lock().unwrap().len(), 1);
    let events = gw.events().await;
    let event = &events.last().unwrap().event;
    assert_eq!(event.action, "read:api/users");
    assert_eq!(
        event.code.map(meshguard_store::EventCode::as_str),
        Some("denied_by_rule")
    );
    assert_eq!(event.context["claimedAction"], "delete:everything");
    assert_eq!(event.context["method"], "GET");
    assert_eq!(event.context["path"], "/proxy/api/users");
}

#[tokio::test]
async fn a_claim_that_is_allowed_too_forwards_and_names_the_real_action() {
    let (gw, token, seen) = gateway(Mode::Enforce).await;
    let mut request = proxied(Method::GET, "/proxy/api/users", &token, "");
    request
        .headers_mut()
        .insert("x-meshguard-action", "read:api/contacts".parse().unwrap());
    let reply = gw.send(request).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(seen.lock().unwrap().len(), 1);
    // Allowed on its own but not by the request it rides on: a `PUT` is not covered.
    let mut request = proxied(Method::PUT, "/proxy/api/users", &token, "");
    request
        .headers_mut()
        .insert("x-meshguard-action", "read:api/users".parse().unwrap());
    let reply = gw.send(request).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.body["action"], "write:api/users");
    assert_eq!(reply.body["code"], "default_deny");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn no_upstream_is_404_and_a_dead_upstream_is_502() {
    let gw = TestGateway::new().await;
    gw.policy(POLICY).await;
    let (_, token) = gw.agent("dev", "verified", &[]).await;
    let reply = gw
        .send(proxied(Method::GET, "/proxy/api/x", &token, ""))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("proxy.target")
    );

    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let upstreams = Upstreams::from_config(Some(&target(&url)), &BTreeMap::new()).unwrap();
    let gw = TestGateway::with_upstreams(Mode::Enforce, upstreams).await;
    gw.policy(POLICY).await;
    let (_, token) = gw.agent("dev", "verified", &[]).await;
    let reply = gw
        .send(proxied(Method::GET, "/proxy/api/x", &token, ""))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.body["error"], "bad_gateway");
    assert!(
        !reply.text.contains("127.0.0.1"),
        "the cause is logged, not sent"
    );
}

#[tokio::test]
async fn a_claim_that_needs_a_human_asks_about_the_real_call() {
    let (gw, token, seen) = gateway(Mode::Enforce).await;
    gw.policy(
        "name: issues\nversion: \"1\"\nrules:\n  - effect: allow\n    actions: [\"write:github/*\"]\nhumanInTheLoop:\n  requireApproval: [\"create:issue\"]\n",
    )
    .await;
    let send = || {
        let mut request = proxied(Method::POST, "/proxy/github/repos/x/issues", &token, "{}");
        request
            .headers_mut()
            .insert("x-meshguard-action", "create:issue".parse().unwrap());
        gw.send(request)
    };
    let first = send().await;
    assert_eq!(first.status, StatusCode::FORBIDDEN, "{}", first.text);
    assert_eq!(first.body["code"], "approval_required");
    let id = first.body["approval_id"].as_str().unwrap().to_owned();
    let pending = gw
        .admin(Method::GET, "/admin/approvals?status=pending", None)
        .await;
    // The human is shown the call that will be made, not the agent's description of it.
    assert_eq!(
        pending.body["approvals"][0]["action"],
        "write:github/repos/x/issues"
    );
    assert!(seen.lock().unwrap().is_empty());
    let approved = gw
        .admin(
            Method::POST,
            &format!("/admin/approvals/{id}/approve"),
            None,
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.text);
    let second = send().await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.text);
    assert_eq!(seen.lock().unwrap().len(), 1);
}
