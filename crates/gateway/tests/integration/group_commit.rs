//! Many concurrent checks: every answer's event is committed, in one verifiable chain, and the
//! writer batches them; a shutdown flushes what is queued.

use std::collections::HashSet;

use crate::common::{AUTOGPT, TestGateway};
use axum::http::{Method, StatusCode};
use serde_json::json;

/// No rate limit, so every check is allowed however fast they come.
const UNLIMITED: &str = r#"
name: searchers
version: "1"
appliesTo: {tags: [autogpt]}
rules:
  - effect: allow
    actions: ["search:*"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_checks_are_all_committed_in_one_verifiable_chain() {
    let gw = TestGateway::new().await;
    gw.policy(UNLIMITED).await;
    let (_, token) = gw.agent("dev", "verified", &["autogpt"]).await;
    let before = gw.events().await.len();

    const CHECKS: usize = 200;
    let mut tasks = Vec::new();
    for i in 0..CHECKS {
        let state = gw.state.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let request = axum::http::Request::builder()
                .method(Method::POST)
                .uri("/proxy/governance/check")
                .header("authorization", format!("Bearer {token}"))
                .body(axum::body::Body::from(
                    json!({"action": "search:web", "resource": format!("q{i}")}).to_string(),
                ))
                .unwrap();
            let response = tower::ServiceExt::oneshot(meshguard_gateway::app(state), request)
                .await
                .unwrap();
            let status = response.status();
            let bytes = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let id = body["audit_id"]
                .as_str()
                .unwrap_or_else(|| panic!("{status} {body}"))
                .to_owned();
            (status, id)
        }));
    }
    let mut ids = HashSet::new();
    for task in tasks {
        let (status, id) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        ids.insert(id);
    }
    assert_eq!(ids.len(), CHECKS);

    let events = gw.events().await;
    assert_eq!(events.len(), before + CHECKS);
    let committed: HashSet<_> = events.iter().map(|e| e.event.id.clone()).collect();
    assert!(ids.is_subset(&committed));
    // seq is gap-free within the single chain.
    let mut seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());

    let verify = gw.admin(Method::GET, "/admin/audit/verify", None).await;
    assert_eq!(verify.status, StatusCode::OK);
    assert_eq!(verify.body["ok"], true, "{}", verify.text);

    // Batches were formed: fewer transactions than events.
    let metrics = gw.state.metrics.render().unwrap();
    let count_line = metrics
        .lines()
        .find(|l| l.starts_with("meshguard_audit_batch_size_count"))
        .unwrap();
    let batches: f64 = count_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        batches < (before + CHECKS) as f64,
        "{batches} transactions for {} events",
        before + CHECKS
    );
}

#[tokio::test]
async fn shutdown_commits_queued_events_and_refuses_later_ones() {
    let mut gw = TestGateway::new().await;
    gw.policy(AUTOGPT).await;
    let (_, token) = gw.agent("dev", "verified", &["autogpt"]).await;
    assert_eq!(
        gw.check(&token, json!({"action": "read:x"})).await.status,
        StatusCode::OK
    );
    let count = gw.events().await.len();
    gw.state.audit.shutdown().await;
    gw.background.take().unwrap().audit_task.await.unwrap();
    assert_eq!(gw.events().await.len(), count);
    // With the writer stopped, a check cannot be recorded, so it is not allowed.
    let reply = gw.check(&token, json!({"action": "read:x"})).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body["decision"], "deny");
    assert_eq!(reply.body["code"], "unavailable");
    assert_eq!(reply.body["allowed"], false);
    assert!(reply.body["audit_id"].is_null());
    assert_eq!(gw.events().await.len(), count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_async_durability_a_record_right_after_its_check_is_accepted() {
    use axum::body::Body;
    use axum::http::Request;
    use meshguard_gateway::config::{AuditDurability, Mode};

    let gw = TestGateway::with_durability(
        Mode::Enforce,
        meshguard_gateway::config::DEFAULT_BODY_LIMIT,
        AuditDurability::Async,
    )
    .await;
    gw.policy(UNLIMITED).await;
    let (_, token) = gw.agent("dev", "verified", &["autogpt"]).await;
    // The check is answered before its event commits; the record follows at once, as the MCP
    // proxy sends it, and must not be told that the check does not exist.
    for i in 0..30 {
        let checked = gw.check(&token, json!({"action": "search:web"})).await;
        assert_eq!(checked.status, StatusCode::OK, "{}", checked.text);
        let check_id = checked.body["audit_id"].as_str().unwrap().to_owned();
        let request = Request::builder()
            .method(Method::POST)
            .uri("/proxy/governance/record")
            .header("authorization", format!("Bearer {token}"))
            .header("x-trace-id", checked.body["trace_id"].as_str().unwrap())
            .body(Body::from(
                json!({"action": "search:web", "status": "success", "audit_id": check_id})
                    .to_string(),
            ))
            .unwrap();
        let reply = gw.send(request).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "record {i}: {}",
            reply.text
        );
    }
    // An id that no check has is still refused (after the short wait).
    let request = Request::builder()
        .method(Method::POST)
        .uri("/proxy/governance/record")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(
            json!({"action": "search:web", "status": "success", "audit_id": "nope"}).to_string(),
        ))
        .unwrap();
    assert_eq!(gw.send(request).await.status, StatusCode::NOT_FOUND);
}

