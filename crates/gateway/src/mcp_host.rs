//! Gateway-hosted MCP servers: `[mcp.servers.S]` in the gateway's config, served at `/mcp/S` as a
//! streamable-HTTP MCP endpoint to agents that authenticate with their MeshGuard token.
//!
//! Each MCP session (an `initialize` without `Mcp-Session-Id`) starts the server's `command` as a
//! child process of its own and runs the same [`Governor::relay`] as `meshguard mcp run`: the HTTP
//! side stands in for the stdio client, so every governed method is checked, waited for, refused
//! and recorded exactly as through the stdio proxy, and everything else passes untouched. The
//! checks go to this gateway's own HTTP address with the agent's token, so they are authenticated,
//! charged, audited and counted like any other check.
//!
//! **The transport** (MCP streamable HTTP): a client request is answered with an SSE stream that
//! carries the server's messages about it (progress, sampling, logs) and ends with its response; a
//! notification or a response of the client's is answered `202 Accepted`; `GET` opens the stream of
//! messages that belong to no request; `DELETE` ends the session. Batches are refused (the current
//! revision of the protocol has none).
//!
//! **Ending:** a session ends when the client deletes it, when it has been idle for the server's
//! `idle_timeout` (default 10 min) with no request under way, when the server exits, when the
//! gateway stops, or at once when its agent is revoked or purged: its server's input is closed, the
//! server is killed if it does not exit, and every later request naming the session is a 404.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use meshguard_mcp::config::{ServerConfig, ToolMapping};
use meshguard_mcp::gateway::InProcessGateway;
use meshguard_mcp::http_upstream::HttpUpstream;
use meshguard_mcp::naming::Naming;
use meshguard_mcp::relay::{DEFAULT_APPROVAL_WAIT, DEFAULT_MAX_MESSAGE_BYTES, SHUTDOWN_GRACE};
use meshguard_mcp::{GatewayClient, Governor};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::{mpsc, watch};

/// The server's input as the relay writes it: a child's stdin or an HTTP bridge.
type ServerIn = Box<dyn tokio::io::AsyncWrite + Unpin + Send>;
/// The server's output as the relay reads it.
type ServerOut = Box<dyn tokio::io::AsyncRead + Unpin + Send>;

/// The header that names a session (MCP streamable HTTP).
pub const SESSION_HEADER: &str = "mcp-session-id";

/// How long a session may sit idle, when the server's config says nothing.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// One `[mcp.servers.S]` table of the gateway config, as written: a `command` the gateway
/// starts per session, or the `url` of a streamable-HTTP server (with `headers`).
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostedServerConfig {
    /// The stdio server to start for each session: program and arguments.
    #[serde(default)]
    pub command: Vec<String>,
    /// A streamable-HTTP MCP server to bridge each session to.
    #[serde(default)]
    pub url: Option<String>,
    /// Headers sent to `url` on every request (the upstream's credentials; `${ENV}` expanded).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The working directory of the server (relative paths in calls resolve against it);
    /// default: the gateway's.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// The argument holding the resource of every tool (as in `meshguard mcp run --config`).
    #[serde(default)]
    pub resource: Option<String>,
    /// Per-tool names and resources (as in `meshguard mcp run --config`).
    #[serde(default)]
    pub tools: BTreeMap<String, ToolMapping>,
    /// Keep the tools an agent can never use in `tools/list`.
    #[serde(default)]
    pub show_denied: bool,
    /// How long a call that needs approval waits for a human, in seconds (default 120).
    #[serde(default)]
    pub approval_wait_seconds: Option<u64>,
    /// How long a session may sit idle, in seconds (default 600).
    #[serde(default)]
    pub idle_timeout_seconds: Option<u64>,
}

impl std::fmt::Debug for HostedServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values are the upstream's credentials: only their names are shown.
        f.debug_struct("HostedServerConfig")
            .field("command", &self.command)
            .field("url", &self.url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("resource", &self.resource)
            .field("tools", &self.tools)
            .finish_non_exhaustive()
    }
}

