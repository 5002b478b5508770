//! The edge of the server: slow and silent clients, too many connections, bodies built to break
//! their readers, and a data directory others could read. Each attack is bounded or refused, and
//! the gateway keeps answering everyone else.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use meshguard_gateway::{Config, ConfigFlags, serve_listener};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::TestGateway;
use crate::common::wire::{http, parse_response};

const ADMIN: &str = "edge-admin-token-0123456789";
const ALLOW_READS: &str = "name: reads\nversion: \"1\"\nrules:\n  - effect: allow\n    actions: [\"read:*\", \"post:*\"]\nhumanInTheLoop:\n  requireApproval:\n    - \"post:social\"\n";

/// A gateway on a real socket, with the given `server.*` settings.
struct LiveGateway {
    addr: SocketAddr,
    home: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), meshguard_gateway::ServeError>>,
    _tmp: tempfile::TempDir,
}

impl LiveGateway {
    async fn start(settings: &[(&str, &str)]) -> LiveGateway {
        let tmp = tempfile::tempdir().unwrap();
        LiveGateway::start_in(tmp, settings, |_| {}).await
    }

    /// Starts with `prepare` run on the (not yet existing) data dir path first.
    async fn start_in(
        tmp: tempfile::TempDir,
        settings: &[(&str, &str)],
        prepare: impl FnOnce(&Path),
    ) -> LiveGateway {
        let home = tmp.path().join("home");
        prepare(&home);
        let mut env = HashMap::from([
            ("MESHGUARD_HOME".to_owned(), home.display().to_string()),
            ("MESHGUARD_ADMIN_TOKEN".to_owned(), ADMIN.to_owned()),
        ]);
        for (key, value) in settings {
            env.insert(
                format!("MESHGUARD_SERVER__{}", key.to_uppercase()),
                (*value).to_owned(),
            );
        }
        let config = Config::load(None, &env, &ConfigFlags::default(), None).unwrap();
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
        LiveGateway {
            addr,
            home,
            stop: Some(stop),
            server,
            _tmp: tmp,
        }
    }

    /// An agent allowed `read:*`; returns its `Authorization` header value.
    async fn reader(&self) -> String {
        let admin = [("x-admin-token", ADMIN)];
        let (status, _) = http(self.addr, "POST", "/admin/policies", &admin, ALLOW_READS).await;
        assert!(status < 300, "{status}");
        let body = json!({"name": "reader"}).to_string();
        let (status, agent) = http(self.addr, "POST", "/admin/agents", &admin, &body).await;
        assert_eq!(status, 201, "{agent}");
        format!("Bearer {}", agent["token"].as_str().unwrap())
    }

    async fn check(&self, bearer: &str) -> u16 {
        let body = json!({"action": "read:notes"}).to_string();
        let auth = [("authorization", bearer)];
        http(self.addr, "POST", "/proxy/governance/check", &auth, &body)
            .await
            .0
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), &mut self.server)
            .await
            .expect("the gateway stops")
            .unwrap()
            .unwrap();
    }
}

