//! Starts the real `meshguard` binary on a free loopback port with a temporary data dir, and runs
//! CLI commands against it. Shared by every end-to-end test file.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_meshguard");

/// How long a gateway may take to answer /health after start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The repository root (for `examples/` and `tests/conformance/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..")
}

/// An HTTP client for the tests (reqwest is built with rustls and no bundled crypto provider; the
/// binary installs ring, and so do the tests).
pub fn http(timeout: Duration) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(timeout).build().unwrap()
}

/// `GET /proxy/governance/approvals/{id}?wait=WAIT` as the agent with `token`: the status and
/// the body, once the gateway answers (the client gives up 10 s after `wait`).
pub async fn approval_poll(url: &str, token: &str, id: &str, wait: u64) -> (u16, Value) {
    let response = http(Duration::from_secs(wait + 10))
        .get(format!("{url}/proxy/governance/approvals/{id}?wait={wait}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Waits (bounded, 20 s) until the gateway at `url` reports `count` approval long polls parked
/// on a decision in `meshguard_approval_polls_waiting`: the witness that a poll has reached the
/// gateway and subscribed to decisions, so what follows is measured from a waiting poll.
pub async fn approval_polls_waiting(url: &str, count: u64) {
    let client = http(Duration::from_secs(5));
    let wanted = format!("meshguard_approval_polls_waiting {count}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = client
            .get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.lines().any(|line| line == wanted) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no `{wanted}` within 20 s:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free port on 127.0.0.1: bound, read, released, then handed to `serve --addr`.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A running gateway process; killed when dropped.
pub struct Gateway {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The listen address.
    pub addr: String,
    root: TempDir,
    /// Extra arguments given to `serve` at every start.
    serve_args: Vec<String>,
    /// Extra environment of `serve` at every start.
    serve_env: Vec<(String, String)>,
    starts: u32,
}

impl Gateway {
    /// Starts a gateway on a fresh data dir.
    pub async fn start() -> Gateway {
        Gateway::start_with(&[]).await
    }

    /// Starts a gateway on a fresh data dir with extra `serve` arguments.
    pub async fn start_with(args: &[&str]) -> Gateway {
        Gateway::start_in(tempfile::tempdir().unwrap(), args, &[]).await
    }

    /// Starts a gateway on a fresh data dir with extra environment variables.
    pub async fn start_with_env(env: &[(&str, &str)]) -> Gateway {
        Gateway::start_in(tempfile::tempdir().unwrap(), &[], env).await
    }

    /// Starts a second gateway beside `first` (give both the same `--database-url`), set up as
    /// docs/operations.md tells operators to: a data dir of its own, so its own `gateway.id` and
    /// audit chain, holding copies of `first`'s `signing-key.pem` and `admin.token`, so that agent
    /// tokens and the admin token work on both.
    pub async fn start_beside(first: &Gateway, args: &[&str]) -> Gateway {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        for file in ["signing-key.pem", "admin.token"] {
            std::fs::copy(first.data_dir().join(file), data.join(file)).unwrap();
        }
        Gateway::start_in(root, args, &[]).await
    }

    async fn start_in(root: TempDir, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        std::fs::create_dir_all(root.path().join("data")).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut gateway = Gateway {
            child: None,
            url: format!("http://{addr}"),
            addr,
            root,
            serve_args: args.iter().map(|a| (*a).to_owned()).collect(),
            serve_env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            starts: 0,
        };
        gateway.spawn().await;
        gateway
    }

    /// The gateway's data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// A scratch directory next to the data dir for test files.
    pub fn scratch(&self) -> PathBuf {
        self.root.path().to_path_buf()
    }

    /// The log of the latest start.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Spawns `meshguard serve` and waits for /health. The port was free when picked but another
    /// process may take it before the gateway binds: then a new port is picked (bounded).
    async fn spawn(&mut self) {
        for _ in 0..5 {
            self.starts += 1;
            let log = File::create(self.log_path()).unwrap();
            let child = Command::new(BIN)
                .args(["serve", "--addr", &self.addr, "--data-dir"])
                .arg(self.data_dir())
                .args(&self.serve_args)
                .env_remove("MESHGUARD_ADMIN_TOKEN")
                .env_remove("MESHGUARD_ADMIN_TOKEN_FILE")
                .env_remove("MESHGUARD_URL")
                .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
                .env("RUST_LOG", "info")
                .envs(self.serve_env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            self.child = Some(child);
            match self.wait_healthy().await {
                Ok(()) => return,
                Err(log) if log.contains("cannot listen on") => {
                    self.child = None;
                    self.addr = format!("127.0.0.1:{}", free_port());
                    self.url = format!("http://{}", self.addr);
                }
                Err(log) => panic!("the gateway exited during start:\n{log}"),
            }
        }
        panic!("no free port found for the gateway");
    }

    fn log_path(&self) -> PathBuf {
        self.root
            .path()
            .join(format!("gateway-{}.log", self.starts))
    }

    /// Waits (bounded) for /health; `Err` with the log when the process exited first.
    async fn wait_healthy(&mut self) -> Result<(), String> {
        let client = http(Duration::from_secs(2));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!("({status}) {}", self.log()));
            }
            if let Ok(response) = client.get(format!("{}/health", self.url)).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not become healthy in {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, then wait (bounded) for a graceful exit; returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.success();
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                child.wait().unwrap();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts again on the same data dir (and port, unless it was taken meanwhile).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the gateway first");
        self.spawn().await;
    }

    /// Runs the CLI against this gateway (its URL and data dir, hence its admin token).
    pub fn cli(&self, args: &[&str]) -> CliRun {
        let mut command = Command::new(BIN);
        command
            .arg("--url")
            .arg(&self.url)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(args);
        CliRun::run(command)
    }

    /// Runs the CLI with `--json` and parses stdout; panics unless it exits 0.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let run = self.cli(&all);
        run.assert_code(0);
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.stdout))
    }

    /// Creates an agent through the CLI and returns its token.
    pub fn create_agent(&self, name: &str, trust: &str, tags: &str) -> String {
        let created = self.cli_json(&["agent", "create", name, "--trust", trust, "--tags", tags]);
        created["token"]
            .as_str()
            .expect("the created agent has a token")
            .to_owned()
    }

    /// `POST /proxy/governance/check` as an agent.
    pub async fn check(&self, token: &str, action: &str, resource: &str) -> CheckAnswer {
        self.check_with(token, action, resource, &[]).await
    }

    /// `POST /proxy/governance/check` with extra headers.
    pub async fn check_with(
        &self,
        token: &str,
        action: &str,
        resource: &str,
        headers: &[(&str, &str)],
    ) -> CheckAnswer {
        let client = http(Duration::from_secs(10));
        let mut request = client
            .post(format!("{}/proxy/governance/check", self.url))
            .bearer_auth(token)
            .json(&json!({"action": action, "resource": resource}));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        CheckAnswer {
            status,
            retry_after,
            body,
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The answer to one check.
#[derive(Debug)]
pub struct CheckAnswer {
    /// HTTP status.
    pub status: u16,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The JSON body.
    pub body: Value,
}

impl CheckAnswer {
    /// The body's `reason`, lower-cased.
    pub fn reason(&self) -> String {
        self.body["reason"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
    }
}

/// One finished CLI invocation.
#[derive(Debug)]
pub struct CliRun {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliRun {
    /// Runs `command` with a clean environment for the variables the CLI reads.
    pub fn run(command: Command) -> CliRun {
        CliRun::run_with_env(command, &[])
    }

    fn output(mut command: Command) -> CliRun {
        let output: Output = command
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        CliRun {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs the binary with `args` and the given environment variables.
    pub fn with_env(args: &[&str], env: &[(&str, &str)]) -> CliRun {
        let mut command = Command::new(BIN);
        command.args(args);
        CliRun::run_with_env(command, env)
    }

    /// `meshguard serve --validate-only --config CONFIG --data-dir DATA` with `env`.
    pub fn validate_only(config: &Path, data: &Path, env: &[(&str, &str)]) -> CliRun {
        CliRun::with_env(
            &[
                "serve",
                "--validate-only",
                "--config",
                config.to_str().unwrap(),
                "--data-dir",
                data.to_str().unwrap(),
            ],
            env,
        )
    }

    /// Like [`CliRun::run`], then sets `env` (which the clean-up would otherwise remove).
    pub fn run_with_env(mut command: Command, env: &[(&str, &str)]) -> CliRun {
        for name in [
            "MESHGUARD_URL",
            "MESHGUARD_GATEWAY_URL",
            "MESHGUARD_ADMIN_TOKEN",
            "MESHGUARD_ADMIN_TOKEN_FILE",
            "MESHGUARD_HOME",
        ] {
            command.env_remove(name);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        CliRun::output(command)
    }

    /// Runs the binary with `args` and nothing else.
    pub fn bare(args: &[&str]) -> CliRun {
        let mut command = Command::new(BIN);
        command.args(args);
        CliRun::run(command)
    }

    /// Panics with both streams unless the exit code is `code`.
    pub fn assert_code(&self, code: i32) -> &CliRun {
        assert_eq!(
            self.code, code,
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Rewrites the reason of audit row `seq` directly in a stopped gateway's SQLite database, as an
/// intruder with file access would.
pub async fn tamper_audit_reason(database: &Path, seq: i64) {
    use sqlx::Connection as _;
    let url = format!("sqlite://{}", database.display());
    let mut connection = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let changed =
        sqlx::query("UPDATE audit_events SET reason = 'nothing to see here' WHERE seq = ?")
            .bind(seq)
            .execute(&mut connection)
            .await
            .unwrap();
    assert_eq!(changed.rows_affected(), 1);
    connection.close().await.unwrap();
}
