//! Attacks on the reverse proxy: a request that claims to be something else, a path that the
//! gateway and the upstream would read differently, methods and headers that change what the
//! upstream sees, and an upstream that hands the target's credentials back. Each request is
//! built with a raw URI and sent in-process, so the handler sees exactly what an attacker sent;
//! the upstreams are real servers on loopback ports that remember everything they receive.

use std::collections::BTreeMap;

use crate::common::TestGateway;
use crate::common::upstream::{Seen, recording_upstream};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::IntoResponse;
use meshguard_gateway::config::{Mode, ProxyTarget, Secret};
use meshguard_gateway::proxy::Upstreams;
use meshguard_store::AuditEvent;

/// The credential the `github` target injects; it must reach the upstream and nothing else.
const SECRET: &str = "ghp_injected-credential-0123456789";

/// Reads are allowed on both targets except the github admin area; github writes are allowed;
/// nothing may delete on github.
const POLICY: &str = r#"
name: proxy-attacks
version: "1"
rules:
  - effect: deny
    actions: ["delete:github/*", "read:github/admin/*"]
  - effect: allow
    actions: ["read:api/*", "read:github/*", "write:api/*", "write:github/*"]
"#;

/// An upstream that remembers every request and, like a careless debug endpoint, echoes the
/// credentials it received in its answer headers and opens a session cookie with them.
async fn upstream() -> (String, Seen) {
    recording_upstream(|received| {
        let authorization = received["headers"]["authorization"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut answer = HeaderMap::new();
        let echo = |text: String| HeaderValue::from_str(&text).unwrap();
        answer.insert("x-echo-authorization", echo(authorization.clone()));
        let token = authorization
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .to_owned();
        answer.insert("x-debug", echo(format!("upstream saw token={token}")));
        answer.insert("set-cookie", echo(format!("session={token}; Path=/")));
        answer.insert("x-upstream", echo("answered".into()));
        (StatusCode::OK, answer, "upstream body").into_response()
    })
    .await
}

struct Setup {
    gw: TestGateway,
    token: String,
    /// What the default target (`/proxy/api/…`) received.
    default: Seen,
    /// What the `github` target received.
    github: Seen,
}

impl Setup {
    fn forwarded(&self) -> usize {
        self.default.lock().unwrap().len() + self.github.lock().unwrap().len()
    }
}

async fn setup(mode: Mode) -> Setup {
    let (default_url, default) = upstream().await;
    let (github_url, github) = upstream().await;
    let default_target = ProxyTarget {
        url: default_url,
        headers: BTreeMap::new(),
        forward_headers: None,
        ca_file: None,
    };
    let targets = BTreeMap::from([(
        "github".to_owned(),
        ProxyTarget {
            url: github_url,
            headers: BTreeMap::from([(
                "authorization".to_owned(),
                Secret::new(format!("Bearer {SECRET}")),
            )]),
            forward_headers: None,
            ca_file: None,
        },
    )]);
    let upstreams = Upstreams::from_config(Some(&default_target), &targets).unwrap();
    let gw = TestGateway::with_upstreams(mode, upstreams).await;
    gw.policy(POLICY).await;
    let (_, token) = gw.agent("dev", "verified", &[]).await;
    Setup {
        gw,
        token,
        default,
        github,
    }
}

/// A request exactly as written: the URI is not normalised by any client.
fn raw(method: Method, uri: &str, token: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
}

async fn last_event(gw: &TestGateway) -> AuditEvent {
    gw.events().await.pop().unwrap()
}

#[tokio::test]
async fn a_claimed_read_does_not_carry_a_denied_delete_upstream() {
    let s = setup(Mode::Enforce).await;
    let request = raw(Method::DELETE, "/proxy/github/repos/acme/app", &s.token)
        .header("x-meshguard-action", "read:api/anything")
        .body(Body::empty())
        .unwrap();
    let reply = s.gw.send(request).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
    assert_eq!(reply.body["code"], "denied_by_rule");
    assert_eq!(reply.body["action"], "delete:github/repos/acme/app");
    assert_eq!(s.forwarded(), 0, "the DELETE reached an upstream");
    // The trail holds the call that was attempted, and the claim as a claim.
    let event = last_event(&s.gw).await.event;
    assert_eq!(event.action, "delete:github/repos/acme/app");
    assert_eq!(
        event.decision.map(meshguard_policy::Effect::as_str),
        Some("deny")
    );
    assert_eq!(event.context["method"], "DELETE");
    assert_eq!(event.context["path"], "/proxy/github/repos/acme/app");
    assert_eq!(event.context["claimedAction"], "read:api/anything");

    // A claimed resource cannot widen either: the request's own action must be allowed.
    let request = raw(Method::DELETE, "/proxy/github/repos/acme/app", &s.token)
        .header("x-meshguard-resource", "notes.txt")
        .body(Body::empty())
        .unwrap();
    assert_eq!(s.gw.send(request).await.status, StatusCode::FORBIDDEN);
    assert_eq!(s.forwarded(), 0);
}

#[tokio::test]
async fn paths_read_two_ways_are_refused_before_any_upstream_is_chosen() {
    let s = setup(Mode::Enforce).await;
    let attempts = [
        // Decided as `read:api/users`, sent to github with its credentials.
        "/proxy/github/../api/users",
        "/proxy/github/./../api/users",
        // Allowed as `read:github/public/%2e%2e/…`, resolved by the upstream into the admin area.
        "/proxy/github/public/%2e%2e/admin/keys",
        "/proxy/github/public/%2E%2E/admin/keys",
        "/proxy/github/public/.%2e/admin/keys",
        "/proxy/github/public%2f..%2fadmin/keys",
        "/proxy/github/public%5c..%5cadmin/keys",
        "/proxy/github/public/%252e%252e/admin/keys",
        "/proxy/github/public/..;/admin/keys",
        "/proxy/github/public/%EF%BC%8E%EF%BC%8E/admin/keys",
        "/proxy/api/users%00.json",
    ];
    for uri in attempts {
        let before = s.gw.events().await.len();
        let request = raw(Method::GET, uri, &s.token).body(Body::empty()).unwrap();
        let reply = s.gw.send(request).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{uri}: {}", reply.text);
        assert_eq!(reply.body["code"], "invalid_resource", "{uri}");
        assert!(
            reply.body["reason"].as_str().unwrap().contains("refused"),
            "{uri}: {}",
            reply.body["reason"]
        );
        assert_eq!(s.forwarded(), 0, "{uri} reached an upstream");
        // The refusal of an authenticated agent is in the trail, with the path as it came.
        let events = s.gw.events().await;
        assert_eq!(events.len(), before + 1, "{uri}");
        let event = &events.last().unwrap().event;
        assert_eq!(
            event.code.map(meshguard_store::EventCode::as_str),
            Some("invalid_resource"),
            "{uri}"
        );
        assert_eq!(event.context["path"], uri);
        assert_eq!(event.context["method"], "GET");
    }
    // In audit mode too: a refused path has nothing that could be forwarded.
    let s = setup(Mode::Audit).await;
    let request = raw(Method::GET, "/proxy/github/../api/users", &s.token)
        .body(Body::empty())
        .unwrap();
    assert_eq!(s.gw.send(request).await.status, StatusCode::FORBIDDEN);
    assert_eq!(s.forwarded(), 0);
}

#[tokio::test]
async fn trace_and_connect_are_never_forwarded() {
    let s = setup(Mode::Enforce).await;
    for method in [Method::TRACE, Method::CONNECT] {
        let request = raw(method.clone(), "/proxy/api/users", &s.token)
            .body(Body::empty())
            .unwrap();
        let reply = s.gw.send(request).await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(reply.body["error"], "method_not_allowed", "{method}");
        assert!(!reply.headers["allow"].to_str().unwrap().contains("TRACE"));
    }
    assert_eq!(s.forwarded(), 0);
}

#[tokio::test]
async fn forwarding_and_method_override_headers_never_reach_the_upstream() {
    let s = setup(Mode::Enforce).await;
    let spoofing = [
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-host", "admin.internal"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-prefix", "/admin"),
        ("forwarded", "for=10.0.0.1;host=admin.internal"),
        ("x-real-ip", "10.0.0.1"),
        ("x-original-url", "/admin/keys"),
        ("x-rewrite-url", "/admin/keys"),
        ("x-http-method-override", "DELETE"),
        ("x-http-method", "DELETE"),
        ("x-method-override", "DELETE"),
        ("cookie", "session=agent-own-session"),
    ];
    let mut request = raw(Method::GET, "/proxy/github/repos/acme/app", &s.token)
        .header("accept", "application/json")
        .header("content-type", "application/json");
    for (name, value) in spoofing {
        request = request.header(name, value);
    }
    let reply = s.gw.send(request.body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let seen = s.github.lock().unwrap();
    let headers = &seen.last().unwrap()["headers"];
    for (name, _) in spoofing {
        assert!(headers.get(name).is_none(), "`{name}` was forwarded");
    }
    // What an upstream needs still goes, and the credential it sees is the target's.
    assert_eq!(headers["accept"], "application/json");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["authorization"], format!("Bearer {SECRET}"));
}