/// Where a hosted server's sessions go.
#[derive(Debug, Clone)]
enum Backend {
    /// A process per session.
    Command(Vec<String>),
    /// A streamable-HTTP server, one upstream session per session.
    Http(HttpUpstream),
}

/// A hosted server, ready to start sessions.
#[derive(Debug, Clone)]
struct HostedServer {
    backend: Backend,
    cwd: Option<PathBuf>,
    naming: ServerConfig,
    show_denied: bool,
    approval_wait: Duration,
    idle_timeout: Duration,
}

impl HostedServer {
    fn of(config: &HostedServerConfig) -> Result<HostedServer, String> {
        let backend = match &config.url {
            Some(url) => {
                let headers: Vec<(String, String)> = config
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                Backend::Http(HttpUpstream::new(url, &headers).map_err(|e| e.to_string())?)
            }
            None => Backend::Command(config.command.clone()),
        };
        Ok(HostedServer {
            backend,
            cwd: config.cwd.clone(),
            naming: ServerConfig {
                resource: config.resource.clone(),
                tools: config.tools.clone(),
            },
            show_denied: config.show_denied,
            approval_wait: config
                .approval_wait_seconds
                .map_or(DEFAULT_APPROVAL_WAIT, Duration::from_secs),
            idle_timeout: config
                .idle_timeout_seconds
                .map_or(DEFAULT_IDLE_TIMEOUT, Duration::from_secs),
        })
    }
}

/// Why a request to `/mcp/S` is refused before it reaches a session.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// No such server is configured.
    #[error("no MCP server `{0}` is hosted by this gateway")]
    UnknownServer(String),
    /// The session does not exist (ended, or never did), or is another agent's.
    #[error("MCP session `{0}` not found: it ended or never existed; initialize a new one")]
    UnknownSession(String),
    /// A request without a session that is not `initialize`.
    #[error("no `Mcp-Session-Id`: a session starts with an `initialize` request")]
    NoSession,
    /// The body is not one JSON-RPC message.
    #[error("{0}")]
    BadMessage(String),
    /// The server could not be started.
    #[error("cannot start the MCP server `{server}`: {cause}")]
    Start {
        /// The server name.
        server: String,
        /// Why.
        cause: String,
    },
    /// The session's server has gone, or the gateway is stopping.
    #[error("the MCP session `{0}` has ended")]
    Ended(String),
}

impl IntoResponse for HostError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            HostError::UnknownServer(_) | HostError::UnknownSession(_) | HostError::Ended(_) => {
                (StatusCode::NOT_FOUND, -32001)
            }
            HostError::NoSession | HostError::BadMessage(_) => (StatusCode::BAD_REQUEST, -32600),
            HostError::Start { .. } => (StatusCode::BAD_GATEWAY, -32603),
        };
        let body = json!({
            "jsonrpc": "2.0",
            "id": Value::Null,
            "error": {"code": code, "message": format!("MeshGuard: {self}")},
        });
        (status, axum::Json(body)).into_response()
    }
}

/// Every hosted server of one gateway and their open sessions.
#[derive(Debug, Default)]
pub struct McpHost {
    servers: BTreeMap<String, HostedServer>,
    sessions: Mutex<HashMap<String, Arc<HostedSession>>>,
    /// This gateway's own URL, named in the sessions' failures; set once the listener is bound.
    self_url: OnceLock<String>,
}

impl McpHost {
    /// The host of `servers` (validated by the config loader); an upstream that cannot be used
    /// is an error naming its server.
    pub fn new(servers: &BTreeMap<String, HostedServerConfig>) -> Result<McpHost, String> {
        let mut hosted = BTreeMap::new();
        for (name, config) in servers {
            let server =
                HostedServer::of(config).map_err(|e| format!("mcp.servers.{name}: {e}"))?;
            hosted.insert(name.clone(), server);
        }
        Ok(McpHost {
            servers: hosted,
            ..McpHost::default()
        })
    }

    /// This gateway's address, as its listener is bound: the sessions' checks go to its router
    /// in process, and their failures name it.
    pub fn set_self_url(&self, url: String) {
        let _ = self.self_url.set(url);
    }

