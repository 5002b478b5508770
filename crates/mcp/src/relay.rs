//! The stdio relay: newline-delimited JSON-RPC between the client (our stdin/stdout) and the real
//! server (the child's stdin/stdout). Every message is forwarded as the bytes that arrived, except
//! the requests MeshGuard governs (`tools/call`, `resources/read`, `prompts/get`), which are
//! forwarded only after the gateway allowed them, and the answers to `tools/list`, from which
//! the tools the agent can never use are left out.
//!
//! What the relay refuses, with a JSON-RPC error to the client and nothing forwarded: a line that
//! is not JSON, a batch (MCP has none since 2025-06-18, and a batch would carry calls past the
//! check), a message longer than the limit, a JSON value that is not an object.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ContentBlock, ErrorCode, ErrorData,
    GetPromptRequestParams, JsonRpcError, ReadResourceRequestParams, RequestId,
};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

use crate::gateway::{ApprovalStatus, CallStatus, GatewayClient, GatewayFailure, Listing, Verdict};
use crate::naming::{GovernedCall, GovernedMethod, Naming};

/// The default limit of one message, either way: a tool result may carry a whole file.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// How long the server may take to exit after the client went away before it is killed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The notification by which a client gives up on one of its requests.
const CANCELLED: &str = "notifications/cancelled";

/// The longest single long poll of an approval: between polls the client hears that the call is
/// still waiting.
pub const APPROVAL_POLL: Duration = Duration::from_secs(10);

/// The default of `--approval-wait`.
pub const DEFAULT_APPROVAL_WAIT: Duration = Duration::from_secs(120);

/// Why a governed call is not forwarded, beyond the gateway's own verdicts. Every case is a
/// refusal: nothing here lets a call through.
#[derive(Debug)]
enum Stopped {
    /// The gateway could not be asked or answered nonsense.
    Gateway(GatewayFailure),
    /// The approval was still pending when the wait ran out.
    Undecided { approval_id: String },
    /// The approval ended without a yes.
    Refused {
        approval_id: String,
        status: ApprovalStatus,
    },
}

impl From<GatewayFailure> for Stopped {
    fn from(failure: GatewayFailure) -> Self {
        Stopped::Gateway(failure)
    }
}

/// What the relay needs to govern one server's session.
#[derive(Debug, Clone)]
pub struct Governor {
    /// How calls are named.
    pub naming: Naming,
    /// Who decides.
    pub gateway: GatewayClient,
    /// Keep the tools a preview says are closed in `tools/list`.
    pub show_denied: bool,
    /// The longest message accepted from either side, in bytes.
    pub max_message_bytes: usize,
    /// How long a call that needs approval waits for a human (zero: it does not wait).
    pub approval_wait: Duration,
}

/// Why the relay stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// The server closed its stdout (it exited or crashed).
    ServerClosed,
    /// The client closed its stdin and the server did not close within [`SHUTDOWN_GRACE`].
    ClientClosed,
}

/// A request of the client's forwarded to the server, whose answer the relay waits for.
#[derive(Debug)]
enum Awaited {
    /// A governed call: its answer is recorded under the check's trace id.
    Governed(GovernedAnswer),
    /// A `tools/list`: its answer is filtered.
    ToolsList,
    /// Any other request: its answer passes as it is (kept so that an answer the relay must
    /// drop can still be answered with an error under its id).
    Plain,
}

/// What the record of a governed call needs once the server has answered.
#[derive(Debug)]
struct GovernedAnswer {
    call: GovernedCall,
    trace_id: String,
    audit_id: Option<String>,
    started: Instant,
}

/// The relay's shared state: the two outgoing channels and the requests awaiting an answer.
#[derive(Debug)]
struct Session {
    governor: Governor,
    to_client: mpsc::UnboundedSender<Vec<u8>>,
    /// `None` once the client has gone: closing the server's input tells it to exit.
    to_server: Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>,
    awaited: Mutex<HashMap<String, Awaited>>,
    /// The governed requests not yet forwarded or answered, by id: a `notifications/cancelled`
    /// of one stops its check or its wait for a human, so a call the client gave up on is
    /// never made.
    undecided: Mutex<HashMap<String, Arc<Notify>>>,
}

/// How much of a message over the limit is kept: enough to find its id, which JSON-RPC
/// implementations write before the params or the result.
const HEAD_BYTES: usize = 4096;

/// One line read from either side.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Message(Vec<u8>),
    /// Over the limit: only its first [`HEAD_BYTES`] are kept.
    TooLarge {
        head: Vec<u8>,
    },
    Eof,
}

/// The `id` of a JSON-RPC message whose text is cut short or broken after the id: the top-level
/// keys are read one by one until `id` (a string or an integer). So a request or an answer that
/// cannot be relayed still gets an error under its own id, and nobody waits for it forever.
fn leading_id(bytes: &[u8]) -> Option<Value> {
    let mut rest = bytes.trim_ascii_start().strip_prefix(b"{")?;
    loop {
        rest = rest.trim_ascii_start();
        let mut keys = serde_json::Deserializer::from_slice(rest).into_iter::<String>();
        let key = keys.next()?.ok()?;
        rest = rest.get(keys.byte_offset()..)?.trim_ascii_start();
        rest = rest.strip_prefix(b":")?.trim_ascii_start();
        if key == "id" {
            let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<Value>();
            let id = values.next()?.ok()?;
            return request_id(&id).map(|_| id);
        }
        let mut values =
            serde_json::Deserializer::from_slice(rest).into_iter::<serde::de::IgnoredAny>();
        values.next()?.ok()?;
        rest = rest.get(values.byte_offset()..)?.trim_ascii_start();
        rest = rest.strip_prefix(b",")?;
    }
}