/// This process's resident memory in KiB (the gateway runs in it).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Whether the server has closed `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // A 408 or similar before the close is fine: keep reading until the close.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_half_open_connections_are_closed_and_checks_keep_being_answered() {
    const HALF_OPEN: usize = 400;
    let gw = LiveGateway::start(&[("header_timeout", "1s")]).await;
    let bearer = gw.reader().await;
    assert_eq!(gw.check(&bearer).await, 200);
    let rss_before = rss_kib();

    // Each connection sends part of a request head and then nothing, for ever.
    let mut half_open = Vec::with_capacity(HALF_OPEN);
    for i in 0..HALF_OPEN {
        let mut stream = TcpStream::connect(gw.addr).await.unwrap();
        let partial =
            format!("POST /proxy/governance/check HTTP/1.1\r\nhost: x\r\nx-slow-{i}: waiting");
        stream.write_all(partial.as_bytes()).await.unwrap();
        half_open.push(stream);
    }

    // Meanwhile, every check is answered promptly.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        let asked = Instant::now();
        assert_eq!(gw.check(&bearer).await, 200);
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "a check took {:?} with {HALF_OPEN} half-open connections",
            asked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The header timeout (1 s) has closed every half-open connection.
    for (i, stream) in half_open.iter_mut().enumerate() {
        assert!(
            closed_within(stream, Duration::from_secs(3)).await,
            "half-open connection {i} is still open after the header timeout"
        );
    }
    drop(half_open);
    let rss_after = rss_kib();
    assert!(
        rss_after < rss_before + 48 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert_eq!(gw.check(&bearer).await, 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_until_a_slot_frees() {
    const CAP: usize = 16;
    let gw = LiveGateway::start(&[("header_timeout", "1500ms"), ("max_connections", "16")]).await;
    let bearer = gw.reader().await;

    let mut holders = Vec::new();
    for _ in 0..CAP {
        let mut stream = TcpStream::connect(gw.addr).await.unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: x")
            .await
            .unwrap();
        holders.push(stream);
    }
    // Each holder's handshake completed before the next connect returned, so all of them are
    // ahead of the next connection in the kernel's accept queue, which is served in order.

    // The next connection is not served until the header timeout closes the holders: the gateway
    // did not accept it, it waited in the kernel's backlog.
    let asked = Instant::now();
    assert_eq!(gw.check(&bearer).await, 200);
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_millis(1000),
        "a connection beyond the cap of {CAP} was served at once ({waited:?})"
    );
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    drop(holders);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_finishes_is_cut_at_the_body_timeout() {
    let gw = LiveGateway::start(&[("body_timeout", "1s")]).await;
    let bearer = gw.reader().await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /proxy/governance/check HTTP/1.1\r\nhost: x\r\nauthorization: {bearer}\r\ncontent-length: 1000\r\n\r\n{{\"action\": \"read:"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let asked = Instant::now();
    let mut response = Vec::new();
    // Trickling bytes does not extend the deadline.
    let trickle = async {
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if stream.write_all(b"a").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(4), trickle).await;
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .expect("the gateway answers a body that never finishes");
    let _ = read;
    let (status, body) = parse_response(&response);
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&response));
    assert_eq!(body["error"], "request_timeout");
    assert!(asked.elapsed() < Duration::from_secs(8));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_timeout_cuts_neither_an_audit_stream_nor_a_long_poll() {
    let gw = LiveGateway::start(&[("idle_timeout", "500ms"), ("header_timeout", "500ms")]).await;
    let bearer = gw.reader().await;

    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let request = format!(
        "GET /admin/audit/stream HTTP/1.1\r\nhost: x\r\nx-admin-token: {ADMIN}\r\naccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));

    // Quiet for four idle timeouts, then an event: the stream still delivers it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(gw.check(&bearer).await, 200);
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the audit stream was closed");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if seen.contains("read:notes") {
                return;
            }
        }
    })
    .await;
    assert!(found.is_ok(), "no event on the stream: {seen}");
    drop(stream);

    // A long poll waits longer than the idle timeout and still gets its answer.
    let auth = [("authorization", bearer.as_str())];
    let ask = json!({"action": "post:social"}).to_string();
    let (_, required) = http(gw.addr, "POST", "/proxy/governance/check", &auth, &ask).await;
    let id = required["approval_id"].as_str().expect("an approval id");
    let asked = Instant::now();
    let (status, polled) = http(
        gw.addr,
        "GET",
        &format!("/proxy/governance/approvals/{id}?wait=2"),
        &auth,
        "",
    )
    .await;
    assert_eq!(status, 200, "{polled}");
    assert_eq!(polled["status"], "pending");
    assert!(asked.elapsed() >= Duration::from_millis(1900));
    gw.stop().await;
}

