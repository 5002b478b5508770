//! `serve` over a real socket: first start creates the data dir, `--policies DIR` loads and
//! hot-reloads files (a bad file keeps the last good version), file-owned policies refuse API
//! changes, and shutdown flushes the audit trail.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use meshguard_gateway::{Config, ConfigFlags, serve_listener, validate_only};
use meshguard_store::StoreLocation;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::wire::http;

const ALLOW_READS: &str =
    "name: files\nversion: \"1\"\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n";
const DENY_READS: &str =
    "name: files\nversion: \"2\"\nrules:\n  - effect: deny\n    actions: [\"read:*\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_loads_policy_files_hot_reloads_them_and_flushes_on_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let policies = tmp.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let policy_file = policies.join("files.yaml");
    std::fs::write(&policy_file, ALLOW_READS).unwrap();

    let env = HashMap::from([
        ("MESHGUARD_HOME".to_owned(), home.display().to_string()),
        ("POLICIES_DIR".to_owned(), policies.display().to_string()),
    ]);
    let config = Config::load(None, &env, &ConfigFlags::default(), None).unwrap();
    let report = validate_only(&config).unwrap();
    assert!(
        report.iter().any(|l| l.starts_with("policies: 1 file")),
        "{report:?}"
    );
    assert!(!home.exists(), "validate-only creates nothing");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_listener(config, listener, async {
        let _ = stopped.await;
    }));

    let deadline = Instant::now() + Duration::from_secs(10);
    while http(addr, "GET", "/health", &[], "").await.0 != 200 {
        assert!(Instant::now() < deadline, "gateway did not become healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token_file = home.join("admin.token");
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let admin = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    let admin_header = [("x-admin-token", admin.as_str())];

    let (status, agent) = http(
        addr,
        "POST",
        "/admin/agents",
        &admin_header,
        &json!({"name": "dev"}).to_string(),
    )
    .await;
    assert_eq!(status, 201);
    let bearer = format!("Bearer {}", agent["token"].as_str().unwrap());
    let auth = [("authorization", bearer.as_str())];
    let check = json!({"action": "read:notes"}).to_string();
    assert_eq!(
        http(addr, "POST", "/proxy/governance/check", &auth, &check)
            .await
            .0,
        200
    );

    // The policy belongs to its file: the API refuses to change it and names the file.
    let (status, refused) = http(
        addr,
        "PUT",
        "/admin/policies/files",
        &admin_header,
        DENY_READS,
    )
    .await;
    assert_eq!(status, 409);
    assert!(
        refused["message"].as_str().unwrap().contains("files.yaml"),
        "{refused}"
    );
    let (status, _) = http(addr, "DELETE", "/admin/policies/files", &admin_header, "").await;
    assert_eq!(status, 409);

    // Editing the file changes the decision within a few polls.
    std::fs::write(&policy_file, DENY_READS).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http(addr, "POST", "/proxy/governance/check", &auth, &check)
        .await
        .0
        != 403
    {
        assert!(
            Instant::now() < deadline,
            "policy file change not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A broken file keeps the last good version in force.
    std::fs::write(
        &policy_file,
        "name: files\nversion: \"3\"\nrules:\n  - effect: alow\n",
    )
    .unwrap();
    // The witness that a poll has read the broken edit: a new file's policy comes into force
    // (every poll reads every file, `files.yaml` before `witness.yaml`).
    std::fs::write(
        policy_file.with_file_name("witness.yaml"),
        "name: witness\nversion: \"1\"\nappliesTo: {agentIds: []}\nrules: []\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http(addr, "GET", "/admin/policies/witness", &admin_header, "")
        .await
        .0
        != 200
    {
        assert!(
            Instant::now() < deadline,
            "the witness file was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        http(addr, "POST", "/proxy/governance/check", &auth, &check)
            .await
            .0,
        403
    );
    let (_, shown) = http(addr, "GET", "/admin/policies/files", &admin_header, "").await;
    assert_eq!(shown["version"], "2");

    // An audit stream left open does not keep the gateway from stopping.
    let mut follower = tokio::net::TcpStream::connect(addr).await.unwrap();
    follower
        .write_all(
            format!(
                "GET /admin/audit/stream HTTP/1.1\r\nhost: {addr}\r\nx-admin-token: {admin}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), follower.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("shutdown within 10 s")
        .unwrap()
        .unwrap();

    // Every answered check is in the trail, and the chain verifies.
    let store = meshguard_store::open(&StoreLocation::in_data_dir(&home))
        .await
        .unwrap();
    // The gateway signed its head as it stopped: the checkpoint verifies with its public key.
    let mut keys = meshguard_store::CheckpointKeys::default();
    keys.add_pem(&std::fs::read_to_string(home.join("signing-key.pub.pem")).unwrap())
        .unwrap();
    let report = store
        .verify_audit(&meshguard_store::VerifyOptions::full(keys))
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(
        report.chains[0].signed_seq,
        Some(report.chains[0].head_seq),
        "the last event is signed"
    );
    let checks = store
        .audit_stats(&meshguard_store::StatsQuery {
            from: time::OffsetDateTime::now_utc() - time::Duration::hours(1),
            to: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
            agent: Some("dev".into()),
            hourly: false,
        })
        .await
        .unwrap();
    // One allowed before the edit, then allowed checks until the reload, then two denials.
    assert!(checks.allowed >= 1 && checks.denied >= 2, "{checks:?}");
    assert_eq!(checks.total, checks.allowed + checks.denied);
}

#[test]
fn validate_only_refuses_a_policy_defined_by_two_files() {
    // `serve` applies `a.yaml` and refuses `b.yaml`; `--validate-only` must say so before start.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("a.yaml"), ALLOW_READS).unwrap();
    std::fs::write(tmp.path().join("b.yaml"), DENY_READS).unwrap();
    let flags = ConfigFlags {
        policies_dir: Some(tmp.path().to_path_buf()),
        data_dir: Some(tmp.path().join("home")),
        ..ConfigFlags::default()
    };
    let config = Config::load(None, &HashMap::new(), &flags, None).unwrap();
    let err = validate_only(&config).unwrap_err().to_string();
    let a = tmp.path().join("a.yaml").display().to_string();
    let b = tmp.path().join("b.yaml").display().to_string();
    assert!(
        err.contains(&format!(
            "policy `files` in `{b}` is already defined by `{a}`"
        )),
        "{err}"
    );
    assert!(
        !tmp.path().join("home").exists(),
        "validate-only creates nothing"
    );

    std::fs::remove_file(tmp.path().join("b.yaml")).unwrap();
    let report = validate_only(&config).unwrap();
    assert!(
        report.iter().any(|l| l.starts_with("policies: 1 file")),
        "{report:?}"
    );
}

#[tokio::test]
async fn validate_only_reports_bad_policy_files_with_positions() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("bad.yaml"),
        "name: bad\nversion: \"1\"\nrules:\n  - effect: alow\n    actions: [\"x\"]\n",
    )
    .unwrap();
    let flags = ConfigFlags {
        policies_dir: Some(tmp.path().to_path_buf()),
        data_dir: Some(tmp.path().join("home")),
        ..ConfigFlags::default()
    };
    let config = Config::load(None, &HashMap::new(), &flags, None).unwrap();
    let err = validate_only(&config).unwrap_err().to_string();
    assert!(err.contains("bad.yaml:4:"), "{err}");

    // `*.yml` files are checked too; hidden files and backups are not policy files.
    let dir = tmp.path().join("policies");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("short.yml"),
        "name: short\nversion: \"1\"\nrules:\n  - effect: alow\n",
    )
    .unwrap();
    std::fs::write(dir.join(".#short.yaml"), "not: [a policy\n").unwrap();
    let flags = ConfigFlags {
        policies_dir: Some(dir.clone()),
        data_dir: Some(tmp.path().join("home")),
        ..ConfigFlags::default()
    };
    let config = Config::load(None, &HashMap::new(), &flags, None).unwrap();
    let err = validate_only(&config).unwrap_err().to_string();
    assert!(err.contains("short.yml:4:"), "{err}");
    assert!(!err.contains(".#short.yaml"), "{err}");

    let flags = ConfigFlags {
        redis_url: Some("redis://127.0.0.1:6379".into()),
        data_dir: Some(tmp.path().join("home")),
        ..ConfigFlags::default()
    };
    let config = Config::load(None, &HashMap::new(), &flags, None).unwrap();
    let report = validate_only(&config).unwrap();
    assert!(
        report
            .iter()
            .any(|line| line == "rate limits: redis at 127.0.0.1:6379 (not contacted)"),
        "{report:?}"
    );
}
