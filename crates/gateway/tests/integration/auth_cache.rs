//! The auth cache never outlives a change: with the agent's token and record warm in the cache,
//! revoke, restore, rotation, purge and trust or tag changes apply to the very next check, even
//! on a gateway whose change feed is silent (the admin handler clears the cache itself); a
//! token id unknown at first works once it exists; expiry is checked on every request; a change
//! made through another gateway over the same store applies within a second.

use std::time::Duration;

use crate::common::TestGateway;
use crate::common::severable::Severable;
use axum::http::{Method, StatusCode};
use meshguard_gateway::AppState;
use meshguard_gateway::GatewayOptions;
use meshguard_gateway::data_dir::DataDir;
use meshguard_gateway::rate_limit::ManualClock;
use meshguard_gateway::token::{AgentClaims, ISSUER};
use meshguard_store::NewToken;
use meshguard_store::StoreLocation;
use serde_json::{Value, json};
use std::sync::Arc;
use time::OffsetDateTime;
use tower::ServiceExt;

const TRUSTED_ONLY: &str = "name: trusted-readers\nversion: \"1\"\nappliesTo:\n  trustTiers: [trusted]\n  tags: [cache]\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n";

fn read() -> Value {
    json!({"action": "read:report"})
}

/// A gateway whose store feed never announces a change: what it does right after an admin
/// change is the admin handler's own doing.
async fn deaf_gateway() -> TestGateway {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path(), None).unwrap();
    let store = meshguard_store::open(&StoreLocation::in_data_dir(dir.path()))
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new());
    let options = GatewayOptions {
        clock: clock.clone(),
        ..GatewayOptions::default()
    };
    let link = Arc::new(Severable::with_silent_feed(store.clone()));
    let (state, background) = AppState::new(link.clone(), &data, options).await.unwrap();
    TestGateway {
        state,
        background: Some(background),
        clock,
        store,
        link,
        admin: data.admin_token.expose().to_owned(),
        dir,
    }
}

