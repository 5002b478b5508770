//! Nothing the CLI lists is cut short silently: it follows the gateway's cursors to the end, and
//! where it stops on purpose (`--limit`, `-n`) it says that more exist.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt as _;
use meshguard_store::{AuditKind, NewAuditEvent, StoreLocation};
use serde_json::{Value, json};

use crate::support::{Gateway, http};

/// More than one page of the largest size the gateway serves.
const TRACE_EVENTS: usize = 1_100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_trace_shows_every_event_of_a_long_trace() {
    let gw = Gateway::start().await;
    let token = gw.create_agent("busy", "verified", "x");
    // The gateway's own events of the trace, and many more written into the same database in
    // one batch (as another gateway sharing it would): a request through the API per event
    // would make this test slow.
    for action in ["read:first", "read:second"] {
        let answer = gw
            .check_with(&token, action, "r", &[("x-trace-id", "long-trace")])
            .await;
        assert!(answer.status < 500, "{answer:?}");
    }
    let imported: Vec<NewAuditEvent> = (2..TRACE_EVENTS)
        .map(|n| NewAuditEvent {
            trace_id: Some("long-trace".into()),
            ..NewAuditEvent::new(AuditKind::Check, format!("read:doc-{n}"), "gw_beside")
        })
        .collect();
    meshguard_store::open(&StoreLocation::in_data_dir(&gw.data_dir()))
        .await
        .unwrap()
        .append_audit(&imported)
        .await
        .unwrap();

    let all = gw.cli_json(&["audit", "trace", "long-trace"]);
    let actions: HashSet<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(all.as_array().unwrap().len(), TRACE_EVENTS);
    assert_eq!(actions.len(), TRACE_EVENTS, "an event came twice");

    // `--limit` stops early and says where to go on; `--cursor` goes on from there.
    let first = gw.cli(&["--json", "audit", "trace", "long-trace", "--limit", "1000"]);
    first.assert_code(0);
    let first_events: Vec<Value> = serde_json::from_str(&first.stdout).unwrap();
    assert_eq!(first_events.len(), 1000);
    let cursor = first
        .stderr
        .split("--cursor ")
        .nth(1)
        .unwrap_or_else(|| panic!("no cursor offered: {}", first.stderr))
        .trim()
        .to_owned();
    let rest = gw.cli(&[
        "--json",
        "audit",
        "trace",
        "long-trace",
        "--cursor",
        &cursor,
    ]);
    rest.assert_code(0);
    assert!(!rest.stderr.contains("more events"), "{}", rest.stderr);
    let rest_events: Vec<Value> = serde_json::from_str(&rest.stdout).unwrap();
    let ids: HashSet<&str> = first_events
        .iter()
        .chain(&rest_events)
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        TRACE_EVENTS,
        "no gap and no repeat across --cursor"
    );

    // `tail -n` shows the newest N and says older ones exist.
    let tail = gw.cli(&["audit", "tail", "-n", "3"]);
    tail.assert_code(0);
    assert!(
        tail.stderr.contains("older events exist"),
        "{}",
        tail.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_list_shows_more_agents_than_one_page_holds() {
    let gw = Gateway::start().await;
    let admin = std::fs::read_to_string(gw.data_dir().join("admin.token")).unwrap();
    let client = http(Duration::from_secs(10));
    futures::stream::iter(0..105)
        .for_each_concurrent(8, |n| {
            let (client, gw, admin) = (&client, &gw, admin.trim());
            async move {
                let response = client
                    .post(format!("{}/admin/agents", gw.url))
                    .header("x-admin-token", admin)
                    .json(&json!({"name": format!("agent-{n:03}"), "trustTier": "verified"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status().as_u16(), 201);
            }
        })
        .await;
    let listed = gw.cli_json(&["agent", "list"]);
    let names: Vec<&str> = listed["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..105).map(|n| format!("agent-{n:03}")).collect();
    assert_eq!(names, expected);
    let table = gw.cli(&["agent", "list"]);
    table.assert_code(0);
    assert!(table.stdout.contains("agent-104"), "{}", table.stdout);
}
