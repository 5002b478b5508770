//! Signed checkpoints with the real binary: the gateway signs its head as configured, `audit
//! verify` walks only what came after the last verified checkpoint while `--full` walks
//! everything, and an export verifies offline with the public key alone.

use std::time::Duration;

use serde_json::Value;

use crate::support::{CliRun, Gateway, tamper_audit_reason};

/// The public half of a key no gateway here holds.
const OTHER_KEY: &str = "-----BEGIN PUBLIC KEY-----\n\
MCowBQYDK2VwAyEAU5/ZquOsiikdJNeZV/+kWybdOypB06fz0YyBUBWf7YA=\n\
-----END PUBLIC KEY-----\n";

fn report(run: &CliRun) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.stdout))
}

fn chain(report: &Value) -> &Value {
    &report["chains"][0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_make_verification_incremental_and_exports_verifiable_offline() {
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        "[audit]\ncheckpoint_events = 5\ncheckpoint_interval = \"1h\"\n",
    )
    .unwrap();
    let mut gateway = Gateway::start_with(&["--config", config.to_str().unwrap()]).await;
    let token = gateway.create_agent("bot", "verified", "");
    for _ in 0..12 {
        gateway.check(&token, "read:workspace", "notes.txt").await;
    }
    // 13 events (the agent's creation and 12 checks): signed at seq 5 and 10 as they commit.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let first = loop {
        let run = gateway.cli(&["--json", "audit", "verify", "--full"]);
        let first = report(&run);
        if chain(&first)["signedSeq"] == 10 || std::time::Instant::now() > deadline {
            break first;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(chain(&first)["events"], 13);
    assert_eq!(chain(&first)["checkpoints"], 2, "{first}");
    assert_eq!(chain(&first)["signedSeq"], 10, "{first}");

    // Routine verification starts at the checkpoint the last one walked through.
    let routine = gateway.cli(&["audit", "verify"]);
    routine.assert_code(0);
    assert!(
        routine
            .stdout
            .contains("walked from the checkpoint at seq 10"),
        "{}",
        routine.stdout
    );
    let routine = report(&gateway.cli(&["--json", "audit", "verify"]));
    assert_eq!(
        (&chain(&routine)["fromSeq"], &chain(&routine)["events"]),
        (&Value::from(10), &Value::from(3))
    );

    // The export verifies offline, with the public key and no gateway.
    let export = gateway.cli(&["audit", "export"]);
    export.assert_code(0);
    let lines: Vec<&str> = export.stdout.lines().collect();
    assert_eq!(lines.len(), 15, "13 events and 2 checkpoints");
    assert!(
        lines[5].starts_with(r#"{"checkpoint":{"gateway":"#),
        "{}",
        lines[5]
    );
    let scratch = gateway.scratch();
    let file = scratch.join("trail.jsonl");
    std::fs::write(&file, &export.stdout).unwrap();
    let key = gateway.data_dir().join("signing-key.pub.pem");
    let offline = CliRun::bare(&[
        "audit",
        "verify",
        "--file",
        file.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    offline.assert_code(0);
    assert!(
        offline.stdout.contains("ok: 13 events verified in 1 chain")
            && offline
                .stdout
                .contains("seq 11 to 13 link to the signed part but are not signed yet"),
        "{}",
        offline.stdout
    );

    // Gzip'd (as retention archives are) and split in two files given in order: the same trail.
    let gzipped = scratch.join("trail.jsonl.gz");
    let mut gzip = flate2::write::GzEncoder::new(
        std::fs::File::create(&gzipped).unwrap(),
        flate2::Compression::default(),
    );
    std::io::Write::write_all(&mut gzip, lines[..8].join("\n").as_bytes()).unwrap();
    gzip.finish().unwrap();
    let rest = scratch.join("rest.jsonl");
    std::fs::write(&rest, lines[8..].join("\n")).unwrap();
    let split = CliRun::bare(&[
        "--json",
        "audit",
        "verify",
        "--file",
        gzipped.to_str().unwrap(),
        "--file",
        rest.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    split.assert_code(0);
    assert_eq!(report(&split)["eventsChecked"], 13, "{}", split.stdout);

    // An altered line of the export fails; so does a key that did not sign it.
    let altered = scratch.join("altered.jsonl");
    let mut edited = lines.clone();
    let line = edited[2].replace("notes.txt", "secrets.txt");
    assert_ne!(line, edited[2]);
    edited[2] = &line;
    std::fs::write(&altered, edited.join("\n")).unwrap();
    let refused = CliRun::bare(&[
        "audit",
        "verify",
        "--file",
        altered.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    refused.assert_code(1);
    assert!(
        refused.stdout.contains("broken at seq 3") && refused.stdout.contains("altered"),
        "{}",
        refused.stdout
    );
    let other = scratch.join("other.pub.pem");
    std::fs::write(&other, OTHER_KEY).unwrap();
    let refused = CliRun::bare(&[
        "audit",
        "verify",
        "--file",
        file.to_str().unwrap(),
        "--key",
        other.to_str().unwrap(),
    ]);
    refused.assert_code(1);
    assert!(
        refused.stdout.contains("not among the keys given"),
        "{}",
        refused.stdout
    );

    // An event altered before the last verified checkpoint: found by --full only.
    assert!(gateway.stop(), "{}", gateway.log());
    let database = gateway.data_dir().join("meshguard.db");
    tamper_audit_reason(&database, 3).await;
    gateway.restart().await;
    gateway.cli(&["audit", "verify"]).assert_code(0);
    let full = gateway.cli(&["audit", "verify", "--full"]);
    full.assert_code(1);
    assert!(full.stdout.contains("broken at seq 3"), "{}", full.stdout);

    // One altered after it (the routine run above walked through the checkpoint the gateway
    // signed at seq 13 as it stopped): found by the routine verification.
    gateway.check(&token, "read:workspace", "notes.txt").await;
    gateway.check(&token, "read:workspace", "notes.txt").await;
    assert!(gateway.stop(), "{}", gateway.log());
    tamper_audit_reason(&database, 14).await;
    gateway.restart().await;
    let routine = gateway.cli(&["audit", "verify"]);
    routine.assert_code(1);
    assert!(
        routine.stdout.contains("broken at seq 14") && routine.stdout.contains("13"),
        "{}",
        routine.stdout
    );
}
