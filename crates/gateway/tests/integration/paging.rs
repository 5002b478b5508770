//! The admin listings page: `?limit=&cursor=` walks every row once, `nextCursor` says when more
//! exist, and a cursor the gateway never gave is a 400 naming `cursor`.

use std::collections::HashSet;

use crate::common::TestGateway;
use axum::http::{Method, StatusCode};
use meshguard_store::NewApproval;
use serde_json::Value;
use time::OffsetDateTime;

/// Reads `path` (which may carry filters) page by page, `limit=2`; returns each page's `field`
/// of every row under `key`.
async fn pages(gw: &TestGateway, path: &str, key: &str, field: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let path = if path.contains('?') {
        format!("{path}&")
    } else {
        format!("{path}?")
    };
    let mut query = format!("{path}limit=2");
    loop {
        let reply = gw.admin(Method::GET, &query, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let rows = reply.body[key].as_array().unwrap();
        pages.push(
            rows.iter()
                .map(|row| row[field].as_str().unwrap().to_owned())
                .collect(),
        );
        match &reply.body["nextCursor"] {
            Value::String(cursor) => query = format!("{path}limit=2&cursor={cursor}"),
            Value::Null => return pages,
            other => panic!("nextCursor is {other}"),
        }
    }
}

#[tokio::test]
async fn agents_page_by_name_with_limit_two() {
    let gw = TestGateway::new().await;
    for name in ["echo", "alpha", "delta", "charlie", "bravo"] {
        gw.agent(name, "verified", &[]).await;
    }
    let pages = pages(&gw, "/admin/agents", "agents", "name").await;
    assert_eq!(
        pages,
        [
            vec!["alpha", "bravo"],
            vec!["charlie", "delta"],
            vec!["echo"]
        ]
    );

    // Without paging parameters: the first page, and a null cursor when it is the only one.
    let all = gw.admin(Method::GET, "/admin/agents", None).await;
    assert_eq!(all.body["agents"].as_array().unwrap().len(), 5);
    assert_eq!(all.body["nextCursor"], Value::Null);
}

#[tokio::test]
async fn approvals_page_newest_first_with_limit_two() {
    let gw = TestGateway::new().await;
    let (agent_id, _) = gw.agent("asker", "verified", &[]).await;
    let now = OffsetDateTime::now_utc();
    let mut newest_first = Vec::new();
    for n in 0..5_i64 {
        let record = gw
            .store
            .create_approval(NewApproval {
                agent_id: agent_id.clone(),
                action: format!("send:email-{n}"),
                resource: "bob".into(),
                timeout_secs: 3600,
                trace_id: None,
                created_at: now + time::Duration::seconds(n),
                max_pending: u32::MAX,
                arguments: None,
            })
            .await
            .unwrap()
            .into_record()
            .unwrap();
        newest_first.insert(0, record.id);
    }
    // The status filter travels with every page.
    for path in ["/admin/approvals", "/admin/approvals?status=pending"] {
        let pages = pages(&gw, path, "approvals", "id").await;
        assert_eq!(
            pages.iter().map(Vec::len).collect::<Vec<_>>(),
            [2, 2, 1],
            "{path}"
        );
        let ids: Vec<String> = pages.concat();
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 5, "{path}");
        assert_eq!(ids, newest_first, "{path}");
    }
}

#[tokio::test]
async fn a_cursor_the_gateway_never_gave_is_a_bad_request() {
    let gw = TestGateway::new().await;
    gw.agent("one", "verified", &[]).await;
    gw.agent("two", "verified", &[]).await;
    let agents_cursor = gw
        .admin(Method::GET, "/admin/agents?limit=1", None)
        .await
        .body["nextCursor"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in [
        "/admin/agents?cursor=not-a-cursor".to_owned(),
        "/admin/approvals?cursor=not-a-cursor".to_owned(),
        "/admin/policies?cursor=not-a-cursor".to_owned(),
        "/admin/audit?cursor=not-a-cursor".to_owned(),
        // A real cursor, of another listing.
        format!("/admin/policies?cursor={agents_cursor}"),
    ] {
        let reply = gw.admin(Method::GET, &path, None).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            reply.text
        );
        assert_eq!(reply.body["error"], "bad_request", "{path}");
        let message = reply.body["message"].as_str().unwrap();
        assert!(message.starts_with("cursor: "), "{path}: {message}");
    }
    let reply = gw
        .admin(Method::GET, "/admin/agents?limit=many", None)
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(reply.text.contains("limit"), "{}", reply.text);
}
