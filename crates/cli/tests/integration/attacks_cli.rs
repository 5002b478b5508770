//! Attacks on the operator's side: agent text built to act on the terminal, audit events built to
//! break their readers, and an admin token left where other users can read it.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use meshguard_store::{AuditAgent, AuditKind, NewApproval, NewAuditEvent, Store, StoreLocation};
use serde_json::Value;
use time::OffsetDateTime;

use crate::support::{BIN, CliRun, Gateway};

const OSC_TITLE: &str = "read:notes\u{1b}]0;owned\u{7}";
const FAKE_ROW: &str = "\r\n approved";

/// The gateway's own SQLite store, opened beside it (as another process of the same host could).
async fn store_of(gw: &Gateway) -> std::sync::Arc<dyn Store> {
    meshguard_store::open(&StoreLocation::in_data_dir(&gw.data_dir()))
        .await
        .unwrap()
}

/// A UUIDv7-shaped id for now, so the event sorts with the gateway's own.
fn event_id(n: u16) -> String {
    let ms = u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap();
    format!("{:08x}-{:04x}-7000-8000-{:012x}", ms >> 16, ms & 0xffff, n)
}

/// An event whose context nests `levels` deep, as an older gateway accepted and stored it.
fn deep_event(n: u16, levels: usize, trace: &str) -> NewAuditEvent {
    let mut context = Value::from(1);
    for _ in 0..levels {
        let mut level = serde_json::Map::new();
        level.insert("a".into(), context);
        context = Value::Object(level);
    }
    let Value::Object(context) = context else {
        unreachable!()
    };
    NewAuditEvent {
        id: event_id(n),
        agent: Some(AuditAgent {
            id: "agent_deep".into(),
            name: "deep".into(),
        }),
        resource: Some("*".into()),
        decision: Some(meshguard_policy::Effect::Allow),
        code: Some(meshguard_policy::Code::Allowed.into()),
        trace_id: Some(trace.into()),
        context,
        latency_us: Some(1),
        ..NewAuditEvent::new(AuditKind::Check, format!("read:deep-{n}"), "gw_older")
    }
}

