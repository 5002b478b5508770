//! The approval table of SPEC 3 over HTTP: required → pending → approved (single use) or denied,
//! the agent's long poll, and the operator's list, approve and deny.

use std::time::{Duration, Instant};

use crate::common::{AUTOGPT_PRODUCTION, TestGateway};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use meshguard_store::{AuditKind, NewApproval, StoreLocation};
use serde_json::json;
use time::OffsetDateTime;

fn poll(token: &str, id: &str, wait: u64) -> Request<Body> {
    Request::builder()
        .uri(format!("/proxy/governance/approvals/{id}?wait={wait}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn required_pending_approved_once_then_denied() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT_PRODUCTION).await;
    let (_, token) = gw
        .agent("prod", "trusted", &["autogpt", "production"])
        .await;
    let ask = json!({"action": "post:social", "resource": "twitter"});

    let first = gw.check(&token, ask.clone()).await;
    assert_eq!(first.body["code"], "approval_required");
    let id = first.body["approval_id"].as_str().unwrap().to_owned();

    let polled = gw.send(poll(&token, &id, 0)).await;
    assert_eq!(polled.status, StatusCode::OK, "{}", polled.text);
    assert_eq!(polled.body["status"], "pending");
    assert_eq!(polled.body["approval_id"], id.as_str());

    let pending = gw
        .admin(Method::GET, "/admin/approvals?status=pending", None)
        .await;
    assert_eq!(pending.status, StatusCode::OK);
    assert_eq!(pending.body["approvals"][0]["id"], id.as_str());
    assert_eq!(pending.body["approvals"][0]["action"], "post:social");

    let approved = gw
        .admin(
            Method::POST,
            &format!("/admin/approvals/{id}/approve"),
            Some(json!({"decidedBy": "alice"})),
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.text);
    assert_eq!(approved.body["status"], "approved");
    let twice = gw
        .admin(
            Method::POST,
            &format!("/admin/approvals/{id}/approve"),
            None,
        )
        .await;
    assert_eq!(twice.status, StatusCode::CONFLICT);

    let polled = gw.send(poll(&token, &id, 0)).await;
    assert_eq!(polled.body["status"], "approved");
    assert_eq!(polled.body["decided_by"], "alice");

    // A plain retry finds the approval and uses it, once.
    let allowed = gw.check(&token, ask.clone()).await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.text);
    assert_eq!(allowed.body["code"], "allowed_with_approval");
    assert_eq!(allowed.body["approval_id"], id.as_str());
    let again = gw.check(&token, ask.clone()).await;
    assert_eq!(again.body["code"], "approval_required");
    let second = again.body["approval_id"].as_str().unwrap().to_owned();
    assert_ne!(second, id);
    assert_eq!(gw.send(poll(&token, &id, 0)).await.body["status"], "used");

    let denied = gw
        .admin(
            Method::POST,
            &format!("/admin/approvals/{second}/deny"),
            Some(json!({"reason": "not on a Friday"})),
        )
        .await;
    assert_eq!(denied.status, StatusCode::OK);
    let refused = gw.check(&token, ask.clone()).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.body["decision"], "deny");
    assert_eq!(refused.body["code"], "approval_denied");
    assert_eq!(refused.body["requires_approval"], false);
    assert_eq!(refused.body["approval_id"], second.as_str());

    let decisions: Vec<_> = gw
        .events()
        .await
        .into_iter()
        .filter(|e| e.event.kind == AuditKind::Approval)
        .map(|e| {
            (
                e.event.decision.unwrap().as_str().to_owned(),
                e.event.approval_id.unwrap(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [
            ("allow".to_owned(), id.clone()),
            ("deny".to_owned(), second.clone())
        ]
    );
}

#[tokio::test]
async fn the_long_poll_answers_as_soon_as_a_human_decides() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT_PRODUCTION).await;
    let (_, token) = gw
        .agent("prod", "trusted", &["autogpt", "production"])
        .await;
    let first = gw
        .check(&token, json!({"action": "post:social", "resource": "x"}))
        .await;
    let id = first.body["approval_id"].as_str().unwrap().to_owned();

    // The poll waits while pending: with nobody deciding, a one-second poll answers `pending`
    // only once its second is over.
    let waited = Instant::now();
    let pending = gw.send(poll(&token, &id, 1)).await;
    assert_eq!(pending.body["status"], "pending", "{}", pending.text);
    assert!(waited.elapsed() >= Duration::from_secs(1));

    let app = meshguard_gateway::app(gw.state.clone());
    let request = poll(&token, &id, 30);
    let started = Instant::now();
    let waiter = tokio::spawn(async move { tower::ServiceExt::oneshot(app, request).await });
    gw.admin(Method::POST, &format!("/admin/approvals/{id}/deny"), None)
        .await;
    let response = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["status"], "denied");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn approvals_are_private_to_their_agent_and_foreign_ids_are_ignored() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT_PRODUCTION).await;
    let (_, owner) = gw
        .agent("prod", "trusted", &["autogpt", "production"])
        .await;
    let (_, other) = gw
        .agent("other", "trusted", &["autogpt", "production"])
        .await;
    let first = gw
        .check(&owner, json!({"action": "post:social", "resource": "x"}))
        .await;
    let id = first.body["approval_id"].as_str().unwrap().to_owned();

    assert_eq!(
        gw.send(poll(&other, &id, 0)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        gw.send(poll(&owner, "apr_unknown", 0)).await.status,
        StatusCode::NOT_FOUND
    );
    gw.admin(
        Method::POST,
        &format!("/admin/approvals/{id}/approve"),
        None,
    )
    .await;
    // The other agent naming the owner's approved id gets no benefit from it.
    let reply = gw
        .check(
            &other,
            json!({"action": "post:social", "resource": "x", "approval_id": id}),
        )
        .await;
    assert_eq!(reply.body["code"], "approval_required");
    assert_ne!(reply.body["approval_id"], id.as_str());
    assert!(reply.body["reason"].as_str().unwrap().contains("ignored"));

    let bad = gw
        .admin(Method::GET, "/admin/approvals?status=maybe", None)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let missing = gw
        .admin(Method::POST, "/admin/approvals/apr_nope/approve", None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

/// Two policies ask for approval of the same action: one with `timeoutSeconds: 7200`, one without,
/// which stands for the gateway's default (1 h). The smallest applies: 1 h, not 2 h.
#[tokio::test]
async fn the_smallest_timeout_counts_a_policy_without_one_as_the_gateway_default() {
    let gw = TestGateway::new().await;
    gw.policy(
        "name: slow-review\nversion: \"1\"\nappliesTo: {tags: [mailer]}\nrules: []\n\
         humanInTheLoop: {requireApproval: [\"send:email\"], timeoutSeconds: 7200}\n",
    )
    .await;
    gw.policy(
        "name: default-review\nversion: \"1\"\nappliesTo: {tags: [mailer]}\nrules: []\n\
         humanInTheLoop: {requireApproval: [\"send:*\"]}\n",
    )
    .await;
    let (_, token) = gw.agent("mailer", "verified", &["mailer"]).await;

    let asked = gw
        .check(
            &token,
            json!({"action": "send:email", "resource": "bob@example.com"}),
        )
        .await;
    assert_eq!(asked.body["code"], "approval_required", "{}", asked.text);
    let listed = gw
        .admin(Method::GET, "/admin/approvals?status=pending", None)
        .await;
    assert_eq!(
        listed.body["approvals"][0]["timeoutSecs"], 3600,
        "{}",
        listed.text
    );
}

/// Two gateways on one database answer the very first check of one request at the same instant:
/// the other gateway (a separately opened store) creates the approval after this one looked and
/// found none. This gateway answers with that approval, `approval_pending`, and creates no second.
#[tokio::test]
async fn a_first_check_racing_another_gateway_shares_its_pending_approval() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT_PRODUCTION).await;
    let (agent_id, token) = gw
        .agent("prod", "trusted", &["autogpt", "production"])
        .await;
    let other_gateway = meshguard_store::open(&StoreLocation::in_data_dir(gw.dir.path()))
        .await
        .unwrap();
    let theirs = other_gateway
        .create_approval(NewApproval {
            agent_id,
            action: "post:social".into(),
            resource: "twitter".into(),
            timeout_secs: 3600,
            trace_id: None,
            created_at: OffsetDateTime::now_utc(),
            max_pending: u32::MAX,
            arguments: None,
        })
        .await
        .unwrap()
        .into_record()
        .unwrap();

    gw.link.stale_approval_reads(true);
    let reply = gw
        .check(
            &token,
            json!({"action": "post:social", "resource": "twitter"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
    assert_eq!(reply.body["code"], "approval_pending");
    assert_eq!(reply.body["requires_approval"], true);
    assert_eq!(reply.body["approval_id"], theirs.id.as_str());

    let pending = gw
        .admin(Method::GET, "/admin/approvals?status=pending", None)
        .await;
    let ids: Vec<_> = pending.body["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [theirs.id.as_str()]);
}

/// An approval is bound to the arguments of the check that asked for it: the approver sees them,
/// the same arguments in another key order use it, and any other arguments (or none) need an
/// approval of their own, even when they name the approved one.
#[tokio::test]
async fn an_approval_holds_for_the_exact_arguments_only() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT_PRODUCTION).await;
    let (_, token) = gw
        .agent("prod", "trusted", &["autogpt", "production"])
        .await;
    let ask = |arguments: serde_json::Value| json!({"action": "post:social", "resource": "twitter", "context": {"arguments": arguments}});
    let hello = json!({"text": "hello", "tags": ["a", "b"]});

    let first = gw.check(&token, ask(hello.clone())).await;
    assert_eq!(first.body["code"], "approval_required");
    let id = first.body["approval_id"].as_str().unwrap().to_owned();
    let pending = gw
        .admin(Method::GET, "/admin/approvals?status=pending", None)
        .await;
    assert_eq!(pending.body["approvals"][0]["id"], id.as_str());
    assert_eq!(pending.body["approvals"][0]["arguments"]["value"], hello);
    gw.admin(
        Method::POST,
        &format!("/admin/approvals/{id}/approve"),
        None,
    )
    .await;

    // Other arguments, naming the approved id or not, and no arguments at all: not this approval.
    let mut other = ask(json!({"text": "hello!", "tags": ["a", "b"]}));
    other["approval_id"] = json!(id);
    let refused = gw.check(&token, other).await;
    assert_eq!(
        refused.body["code"], "approval_required",
        "{}",
        refused.text
    );
    assert_ne!(refused.body["approval_id"], id.as_str());
    let bare = gw
        .check(
            &token,
            json!({"action": "post:social", "resource": "twitter"}),
        )
        .await;
    assert_eq!(bare.body["code"], "approval_required", "{}", bare.text);
    assert_ne!(bare.body["approval_id"], id.as_str());

    let mut same = ask(json!({"tags": ["a", "b"], "text": "hello"}));
    same["approval_id"] = json!(id);
    let allowed = gw.check(&token, same).await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.text);
    assert_eq!(allowed.body["approval_id"], id.as_str());
}