/// Reads one newline-terminated message of at most `limit` bytes; a longer one is skipped up to
/// its newline without being held in memory (only its head is kept).
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R, limit: usize) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let mut too_large = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(match (too_large, line.is_empty()) {
                (true, _) => Line::TooLarge { head: line },
                (false, true) => Line::Eof,
                (false, false) => Line::Message(line),
            });
        }
        let newline = available.iter().position(|b| *b == b'\n');
        let take = newline.unwrap_or(available.len());
        if !too_large {
            line.extend_from_slice(available.get(..take).unwrap_or_default());
            if line.len() > limit {
                too_large = true;
                line.truncate(HEAD_BYTES.min(limit));
                line.shrink_to_fit();
            }
        }
        let consumed = newline.map_or(take, |at| at + 1);
        reader.consume(consumed);
        if newline.is_some() {
            return Ok(if too_large {
                Line::TooLarge { head: line }
            } else {
                Line::Message(line)
            });
        }
    }
}

/// A JSON-RPC error message, as a line.
fn error_line(id: Option<RequestId>, code: ErrorCode, message: String) -> Vec<u8> {
    let error = JsonRpcError::new(
        id,
        ErrorData {
            code,
            message: message.into(),
            data: None,
        },
    );
    to_line(&serde_json::to_value(error).unwrap_or(Value::Null))
}