fn assert_escaped(what: &str, stdout: &str) {
    for raw in ['\u{1b}', '\u{7}', '\r'] {
        assert!(
            !stdout.contains(raw),
            "{what} printed {raw:?} raw:\n{stdout:?}"
        );
    }
    assert!(
        stdout.contains(r"read:notes\u{1b}]0;owned\u{7}"),
        "{what}: {stdout}"
    );
    assert!(stdout.contains(r"\u{d}\u{a} approved"), "{what}: {stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_controls_in_actions_and_resources_are_printed_escaped() {
    let gw = Gateway::start().await;
    let token = gw.create_agent("mallory", "verified", "x");
    // Whatever the decision, the attempt is audited as received.
    let answer = gw
        .check_with(&token, OSC_TITLE, FAKE_ROW, &[("x-trace-id", "ctl-trace")])
        .await;
    assert!(answer.status >= 200, "{answer:?}");

    let tail = gw.cli(&["audit", "tail"]);
    tail.assert_code(0);
    assert_escaped("audit tail", &tail.stdout);
    let trace = gw.cli(&["audit", "trace", "ctl-trace"]);
    trace.assert_code(0);
    assert_escaped("audit trace", &trace.stdout);

    // An approval holding the same text, as stored before actions were canonicalised.
    let store = store_of(&gw).await;
    let agent = store.get_agent("mallory").await.unwrap();
    store
        .create_approval(NewApproval {
            agent_id: agent.id,
            action: OSC_TITLE.into(),
            resource: FAKE_ROW.into(),
            timeout_secs: 600,
            trace_id: None,
            created_at: OffsetDateTime::now_utc(),
            max_pending: 20,
            arguments: None,
        })
        .await
        .unwrap();
    let list = gw.cli(&["approval", "list"]);
    list.assert_code(0);
    assert_escaped("approval list", &list.stdout);
    assert_eq!(list.stdout.lines().count(), 2, "{}", list.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_stored_event_breaks_neither_tail_follow_nor_trace() {
    let gw = Gateway::start().await;
    let store = store_of(&gw).await;
    store
        .append_audit(&[deep_event(1, 125, "deep-trace")])
        .await
        .unwrap();

    let tail = gw.cli(&["audit", "tail"]);
    tail.assert_code(0);
    assert!(tail.stdout.contains("read:deep-1"), "{}", tail.stdout);
    let json = gw.cli_json(&["audit", "tail"]);
    assert!(json.to_string().contains("read:deep-1"));
    let trace = gw.cli(&["audit", "trace", "deep-trace"]);
    trace.assert_code(0);
    assert!(trace.stdout.contains("read:deep-1"), "{}", trace.stdout);

    // Following: the stored event comes from the backlog, a new one from the stream.
    let mut follow = Command::new(BIN)
        .args(["--url", &gw.url, "--data-dir"])
        .arg(gw.data_dir())
        .args(["--json", "audit", "tail", "-f"])
        .env_remove("MESHGUARD_ADMIN_TOKEN")
        .env_remove("MESHGUARD_ADMIN_TOKEN_FILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    };
    let from_backlog = wait_for("read:deep-1");
    if from_backlog {
        store
            .append_audit(&[deep_event(2, 125, "deep-trace")])
            .await
            .unwrap();
    }
    let from_stream = from_backlog && wait_for("read:deep-2");
    let _ = follow.kill();
    let output = follow.wait_with_output().unwrap();
    assert!(
        from_backlog,
        "tail -f did not print the stored deep event: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        from_stream,
        "tail -f skipped a deep event on the stream: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_can_come_from_a_file_and_the_flag_is_flagged_as_visible() {
    let scratch = tempfile::tempdir().unwrap();
    let token_file = scratch.path().join("admin-token");
    std::fs::write(&token_file, "file-admin-token-0123456789\n").unwrap();
    let token_path = token_file.to_str().unwrap();
    let gw = Gateway::start_with(&["--admin-token-file", token_path]).await;
    assert!(
        !gw.data_dir().join("admin.token").exists(),
        "a token from a file replaces the generated one"
    );
    // Another data dir, so nothing falls back to the gateway's own files.
    let elsewhere = scratch.path().join("elsewhere");
    let client = |extra: &[&str], env: &[(&str, &str)]| {
        let mut command = Command::new(BIN);
        command
            .args(["--url", &gw.url, "--data-dir"])
            .arg(&elsewhere)
            .args(extra)
            .args(["agent", "list"]);
        CliRun::run_with_env(command, env)
    };

    client(&["--admin-token-file", token_path], &[]).assert_code(0);
    client(&[], &[("MESHGUARD_ADMIN_TOKEN_FILE", token_path)]).assert_code(0);
    client(&["--admin-token", "file-admin-token-0123456789"], &[]).assert_code(0);

    let missing = scratch.path().join("missing");
    let run = client(&["--admin-token-file", missing.to_str().unwrap()], &[]);
    run.assert_code(3);
    assert!(
        run.stderr.contains("cannot read the admin token file `") && run.stderr.contains("missing"),
        "{}",
        run.stderr
    );
    let run = client(
        &["--admin-token-file", token_path],
        &[("MESHGUARD_ADMIN_TOKEN", "file-admin-token-0123456789")],
    );
    run.assert_code(2);
    assert!(run.stderr.contains("not both"), "{}", run.stderr);

    let help = CliRun::bare(&["--help"]);
    help.assert_code(0);
    assert!(
        help.stdout.contains("--admin-token-file"),
        "{}",
        help.stdout
    );
    assert!(help.stdout.contains("`ps`"), "{}", help.stdout);
}
