//! The admin API: agents, policies, decide and audit, as the CLI and MeshGuard's SDK call it.

use crate::common::{AUTOGPT, AUTOGPT_PRODUCTION, TestGateway};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use meshguard_store::AuditKind;
use serde_json::json;

#[tokio::test]
async fn agents_lifecycle_is_camel_case_and_audited() {
    let gw = TestGateway::new().await;
    let created = gw
        .admin(
            Method::POST,
            "/admin/agents",
            Some(json!({"name": "autogpt-agent", "trustTier": "verified", "tags": ["autogpt", "autonomous"], "description": "demo", "ttlSeconds": 3600})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("agent_"));
    assert_eq!(created.body["trustTier"], "verified");
    assert_eq!(created.body["status"], "active");
    assert!(created.body["createdAt"].is_string());
    assert!(created.body["token"].as_str().unwrap().split('.').count() == 3);
    assert!(created.body["expiresAt"].is_string());

    // A taken name is a conflict; a bad name or tier is a 400 naming the field.
    let again = gw
        .admin(
            Method::POST,
            "/admin/agents",
            Some(json!({"name": "autogpt-agent"})),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let bad = gw
        .admin(
            Method::POST,
            "/admin/agents",
            Some(json!({"name": "Bad Name"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body["message"].as_str().unwrap().starts_with("name:"));
    let bad = gw
        .admin(
            Method::POST,
            "/admin/agents",
            Some(json!({"name": "x", "trustTier": "root"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.body["message"]
            .as_str()
            .unwrap()
            .starts_with("trustTier:")
    );

    // By id or by name.
    for key in [id.as_str(), "autogpt-agent"] {
        let shown = gw
            .admin(Method::GET, &format!("/admin/agents/{key}"), None)
            .await;
        assert_eq!(shown.status, StatusCode::OK);
        assert_eq!(shown.body["id"], id.as_str());
        assert_eq!(shown.body["tokens"].as_array().unwrap().len(), 1);
    }
    let patched = gw
        .admin(
            Method::PATCH,
            "/admin/agents/autogpt-agent",
            Some(json!({"trustTier": "trusted", "tags": ["x"]})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    assert_eq!(patched.body["trustTier"], "trusted");
    assert_eq!(patched.body["tags"], json!(["x"]));
    assert_eq!(patched.body["description"], "demo");

    let missing = gw.admin(Method::GET, "/admin/agents/nobody", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body["error"], "not_found");

    let purged = gw
        .admin(
            Method::DELETE,
            "/admin/agents/autogpt-agent?purge=true",
            None,
        )
        .await;
    assert_eq!(purged.status, StatusCode::OK);
    assert_eq!(purged.body["purged"], true);
    let gone = gw
        .admin(Method::GET, "/admin/agents/autogpt-agent", None)
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);

    let actions: Vec<String> = gw
        .events()
        .await
        .into_iter()
        .filter(|e| e.event.kind == AuditKind::Admin)
        .map(|e| e.event.action)
        .collect();
    assert_eq!(actions, ["agent.create", "agent.update", "agent.purge"]);
}

#[tokio::test]
async fn permissions_show_the_effective_patterns() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT).await;
    gw.agent("dev", "verified", &["autogpt"]).await;
    let reply = gw
        .admin(Method::GET, "/admin/agents/dev/permissions", None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let text = reply.body["permissions"].to_string();
    assert!(text.contains("execute:shell"), "{text}");
    assert!(text.contains("read:*"), "{text}");
}

#[tokio::test]
async fn policies_upsert_with_revisions_and_validate_without_applying() {
    let gw = TestGateway::new().await;
    let first = gw
        .admin_text(Method::PUT, "/admin/policies/autogpt-policy", AUTOGPT)
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.body["revision"], 1);
    assert_eq!(first.body["origin"], "api");
    assert_eq!(first.body["source"], AUTOGPT);
    // The same body again is not a new revision.
    let same = gw
        .admin_text(Method::POST, "/admin/policies", AUTOGPT)
        .await;
    assert_eq!(same.status, StatusCode::OK);
    assert_eq!(same.body["changed"], false);
    assert_eq!(same.body["revision"], 1);
    // JSON is accepted too.
    let json_body = json!({"name": "autogpt-policy", "version": "1.1", "appliesTo": {"tags": ["autogpt"]},
        "rules": [{"effect": "allow", "actions": ["read:*"]}]});
    let changed = gw
        .admin(
            Method::PUT,
            "/admin/policies/autogpt-policy",
            Some(json_body),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert_eq!(changed.body["revision"], 2);
    let revisions = gw
        .admin(
            Method::GET,
            "/admin/policies/autogpt-policy/revisions",
            None,
        )
        .await;
    assert_eq!(revisions.body["revisions"].as_array().unwrap().len(), 2);

    // A name that differs from the path, and an invalid policy: refused, nothing changes.
    let mismatch = gw
        .admin_text(Method::PUT, "/admin/policies/other", AUTOGPT)
        .await;
    assert_eq!(mismatch.status, StatusCode::BAD_REQUEST);
    let invalid = gw
        .admin_text(
            Method::POST,
            "/admin/policies",
            "name: broken\nversion: \"1\"\nrules:\n  - effect: alow\n    actions: [\"x\"]\n",
        )
        .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(invalid.body["error"], "invalid_policy");
    let message = invalid.body["message"].as_str().unwrap();
    assert!(message.contains(":4:"), "{message}");
    assert!(message.contains("effect"), "{message}");
    let listed = gw.admin(Method::GET, "/admin/policies", None).await;
    assert_eq!(listed.body["policies"].as_array().unwrap().len(), 1);

    // Validate reports errors and lint warnings, and applies nothing.
    let validated = gw
        .admin_text(
            Method::POST,
            "/admin/policies/validate",
            "name: loose\nversion: 1\nrules:\n  - effect: allow\n    actions: [\"*\"]\n",
        )
        .await;
    assert_eq!(validated.status, StatusCode::OK);
    assert_eq!(validated.body["valid"], true);
    assert!(!validated.body["warnings"].as_array().unwrap().is_empty());
    let validated = gw
        .admin_text(Method::POST, "/admin/policies/validate", "name: [")
        .await;
    assert_eq!(validated.body["valid"], false);
    let listed = gw.admin(Method::GET, "/admin/policies", None).await;
    assert_eq!(listed.body["policies"].as_array().unwrap().len(), 1);

    let deleted = gw
        .admin(Method::DELETE, "/admin/policies/autogpt-policy", None)
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    let listed = gw.admin(Method::GET, "/admin/policies", None).await;
    assert!(listed.body["policies"].as_array().unwrap().is_empty());
    let missing = gw
        .admin(Method::DELETE, "/admin/policies/autogpt-policy", None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_policy_change_takes_effect_on_the_next_check() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT).await;
    let (_, token) = gw.agent("dev", "verified", &["autogpt"]).await;
    assert_eq!(
        gw.check(&token, json!({"action": "read:x"})).await.status,
        StatusCode::OK
    );
    gw.policy("name: autogpt-policy\nversion: \"2\"\nrules:\n  - effect: deny\n    actions: [\"read:*\"]\n")
        .await;
    assert_eq!(
        gw.check(&token, json!({"action": "read:x"})).await.status,
        StatusCode::FORBIDDEN
    );
    // And so does a trust or tag change of the agent.
    gw.policy(AUTOGPT).await;
    gw.admin(
        Method::PATCH,
        "/admin/agents/dev",
        Some(json!({"tags": ["other"]})),
    )
    .await;
    assert_eq!(
        gw.check(&token, json!({"action": "read:x"})).await.body["code"],
        "no_policy"
    );
}

#[tokio::test]
async fn decide_explains_without_charging_or_creating_approvals_and_is_audited_as_test() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT_PRODUCTION).await;
    gw.agent("prod", "trusted", &["autogpt", "production"])
        .await;
    for _ in 0..3 {
        let reply = gw
            .admin(
                Method::POST,
                "/admin/decide",
                Some(json!({"agent": "prod", "action": "post:social", "resource": "twitter"})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.body["decision"], "require_approval");
        assert_eq!(reply.body["code"], "approval_required");
        assert!(reply.body["approvalId"].is_null());
        assert!(reply.body["explanation"]["policies"].is_array());
    }
    let approvals = gw
        .store
        .list_approvals(None, &meshguard_store::PageRequest::default())
        .await
        .unwrap();
    assert!(approvals.items.is_empty());
    let tests = gw
        .events()
        .await
        .into_iter()
        .filter(|e| e.event.kind == AuditKind::Test)
        .count();
    assert_eq!(tests, 3);

    let unknown = gw
        .admin(
            Method::POST,
            "/admin/decide",
            Some(json!({"agent": "ghost", "action": "x"})),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn audit_query_filters_pages_stats_verify_and_export() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT).await;
    let (_, token) = gw.agent("dev", "verified", &["autogpt"]).await;
    for action in ["read:a", "execute:shell", "read:b", "delete:x"] {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/proxy/governance/check")
            .header("authorization", format!("Bearer {token}"))
            .header("x-trace-id", "trace-audit")
            .body(Body::from(json!({"action": action}).to_string()))
            .unwrap();
        gw.send(request).await;
    }

    let denied = gw
        .admin(Method::GET, "/admin/audit?decision=deny&limit=50", None)
        .await;
    assert_eq!(denied.status, StatusCode::OK);
    let entries = denied.body["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| e["decision"] == "deny"));
    assert!(denied.body.get("nextCursor").is_some());

    // Paging with the cursor covers every check once.
    let mut seen = Vec::new();
    let mut url = "/admin/audit?kind=check&limit=1&agentId=dev".to_owned();
    loop {
        let page = gw.admin(Method::GET, &url, None).await;
        for e in page.body["entries"].as_array().unwrap() {
            seen.push(e["id"].as_str().unwrap().to_owned());
        }
        match page.body["nextCursor"].as_str() {
            Some(cursor) => {
                url = format!("/admin/audit?kind=check&limit=1&agentId=dev&cursor={cursor}");
            }
            None => break,
        }
        assert!(seen.len() <= 4);
    }
    assert_eq!(seen.len(), 4);

    let traced = gw
        .admin(
            Method::GET,
            "/admin/audit?traceId=trace-audit&action=read:*",
            None,
        )
        .await;
    assert_eq!(traced.body["entries"].as_array().unwrap().len(), 2);

    let bad = gw
        .admin(Method::GET, "/admin/audit?decision=maybe", None)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.body["message"]
            .as_str()
            .unwrap()
            .starts_with("decision:")
    );
    let bad = gw.admin(Method::GET, "/admin/audit?limit=lots", None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let bad = gw
        .admin(Method::GET, "/admin/audit?from=yesterday", None)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    let stats = gw
        .admin(
            Method::GET,
            "/admin/audit/stats?period=1&agentId=dev&breakdown=hourly",
            None,
        )
        .await;
    assert_eq!(stats.status, StatusCode::OK, "{}", stats.text);
    assert_eq!(stats.body["total"], 4);
    assert_eq!(stats.body["allowed"], 2);
    assert_eq!(stats.body["denied"], 2);
    assert_eq!(stats.body["periodHours"], 1);
    assert!(!stats.body["hourly"].as_array().unwrap().is_empty());

    let verify = gw.admin(Method::GET, "/admin/audit/verify", None).await;
    assert_eq!(verify.body["ok"], true);

    let export = gw.admin(Method::GET, "/admin/audit/export", None).await;
    assert_eq!(export.status, StatusCode::OK);
    assert_eq!(export.headers["content-type"], "application/x-ndjson");
    let lines: Vec<serde_json::Value> = export
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), gw.events().await.len());
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn audit_stream_sends_matching_events_as_server_sent_events() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT).await;
    let (_, token) = gw.agent("dev", "verified", &["autogpt"]).await;
    let request = Request::builder()
        .uri("/admin/audit/stream?decision=deny")
        .header("x-admin-token", &gw.admin)
        .body(Body::empty())
        .unwrap();
    let response = meshguard_gateway::app(gw.state.clone())
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();

    gw.check(&token, json!({"action": "read:allowed"})).await;
    gw.check(&token, json!({"action": "execute:shell"})).await;

    let frame = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
        .await
        .expect("an event within 5 s")
        .unwrap()
        .unwrap();
    let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
    assert!(text.starts_with("event: audit\n"), "{text}");
    assert!(text.contains("execute:shell"), "{text}");
    assert!(!text.contains("read:allowed"), "{text}");
}

/// The exact calls of MeshGuard's published Python SDK (meshguard 0.1.2): paths, methods,
/// headers and the JSON fields it reads.
#[tokio::test]
async fn published_sdk_calls_get_the_answers_it_reads() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT).await;
    let admin = |method: Method, path: &str, body: Option<serde_json::Value>| {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("x-admin-token", &gw.admin)
            .header("x-meshguard-trace-id", "sdk-trace");
        let body = match body {
            Some(v) => {
                builder = builder.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        builder.body(body).unwrap()
    };
    // create_agent
    let created = gw
        .send(admin(
            Method::POST,
            "/admin/agents",
            Some(json!({"name": "sdk-agent", "trustTier": "verified", "tags": ["autogpt"]})),
        ))
        .await;
    assert!(created.status.is_success());
    let token = created.body["token"].as_str().unwrap().to_owned();
    let id = created.body["id"].as_str().unwrap().to_owned();
    // list_agents reads agents[].id, name, trustTier, tags
    let agents = gw.send(admin(Method::GET, "/admin/agents", None)).await;
    let first = &agents.body["agents"][0];
    for field in ["id", "name", "trustTier", "tags"] {
        assert!(first.get(field).is_some(), "{field}");
    }
    // list_policies reads policies
    let policies = gw.send(admin(Method::GET, "/admin/policies", None)).await;
    assert_eq!(policies.body["policies"][0]["name"], "autogpt-policy");
    // check / enforce / govern: GET /proxy/check with X-MeshGuard-Action; 200 allow, 403 deny
    // with policy, rule and message.
    let check = |action: &str| {
        Request::builder()
            .uri("/proxy/check")
            .header("authorization", format!("Bearer {token}"))
            .header("x-meshguard-trace-id", "sdk-trace")
            .header("x-meshguard-action", action)
            .body(Body::empty())
            .unwrap()
    };
    let allowed = gw.send(check("read:contacts")).await;
    assert_eq!(allowed.status, StatusCode::OK);
    assert_eq!(allowed.body["policy"], "autogpt-policy");
    let denied = gw.send(check("send:email")).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    for field in ["action", "policy", "rule", "message"] {
        assert!(denied.body[field].is_string(), "{field}");
    }
    // get_audit_log: GET /admin/audit?limit=50&decision=deny reads entries
    let log = gw
        .send(admin(
            Method::GET,
            "/admin/audit?limit=50&decision=deny",
            None,
        ))
        .await;
    assert_eq!(log.body["entries"].as_array().unwrap().len(), 1);
    // health reads status
    let health = gw
        .send(
            Request::builder()
                .uri("/health")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(health.body["status"], "healthy");
    // revoke_agent: DELETE /admin/agents/{id}; then the token gets 401 (AuthenticationError).
    let revoked = gw
        .send(admin(Method::DELETE, &format!("/admin/agents/{id}"), None))
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert_eq!(
        gw.send(check("read:contacts")).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_admin_token_works_as_a_bearer_token_and_a_wrong_one_does_not() {
    let gw = TestGateway::new().await;
    let bearer = Request::builder()
        .uri("/admin/agents")
        .header("authorization", format!("Bearer {}", gw.admin))
        .body(Body::empty())
        .unwrap();
    let reply = gw.send(bearer).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, json!({"agents": [], "nextCursor": null}));
    let wrong = Request::builder()
        .uri("/admin/agents")
        .header("x-admin-token", format!("{}x", gw.admin))
        .body(Body::empty())
        .unwrap();
    let reply = gw.send(wrong).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.body["message"], "invalid admin token");
}

/// Makes the gateway's database refuse every audit event of an admin change (kind `admin` or
/// `approval`), as a full or failing disk would, while checks keep being audited.
async fn refuse_admin_events(gw: &TestGateway, refuse: bool) {
    let meshguard_store::StoreLocation::Sqlite { path } =
        meshguard_store::StoreLocation::in_data_dir(gw.dir.path())
    else {
        unreachable!()
    };
    let sql = if refuse {
        "CREATE TRIGGER refuse_admin_events BEFORE INSERT ON audit_events \
         WHEN (SELECT kind FROM audit_outcomes WHERE outcome = NEW.outcome) \
         IN ('admin', 'approval') \
         BEGIN SELECT RAISE(ABORT, 'disk refused the write'); END"
    } else {
        "DROP TRIGGER refuse_admin_events"
    };
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}", path.display());
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
}

#[tokio::test]
async fn an_admin_change_whose_audit_event_is_not_committed_is_not_made() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT).await;
    let (_, token) = gw.agent("dev", "verified", &["autogpt"]).await;
    let read = json!({"action": "read:x"});
    assert_eq!(gw.check(&token, read.clone()).await.status, StatusCode::OK);
    let admin_events = || async {
        gw.events()
            .await
            .into_iter()
            .filter(|e| e.event.kind == AuditKind::Admin)
            .count()
    };
    let before = admin_events().await;

    refuse_admin_events(&gw, true).await;
    let revoked = gw
        .admin(Method::POST, "/admin/agents/dev/revoke", None)
        .await;
    assert_eq!(
        revoked.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        revoked.text
    );
    assert_eq!(revoked.body["error"], "unavailable");
    let purged = gw
        .admin(Method::DELETE, "/admin/agents/dev?purge=true", None)
        .await;
    assert_eq!(
        purged.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        purged.text
    );
    let rotated = gw
        .admin(
            Method::POST,
            "/admin/agents/dev/token?rotate=true",
            Some(json!({})),
        )
        .await;
    assert_eq!(
        rotated.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        rotated.text
    );
    let policy = gw
        .admin_text(
            Method::POST,
            "/admin/policies",
            "name: autogpt-policy\nversion: \"2\"\nrules:\n  - effect: deny\n    actions: [\"read:*\"]\n",
        )
        .await;
    assert_eq!(
        policy.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        policy.text
    );

    // Nothing changed: the agent, its token and the policy in force still let it read.
    assert_eq!(gw.check(&token, read.clone()).await.status, StatusCode::OK);
    let shown = gw.admin(Method::GET, "/admin/agents/dev", None).await;
    assert_eq!(shown.body["status"], "active");
    assert_eq!(shown.body["tokens"].as_array().unwrap().len(), 1);
    let stored = gw
        .admin(Method::GET, "/admin/policies/autogpt-policy", None)
        .await;
    assert_eq!(stored.body["revision"], 1);
    assert_eq!(admin_events().await, before);

    // Once the database takes events again, the same change is made and audited.
    refuse_admin_events(&gw, false).await;
    let revoked = gw
        .admin(Method::POST, "/admin/agents/dev/revoke", None)
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text);
    assert_eq!(
        gw.check(&token, read).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(admin_events().await, before + 1);
    let verified = gw.admin(Method::GET, "/admin/audit/verify", None).await;
    assert_eq!(verified.body["ok"], true, "{}", verified.text);
}

#[tokio::test]
async fn an_approval_whose_decision_is_not_audited_stays_pending() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT_PRODUCTION).await;
    let (_, token) = gw
        .agent("prod", "trusted", &["autogpt", "production"])
        .await;
    let ask = json!({"action": "post:social", "resource": "twitter"});
    let asked = gw.check(&token, ask.clone()).await;
    assert_eq!(asked.body["code"], "approval_required", "{}", asked.text);
    let id = asked.body["approval_id"].as_str().unwrap().to_owned();

    refuse_admin_events(&gw, true).await;
    let approved = gw
        .admin(
            Method::POST,
            &format!("/admin/approvals/{id}/approve"),
            Some(json!({"decidedBy": "alice"})),
        )
        .await;
    assert_eq!(
        approved.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        approved.text
    );
    // The approval was not granted: the retry still waits for a human.
    let retried = gw.check(&token, ask.clone()).await;
    assert_eq!(retried.body["code"], "approval_pending", "{}", retried.text);
    assert_eq!(retried.body["approval_id"], id.as_str());
    let shown = gw
        .admin(Method::GET, "/admin/approvals?status=pending", None)
        .await;
    assert_eq!(shown.body["approvals"][0]["id"], id.as_str());

    refuse_admin_events(&gw, false).await;
    let approved = gw
        .admin(
            Method::POST,
            &format!("/admin/approvals/{id}/approve"),
            Some(json!({"decidedBy": "alice"})),
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.text);
    assert_eq!(gw.check(&token, ask).await.status, StatusCode::OK);
    let decisions: Vec<_> = gw
        .events()
        .await
        .into_iter()
        .filter(|e| e.event.kind == AuditKind::Approval)
        .collect();
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].event.approval_id.as_deref(), Some(id.as_str()));
}

#[tokio::test]
async fn the_audit_query_filters_by_decision_code() {
    let gw = TestGateway::new().await;
    gw.policy(crate::common::AUTOGPT).await;
    let (_, token) = gw.agent("coded", "verified", &["autogpt"]).await;
    gw.check(&token, json!({"action": "browse:web"})).await;
    gw.check(&token, json!({"action": "execute:shell", "resource": "ls"}))
        .await;
    gw.check(&token, json!({"action": "launch:rocket"})).await;
    let denied = gw
        .admin(Method::GET, "/admin/audit?code=denied_by_rule", None)
        .await;
    assert_eq!(denied.status, StatusCode::OK, "{}", denied.text);
    let entries = denied.body["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{}", denied.text);
    assert_eq!(entries[0]["action"], "execute:shell");
    let defaulted = gw
        .admin(Method::GET, "/admin/audit?code=default_deny", None)
        .await;
    assert_eq!(defaulted.body["entries"][0]["action"], "launch:rocket");
}
