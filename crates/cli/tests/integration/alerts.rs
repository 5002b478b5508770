//! Alerts through the real binary: a gateway started with an `[alerts]` config file delivers a
//! real denial to a loopback webhook, `meshguard alerts test` reports each receiver, and a broken
//! file under `serve --policies DIR` raises one `error` alert per failure.

use std::time::Duration;

use crate::support::Gateway;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// One request a receiver got: the lower-cased head and the body.
struct Delivery {
    head: String,
    body: Value,
}

/// A minimal HTTP/1.1 receiver on loopback that answers 200 to every POST and records it (kept
/// tiny on purpose: this crate has no HTTP server dependency).
async fn receiver() -> (String, mpsc::UnboundedReceiver<Delivery>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = socket.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buffer).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let head = text[..end].to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if buffer.len() < end + 4 + length {
                        continue;
                    }
                    let body = serde_json::from_slice(&buffer[end + 4..end + 4 + length]).unwrap();
                    let _ = tx.send(Delivery { head, body });
                    let _ = socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    buffer.clear();
                }
            });
        }
    });
    (url, rx)
}

async fn next(deliveries: &mut mpsc::UnboundedReceiver<Delivery>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), deliveries.recv())
        .await
        .expect("no alert within 10 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_gateway_alerts_a_webhook_and_reports_each_receiver() {
    let (url, mut deliveries) = receiver().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/slack", listener.local_addr().unwrap())
    };
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[alerts]\nwebhook_url = \"{url}\"\nwebhook_secret = \"hmac-key\"\nslack_webhook = \"{closed}\"\non = [\"deny\", \"agent_revoked\"]\ntimeout = \"2s\"\n"
        ),
    )
    .unwrap();
    let gw = Gateway::start_with(&["--config", config.to_str().unwrap()]).await;

    // The webhook answers, the Slack URL does not: exit 1, each receiver on its own line.
    let run = gw.cli(&["alerts", "test", "--trigger", "agent_revoked"]);
    run.assert_code(1);
    assert!(
        run.stdout
            .contains("webhook: delivered `agent_revoked` test alert"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("slack: not delivered: request failed"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("1 of 2 alert receiver(s) failed"),
        "{}",
        run.stderr
    );
    let test = next(&mut deliveries).await;
    assert_eq!(test.body["event"], "agent_revoked");
    assert_eq!(test.body["test"], true);
    assert!(
        test.head.contains("x-meshguard-signature: sha256="),
        "{}",
        test.head
    );

    // A real denial (no policy applies) reaches the webhook, tagged with its trace id.
    let token = gw.create_agent("dev", "verified", "autogpt");
    let answer = gw.check(&token, "execute:shell", "*").await;
    assert_eq!(answer.body["decision"], "deny");
    let alert = next(&mut deliveries).await;
    assert!(
        alert.head.contains("x-meshguard-event: deny"),
        "{}",
        alert.head
    );
    assert_eq!(alert.body["event"], "deny");
    assert_eq!(alert.body["agent"]["name"], "dev");
    assert_eq!(alert.body["trace_id"], answer.body["trace_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_policy_file_under_watch_alerts_once_per_failure() {
    const GOOD: &str =
        "name: watched\nversion: \"1\"\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n";
    const BROKEN: &str =
        "name: watched\nversion: \"2\"\nrules:\n  - effect: alow\n    actions: [\"read:*\"]\n";
    let (url, mut deliveries) = receiver().await;
    let scratch = tempfile::tempdir().unwrap();
    let policies = scratch.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let file = policies.join("watched.yaml");
    std::fs::write(&file, GOOD).unwrap();
    let config = scratch.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!("[alerts]\nwebhook_url = \"{url}\"\non = [\"error\"]\n"),
    )
    .unwrap();
    let gw = Gateway::start_with(&[
        "--config",
        config.to_str().unwrap(),
        "--policies",
        policies.to_str().unwrap(),
    ])
    .await;
    let path = file.display().to_string();
    // Replaced by rename, as editors do, so a poll never reads a half-written file.
    let replace = |text: &str| {
        let staged = policies.join("watched.yaml.tmp");
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, &file).unwrap();
    };

    replace(BROKEN);
    let alert = next(&mut deliveries).await;
    assert!(
        alert.head.contains("x-meshguard-event: error"),
        "{}",
        alert.head
    );
    assert_eq!(alert.body["code"], "policy_file_not_applied");
    assert_eq!(alert.body["resource"], path.as_str());
    let reason = alert.body["reason"].as_str().unwrap();
    assert!(reason.starts_with(&format!("{path}:4:13: ")), "{reason}");
    // The same message is in the log.
    assert!(gw.log().contains(reason), "{}", gw.log());

    // The file stays broken over several polls: no second alert. The witness: another broken
    // file, written twice with two different faults, alerts twice; each alert comes from a later
    // poll than the one before it, and every poll reads `watched.yaml` before `witness.yaml`, so
    // a second alert about `watched.yaml` would have arrived first.
    let witness = policies.join("witness.yaml");
    // Two different faults, since a file alerts once per distinct failure.
    for fault in ["alow", "dney"] {
        std::fs::write(
            &witness,
            format!("name: witness\nversion: \"1\"\nrules:\n  - effect: {fault}\n"),
        )
        .unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(10), deliveries.recv()).await;
        let Ok(Some(seen)) = seen else {
            panic!("no witness alert; gateway log:\n{}", gw.log());
        };
        assert_eq!(
            seen.body["resource"],
            witness.display().to_string().as_str(),
            "one alert per failure: {}",
            seen.body
        );
    }
    // Mended (as version 3, so its coming into force can be seen), then broken again: a new
    // failure, a new alert.
    replace(&GOOD.replace("\"1\"", "\"3\""));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let listed = gw.cli_json(&["policy", "list"]);
        let in_force = listed["policies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "watched" && p["version"] == "3");
        if in_force {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the mended file did not come into force: {listed:#}\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    replace(BROKEN);
    let again = next(&mut deliveries).await;
    assert_eq!(again.body["code"], "policy_file_not_applied");
    assert_eq!(again.body["resource"], path.as_str());
}