/// A crash between the audit log's sync and the index: the log holds acknowledged events the
/// store lacks (and a torn tail nobody was told of). The next start indexes exactly those, in
/// their chain, and the trail verifies.
#[tokio::test]
async fn logged_events_the_store_lacks_are_indexed_at_the_next_start() {
    use meshguard_gateway::audit_log::{self, AuditLog, LOG_DIR};
    use meshguard_store::{AuditKind, NewAuditEvent, StoreLocation, chain_event};

    let dir = tempfile::tempdir().unwrap();
    let store = meshguard_store::open(&StoreLocation::in_data_dir(dir.path()))
        .await
        .unwrap();
    let new = |i: usize| NewAuditEvent {
        id: format!("ev-{i}"),
        ..NewAuditEvent::new(AuditKind::Check, format!("search:q{i}"), "gw")
    };
    // Three events indexed as usual, then five only in the log.
    let opened = audit_log::open(&*store, dir.path(), "gw").await.unwrap();
    let mut log = opened.log;
    let mut chained = Vec::new();
    let (mut seq, mut hash) = (opened.head_seq, opened.head_hash);
    for i in 0..8 {
        let event = chain_event(&new(i), seq + 1, &hash).unwrap();
        seq = event.seq;
        hash.clone_from(&event.hash);
        chained.push(event);
    }
    log.append(&chained[..3]).unwrap();
    store.append_chained(&chained[..3], true).await.unwrap();
    log.append(&chained[3..]).unwrap();
    drop(log);
    let segment = std::fs::read_dir(dir.path().join(LOG_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .unwrap();
    let mut torn = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    std::io::Write::write_all(&mut torn, br#"{"id":"ev-8","ts":"#).unwrap();
    assert_eq!(store.audit_head("gw").await.unwrap().0, 3);

    let reopened = audit_log::open(&*store, dir.path(), "gw").await.unwrap();
    assert_eq!(reopened.head_seq, 8);
    assert_eq!(store.audit_head("gw").await.unwrap(), (8, hash));
    let report = store
        .verify_audit(&meshguard_store::VerifyOptions::full(Default::default()))
        .await
        .unwrap();
    assert!(report.first_break().is_none(), "{report:?}");
    let page = store
        .query_audit(&meshguard_store::AuditFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut ids: Vec<String> = page.entries.into_iter().map(|e| e.event.id).collect();
    ids.sort();
    assert_eq!(ids, (0..8).map(|i| format!("ev-{i}")).collect::<Vec<_>>());
    // The log is started afresh after the events it held are indexed.
    drop(reopened);
    let recovered = AuditLog::recover(&dir.path().join(LOG_DIR)).unwrap();
    assert!(recovered.events.is_empty());
}
