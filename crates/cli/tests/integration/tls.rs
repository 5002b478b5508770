//! `serve --tls-cert --tls-key`: the real binary answers HTTPS with the given certificate, plain
//! HTTP gets no answer on the same port, and a certificate replaced on disk is served to new
//! connections without a restart.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{BIN, free_port};

/// A self-signed certificate for localhost and 127.0.0.1, written as PEM by openssl.
fn certificate(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", &format!("/CN={name}")])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is installed");
    assert!(made.success());
    (cert, key)
}

/// A client that trusts only `cert`.
fn trusting(cert: &Path) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(cert).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

async fn healthy(client: &reqwest::Client, url: &str) -> bool {
    match client.get(format!("{url}/health")).send().await {
        Ok(r) => r.status().is_success(),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_https_and_reloads_a_replaced_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (first_cert, first_key) = certificate(dir.path(), "first");
    let (second_cert, second_key) = certificate(dir.path(), "second");
    let served_cert = dir.path().join("served.crt");
    let served_key = dir.path().join("served.key");
    std::fs::copy(&first_cert, &served_cert).unwrap();
    std::fs::copy(&first_key, &served_key).unwrap();
    let port = free_port();
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
        .arg("--tls-cert")
        .arg(&served_cert)
        .arg("--tls-key")
        .arg(&served_key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("https://localhost:{port}");
    let first = trusting(&first_cert);
    let second = trusting(&second_cert);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !healthy(&first, &url).await {
        assert!(Instant::now() < deadline, "no HTTPS answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Only the certificate in force is trusted; plain HTTP gets nothing useful.
    assert!(!healthy(&second, &url).await);
    let plain = crate::support::http(Duration::from_secs(5))
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await;
    assert!(!matches!(plain, Ok(r) if r.status().is_success()));

    // Replaced on disk (key first, then the certificate, each by rename): new connections get
    // the new certificate within a few seconds, and the process never restarted.
    let staged = dir.path().join("staged");
    std::fs::copy(&second_key, &staged).unwrap();
    std::fs::rename(&staged, &served_key).unwrap();
    std::fs::copy(&second_cert, &staged).unwrap();
    std::fs::rename(&staged, &served_cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !healthy(&second, &url).await {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A new client (no TLS session to resume) trusting the old certificate no longer connects.
    assert!(!healthy(&trusting(&first_cert), &url).await);
    assert!(child.try_wait().unwrap().is_none(), "the gateway restarted");

    // The CLI verifies the gateway's certificate: with --ca-file it trusts it, without it refuses.
    let cli = |ca: Option<&Path>| {
        let mut command = Command::new(BIN);
        command
            .args(["--url", &url, "--data-dir"])
            .arg(dir.path().join("data"));
        if let Some(ca) = ca {
            command.arg("--ca-file").arg(ca);
        }
        command.args(["agent", "list"]).output().unwrap()
    };
    let trusted = cli(Some(&second_cert));
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    let untrusted = cli(None);
    assert!(!untrusted.status.success());

    // The reverse proxy forwards to this https:// gateway, verifying it against `ca_file`; a
    // target without the CA cannot be reached (502), and nothing is forwarded unverified.
    let config = dir.path().join("front.toml");
    std::fs::write(
        &config,
        format!(
            "[targets.secure]\nurl = \"{url}\"\nca_file = \"{}\"\n\n[targets.unverified]\nurl = \"{url}\"\n",
            second_cert.display()
        ),
    )
    .unwrap();
    let front = crate::support::Gateway::start_with(&["--config", config.to_str().unwrap()]).await;
    let policy = dir.path().join("front.yaml");
    std::fs::write(
        &policy,
        "name: front\nversion: \"1\"\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n",
    )
    .unwrap();
    front
        .cli(&["policy", "apply", policy.to_str().unwrap()])
        .assert_code(0);
    let token = front.create_agent("reader", "verified", "");
    let client = crate::support::http(Duration::from_secs(10));
    let via = |target: &str| {
        client
            .get(format!("{}/proxy/{target}/health", front.url))
            .bearer_auth(&token)
            .send()
    };
    let forwarded = via("secure").await.unwrap();
    assert_eq!(forwarded.status(), 200);
    let body: serde_json::Value = forwarded.json().await.unwrap();
    assert_eq!(body["status"], "healthy", "{body}");
    assert_eq!(via("unverified").await.unwrap().status(), 502);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}
