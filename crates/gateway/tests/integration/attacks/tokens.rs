//! Hostile requests: forged, confused or stale credentials, credentials of the wrong kind, and
//! path escapes. Each is refused and changes nothing; only the refusals SPEC 6 names are audited
//! (counted per agent and minute, written here with `flush_refusals`).

use crate::common::{AUTOGPT, TestGateway};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use meshguard_gateway::data_dir::{DataDir, PUBLIC_KEY_FILE};
use meshguard_gateway::token::{AgentClaims, ISSUER};
use serde_json::{Value, json};

fn claims(id: &str, jti: &str, exp: Option<i64>) -> AgentClaims {
    AgentClaims {
        iss: ISSUER.into(),
        sub: id.into(),
        name: "dev".into(),
        jti: jti.into(),
        iat: time::OffsetDateTime::now_utc().unix_timestamp(),
        exp,
    }
}

/// The claims of a genuine token, decoded without verification.
fn genuine_claims(token: &str) -> AgentClaims {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// Snapshot of what an attack must not change.
async fn snapshot(gw: &TestGateway) -> (Value, Value, usize) {
    let agents = gw.admin(Method::GET, "/admin/agents", None).await.body;
    let policies = gw.admin(Method::GET, "/admin/policies", None).await.body;
    (agents, policies, gw.events().await.len())
}

async fn assert_refused(gw: &TestGateway, token: &str, what: &str) {
    let before = snapshot(gw).await;
    let reply = gw.check(token, json!({"action": "read:workspace"})).await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "{what}: {}",
        reply.text
    );
    assert_eq!(reply.body["error"], "unauthorized", "{what}");
    assert!(reply.body["message"].is_string(), "{what}");
    assert_eq!(snapshot(gw).await, before, "{what} changed something");
}

#[tokio::test]
async fn forged_and_confused_tokens_are_401_and_not_audited() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT).await;
    let (id, token) = gw.agent("dev", "verified", &["autogpt"]).await;
    let genuine = genuine_claims(&token);

    // Signed by another Ed25519 key (another gateway's data dir).
    let other = tempfile::tempdir().unwrap();
    let foreign = DataDir::open(other.path(), None).unwrap();
    let forged = foreign.keys.sign(&genuine).unwrap();
    assert_refused(&gw, &forged, "foreign signature").await;

    // `alg: none`, no signature.
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&genuine).unwrap());
    assert_refused(&gw, &format!("{header}.{payload}."), "alg none").await;

    // HS256 with the gateway's public key as the HMAC secret (algorithm confusion).
    let public_pem = std::fs::read(gw.dir.path().join(PUBLIC_KEY_FILE)).unwrap();
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &genuine,
        &EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    assert_refused(&gw, &confused, "HS256 with the public key").await;

    // A tampered payload with the genuine signature.
    let mut parts: Vec<&str> = token.split('.').collect();
    let mut elevated = genuine.clone();
    elevated.sub = "agent_someone_else".into();
    let tampered_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&elevated).unwrap());
    parts[1] = &tampered_payload;
    assert_refused(&gw, &parts.join("."), "tampered payload").await;

    // Expired, though validly signed by the gateway.
    let expired = gw
        .state
        .keys
        .sign(&claims(&id, &genuine.jti, Some(1_000_000_000)))
        .unwrap();
    assert_refused(&gw, &expired, "expired").await;

    // Garbage and missing tokens.
    assert_refused(&gw, "not-a-jwt", "garbage").await;
    let before = snapshot(&gw).await;
    let request = Request::builder()
        .method(Method::POST)
        .uri("/proxy/governance/check")
        .body(Body::from(r#"{"action":"read:x"}"#))
        .unwrap();
    let reply = gw.send(request).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.body["message"].as_str().unwrap().contains("missing"));
    assert_eq!(snapshot(&gw).await, before);

    // The genuine token still works: the refusals did not lock anything.
    let ok = gw.check(&token, json!({"action": "read:workspace"})).await;
    assert_eq!(ok.status, StatusCode::OK);
}