#[tokio::test]
async fn a_context_nested_past_the_cap_is_refused_and_not_stored() {
    let gw = TestGateway::new().await;
    gw.policy(ALLOW_READS).await;
    let (_, token) = gw.agent("deep", "verified", &[]).await;
    let before = gw.events().await.len();
    let deep = format!(
        r#"{{"action": "read:notes", "context": {}1{}}}"#,
        r#"{"a":"#.repeat(125),
        "}".repeat(125)
    );
    let reply = gw.check_raw(&token, deep.clone()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    let message = reply.body["message"].as_str().unwrap();
    assert!(
        message.starts_with("context.a.a") && message.ends_with("nests deeper than 32 levels"),
        "{message}"
    );
    let record = gw
        .send(
            axum::http::Request::builder()
                .method(Method::POST)
                .uri("/proxy/governance/record")
                .header("authorization", format!("Bearer {token}"))
                .body(axum::body::Body::from(deep))
                .unwrap(),
        )
        .await;
    assert_eq!(record.status, StatusCode::BAD_REQUEST, "{}", record.text);
    assert_eq!(gw.events().await.len(), before, "a refused body was stored");

    // Within the cap, a nested context is accepted and kept as sent.
    let fine = json!({"action": "read:notes", "context": {"a": {"b": {"c": [1, 2, {"d": true}]}}}});
    assert_eq!(gw.check(&token, fine).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_repeated_key_inside_the_context_is_refused_with_its_path() {
    let gw = TestGateway::new().await;
    gw.policy(ALLOW_READS).await;
    let (_, token) = gw.agent("dup", "verified", &[]).await;
    let before = gw.events().await.len();
    for (body, path) in [
        (
            r#"{"action": "read:notes", "context": {"sandbox": false, "sandbox": true}}"#,
            "context.sandbox",
        ),
        (
            r#"{"action": "read:notes", "context": {"env": {"tier": "dev", "tier": "prod"}}}"#,
            "context.env.tier",
        ),
        (
            r#"{"action": "read:notes", "context": {"steps": [{"ok": 1}, {"ok": 1, "ok": 2}]}}"#,
            "context.steps[1].ok",
        ),
    ] {
        let reply = gw.check_raw(&token, body).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text
        );
        assert_eq!(
            reply.body["message"],
            format!("{path}: duplicate key"),
            "{body}"
        );
    }
    assert_eq!(gw.events().await.len(), before, "a refused body was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loose_data_dir_is_tightened_and_the_database_files_are_private() {
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let gw = LiveGateway::start_in(tempfile::tempdir().unwrap(), &[], |home| {
        std::fs::create_dir(home).unwrap();
        std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(home.join("gateway.id"), "gw_loose\n").unwrap();
        std::fs::set_permissions(
            home.join("gateway.id"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    })
    .await;
    let bearer = gw.reader().await;
    assert_eq!(gw.check(&bearer).await, 200);
    assert_eq!(mode(&gw.home), 0o700, "the data dir");
    assert_eq!(mode(&gw.home.join("gateway.id")), 0o600);
    for file in ["meshguard.db", "meshguard.db-wal", "meshguard.db-shm"] {
        let path = gw.home.join(file);
        assert!(path.exists(), "{file}");
        assert_eq!(mode(&path), 0o600, "{file}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_head_is_refused_not_buffered() {
    let gw = LiveGateway::start(&[]).await;
    let padding = "p".repeat(100 * 1024);
    let (status, _) = http(gw.addr, "GET", "/health", &[("x-padding", &padding)], "").await;
    assert_eq!(status, 431, "a 100 KiB request head was read whole");
    assert_eq!(http(gw.addr, "GET", "/health", &[], "").await.0, 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_file_limit_is_raised_to_the_hard_limit_at_start() {
    // One below the hard limit: under `cargo test` the other tests share this process and its
    // descriptors, so the limit is lowered only as far as the test needs.
    let (_, hard) = rlimit::Resource::NOFILE.get().unwrap();
    let low = hard.saturating_sub(1);
    rlimit::Resource::NOFILE.set(low, hard).unwrap();
    let gw = LiveGateway::start(&[]).await;
    let (soft, _) = rlimit::Resource::NOFILE.get().unwrap();
    assert!(
        soft > low,
        "the soft limit stayed at {soft} (hard limit {hard})"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_that_asks_nothing_more_is_closed() {
    let gw = LiveGateway::start(&[("header_timeout", "500ms")]).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(closed.is_ok(), "an idle kept-alive connection stayed open");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_stream_whose_client_stopped_reading_is_closed() {
    let gw = LiveGateway::start(&[("idle_timeout", "1s")]).await;
    let bearer = gw.reader().await;
    // A follower with a tiny receive window that never reads: the stream's writes block.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let mut stream = socket.connect(gw.addr).await.unwrap();
    let request = format!(
        "GET /admin/audit/stream HTTP/1.1\r\nhost: x\r\nx-admin-token: {ADMIN}\r\naccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // The response head shows the stream is following the trail; after it, nothing is read.
    let mut head = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
    let auth = [("authorization", bearer.as_str())];
    // More than the kernel's largest send buffer (4 MiB by default) must be written to block.
    let padded =
        json!({"action": "read:notes", "context": {"pad": "x".repeat(50_000)}}).to_string();
    for _ in 0..120 {
        let (status, _) = http(gw.addr, "POST", "/proxy/governance/check", &auth, &padded).await;
        assert_eq!(status, 200);
    }
    // Blocked for longer than the idle timeout: the gateway drops the connection (what it had
    // already handed to the kernel still arrives, then the end of the stream).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        closed_within(&mut stream, Duration::from_secs(5)).await,
        "the stream to a client that stopped reading is still open"
    );
    gw.stop().await;
}