    /// The names of the hosted servers.
    pub fn server_names(&self) -> impl Iterator<Item = &str> {
        self.servers.keys().map(String::as_str)
    }

    /// How many sessions are open (for `/health` and tests).
    pub fn open_sessions(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<HostedSession>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The session `id` of `agent_id` on `server`; another agent's is as good as missing.
    fn session(
        &self,
        id: &str,
        server: &str,
        agent_id: &str,
    ) -> Result<Arc<HostedSession>, HostError> {
        self.lock()
            .get(id)
            .filter(|s| s.server == server && s.agent_id == agent_id && !s.is_ended())
            .cloned()
            .ok_or_else(|| HostError::UnknownSession(id.to_owned()))
    }

    /// Ends every session of `agent_id` at once (a revoke, a purge).
    pub fn end_sessions_of(&self, agent_id: &str) {
        let ended: Vec<Arc<HostedSession>> = self
            .lock()
            .values()
            .filter(|s| s.agent_id == agent_id)
            .cloned()
            .collect();
        for session in ended {
            tracing::info!(session = %session.id, server = %session.server, agent = %agent_id, "MCP session ended: its agent can no longer act");
            session.end();
        }
    }

    /// Ends every session (the gateway is stopping).
    pub fn end_all(&self) {
        let all: Vec<Arc<HostedSession>> = self.lock().values().cloned().collect();
        for session in all {
            session.end();
        }
    }

    /// The agents that have sessions open, for the revocation watcher.
    pub fn agents_with_sessions(&self) -> Vec<String> {
        let mut agents: Vec<String> = self.lock().values().map(|s| s.agent_id.clone()).collect();
        agents.sort();
        agents.dedup();
        agents
    }

    /// Starts a session of `server` for the agent `agent_id` whose token is `token`; its checks
    /// go to `gateway`, this gateway's own router.
    fn start(
        self: &Arc<Self>,
        server: &str,
        agent_id: &str,
        token: &str,
        gateway: Arc<dyn InProcessGateway>,
    ) -> Result<Arc<HostedSession>, HostError> {
        let hosted = self
            .servers
            .get(server)
            .ok_or_else(|| HostError::UnknownServer(server.to_owned()))?;
        let start_error = |cause: String| HostError::Start {
            server: server.to_owned(),
            cause,
        };
        let self_url = self
            .self_url
            .get()
            .ok_or_else(|| start_error("the gateway is not listening yet".into()))?;
        let gateway = GatewayClient::in_process(gateway, self_url, Some(token.to_owned()))
            .map_err(|e| start_error(e.to_string()))?;
        let cwd = match &hosted.cwd {
            Some(dir) => dir.clone(),
            None => std::env::current_dir().map_err(|e| start_error(e.to_string()))?,
        };
        let (mut child, server_in, server_out) = match &hosted.backend {
            Backend::Command(command) => {
                let (program, args) = command
                    .split_first()
                    .ok_or_else(|| start_error("no command".into()))?;
                let mut child = tokio::process::Command::new(program)
                    .args(args)
                    .current_dir(&cwd)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| start_error(format!("`{program}`: {e}")))?;
                let (Some(server_in), Some(server_out)) = (child.stdin.take(), child.stdout.take())
                else {
                    return Err(start_error("no pipe to the server".into()));
                };
                let server_in: ServerIn = Box::new(server_in);
                let server_out: ServerOut = Box::new(server_out);
                (Some(child), server_in, server_out)
            }
            Backend::Http(upstream) => {
                let (server_in, server_out) = upstream.open();
                let server_in: ServerIn = Box::new(server_in);
                let server_out: ServerOut = Box::new(server_out);
                (None, server_in, server_out)
            }
        };
        let governor = Governor {
            naming: Naming::new(server, hosted.naming.clone(), cwd),
            gateway,
            show_denied: hosted.show_denied,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            approval_wait: hosted.approval_wait,
        };
        // The relay's client side is a pipe: we write the client's messages into one end and
        // read what the relay sends the client from it.
        let (ours, relays) = tokio::io::duplex(64 * 1024);
        let (relay_in, relay_out) = tokio::io::split(relays);
        let (from_relay, mut to_relay_pipe) = tokio::io::split(ours);
        let (to_relay, mut lines) = mpsc::unbounded_channel::<Vec<u8>>();
        let session = Arc::new(HostedSession {
            id: uuid::Uuid::new_v4().simple().to_string(),
            server: server.to_owned(),
            agent_id: agent_id.to_owned(),
            to_relay: Mutex::new(Some(to_relay)),
            routes: Mutex::new(Routes::default()),
            last_used: Mutex::new(Instant::now()),
            ended: watch::Sender::new(false),
        });
        self.lock().insert(session.id.clone(), Arc::clone(&session));
        tracing::info!(session = %session.id, server, agent = %agent_id, "MCP session started");

        // Client → relay: one line per message; closing it tells the relay the client is gone.
        tokio::spawn(async move {
            while let Some(mut line) = lines.recv().await {
                line.push(b'\n');
                if to_relay_pipe.write_all(&line).await.is_err() {
                    break;
                }
            }
            let _ = to_relay_pipe.shutdown().await;
        });
        // Relay → client: each message to the stream it belongs to.
        let delivering = {
            let session = Arc::clone(&session);
            tokio::spawn(async move {
                let mut reader = BufReader::new(from_relay);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => session.deliver(&line),
                    }
                }
                session.end();
            })
        };
        // The relay itself; when it ends, so does the session and its server.
        {
            let host = Arc::clone(self);
            let session = Arc::clone(&session);
            tokio::spawn(async move {
                // Ending the session closes the relay's client side: the relay then closes the
                // server's input and gives it a grace to exit; one that does not is killed.
                governor
                    .relay(relay_in, relay_out, server_in, server_out)
                    .await;
                // The server's last answers are delivered before anything still waiting is
                // told the session ended.
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, delivering).await;
                if let Some(child) = child.as_mut() {
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, child.wait()).await;
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
                session.end();
                host.lock().remove(&session.id);
                tracing::info!(session = %session.id, "MCP session closed");
            });
        }
        // Idle sessions end, so that abandoned servers do not run for ever.
        {
            let session = Arc::clone(&session);
            let idle = hosted.idle_timeout;
            tokio::spawn(async move {
                let tick = (idle / 4).max(Duration::from_millis(100));
                let mut ended = session.ended.subscribe();
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(tick) => {}
                        _ = ended.wait_for(|ended| *ended) => break,
                    }
                    if session.is_ended() {
                        break;
                    }
                    if session.idle_for() >= idle && !session.busy() {
                        tracing::info!(session = %session.id, "MCP session idle: ending it");
                        session.end();
                        break;
                    }
                }
            });
        }
        Ok(session)
    }
}