#[tokio::test]
async fn revoked_agent_is_refused_on_the_very_next_request_and_audited() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT).await;
    let (id, token) = gw.agent("dev", "verified", &["autogpt"]).await;
    assert_eq!(
        gw.check(&token, json!({"action": "read:x"})).await.status,
        StatusCode::OK
    );
    let revoke = gw
        .admin(Method::POST, "/admin/agents/dev/revoke", None)
        .await;
    assert_eq!(revoke.status, StatusCode::OK);
    assert_eq!(revoke.body["status"], "revoked");

    let reply = gw
        .check(&token, json!({"action": "read:x", "resource": "r"}))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.body["error"], "unauthorized");
    gw.flush_refusals().await;
    let last = gw.events().await.pop().unwrap();
    assert_eq!(
        last.event.decision.map(meshguard_policy::Effect::as_str),
        Some("deny")
    );
    assert_eq!(
        last.event.code.map(meshguard_store::EventCode::as_str),
        Some("unauthorized")
    );
    assert_eq!(last.event.action, "read:x");
    assert_eq!(last.event.agent.unwrap().id, id);

    // Restore brings the same token back.
    gw.admin(Method::POST, "/admin/agents/dev/restore", None)
        .await;
    assert_eq!(
        gw.check(&token, json!({"action": "read:x"})).await.status,
        StatusCode::OK
    );
    // DELETE revokes too, as MeshGuard's SDK expects.
    let delete = gw
        .admin(Method::DELETE, &format!("/admin/agents/{id}"), None)
        .await;
    assert_eq!(delete.status, StatusCode::OK);
    assert_eq!(
        gw.check(&token, json!({"action": "read:x"})).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn rotated_token_id_is_unknown_and_audited() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT).await;
    let (_, old) = gw.agent("dev", "verified", &["autogpt"]).await;
    let rotated = gw
        .admin(Method::POST, "/admin/agents/dev/token?rotate=true", None)
        .await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{}", rotated.text);
    assert_eq!(rotated.body["revokedTokens"], 1);
    let new = rotated.body["token"].as_str().unwrap();

    let count = gw.events().await.len();
    let reply = gw.check(&old, json!({"action": "read:x"})).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    gw.flush_refusals().await;
    let events = gw.events().await;
    assert_eq!(events.len(), count + 1);
    assert_eq!(
        events
            .last()
            .unwrap()
            .event
            .code
            .map(meshguard_store::EventCode::as_str),
        Some("unauthorized")
    );
    assert_eq!(
        gw.check(new, json!({"action": "read:x"})).await.status,
        StatusCode::OK
    );

    // A validly signed token whose jti the store never issued.
    let forged_jti = gw
        .state
        .keys
        .sign(&claims(&genuine_claims(new).sub, "tok_never_issued", None))
        .unwrap();
    let reply = gw.check(&forged_jti, json!({"action": "read:x"})).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    gw.flush_refusals().await;
    // +1 for the old token, +1 for the allowed check, +1 for this one.
    assert_eq!(gw.events().await.len(), count + 3);
}

#[tokio::test]
async fn credentials_of_the_wrong_kind_are_refused_both_ways() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT).await;
    let (_, token) = gw.agent("dev", "verified", &["autogpt"]).await;
    let before = snapshot(&gw).await;

    // Agent token on the admin API, in either header.
    for (name, value) in [
        ("x-admin-token", token.clone()),
        ("authorization", format!("Bearer {token}")),
    ] {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/admin/agents")
            .header(name, value)
            .body(Body::from(r#"{"name":"evil","trustTier":"privileged"}"#))
            .unwrap();
        let reply = gw.send(request).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.body["error"], "unauthorized");
    }
    // No credentials on the admin API.
    let request = Request::builder()
        .uri("/admin/agents")
        .body(Body::empty())
        .unwrap();
    assert_eq!(gw.send(request).await.status, StatusCode::UNAUTHORIZED);

    // Admin token on /proxy.
    let reply = gw.check(&gw.admin, json!({"action": "read:x"})).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("admin token")
    );

    assert_eq!(snapshot(&gw).await, before);
}

#[tokio::test]
async fn path_escapes_are_denied_as_invalid_resource() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT).await;
    let (_, token) = gw.agent("dev", "verified", &["autogpt"]).await;
    for (action, resource) in [
        ("read:workspace", "../../etc/shadow"),
        ("write:workspace/../../system/passwd", "*"),
        ("read:workspace", "a/../../.."),
    ] {
        let reply = gw
            .check(&token, json!({"action": action, "resource": resource}))
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{action} {resource}");
        assert_eq!(reply.body["code"], "invalid_resource");
        assert!(reply.body["policy"].is_null());
        // The response keeps the strings as received.
        assert_eq!(reply.body["resource"], resource);
        assert_eq!(reply.body["action"], action);
    }
    // Admin paths with traversal do not reach anything.
    let reply = gw
        .admin(Method::GET, "/admin/agents/..%2F..%2Fetc%2Fpasswd", None)
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = gw
        .admin_text(Method::PUT, "/admin/policies/..%2Fevil", AUTOGPT)
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let policies = gw.admin(Method::GET, "/admin/policies", None).await;
    assert_eq!(policies.body["policies"].as_array().unwrap().len(), 1);
}
