//! A streamable-HTTP MCP server as the relay's server side: the relay speaks lines of JSON-RPC,
//! as to a stdio server, and this bridge carries each message to the upstream URL (`POST`, with
//! the operator's headers and the upstream's `Mcp-Session-Id`) and each message of the upstream's
//! (a JSON body, or the events of an SSE response or of the `GET` stream) back as a line. So the
//! gateway governs a remote server exactly as a local one, and the agent never holds the
//! upstream's credentials.
//!
//! Every failure of a request's `POST` (unreachable, a non-2xx status, a body that is no
//! JSON-RPC) answers that request with a JSON-RPC error, so no client waits for an answer that
//! cannot come. When the relay closes its side (the client went away), the bridge ends the
//! upstream session with `DELETE` and closes its output.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// The header that names the upstream's session.
const SESSION: &str = "mcp-session-id";
/// The header that names the negotiated protocol revision.
const PROTOCOL: &str = "mcp-protocol-version";
/// How long connecting to the upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest pipe buffer between the relay and the bridge.
const PIPE_BYTES: usize = 64 * 1024;

/// Why an upstream cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Not an `http://` or `https://` URL.
    #[error("`{0}` is not an http:// or https:// URL")]
    BadUrl(String),
    /// A header name or value that HTTP cannot carry.
    #[error("header `{0}`: not a valid HTTP header")]
    BadHeader(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(String),
}

/// One streamable-HTTP MCP server, ready to bridge sessions to.
#[derive(Clone)]
pub struct HttpUpstream {
    url: reqwest::Url,
    headers: HeaderMap,
    client: reqwest::Client,
}

impl std::fmt::Debug for HttpUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The headers hold the upstream's credentials: never printed.
        f.debug_struct("HttpUpstream")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

/// The upstream session as the bridge learns it.
#[derive(Debug, Default)]
struct Learned {
    session: Option<HeaderValue>,
    protocol: Option<HeaderValue>,
    listening: bool,
}

impl HttpUpstream {
    /// An upstream at `url` that receives `headers` (the operator's credentials) on every request.
    pub fn new(url: &str, headers: &[(String, String)]) -> Result<HttpUpstream, UpstreamError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| UpstreamError::BadUrl(url.to_owned()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(UpstreamError::BadUrl(url.to_owned()));
        }
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            let bad = || UpstreamError::BadHeader(name.clone());
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
            let mut value = HeaderValue::from_str(value).map_err(|_| bad())?;
            value.set_sensitive(true);
            map.insert(header, value);
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| UpstreamError::Client(e.to_string()))?;
        Ok(HttpUpstream {
            url: parsed,
            headers: map,
            client,
        })
    }

    /// Starts a bridge for one session and returns the relay's two ends of it: where the relay
    /// writes the server's input, and where it reads the server's output.
    pub fn open(&self) -> (DuplexStream, DuplexStream) {
        let (relay_writes, bridge_reads) = tokio::io::duplex(PIPE_BYTES);
        let (bridge_writes, relay_reads) = tokio::io::duplex(PIPE_BYTES);
        let bridge = Bridge {
            upstream: self.clone(),
            learned: Arc::new(Mutex::new(Learned::default())),
        };
        tokio::spawn(bridge.run(bridge_reads, bridge_writes));
        (relay_writes, relay_reads)
    }
}

/// One session's bridge.
#[derive(Clone)]
struct Bridge {
    upstream: HttpUpstream,
    learned: Arc<Mutex<Learned>>,
}

/// A JSON-RPC error answer to `message` when it is a request (notifications get none).
fn error_for(message: &Value, text: String) -> Option<Vec<u8>> {
    let id = message.get("id").filter(|id| !id.is_null())?;
    message.get("method")?;
    Some(
        json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": text}})
            .to_string()
            .into_bytes(),
    )
}

