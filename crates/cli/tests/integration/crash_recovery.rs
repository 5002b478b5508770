//! The gateway is killed with SIGKILL while agents are sending checks. Every check that got an
//! answer must be in the audit trail after a restart, and the trail must still verify: a response
//! leaves only after its audit event is committed. The load runs until the audit log writes into
//! a segment prepared with zeros, so recovery also reads a segment whose unused rest is zeros.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{Gateway, http};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_checks_survive_a_hard_kill() {
    let mut gateway = Gateway::start().await;
    let policy = gateway.scratch().join("busy.yaml");
    std::fs::write(
        &policy,
        "name: busy\nversion: \"1\"\nappliesTo: {tags: [load]}\nrules:\n  - effect: allow\n    actions: [\"work:item\"]\n  - effect: deny\n    actions: [\"work:other\"]\n",
    )
    .unwrap();
    gateway
        .cli(&["policy", "apply", policy.to_str().unwrap()])
        .assert_code(0);
    let token = gateway.create_agent("worker", "verified", "load");

    let answered: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut clients = Vec::new();
    for client_no in 0..4 {
        let url = gateway.url.clone();
        let token = token.clone();
        let answered = Arc::clone(&answered);
        clients.push(tokio::spawn(async move {
            let http = http(Duration::from_secs(5));
            // Bounded: the gateway is killed long before this runs out.
            for i in 0..100_000 {
                let action = if i % 5 == 0 {
                    "work:other"
                } else {
                    "work:item"
                };
                let sent = http
                    .post(format!("{url}/proxy/governance/check"))
                    .bearer_auth(&token)
                    .json(&json!({"action": action, "resource": format!("c{client_no}/{i}")}))
                    .send()
                    .await;
                let Ok(response) = sent else { return };
                let status = response.status().as_u16();
                let Ok(body) = response.json::<Value>().await else {
                    return;
                };
                assert_eq!(
                    status,
                    if action == "work:item" { 200 } else { 403 },
                    "{body}"
                );
                let id = body["audit_id"]
                    .as_str()
                    .expect("every answered check names its audit event");
                answered.lock().unwrap().push(id.to_owned());
            }
        }));
    }

    // Let the load run until a good number of checks were answered and the log writes into a
    // prepared segment, then pull the plug.
    let log_dir = gateway
        .data_dir()
        .join(meshguard_gateway::audit_log::LOG_DIR);
    let mut prepared = false;
    for _ in 0..1200 {
        prepared = prepared || writes_into_zeros(&log_dir);
        if prepared && answered.lock().unwrap().len() >= 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gateway.kill_hard();
    assert!(
        prepared,
        "the audit log never wrote into a prepared segment within 60 s of load"
    );
    for client in clients {
        tokio::time::timeout(Duration::from_secs(30), client)
            .await
            .unwrap()
            .unwrap();
    }
    let answered: Vec<String> = answered.lock().unwrap().clone();
    assert!(
        answered.len() >= 200,
        "only {} checks were answered before the kill",
        answered.len()
    );

    gateway.restart().await;
    let export = gateway.cli(&["audit", "export"]);
    export.assert_code(0);
    let stored: HashSet<String> = export
        .stdout
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let missing: Vec<&String> = answered.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered checks are missing from the audit trail, e.g. {:?}",
        missing.len(),
        answered.len(),
        missing.first()
    );

    let verified = gateway.cli(&["audit", "verify"]);
    verified.assert_code(0);
}

/// Whether a segment of the log in `dir` ends in zeros: one prepared ahead of use is in use.
fn writes_into_zeros(dir: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|entry| {
        let path = entry.path();
        let last_byte = || {
            let file = std::fs::File::open(&path).ok()?;
            let len = file.metadata().ok()?.len();
            let mut byte = [1_u8];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut byte, len.checked_sub(1)?)
                .ok()?;
            Some(byte[0])
        };
        path.extension().is_some_and(|ext| ext == "jsonl") && last_byte() == Some(0)
    })
}