/// A JSON-RPC result message, as a line.
fn result_line(id: &Value, result: Value) -> Vec<u8> {
    to_line(&json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

fn to_line(value: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(value).unwrap_or_default();
    line.push(b'\n');
    line
}

/// The id of a message, when it is one JSON-RPC allows (string or integer).
fn request_id(id: &Value) -> Option<RequestId> {
    serde_json::from_value(id.clone()).ok()
}

/// The key the awaited map uses for an id: its JSON text, so `1` and `"1"` stay apart.
fn id_key(id: &Value) -> String {
    id.to_string()
}

/// The `isError` tool result a model reads when MeshGuard stops a call.
pub fn refusal_result(text: String) -> Value {
    let mut result = CallToolResult::error(vec![ContentBlock::text(text)]);
    // The result type discriminator belongs to a protocol revision the client may not speak;
    // absent means "complete" in every revision.
    result.result_type = None;
    serde_json::to_value(result).unwrap_or(Value::Null)
}

/// What the model is told when the gateway said no.
pub fn denial_text(target: &str, refusal: &crate::gateway::Refusal) -> String {
    let mut source = Vec::new();
    if let Some(policy) = &refusal.policy {
        source.push(format!("policy {policy}"));
    }
    if let Some(rule) = &refusal.rule {
        source.push(format!("rule {rule}"));
    }
    if source.is_empty() {
        source.push(format!("code {}", refusal.code));
    }
    format!(
        "MeshGuard denied `{target}`: {} ({})",
        refusal.reason,
        source.join(", ")
    )
}

/// What the model is told when a human must approve the call first.
pub fn approval_text(target: &str, approval_id: &str, reason: &str) -> String {
    format!(
        "MeshGuard: `{target}` needs a human's approval first ({reason}). Approval id: {approval_id}. \
         An operator approves it with `meshguard approval approve {approval_id}`; then call it again."
    )
}

/// What the model is told when nobody decided within the approval wait.
pub fn undecided_text(target: &str, approval_id: &str, waited: Duration) -> String {
    format!(
        "MeshGuard: `{target}` needs a human's approval and none came within {} s, so it was not \
         called. Approval id: {approval_id}. An operator approves it with \
         `meshguard approval approve {approval_id}`; then call it again.",
        waited.as_secs()
    )
}

/// What the model is told when the approval it waited for ended without a yes.
pub fn refused_text(target: &str, approval_id: &str, status: ApprovalStatus) -> String {
    let what = match status {
        ApprovalStatus::Denied => "a human denied it",
        ApprovalStatus::Expired => "it expired before anyone decided",
        // Another call with the same arguments used it first.
        ApprovalStatus::Used | ApprovalStatus::Pending | ApprovalStatus::Approved => {
            "another call used it first"
        }
    };
    format!(
        "MeshGuard: `{target}` was not called: its approval {approval_id} did not let it through \
         ({what}). `meshguard approval list --status all` shows it; a new call asks for a new \
         approval, which an operator approves with `meshguard approval approve ID`."
    )
}

/// A `notifications/progress` for the client's `token` while a call waits for a human: the
/// `poll`th of at most one per [`APPROVAL_POLL`] in `wait`. Its `progress` is the share of the
/// polls done, below 1 of a `total` of 1: once the call is forwarded the server may report
/// progress on the same token from 1 up, and progress must only increase.
fn progress_line(
    token: &Value,
    poll: u32,
    wait: Duration,
    target: &str,
    approval_id: &str,
) -> Vec<u8> {
    let polls = wait.as_secs().div_ceil(APPROVAL_POLL.as_secs()).max(1);
    // Lossless: both are far below 2^52.
    let share = f64::from(poll) / (polls as f64 + 1.0);
    to_line(&json!({
        "jsonrpc": "2.0",
        "method": "notifications/progress",
        "params": {
            "progressToken": token,
            "progress": share.min(0.99),
            "total": 1,
            "message": format!(
                "MeshGuard: `{target}` waits for a human's approval ({approval_id}; \
                 `meshguard approval approve {approval_id}`)"
            ),
        },
    }))
}

/// What the model is told when the gateway could not decide: the call was not made.
pub fn failure_text(target: &str, failure: &GatewayFailure) -> String {
    format!("MeshGuard could not check `{target}`, so it was not called: {failure}")
}

impl Session {
    fn send_client(&self, line: Vec<u8>) {
        // A closed channel means the client writer ended: the session is over anyway.
        let _ = self.to_client.send(line);
    }

    fn send_server(&self, line: Vec<u8>) {
        if let Some(to_server) = self
            .to_server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            // A closed channel means the server writer ended: the server is gone.
            let _ = to_server.send(line);
        }
    }

    fn close_server_input(&self) {
        self.to_server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    fn await_answer(&self, id: &Value, awaited: Awaited) {
        self.awaited
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id_key(id), awaited);
    }

    fn watch_cancellation(&self, id: &Value) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        self.undecided
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id_key(id), Arc::clone(&notify));
        notify
    }

    fn unwatch_cancellation(&self, id: &Value) {
        self.undecided
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id_key(id));
    }

    /// Stops the check or the wait of the governed request a `notifications/cancelled` names.
    fn cancel_undecided(&self, notification: &Map<String, Value>) {
        let Some(id) = notification.get("params").and_then(|p| p.get("requestId")) else {
            return;
        };
        let undecided = self
            .undecided
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(notify) = undecided.get(&id_key(id)) {
            // A permit is kept when the task is not waiting yet.
            notify.notify_one();
        }
    }

    fn take_awaited(&self, id: &Value) -> Option<Awaited> {
        self.awaited
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id_key(id))
    }

    /// One line from the client.
    fn from_client(self: &Arc<Self>, line: Vec<u8>, tasks: &mut JoinSet<()>) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let message: Value = match serde_json::from_slice(&line) {
            Ok(message) => message,
            Err(e) => {
                let text =
                    format!("MeshGuard: the message is not JSON ({e}); nothing was forwarded");
                return self.send_client(error_line(None, ErrorCode::PARSE_ERROR, text));
            }
        };
        let object = match message {
            Value::Object(object) => object,
            Value::Array(batch) => return self.refuse_batch(&batch),
            _ => {
                let text =
                    "MeshGuard: a JSON-RPC message is an object; nothing was forwarded".to_owned();
                return self.send_client(error_line(None, ErrorCode::INVALID_REQUEST, text));
            }
        };
        let method = object.get("method").and_then(Value::as_str);
        let id = object.get("id").filter(|id| !id.is_null());
        if let Some(governed) = method.and_then(GovernedMethod::of) {
            // Governed whatever its form: a governed method without a usable id (a notification,
            // an id of another type) would reach a server that might act on it unchecked.
            let Some(id) = id.filter(|id| request_id(id).is_some()).cloned() else {
                let text = format!(
                    "MeshGuard: `{}` needs a string or integer id; nothing was forwarded",
                    method.unwrap_or_default()
                );
                return self.send_client(error_line(None, ErrorCode::INVALID_REQUEST, text));
            };
            // Watched before the check starts, so a cancellation right behind it is not missed.
            let cancelled = self.watch_cancellation(&id);
            let session = Arc::clone(self);
            tasks.spawn(async move {
                tokio::select! {
                    () = session.govern(governed, id.clone(), object, line) => {}
                    // The client no longer waits for an answer, and none is sent.
                    () = cancelled.notified() => {
                        tracing::info!(request = %id, "cancelled by the client before it was decided; not forwarded");
                    }
                }
                session.unwatch_cancellation(&id);
            });
            return;
        }
        if method == Some(CANCELLED) {
            self.cancel_undecided(&object);
        }
        if let (Some(method), Some(id)) = (method, id) {
            let awaited = if method == "tools/list" {
                Awaited::ToolsList
            } else {
                Awaited::Plain
            };
            self.await_answer(id, awaited);
        }
        // Requests, notifications (progress, cancellation, …) and answers to the server's requests.
        self.send_server(line);
    }

    fn refuse_batch(&self, batch: &[Value]) {
        let text = "MeshGuard: JSON-RPC batches are not supported; nothing was forwarded";
        let ids: Vec<RequestId> = batch
            .iter()
            .filter_map(|m| m.get("id"))
            .filter_map(request_id)
            .collect();
        if ids.is_empty() {
            return self.send_client(error_line(None, ErrorCode::INVALID_REQUEST, text.into()));
        }
        for id in ids {
            self.send_client(error_line(
                Some(id),
                ErrorCode::INVALID_REQUEST,
                text.into(),
            ));
        }
    }

    /// Checks a governed request, then forwards it or answers it.
    async fn govern(
        &self,
        method: GovernedMethod,
        id: Value,
        request: Map<String, Value>,
        line: Vec<u8>,
    ) {
        let params = request.get("params").cloned().unwrap_or(Value::Null);
        let naming = &self.governor.naming;
        let call = match method {
            GovernedMethod::ToolsCall => serde_json::from_value::<CallToolRequestParams>(params)
                .map(|p| naming.tool_call(&p.name, p.arguments.unwrap_or_default())),
            GovernedMethod::ResourcesRead => {
                serde_json::from_value::<ReadResourceRequestParams>(params)
                    .map(|p| naming.resource_read(&p.uri))
            }
            GovernedMethod::PromptsGet => serde_json::from_value::<GetPromptRequestParams>(params)
                .map(|p| naming.prompt_get(&p.name, p.arguments.unwrap_or_default())),
        };
        let call = match call {
            Ok(call) => call,
            Err(e) => {
                let text = format!("MeshGuard: invalid params ({e}); nothing was forwarded");
                return self.send_client(error_line(
                    request_id(&id),
                    ErrorCode::INVALID_PARAMS,
                    text,
                ));
            }
        };
        let trace_id = uuid::Uuid::now_v7().to_string();
        let progress = request
            .get("params")
            .and_then(|p| p.pointer("/_meta/progressToken"))
            .filter(|token| request_id(token).is_some())
            .cloned();
        let text = match self.verdict_of(&call, &trace_id, progress).await {
            Ok(Verdict::Allowed { audit_id }) => {
                let started = Instant::now();
                let governed = GovernedAnswer {
                    call,
                    trace_id,
                    audit_id,
                    started,
                };
                self.await_answer(&id, Awaited::Governed(governed));
                self.send_server(line);
                return;
            }
            Ok(Verdict::Denied(refusal)) => denial_text(&call.target, &refusal),
            Ok(Verdict::ApprovalRequired {
                approval_id,
                reason,
            }) => approval_text(&call.target, &approval_id, &reason),
            Err(Stopped::Gateway(failure)) => {
                tracing::warn!(target = %call.target, %failure, "call not forwarded");
                failure_text(&call.target, &failure)
            }
            Err(Stopped::Undecided { approval_id }) => {
                undecided_text(&call.target, &approval_id, self.governor.approval_wait)
            }
            Err(Stopped::Refused {
                approval_id,
                status,
            }) => refused_text(&call.target, &approval_id, status),
        };
        let answer = match method {
            // A tool result the model reads, so the session goes on.
            GovernedMethod::ToolsCall => result_line(&id, refusal_result(text)),
            // Resources and prompts have no error result: a JSON-RPC error says the same.
            GovernedMethod::ResourcesRead | GovernedMethod::PromptsGet => {
                error_line(request_id(&id), ErrorCode::INVALID_REQUEST, text)
            }
        };
        self.send_client(answer);
    }

    /// The check of `call`; when it needs a human, waits for one (at most the approval wait,
    /// telling the client it is waiting when it gave a progress token) and checks again with the
    /// granted approval, whose answer is the verdict.
    async fn verdict_of(
        &self,
        call: &GovernedCall,
        trace_id: &str,
        progress: Option<Value>,
    ) -> Result<Verdict, Stopped> {
        let gateway = &self.governor.gateway;
        let verdict = gateway.check(call, trace_id, None).await?;
        let Verdict::ApprovalRequired { approval_id, .. } = &verdict else {
            return Ok(verdict);
        };
        let wait = self.governor.approval_wait;
        if wait.is_zero() {
            return Ok(verdict);
        }
        let deadline = Instant::now() + wait;
        let mut polls = 0_u32;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Stopped::Undecided {
                    approval_id: approval_id.clone(),
                });
            }
            if let Some(token) = &progress {
                polls += 1;
                self.send_client(progress_line(token, polls, wait, &call.target, approval_id));
            }
            let poll = left.min(APPROVAL_POLL).max(Duration::from_secs(1));
            match gateway.poll_approval(approval_id, poll, trace_id).await? {
                ApprovalStatus::Pending => {}
                ApprovalStatus::Approved => break,
                status @ (ApprovalStatus::Denied
                | ApprovalStatus::Expired
                | ApprovalStatus::Used) => {
                    return Err(Stopped::Refused {
                        approval_id: approval_id.clone(),
                        status,
                    });
                }
            }
        }
        // The approval is used up by this check only if the gateway allows it.
        Ok(gateway.check(call, trace_id, Some(approval_id)).await?)
    }

    /// One line from the server.
    fn from_server(self: &Arc<Self>, line: Vec<u8>, tasks: &mut JoinSet<()>) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let message = match serde_json::from_slice(&line) {
            Ok(Value::Object(message)) => message,
            Ok(_) | Err(_) => {
                let why = "a message that is not a JSON-RPC object";
                return self.server_message_lost(&line, why, tasks);
            }
        };
        let is_answer = !message.contains_key("method");
        let awaited = match message.get("id") {
            Some(id) if is_answer => self.take_awaited(id),
            _ => None,
        };
        match awaited {
            None | Some(Awaited::Plain) => self.send_client(line),
            Some(Awaited::Governed(governed)) => {
                let status = match (message.get("error"), message.get("result")) {
                    (None, Some(result)) if result.get("isError") != Some(&Value::Bool(true)) => {
                        CallStatus::Success
                    }
                    _ => CallStatus::Error,
                };
                self.send_client(line);
                self.record(governed, status, tasks);
            }
            Some(Awaited::ToolsList) => {
                let session = Arc::clone(self);
                tasks.spawn(async move {
                    let filtered = session.filter_tools(Value::Object(message)).await;
                    session.send_client(to_line(&filtered));
                });
            }
        }
    }

    /// A message from the server that cannot be relayed (`text` is all of it or its head). When
    /// it is the answer to a request of the client's, the client gets an error under that id, so
    /// it does not wait forever; a governed call is recorded as failed.
    fn server_message_lost(self: &Arc<Self>, text: &[u8], why: &str, tasks: &mut JoinSet<()>) {
        tracing::warn!("the server sent {why}; it was dropped");
        let message = format!("MeshGuard: the server sent {why}; it was dropped");
        let id = leading_id(text);
        let awaited = id.as_ref().and_then(|id| self.take_awaited(id));
        let answer_id = match awaited {
            None => None,
            Some(Awaited::Governed(governed)) => {
                self.record(governed, CallStatus::Error, tasks);
                id.as_ref().and_then(request_id)
            }
            Some(Awaited::Plain | Awaited::ToolsList) => id.as_ref().and_then(request_id),
        };
        let error = ErrorCode::INTERNAL_ERROR;
        self.send_client(error_line(answer_id, error, message));
    }

    /// Records the outcome of a governed call under its check's trace id.
    fn record(
        self: &Arc<Self>,
        governed: GovernedAnswer,
        status: CallStatus,
        tasks: &mut JoinSet<()>,
    ) {
        let session = Arc::clone(self);
        tasks.spawn(async move {
            let GovernedAnswer { call, trace_id, audit_id, started } = governed;
            let recorded = session
                .governor
                .gateway
                .record(&call, &trace_id, audit_id.as_deref(), status, started.elapsed())
                .await;
            if let Err(failure) = recorded {
                tracing::warn!(target = %call.target, %failure, "the call's outcome was not recorded");
            }
        });
    }

    /// Leaves out of a `tools/list` answer the tools the agent can never use, and says in the
    /// description which need an approval. A tool whose preview failed stays listed: its calls
    /// are still checked one by one.
    async fn filter_tools(&self, mut answer: Value) -> Value {
        let Some(Value::Array(tools)) = answer.pointer_mut("/result/tools") else {
            return answer;
        };
        let trace_id = uuid::Uuid::now_v7().to_string();
        let mut kept = Vec::with_capacity(tools.len());
        for mut tool in std::mem::take(tools) {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                kept.push(tool);
                continue;
            };
            let call = self.governor.naming.tool_listing(name);
            match self.governor.gateway.preview(&call, &trace_id).await {
                Ok(Listing::Closed) if !self.governor.show_denied => continue,
                Ok(Listing::NeedsApproval) => {
                    let note = "(MeshGuard: each call needs a human's approval.)";
                    let description = match tool.get("description").and_then(Value::as_str) {
                        Some(text) => format!("{text} {note}"),
                        None => note.to_owned(),
                    };
                    if let Some(object) = tool.as_object_mut() {
                        object.insert("description".into(), Value::String(description));
                    }
                }
                Ok(_) => {}
                Err(failure) => tracing::warn!(tool = name, %failure, "tool listed unchecked"),
            }
            kept.push(tool);
        }
        if let Some(Value::Array(tools)) = answer.pointer_mut("/result/tools") {
            *tools = kept;
        }
        answer
    }
}