impl Bridge {
    fn learned(&self) -> std::sync::MutexGuard<'_, Learned> {
        self.learned.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn run(self, from_relay: DuplexStream, mut to_relay: DuplexStream) {
        let (out, mut lines) = mpsc::unbounded_channel::<Vec<u8>>();
        let writer = tokio::spawn(async move {
            while let Some(mut line) = lines.recv().await {
                line.push(b'\n');
                if to_relay.write_all(&line).await.is_err() {
                    break;
                }
            }
            let _ = to_relay.shutdown().await;
        });
        let mut tasks = JoinSet::new();
        let mut reader = BufReader::new(from_relay);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let Ok(message) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let method = message.get("method").and_then(Value::as_str);
            if method == Some("initialize") {
                // The session id comes with this answer: nothing else is sent before it.
                self.post(&message, &out).await;
                continue;
            }
            let opens_listening = method == Some("notifications/initialized");
            let bridge = self.clone();
            let sink = out.clone();
            tasks.spawn(async move { bridge.post(&message, &sink).await });
            if opens_listening && !std::mem::replace(&mut self.learned().listening, true) {
                let bridge = self.clone();
                let sink = out.clone();
                tasks.spawn(async move { bridge.listen(&sink).await });
            }
        }
        // The client has gone: end the upstream session, then the server's output.
        tasks.abort_all();
        self.delete().await;
        drop(out);
        let _ = writer.await;
    }

    fn request(&self, method: reqwest::Method) -> reqwest::RequestBuilder {
        let mut request = self
            .upstream
            .client
            .request(method, self.upstream.url.clone())
            .headers(self.upstream.headers.clone());
        let learned = self.learned();
        if let Some(session) = &learned.session {
            request = request.header(SESSION, session.clone());
        }
        if let Some(protocol) = &learned.protocol {
            request = request.header(PROTOCOL, protocol.clone());
        }
        request
    }

    /// `POST`s one message and hands every message of the answer to the relay.
    async fn post(&self, message: &Value, out: &mpsc::UnboundedSender<Vec<u8>>) {
        let fail = |text: String| {
            if let Some(line) = error_for(message, format!("MeshGuard: the MCP upstream {text}")) {
                let _ = out.send(line);
            }
        };
        let sent = self
            .request(reqwest::Method::POST)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream")
            .body(message.to_string())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(err) => return fail(format!("cannot be reached: {err}")),
        };
        let status = response.status();
        if !status.is_success() {
            return fail(format!("answered {status}"));
        }
        if let Some(session) = response.headers().get(SESSION) {
            self.learned()
                .session
                .get_or_insert_with(|| session.clone());
        }
        if status == reqwest::StatusCode::ACCEPTED || status == reqwest::StatusCode::NO_CONTENT {
            return;
        }
        let is_stream = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if is_stream {
            let mut events = response.bytes_stream().eventsource();
            while let Some(event) = events.next().await {
                match event {
                    Ok(event) if !event.data.trim().is_empty() => self.deliver(&event.data, out),
                    Ok(_) => {}
                    Err(err) => return fail(format!("broke its answer stream: {err}")),
                }
            }
            return;
        }
        match response.bytes().await {
            Ok(body) => match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Array(items)) => {
                    for item in items {
                        self.deliver(&item.to_string(), out);
                    }
                }
                Ok(item) => self.deliver(&item.to_string(), out),
                Err(_) => fail("answered with a body that is not JSON".into()),
            },
            Err(err) => fail(format!("broke its answer: {err}")),
        }
    }

    /// One upstream message to the relay; an `initialize` result also names the protocol.
    fn deliver(&self, text: &str, out: &mpsc::UnboundedSender<Vec<u8>>) {
        let Ok(message) = serde_json::from_str::<Value>(text) else {
            tracing::warn!(upstream = %self.upstream.url, "the MCP upstream sent an event that is not JSON; dropped");
            return;
        };
        if let Some(protocol) = message
            .pointer("/result/protocolVersion")
            .and_then(Value::as_str)
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            self.learned().protocol.get_or_insert(protocol);
        }
        let _ = out.send(message.to_string().into_bytes());
    }

    /// The `GET` stream of the upstream's messages that belong to no request, when it offers one.
    async fn listen(&self, out: &mpsc::UnboundedSender<Vec<u8>>) {
        let sent = self
            .request(reqwest::Method::GET)
            .header(ACCEPT, "text/event-stream")
            .send()
            .await;
        let Ok(response) = sent else { return };
        if !response.status().is_success() {
            return;
        }
        let mut events = response.bytes_stream().eventsource();
        while let Some(Ok(event)) = events.next().await {
            if !event.data.trim().is_empty() {
                self.deliver(&event.data, out);
            }
        }
    }

    /// Ends the upstream session (best effort, bounded).
    async fn delete(&self) {
        if self.learned().session.is_none() {
            return;
        }
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.request(reqwest::Method::DELETE).send(),
        )
        .await;
    }
}