/// Two allowed checks: the first fills the cache, the second is answered from it.
async fn warm(gw: &TestGateway, token: &str) {
    for _ in 0..2 {
        let reply = gw.check(token, read()).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
}

#[tokio::test]
async fn revoke_and_restore_apply_to_the_next_check_with_a_warm_cache() {
    let gw = deaf_gateway().await;
    gw.policy(TRUSTED_ONLY).await;
    let (_, token) = gw.agent("reader", "trusted", &["cache"]).await;
    warm(&gw, &token).await;
    let revoked = gw
        .admin(Method::POST, "/admin/agents/reader/revoke", None)
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text);
    let refused = gw.check(&token, read()).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.text);
    gw.admin(Method::POST, "/admin/agents/reader/restore", None)
        .await;
    warm(&gw, &token).await;
    // DELETE without purge revokes too.
    gw.admin(Method::DELETE, "/admin/agents/reader", None).await;
    assert_eq!(
        gw.check(&token, read()).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn rotation_refuses_the_old_token_on_its_next_check() {
    let gw = deaf_gateway().await;
    gw.policy(TRUSTED_ONLY).await;
    let (_, old) = gw.agent("reader", "trusted", &["cache"]).await;
    warm(&gw, &old).await;
    let rotated = gw
        .admin(Method::POST, "/admin/agents/reader/token?rotate=true", None)
        .await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{}", rotated.text);
    assert_eq!(
        gw.check(&old, read()).await.status,
        StatusCode::UNAUTHORIZED
    );
    let new = rotated.body["token"].as_str().unwrap();
    warm(&gw, new).await;
}

#[tokio::test]
async fn purge_refuses_the_next_check() {
    let gw = deaf_gateway().await;
    gw.policy(TRUSTED_ONLY).await;
    let (_, token) = gw.agent("reader", "trusted", &["cache"]).await;
    warm(&gw, &token).await;
    let purged = gw
        .admin(Method::DELETE, "/admin/agents/reader?purge=true", None)
        .await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.text);
    assert_eq!(
        gw.check(&token, read()).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn trust_and_tag_changes_apply_to_the_next_check() {
    let gw = deaf_gateway().await;
    gw.policy(TRUSTED_ONLY).await;
    let (_, token) = gw.agent("reader", "trusted", &["cache"]).await;
    warm(&gw, &token).await;
    gw.admin(
        Method::PATCH,
        "/admin/agents/reader",
        Some(json!({"trustTier": "verified"})),
    )
    .await;
    let lowered = gw.check(&token, read()).await;
    assert_eq!(lowered.status, StatusCode::FORBIDDEN, "{}", lowered.text);
    assert_eq!(lowered.body["code"], "no_policy");
    gw.admin(
        Method::PATCH,
        "/admin/agents/reader",
        Some(json!({"trustTier": "trusted"})),
    )
    .await;
    warm(&gw, &token).await;
    gw.admin(
        Method::PATCH,
        "/admin/agents/reader",
        Some(json!({"tags": ["other"]})),
    )
    .await;
    assert_eq!(gw.check(&token, read()).await.body["code"], "no_policy");
}

#[tokio::test]
async fn a_token_id_unknown_at_first_works_once_it_is_stored() {
    // As when another gateway sharing the database issues the token: this gateway sees the jti
    // before (a miss, refused) and after it is stored.
    let gw = deaf_gateway().await;
    gw.policy(TRUSTED_ONLY).await;
    let (id, token) = gw.agent("reader", "trusted", &["cache"]).await;
    warm(&gw, &token).await;
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let elsewhere = gw
        .state
        .keys
        .sign(&AgentClaims {
            iss: ISSUER.to_owned(),
            sub: id.clone(),
            name: "reader".into(),
            jti: "tok_issued_elsewhere".into(),
            iat: now.unix_timestamp(),
            exp: None,
        })
        .unwrap();
    assert_eq!(
        gw.check(&elsewhere, read()).await.status,
        StatusCode::UNAUTHORIZED
    );
    gw.store
        .insert_token(NewToken {
            jti: "tok_issued_elsewhere".into(),
            agent_id: id,
            issued_at: now,
            expires_at: None,
        })
        .await
        .unwrap();
    warm(&gw, &elsewhere).await;
}

#[tokio::test]
async fn expiry_is_checked_on_every_request_with_a_warm_cache() {
    // The test gateway's clock is manual and never advances here, so cache entries stay fresh:
    // only the per-request expiry check can refuse the token.
    let gw = deaf_gateway().await;
    gw.policy(TRUSTED_ONLY).await;
    gw.agent("reader", "trusted", &["cache"]).await;
    let issued = gw
        .admin(
            Method::POST,
            "/admin/agents/reader/token",
            Some(json!({"ttlSeconds": 2})),
        )
        .await;
    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.text);
    let token = issued.body["token"].as_str().unwrap().to_owned();
    let expires_at = OffsetDateTime::parse(
        issued.body["expiresAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    warm(&gw, &token).await;
    let wait = expires_at - OffsetDateTime::now_utc() + time::Duration::milliseconds(50);
    tokio::time::sleep(wait.try_into().unwrap_or(Duration::ZERO)).await;
    let expired = gw.check(&token, read()).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED, "{}", expired.text);
}

#[tokio::test]
async fn a_revoke_through_another_gateway_applies_within_a_second() {
    let gw = TestGateway::new().await;
    gw.policy(TRUSTED_ONLY).await;
    let (_, token) = gw.agent("reader", "trusted", &["cache"]).await;
    warm(&gw, &token).await;
    // A second gateway over the same store: its admin change reaches the first one only
    // through the store's change feed.
    let data = DataDir::open(gw.dir.path(), None).unwrap();
    // The audit log is one process's: the second gateway commits to the store directly.
    let options = GatewayOptions {
        audit_log: false,
        ..GatewayOptions::default()
    };
    let (other, _background) = AppState::new(gw.store.clone(), &data, options)
        .await
        .unwrap();
    let reply = meshguard_gateway::app(other)
        .oneshot(
            axum::http::Request::builder()
                .method(Method::POST)
                .uri("/admin/agents/reader/revoke")
                .header("x-admin-token", &gw.admin)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let status = gw.check(&token, read()).await.status;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            tokio::time::Instant::now() < deadline,
            "revoke through another gateway not applied within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