/// Where the relay's messages for the client go.
#[derive(Debug, Default)]
struct Routes {
    /// The open response streams of the client's requests, by request id.
    pending: HashMap<String, Pending>,
    /// Request ids, oldest first (a server message that names no request goes to the newest).
    order: VecDeque<String>,
    /// The stream a `GET` opened, for messages of no request.
    standalone: Option<mpsc::UnboundedSender<Value>>,
}

#[derive(Debug)]
struct Pending {
    /// The request's id as the client sent it.
    id: Value,
    stream: mpsc::UnboundedSender<Value>,
    /// The request's progress token, whose progress notifications belong to its stream.
    progress: Option<Value>,
}

/// One MCP session: a server process, the relay governing it, and the HTTP streams.
#[derive(Debug)]
struct HostedSession {
    id: String,
    server: String,
    agent_id: String,
    /// `None` once the session is closing.
    to_relay: Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>,
    routes: Mutex<Routes>,
    last_used: Mutex<Instant>,
    /// Turns true once, when the session ends.
    ended: watch::Sender<bool>,
}

/// The key of a JSON-RPC id in maps (`1` and `"1"` are different ids).
fn id_key(id: &Value) -> String {
    id.to_string()
}

impl HostedSession {
    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn touch(&self) {
        *self
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed()
    }