#[tokio::test]
async fn injected_credentials_never_come_back_to_the_agent() {
    let s = setup(Mode::Enforce).await;
    let request = raw(Method::GET, "/proxy/github/repos/acme/app", &s.token)
        .body(Body::empty())
        .unwrap();
    let reply = s.gw.send(request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(s.github.lock().unwrap().len(), 1);
    for (name, value) in &reply.headers {
        let value = value.to_str().unwrap_or_default();
        assert!(
            !value.contains(SECRET),
            "`{name}` hands back the credential"
        );
    }
    assert!(!reply.headers.contains_key("set-cookie"));
    assert_eq!(reply.headers["x-upstream"], "answered");
    // Nor does the trail hold it.
    let trail = serde_json::to_string(&s.gw.events().await).unwrap();
    assert!(!trail.contains(SECRET));
}

#[tokio::test]
async fn refused_paths_count_against_the_agents_limits() {
    let s = setup(Mode::Enforce).await;
    s.gw.policy(
        "name: budget\nversion: \"1\"\ndefaultEffect: allow\nrateLimits: {requestsPerMinute: 3}\n",
    )
    .await;
    for _ in 0..3 {
        let request = raw(Method::GET, "/proxy/github/%2e%2e/api/users", &s.token)
            .body(Body::empty())
            .unwrap();
        assert_eq!(s.gw.send(request).await.body["code"], "invalid_resource");
    }
    let request = raw(Method::GET, "/proxy/api/users", &s.token)
        .body(Body::empty())
        .unwrap();
    let reply = s.gw.send(request).await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.text
    );
    assert_eq!(s.forwarded(), 0);
}

#[tokio::test]
async fn over_a_real_socket_the_handler_sees_the_path_as_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = setup(Mode::Enforce).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = meshguard_gateway::app(s.gw.state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    // What `curl --path-as-is` or a hand-written client sends; nothing on the way resolves `..`.
    for target in [
        "/proxy/github/../api/users",
        "/proxy/github/%2e%2e/api/users",
    ] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET {target} HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {}\r\nconnection: close\r\n\r\n",
            s.token
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 403"), "{target}: {answer}");
        assert!(answer.contains("invalid_resource"), "{target}: {answer}");
    }
    assert_eq!(s.forwarded(), 0);
}