/// Writes each line of `lines` to `out`, flushing after each: the peer reads message by message.
async fn write_lines<W: AsyncWrite + Unpin>(
    mut out: W,
    mut lines: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    while let Some(line) = lines.recv().await {
        let mut line = line;
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        if out.write_all(&line).await.is_err() || out.flush().await.is_err() {
            break;
        }
    }
    let _ = out.shutdown().await;
}

impl Governor {
    /// Relays between the client (`client_in`, `client_out`) and the server (`server_in`,
    /// `server_out`) until the server closes its output, or the client closed its input and the
    /// server did not follow within [`SHUTDOWN_GRACE`]. The server's input is closed as soon as
    /// the client's is (and the checks under way are done), which tells a stdio server to exit.
    pub async fn relay<CI, CO, SI, SO>(
        self,
        client_in: CI,
        client_out: CO,
        server_in: SI,
        server_out: SO,
    ) -> RelayEnd
    where
        CI: AsyncRead + Unpin + Send + 'static,
        CO: AsyncWrite + Unpin + Send + 'static,
        SI: AsyncWrite + Unpin + Send + 'static,
        SO: AsyncRead + Unpin + Send + 'static,
    {
        let limit = self.max_message_bytes;
        let (to_client, client_lines) = mpsc::unbounded_channel();
        let (to_server, server_lines) = mpsc::unbounded_channel();
        let client_writer = tokio::spawn(write_lines(client_out, client_lines));
        let server_writer = tokio::spawn(write_lines(server_in, server_lines));
        let session = Arc::new(Session {
            governor: self,
            to_client,
            to_server: Mutex::new(Some(to_server)),
            awaited: Mutex::new(HashMap::new()),
            undecided: Mutex::new(HashMap::new()),
        });

        let from_server = {
            let session = Arc::clone(&session);
            tokio::spawn(async move {
                let mut reader = BufReader::new(server_out);
                let mut tasks = JoinSet::new();
                loop {
                    match read_line(&mut reader, limit).await {
                        Ok(Line::Message(line)) => session.from_server(line, &mut tasks),
                        Ok(Line::TooLarge { head }) => {
                            let why = format!("a message larger than {limit} bytes");
                            session.server_message_lost(&head, &why, &mut tasks);
                        }
                        Ok(Line::Eof) | Err(_) => break,
                    }
                }
                // Records and filtered listings under way still reach the gateway and the client.
                while tasks.join_next().await.is_some() {}
            })
        };

        let from_client = {
            let session = Arc::clone(&session);
            tokio::spawn(async move {
                let mut reader = BufReader::new(client_in);
                let mut tasks = JoinSet::new();
                loop {
                    match read_line(&mut reader, limit).await {
                        Ok(Line::Message(line)) => session.from_client(line, &mut tasks),
                        Ok(Line::TooLarge { head }) => {
                            let text = format!(
                                "MeshGuard: the message is larger than {limit} bytes; nothing was forwarded"
                            );
                            let id = leading_id(&head).as_ref().and_then(request_id);
                            let error = ErrorCode::INVALID_REQUEST;
                            session.send_client(error_line(id, error, text));
                        }
                        Ok(Line::Eof) | Err(_) => break,
                    }
                }
                while tasks.join_next().await.is_some() {}
                session.close_server_input();
            })
        };
        // The readers hold the session; when both are gone the client's channel closes.
        drop(session);
        finish(from_client, from_server, client_writer, server_writer).await
    }
}