    /// A request of the client's is still waiting for its answer.
    fn busy(&self) -> bool {
        !self.routes().pending.is_empty()
    }

    fn is_ended(&self) -> bool {
        *self.ended.borrow()
    }

    /// Ends the session: every request still waiting gets an error answer (so no client waits for
    /// ever), open streams end, the relay's client side closes.
    fn end(&self) {
        if self.ended.send_replace(true) {
            return;
        }
        self.close_input();
        let mut routes = self.routes();
        for (_, pending) in routes.pending.drain() {
            let _ = pending.stream.send(json!({
                "jsonrpc": "2.0",
                "id": pending.id,
                "error": {
                    "code": -32603,
                    "message": format!(
                        "MeshGuard: the MCP session `{}` ended (its server exited, it was deleted or idle, its agent was revoked, or the gateway is stopping) before the server answered",
                        self.id
                    ),
                },
            }));
        }
        routes.order.clear();
        routes.standalone = None;
    }

    fn close_input(&self) {
        self.to_relay
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// Hands one message of the client's to the relay.
    fn send(&self, message: &Value) -> Result<(), HostError> {
        self.touch();
        let guard = self.to_relay.lock().unwrap_or_else(PoisonError::into_inner);
        let sender = guard
            .as_ref()
            .ok_or_else(|| HostError::Ended(self.id.clone()))?;
        sender
            .send(message.to_string().into_bytes())
            .map_err(|_| HostError::Ended(self.id.clone()))
    }

    /// Opens the response stream of a client request, before the request is handed on.
    fn open_request(&self, id: &Value, progress: Option<Value>) -> mpsc::UnboundedReceiver<Value> {
        let (stream, receiver) = mpsc::unbounded_channel();
        let key = id_key(id);
        let mut routes = self.routes();
        routes.order.retain(|k| *k != key);
        routes.order.push_back(key.clone());
        routes.pending.insert(
            key,
            Pending {
                id: id.clone(),
                stream,
                progress,
            },
        );
        receiver
    }

    fn forget_request(&self, id: &Value) {
        let key = id_key(id);
        let mut routes = self.routes();
        routes.pending.remove(&key);
        routes.order.retain(|k| *k != key);
    }

    /// Opens the stream of messages that belong to no request (a second `GET` replaces it).
    fn open_standalone(&self) -> mpsc::UnboundedReceiver<Value> {
        let (stream, receiver) = mpsc::unbounded_channel();
        self.routes().standalone = Some(stream);
        receiver
    }

    /// Routes one line the relay sent the client: a response ends its request's stream; a
    /// progress notification goes to the request that gave its token; anything else of the
    /// server's to the newest open request, else to the `GET` stream, else nowhere (logged).
    fn deliver(&self, line: &[u8]) {
        self.touch();
        let Ok(message) = serde_json::from_slice::<Value>(line) else {
            tracing::warn!(session = %self.id, "the MCP relay sent a line that is not JSON; dropped");
            return;
        };
        let mut routes = self.routes();
        let is_response = message.get("method").is_none();
        if is_response {
            let key = message.get("id").map(id_key).unwrap_or_default();
            routes.order.retain(|k| *k != key);
            if let Some(pending) = routes.pending.remove(&key) {
                let _ = pending.stream.send(message);
            } else {
                tracing::debug!(session = %self.id, id = %key, "an MCP answer for no open request; dropped");
            }
            return;
        }
        let token = (message.get("method").and_then(Value::as_str)
            == Some("notifications/progress"))
        .then(|| message.pointer("/params/progressToken").cloned())
        .flatten();
        if let Some(token) = token
            && let Some(pending) = routes
                .pending
                .values()
                .find(|p| p.progress.as_ref() == Some(&token))
        {
            let _ = pending.stream.send(message);
            return;
        }
        let newest = routes
            .order
            .back()
            .and_then(|key| routes.pending.get(key))
            .map(|p| p.stream.clone());
        let target = newest.or_else(|| routes.standalone.clone());
        match target {
            Some(stream) => {
                let _ = stream.send(message);
            }
            None => {
                tracing::debug!(session = %self.id, "an MCP server message with no open stream; dropped");
            }
        }
    }
}

/// What kind of JSON-RPC message the client sent.
enum Kind {
    Request { id: Value, method: String },
    Other,
}

fn kind_of(message: &Value) -> Result<Kind, HostError> {
    let Value::Object(map) = message else {
        let what = if message.is_array() {
            "a batch: send one JSON-RPC message per request"
        } else {
            "not a JSON-RPC message"
        };
        return Err(HostError::BadMessage(what.into()));
    };
    match (map.get("method"), map.get("id")) {
        (Some(Value::String(method)), Some(id)) if !id.is_null() => Ok(Kind::Request {
            id: id.clone(),
            method: method.clone(),
        }),
        (Some(Value::String(_)), _) | (None, Some(_)) => Ok(Kind::Other),
        _ => Err(HostError::BadMessage(
            "not a JSON-RPC request, notification or response".into(),
        )),
    }
}

/// An SSE stream of `receiver`'s messages, ending when it closes.
fn sse_of(
    receiver: mpsc::UnboundedReceiver<Value>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        let message = receiver.recv().await?;
        let event = Event::default().event("message").data(message.to_string());
        Some((Ok::<_, Infallible>(event), receiver))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn session_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `POST /mcp/{server}` for an authenticated agent: one JSON-RPC message of the client's. An
/// `initialize` starts a session whose checks go to the router `gateway` makes.
pub fn post(
    host: &Arc<McpHost>,
    server: &str,
    agent_id: &str,
    token: &str,
    headers: &HeaderMap,
    body: &[u8],
    gateway: impl FnOnce() -> Arc<dyn InProcessGateway>,
) -> Result<Response, HostError> {
    if !host.servers.contains_key(server) {
        return Err(HostError::UnknownServer(server.to_owned()));
    }
    let message: Value = serde_json::from_slice(body)
        .map_err(|e| HostError::BadMessage(format!("the body is not JSON: {e}")))?;
    let kind = kind_of(&message)?;
    let (session, created) = match session_header(headers) {
        Some(id) => (host.session(&id, server, agent_id)?, false),
        None => match &kind {
            Kind::Request { method, .. } if method == "initialize" => {
                (host.start(server, agent_id, token, gateway())?, true)
            }
            _ => return Err(HostError::NoSession),
        },
    };
    let mut response = match kind {
        Kind::Request { id, .. } => {
            let progress = message.pointer("/params/_meta/progressToken").cloned();
            let receiver = session.open_request(&id, progress);
            if let Err(err) = session.send(&message) {
                session.forget_request(&id);
                return Err(err);
            }
            sse_of(receiver).into_response()
        }
        Kind::Other => {
            session.send(&message)?;
            StatusCode::ACCEPTED.into_response()
        }
    };
    if created && let Ok(value) = HeaderValue::from_str(&session.id) {
        response.headers_mut().insert(SESSION_HEADER, value);
    }
    Ok(response)
}

/// `GET /mcp/{server}`: the stream of the session's messages that belong to no request.
pub fn get(
    host: &McpHost,
    server: &str,
    agent_id: &str,
    headers: &HeaderMap,
) -> Result<Response, HostError> {
    let id = session_header(headers).ok_or(HostError::NoSession)?;
    let session = host.session(&id, server, agent_id)?;
    session.touch();
    Ok(sse_of(session.open_standalone()).into_response())
}

/// `DELETE /mcp/{server}`: the client ends its session.
pub fn delete(
    host: &McpHost,
    server: &str,
    agent_id: &str,
    headers: &HeaderMap,
) -> Result<Response, HostError> {
    let id = session_header(headers).ok_or(HostError::NoSession)?;
    let session = host.session(&id, server, agent_id)?;
    session.end();
    Ok(StatusCode::NO_CONTENT.into_response())
}