/// Waits for the end of the session: the server's output closing ends it at once; the client's
/// input closing closes the server's input and gives the server [`SHUTDOWN_GRACE`] to finish.
async fn finish(
    mut from_client: tokio::task::JoinHandle<()>,
    mut from_server: tokio::task::JoinHandle<()>,
    client_writer: tokio::task::JoinHandle<()>,
    server_writer: tokio::task::JoinHandle<()>,
) -> RelayEnd {
    let end = tokio::select! {
        _ = &mut from_server => RelayEnd::ServerClosed,
        _ = &mut from_client => {
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut from_server).await {
                Ok(_) => RelayEnd::ServerClosed,
                Err(_) => RelayEnd::ClientClosed,
            }
        }
    };
    from_client.abort();
    from_server.abort();
    server_writer.abort();
    // What was already said to the client still reaches it.
    let _ = tokio::time::timeout(Duration::from_secs(1), client_writer).await;
    end
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, DuplexStream, Lines, duplex};

    use super::*;
    use crate::config::ServerConfig;

    /// A relay between two in-memory pipes: the test plays the client and the server. The gateway
    /// is a port nothing listens on, so any call that needs a check fails closed.
    struct Harness {
        client_in: DuplexStream,
        client_out: Lines<BufReader<DuplexStream>>,
        server_in: Lines<BufReader<DuplexStream>>,
        server_out: DuplexStream,
        relay: tokio::task::JoinHandle<RelayEnd>,
    }

    fn harness(max_message_bytes: usize) -> Harness {
        let governor = Governor {
            naming: Naming::new("fs", ServerConfig::default(), PathBuf::from("/")),
            gateway: GatewayClient::new("http://127.0.0.1:1", Some("token".into())).unwrap(),
            show_denied: false,
            max_message_bytes,
            approval_wait: DEFAULT_APPROVAL_WAIT,
        };
        let (client_in, relay_client_in) = duplex(1 << 20);
        let (relay_client_out, client_out) = duplex(1 << 20);
        let (relay_server_in, server_in) = duplex(1 << 20);
        let (server_out, relay_server_out) = duplex(1 << 20);
        let relay = tokio::spawn(governor.relay(
            relay_client_in,
            relay_client_out,
            relay_server_in,
            relay_server_out,
        ));
        Harness {
            client_in,
            client_out: BufReader::new(client_out).lines(),
            server_in: BufReader::new(server_in).lines(),
            server_out,
            relay,
        }
    }

    async fn next(lines: &mut Lines<BufReader<DuplexStream>>) -> Option<String> {
        tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("no message within 10 s")
            .unwrap()
    }

    async fn next_json(lines: &mut Lines<BufReader<DuplexStream>>) -> Value {
        serde_json::from_str(&next(lines).await.unwrap()).unwrap()
    }

    /// Sends a ping through and expects it on the server's side: whatever the client sent
    /// before it was not forwarded, since the pipe keeps order.
    async fn assert_nothing_forwarded_before_a_ping(h: &mut Harness) {
        let ping = r#"{"jsonrpc":"2.0","id":"ping-1","method":"ping"}"#;
        h.client_in
            .write_all(format!("{ping}\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(next(&mut h.server_in).await.as_deref(), Some(ping));
    }

    #[tokio::test]
    async fn messages_it_does_not_govern_pass_both_ways_byte_for_byte() {
        let mut h = harness(DEFAULT_MAX_MESSAGE_BYTES);
        let from_client = [
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#,
            r#"{"method":"notifications/cancelled","jsonrpc":"2.0","params":{"requestId":7}}"#,
            r#"{"jsonrpc":"2.0","id":"srv-1","result":{"role":"assistant","content":{"type":"text","text":"hi"}}}"#,
            r#"{"jsonrpc":"2.0","id":2,"method":"vendor/unknown","params":{"x":  1}}"#,
        ];
        for line in from_client {
            h.client_in
                .write_all(format!("{line}\n").as_bytes())
                .await
                .unwrap();
            assert_eq!(next(&mut h.server_in).await.as_deref(), Some(line));
        }
        let from_server = [
            r#"{"jsonrpc":"2.0","id":1,"result":{"capabilities":{}}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"p","progress":1}}"#,
            r#"{"jsonrpc":"2.0","id":"srv-1","method":"sampling/createMessage","params":{"messages":[]}}"#,
        ];
        for line in from_server {
            h.server_out
                .write_all(format!("{line}\n").as_bytes())
                .await
                .unwrap();
            assert_eq!(next(&mut h.client_out).await.as_deref(), Some(line));
        }
    }

    #[tokio::test]
    async fn malformed_json_is_answered_with_a_parse_error_and_not_forwarded() {
        let mut h = harness(DEFAULT_MAX_MESSAGE_BYTES);
        h.client_in
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\"\n")
            .await
            .unwrap();
        let answer = next_json(&mut h.client_out).await;
        assert_eq!(answer["error"]["code"], -32700);
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not JSON")
        );
        h.client_in.write_all(b"42\n").await.unwrap();
        assert_eq!(next_json(&mut h.client_out).await["error"]["code"], -32600);
        assert_nothing_forwarded_before_a_ping(&mut h).await;
    }

    #[tokio::test]
    async fn a_batch_is_refused_for_each_of_its_requests() {
        let mut h = harness(DEFAULT_MAX_MESSAGE_BYTES);
        let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"write_file","arguments":{"path":"/x"}}},{"jsonrpc":"2.0","id":"b","method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/initialized"}]"#;
        h.client_in
            .write_all(format!("{batch}\n").as_bytes())
            .await
            .unwrap();
        for id in [json!(1), json!("b")] {
            let answer = next_json(&mut h.client_out).await;
            assert_eq!(answer["id"], id);
            assert_eq!(answer["error"]["code"], -32600);
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("batches")
            );
        }
        assert_nothing_forwarded_before_a_ping(&mut h).await;
    }

    #[tokio::test]
    async fn a_message_over_the_limit_is_refused_and_the_session_goes_on() {
        let mut h = harness(1024);
        let huge = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"write_file","arguments":{{"content":"{}"}}}}}}"#,
            "x".repeat(4096)
        );
        h.client_in
            .write_all(format!("{huge}\n").as_bytes())
            .await
            .unwrap();
        let answer = next_json(&mut h.client_out).await;
        assert_eq!(answer["id"], 1);
        assert_eq!(answer["error"]["code"], -32600);
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("larger than 1024 bytes")
        );
        assert_nothing_forwarded_before_a_ping(&mut h).await;
        // From the server too: dropped, and the client is told.
        h.server_out
            .write_all(format!("{}\n", "y".repeat(4096)).as_bytes())
            .await
            .unwrap();
        let answer = next_json(&mut h.client_out).await;
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("the server sent")
        );
    }

    #[tokio::test]
    async fn a_call_the_gateway_cannot_check_is_not_forwarded() {
        let mut h = harness(DEFAULT_MAX_MESSAGE_BYTES);
        let call = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"write_file","arguments":{"path":"/srv/a","content":"x"}}}"#;
        h.client_in
            .write_all(format!("{call}\n").as_bytes())
            .await
            .unwrap();
        let answer = next_json(&mut h.client_out).await;
        assert_eq!(answer["id"], 5);
        assert_eq!(answer["result"]["isError"], true);
        let text = answer["result"]["content"][0]["text"].as_str().unwrap();
        assert!(
            text.starts_with("MeshGuard could not check `write_file`, so it was not called"),
            "{text}"
        );
        assert!(text.contains("cannot be reached"), "{text}");
        // A resource read gets the same refusal as a JSON-RPC error; bad params are refused too.
        let read = r#"{"jsonrpc":"2.0","id":6,"method":"resources/read","params":{"uri":"file:///etc/passwd"}}"#;
        h.client_in
            .write_all(format!("{read}\n").as_bytes())
            .await
            .unwrap();
        let answer = next_json(&mut h.client_out).await;
        assert_eq!(answer["id"], 6);
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("`resources/read`")
        );
        let bad = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"arguments":{}}}"#;
        h.client_in
            .write_all(format!("{bad}\n").as_bytes())
            .await
            .unwrap();
        let answer = next_json(&mut h.client_out).await;
        assert_eq!(
            (answer["id"].clone(), answer["error"]["code"].clone()),
            (json!(7), json!(-32602))
        );
        assert_nothing_forwarded_before_a_ping(&mut h).await;
    }

    #[tokio::test]
    async fn a_governed_method_without_a_usable_id_is_refused() {
        let mut h = harness(DEFAULT_MAX_MESSAGE_BYTES);
        let forms = [
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"write_file","arguments":{}}}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"write_file"}}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"resources/read","params":{"uri":"file:///x"}}"#,
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"prompts/get","params":{"name":"p"}}"#,
        ];
        for form in forms {
            h.client_in
                .write_all(format!("{form}\n").as_bytes())
                .await
                .unwrap();
            let answer = next_json(&mut h.client_out).await;
            assert_eq!(answer["error"]["code"], -32600, "{form}");
            assert!(answer["id"].is_null());
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("needs a string or integer id"),
                "{message}"
            );
        }
        assert_nothing_forwarded_before_a_ping(&mut h).await;
    }

    #[tokio::test]
    async fn the_relay_ends_with_the_server_and_closes_the_server_s_input_with_the_client() {
        let h = harness(DEFAULT_MAX_MESSAGE_BYTES);
        let Harness {
            client_in,
            mut server_in,
            server_out,
            relay,
            ..
        } = h;
        drop(client_in);
        // The server sees its input close, and the relay ends when the server closes its output.
        assert_eq!(next(&mut server_in).await, None);
        drop(server_out);
        let end = tokio::time::timeout(Duration::from_secs(10), relay)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(end, RelayEnd::ServerClosed);
    }

    #[tokio::test]
    async fn lines_are_read_up_to_the_limit() {
        let text: &[u8] = b"short\nthis one is too long\nlast";
        let mut reader = BufReader::with_capacity(4, text);
        assert_eq!(
            read_line(&mut reader, 8).await.unwrap(),
            Line::Message(b"short".to_vec())
        );
        assert_eq!(
            read_line(&mut reader, 8).await.unwrap(),
            Line::TooLarge {
                head: b"this one".to_vec()
            }
        );
        assert_eq!(
            read_line(&mut reader, 8).await.unwrap(),
            Line::Message(b"last".to_vec())
        );
        assert_eq!(read_line(&mut reader, 8).await.unwrap(), Line::Eof);
    }

    #[test]
    fn the_id_of_a_cut_or_broken_message_is_found_when_it_comes_first() {
        let id = |text: &str| leading_id(text.as_bytes());
        assert_eq!(
            id(r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"text":"xx"#),
            Some(json!(7))
        );
        assert_eq!(id(r#" { "id" : "a\"b" , "method": "#), Some(json!("a\"b")));
        assert_eq!(
            id(r#"{"jsonrpc":"2.0","params":{"id":1},"id":2}"#),
            Some(json!(2))
        );
        assert_eq!(id(r#"{"result":"cut short"#), None);
        assert_eq!(id(r#"{"id":null}"#), None);
        assert_eq!(id(r#"{"id":{"x":1}}"#), None);
        assert_eq!(id("[1]"), None);
        assert_eq!(id(""), None);
    }

    #[tokio::test]
    async fn an_answer_the_relay_must_drop_still_ends_the_client_s_wait() {
        let mut h = harness(1024);
        for (id, method) in [(1, "resources/list"), (2, "prompts/list")] {
            let request = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}"}}"#);
            h.client_in
                .write_all(format!("{request}\n").as_bytes())
                .await
                .unwrap();
            assert_eq!(next(&mut h.server_in).await, Some(request));
        }
        // Too large: the id is read from the head of the message.
        let huge = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"x":"{}"}}}}"#,
            "y".repeat(4096)
        );
        h.server_out
            .write_all(format!("{huge}\n").as_bytes())
            .await
            .unwrap();
        let answer = next_json(&mut h.client_out).await;
        assert_eq!(answer["id"], 1);
        assert_eq!(answer["error"]["code"], -32603);
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("larger than 1024 bytes")
        );
        // Broken after the id.
        h.server_out
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{oops}\n")
            .await
            .unwrap();
        let answer = next_json(&mut h.client_out).await;
        assert_eq!(answer["id"], 2);
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not a JSON-RPC object")
        );
        // Broken with an id nobody waits for: reported without one.
        h.server_out.write_all(b"{\"id\":99,\n").await.unwrap();
        assert!(next_json(&mut h.client_out).await["id"].is_null());
    }

    #[test]
    fn a_denial_names_the_policy_and_the_rule() {
        let refusal = crate::gateway::Refusal {
            code: "denied_by_rule".into(),
            reason: "writes are not allowed".into(),
            policy: Some("mcp-filesystem".into()),
            rule: Some("deny-writes".into()),
        };
        assert_eq!(
            denial_text("write_file", &refusal),
            "MeshGuard denied `write_file`: writes are not allowed (policy mcp-filesystem, rule deny-writes)"
        );
        let result = refusal_result("no".into());
        assert_eq!(
            result,
            json!({"content": [{"type": "text", "text": "no"}], "isError": true})
        );
        let text = approval_text("write_file", "apr_1", "a human must decide");
        assert!(text.contains("meshguard approval approve apr_1"), "{text}");
    }

    #[test]
    fn a_call_that_waited_in_vain_names_its_approval() {
        let text = undecided_text("write_file", "apr_1", Duration::from_secs(120));
        assert!(text.contains("within 120 s"), "{text}");
        assert!(text.contains("meshguard approval approve apr_1"), "{text}");
        let text = refused_text("write_file", "apr_1", ApprovalStatus::Denied);
        assert!(
            text.contains("apr_1") && text.contains("a human denied it"),
            "{text}"
        );
        let text = refused_text("write_file", "apr_1", ApprovalStatus::Expired);
        assert!(text.contains("expired"), "{text}");
    }

    #[test]
    fn waiting_is_reported_as_progress_on_the_clients_token() {
        let line = progress_line(
            &json!("tok"),
            2,
            Duration::from_secs(120),
            "write_file",
            "apr_1",
        );
        let sent: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(sent["method"], "notifications/progress");
        assert_eq!(sent["params"]["progressToken"], "tok");
        // Two of at most twelve polls: a share below 1, so the server's own count can follow.
        let progress = sent["params"]["progress"].as_f64().unwrap();
        assert!((progress - 2.0 / 13.0).abs() < 1e-9, "{progress}");
        assert_eq!(sent["params"]["total"], 1);
        let message = sent["params"]["message"].as_str().unwrap();
        assert!(
            message.contains("meshguard approval approve apr_1"),
            "{message}"
        );
        assert!(line.ends_with(b"\n") && !line[..line.len() - 1].contains(&b'\n'));
    }
}
