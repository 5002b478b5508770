//! The agent side of the gateway's API (SPEC 2): `check` before a call, `record` after it, and
//! `preview` for `tools/list`. Every answer but a well-formed decision is a [`GatewayFailure`],
//! and a failure is never an allow.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::naming::GovernedCall;

/// How long to wait for a TCP connection to the gateway.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound for one check, record or preview.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The header that carries a call's trace id to the gateway.
pub const TRACE_HEADER: &str = "X-Trace-ID";

/// Where the gateway is and which agent is asking.
#[derive(Clone)]
pub struct GatewayClient {
    base: reqwest::Url,
    token: String,
    transport: Transport,
}

/// How requests reach the gateway.
#[derive(Clone)]
enum Transport {
    /// Over the network: `meshguard mcp run`.
    Http(reqwest::Client),
    /// Straight to the router of the gateway this code runs in: its hosted MCP sessions.
    InProcess(Arc<dyn InProcessGateway>),
}

/// A gateway in this same process. Its hosted MCP sessions hand their checks to its router
/// directly: the same handlers, authentication and audit as an HTTP check, without a loopback
/// connection, a second HTTP parse or a TLS handshake in between.
pub trait InProcessGateway: Send + Sync {
    /// Answers `request` as the gateway's HTTP server would.
    fn serve(&self, request: http::Request<Vec<u8>>)
    -> BoxFuture<'static, http::Response<Vec<u8>>>;
}

impl std::fmt::Debug for GatewayClient {
    // The agent token must never end up in a log or an error message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// Why a client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The gateway URL is not an http(s) URL.
    #[error("the gateway URL `{0}` must be an http:// or https:// URL")]
    BadUrl(String),
    /// No agent token was given.
    #[error("no agent token: set MESHGUARD_TOKEN to the token `meshguard agent create` printed")]
    NoToken,
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// The CA file cannot be read or holds no PEM certificate.
    #[error("the CA file `{file}`: {message}")]
    CaFile {
        /// The file.
        file: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// What the gateway said about one call. Only [`Verdict::Allowed`] lets it through.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// 200: forward the call; `audit_id` is the check the record belongs to.
    Allowed {
        /// The check's audit event.
        audit_id: Option<String>,
    },
    /// 403 `deny`: a rule, a default, no policy, a rate limit, a human's no.
    Denied(Refusal),
    /// 403 `require_approval`: a human must decide first.
    ApprovalRequired {
        /// The approval to approve.
        approval_id: String,
        /// The gateway's reason.
        reason: String,
    },
}

/// The parts of a denial the model is told.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Refusal {
    /// The wire code (`denied_by_rule`, `default_deny`, …).
    pub code: String,
    /// The gateway's reason.
    #[serde(default)]
    pub reason: String,
    /// The policy that decided.
    #[serde(default)]
    pub policy: Option<String>,
    /// The rule that decided.
    #[serde(default)]
    pub rule: Option<String>,
}

/// Why the gateway's answer cannot be trusted: the call is not forwarded (fail closed).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GatewayFailure {
    /// No answer at all.
    #[error("the gateway at {url} cannot be reached ({cause})")]
    Unreachable {
        /// The gateway's base URL.
        url: String,
        /// The transport error.
        cause: String,
    },
    /// 401 or 429: the token is not (or no longer) honoured.
    #[error("the gateway refused the agent token ({0})")]
    TokenRefused(String),
    /// 503: the gateway cannot decide.
    #[error("the gateway cannot decide now ({0})")]
    Unavailable(String),
    /// Anything else: a status or body no gateway answers a check with.
    #[error("the gateway's answer makes no sense ({0})")]
    BadAnswer(String),
}

/// The three decisions of SPEC 1; any other text is a bad answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Decision {
    Allow,
    Deny,
    RequireApproval,
}

/// The body of a check answer, as far as the proxy reads it.
#[derive(Debug, Deserialize)]
struct Answer {
    allowed: bool,
    decision: Decision,
    code: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    approval_id: Option<String>,
    #[serde(default)]
    audit_id: Option<String>,
    #[serde(default = "enforced_by_default")]
    enforced: bool,
}

fn enforced_by_default() -> bool {
    true
}

/// Where an approval stands (SPEC 3), as the agent's long poll answers; any other text is a bad
/// answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    /// Nobody decided yet.
    Pending,
    /// A human said yes: the next check naming it goes through, once.
    Approved,
    /// A human said no.
    Denied,
    /// Nobody decided in time.
    Expired,
    /// Another call used it already.
    Used,
}

/// What a preview says about a tool, for `tools/list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// A check may allow it (now, with some resource, or after an approval).
    Open,
    /// A human must approve each call.
    NeedsApproval,
    /// No check of this action can be allowed: denied by a rule, by default, or by no policy.
    Closed,
}

/// The codes that say an action is closed whatever the resource or the moment.
const CLOSED_CODES: [&str; 3] = ["denied_by_rule", "default_deny", "no_policy"];

/// How a call ended, for the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallStatus {
    /// The server answered with a result that is not an error.
    Success,
    /// The server answered with a JSON-RPC error or an `isError` result.
    Error,
}

impl CallStatus {
    fn as_str(self) -> &'static str {
        match self {
            CallStatus::Success => "success",
            CallStatus::Error => "error",
        }
    }
}

/// Whether `pem` holds at least one certificate and nothing that fails to parse.
pub fn pem_holds_a_certificate(pem: &[u8]) -> bool {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let parsed: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    parsed.is_ok_and(|certs| !certs.is_empty())
}

impl GatewayClient {
    /// A client for the gateway at `url`, asking as the agent whose token is `token`.
    pub fn new(url: &str, token: Option<String>) -> Result<Self, ClientError> {
        let (base, token) = Self::parts(url, token)?;
        // reqwest is built without a bundled crypto provider so that the binary carries only
        // ring; installing fails only when one is already installed, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("meshguard-mcp/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(GatewayClient {
            base,
            token,
            transport: Transport::Http(http),
        })
    }

    /// A client of `gateway`, the gateway this code runs in (whose address is `url`, named in
    /// failures), asking as the agent whose token is `token`: every request is still
    /// authenticated, so a revoked token is refused at once.
    pub fn in_process(
        gateway: Arc<dyn InProcessGateway>,
        url: &str,
        token: Option<String>,
    ) -> Result<Self, ClientError> {
        let (base, token) = Self::parts(url, token)?;
        Ok(GatewayClient {
            base,
            token,
            transport: Transport::InProcess(gateway),
        })
    }

    /// The gateway's base URL and the agent's token, both checked.
    fn parts(url: &str, token: Option<String>) -> Result<(reqwest::Url, String), ClientError> {
        let base = reqwest::Url::parse(url).map_err(|_| ClientError::BadUrl(url.to_owned()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::BadUrl(url.to_owned()));
        }
        let token = token
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .ok_or(ClientError::NoToken)?;
        Ok((base, token))
    }

    /// The same client, also trusting the PEM certificate in `file` (a private CA, or an
    /// https:// gateway's self-signed certificate).
    pub fn trusting(mut self, file: &std::path::Path) -> Result<Self, ClientError> {
        let fail = |message: String| ClientError::CaFile {
            file: file.to_owned(),
            message,
        };
        let pem = std::fs::read(file).map_err(|e| fail(e.to_string()))?;
        if !pem_holds_a_certificate(&pem) {
            return Err(fail("no PEM certificate in the file".into()));
        }
        let ca = reqwest::Certificate::from_pem(&pem).map_err(|e| fail(e.to_string()))?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("meshguard-mcp/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .add_root_certificate(ca)
            .build()?;
        self.transport = Transport::Http(http);
        Ok(self)
    }

    fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn unreachable(&self, cause: String) -> GatewayFailure {
        GatewayFailure::Unreachable {
            url: self.base.as_str().trim_end_matches('/').to_owned(),
            cause,
        }
    }

    /// Sends one request with the agent's token and the trace id, and reads the whole answer
    /// within `timeout`.
    async fn send(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        trace_id: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<(StatusCode, Vec<u8>), GatewayFailure> {
        let body = match body.map(serde_json::to_vec).transpose() {
            Ok(body) => body,
            Err(e) => {
                return Err(GatewayFailure::BadAnswer(format!(
                    "unencodable request: {e}"
                )));
            }
        };
        match &self.transport {
            Transport::Http(http) => {
                let mut request = http
                    .request(method, url)
                    .bearer_auth(&self.token)
                    .header(TRACE_HEADER, trace_id)
                    .timeout(timeout);
                if let Some(body) = body {
                    request = request
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body);
                }
                let response = request
                    .send()
                    .await
                    .map_err(|e| self.unreachable(e.to_string()))?;
                let status = response.status();
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|e| self.unreachable(e.to_string()))?;
                Ok((status, bytes.to_vec()))
            }
            Transport::InProcess(gateway) => {
                let target = match url.query() {
                    Some(query) => format!("{}?{query}", url.path()),
                    None => url.path().to_owned(),
                };
                let mut request = http::Request::builder()
                    .method(method)
                    .uri(target)
                    .header(
                        http::header::AUTHORIZATION,
                        format!("Bearer {}", self.token),
                    )
                    .header(TRACE_HEADER, trace_id);
                if body.is_some() {
                    request = request.header(http::header::CONTENT_TYPE, "application/json");
                }
                let request = request
                    .body(body.unwrap_or_default())
                    .map_err(|e| self.unreachable(e.to_string()))?;
                let response = tokio::time::timeout(timeout, gateway.serve(request))
                    .await
                    .map_err(|_| {
                        self.unreachable(format!("no answer within {} s", timeout.as_secs()))
                    })?;
                Ok((response.status(), response.into_body()))
            }
        }
    }

    async fn post(
        &self,
        segments: &[&str],
        trace_id: &str,
        body: &Value,
    ) -> Result<(StatusCode, Vec<u8>), GatewayFailure> {
        let url = self.url(segments);
        self.send(
            reqwest::Method::POST,
            url,
            trace_id,
            Some(body),
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `POST /proxy/governance/check` for `call` under `trace_id`; `approval_id` names the
    /// approval a human granted for it (the gateway ignores one of another call).
    pub async fn check(
        &self,
        call: &GovernedCall,
        trace_id: &str,
        approval_id: Option<&str>,
    ) -> Result<Verdict, GatewayFailure> {
        let mut body = json!({
            "action": call.action,
            "resource": call.resource,
            "context": call.context,
        });
        if let (Some(id), Some(object)) = (approval_id, body.as_object_mut()) {
            object.insert("approval_id".into(), Value::String(id.to_owned()));
        }
        let (status, bytes) = self
            .post(&["proxy", "governance", "check"], trace_id, &body)
            .await?;
        verdict_of(status, &bytes)
    }

    /// `POST /proxy/governance/record`: the outcome and duration of a call the check allowed.
    pub async fn record(
        &self,
        call: &GovernedCall,
        trace_id: &str,
        audit_id: Option<&str>,
        status: CallStatus,
        duration: Duration,
    ) -> Result<(), GatewayFailure> {
        let mut context = Map::new();
        for key in [
            crate::naming::context_key::SERVER,
            crate::naming::context_key::TOOL,
        ] {
            if let Some(value) = call.context.get(key) {
                context.insert(key.to_owned(), value.clone());
            }
        }
        let body = json!({
            "action": call.action,
            "resource": call.resource,
            "status": status.as_str(),
            "audit_id": audit_id,
            "duration_ms": u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            "context": context,
        });
        let (code, bytes) = self
            .post(&["proxy", "governance", "record"], trace_id, &body)
            .await?;
        match code {
            StatusCode::CREATED | StatusCode::OK => Ok(()),
            StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS => {
                Err(GatewayFailure::TokenRefused(message_of(&bytes)))
            }
            other => Err(GatewayFailure::BadAnswer(format!(
                "record answered {}: {}",
                other.as_u16(),
                message_of(&bytes)
            ))),
        }
    }

    /// `GET /proxy/governance/approvals/{id}?wait=S`: where the agent's approval stands, held by
    /// the gateway until a human decides or `wait` is over.
    pub async fn poll_approval(
        &self,
        approval_id: &str,
        wait: Duration,
        trace_id: &str,
    ) -> Result<ApprovalStatus, GatewayFailure> {
        let mut url = self.url(&["proxy", "governance", "approvals", approval_id]);
        url.query_pairs_mut()
            .append_pair("wait", &wait.as_secs().to_string());
        // The gateway holds the answer for `wait`: the usual bound would cut a long wait.
        let timeout = wait.saturating_add(REQUEST_TIMEOUT);
        let (status, bytes) = self
            .send(reqwest::Method::GET, url, trace_id, None, timeout)
            .await?;
        if status != StatusCode::OK {
            return Err(failure_of(status, &bytes));
        }
        #[derive(Deserialize)]
        struct Polled {
            status: ApprovalStatus,
        }
        serde_json::from_slice::<Polled>(&bytes)
            .map(|p| p.status)
            .map_err(|e| GatewayFailure::BadAnswer(format!("approval poll: {e}")))
    }

    /// `POST /proxy/governance/preview`: what a check of `call` would get, charging nothing and
    /// creating no approval.
    pub async fn preview(
        &self,
        call: &GovernedCall,
        trace_id: &str,
    ) -> Result<Listing, GatewayFailure> {
        let body = json!({
            "action": call.action,
            "resource": call.resource,
            "context": call.context,
        });
        let (status, bytes) = self
            .post(&["proxy", "governance", "preview"], trace_id, &body)
            .await?;
        match status {
            StatusCode::OK => {
                let answer: Answer = serde_json::from_slice(&bytes)
                    .map_err(|e| GatewayFailure::BadAnswer(format!("preview: {e}")))?;
                Ok(listing_of(&answer))
            }
            other => Err(failure_of(other, &bytes)),
        }
    }
}

fn listing_of(answer: &Answer) -> Listing {
    if !answer.enforced || answer.allowed {
        Listing::Open
    } else if answer.decision == Decision::RequireApproval {
        Listing::NeedsApproval
    } else if CLOSED_CODES.contains(&answer.code.as_str()) {
        Listing::Closed
    } else {
        // Rate limits and a human's no pass; the tool itself stays open.
        Listing::Open
    }
}

/// Reads a check's answer: only a 200 whose body says `allowed: true` allows.
pub fn verdict_of(status: StatusCode, bytes: &[u8]) -> Result<Verdict, GatewayFailure> {
    match status {
        StatusCode::OK | StatusCode::FORBIDDEN => {}
        other => return Err(failure_of(other, bytes)),
    }
    let answer: Answer = serde_json::from_slice(bytes).map_err(|e| {
        GatewayFailure::BadAnswer(format!("check answered {}: {e}", status.as_u16()))
    })?;
    match (status, answer.allowed, answer.decision) {
        (StatusCode::OK, true, _) => Ok(Verdict::Allowed {
            audit_id: answer.audit_id,
        }),
        (StatusCode::FORBIDDEN, false, Decision::RequireApproval) => match answer.approval_id {
            Some(approval_id) => Ok(Verdict::ApprovalRequired {
                approval_id,
                reason: answer.reason,
            }),
            None => Err(GatewayFailure::BadAnswer(
                "an approval is required but the answer names none".into(),
            )),
        },
        (StatusCode::FORBIDDEN, false, Decision::Deny) => Ok(Verdict::Denied(Refusal {
            code: answer.code,
            reason: answer.reason,
            policy: answer.policy,
            rule: answer.rule,
        })),
        (status, allowed, decision) => Err(GatewayFailure::BadAnswer(format!(
            "check answered {} with allowed={allowed} and decision {decision:?}",
            status.as_u16()
        ))),
    }
}

fn failure_of(status: StatusCode, bytes: &[u8]) -> GatewayFailure {
    let message = message_of(bytes);
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS => {
            GatewayFailure::TokenRefused(message)
        }
        StatusCode::SERVICE_UNAVAILABLE => GatewayFailure::Unavailable(message),
        other => GatewayFailure::BadAnswer(format!("{}: {message}", other.as_u16())),
    }
}

/// The `message` (else `reason`, else `error`) of a gateway body, else a short body.
fn message_of(bytes: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(bytes).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    field("message")
        .or_else(|| field("reason"))
        .or_else(|| field("error"))
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(bytes);
            text.chars().take(200).collect()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_200_that_says_allowed_allows() {
        let allowed = br#"{"allowed":true,"decision":"allow","code":"allowed","audit_id":"a1"}"#;
        assert_eq!(
            verdict_of(StatusCode::OK, allowed),
            Ok(Verdict::Allowed {
                audit_id: Some("a1".into())
            })
        );
        // A 200 that says no, a 403 that says yes, a 500, a body that is not JSON: no allow.
        let denied = br#"{"allowed":false,"decision":"deny","code":"denied_by_rule"}"#;
        assert!(matches!(
            verdict_of(StatusCode::OK, denied),
            Err(GatewayFailure::BadAnswer(_))
        ));
        assert!(matches!(
            verdict_of(StatusCode::FORBIDDEN, allowed),
            Err(GatewayFailure::BadAnswer(_))
        ));
        assert!(matches!(
            verdict_of(StatusCode::INTERNAL_SERVER_ERROR, allowed),
            Err(GatewayFailure::BadAnswer(_))
        ));
        assert!(matches!(
            verdict_of(StatusCode::OK, b"<html>"),
            Err(GatewayFailure::BadAnswer(_))
        ));
        assert!(matches!(
            verdict_of(StatusCode::UNAUTHORIZED, br#"{"error":"unauthorized","message":"agent revoked"}"#),
            Err(GatewayFailure::TokenRefused(m)) if m == "agent revoked"
        ));
        assert!(matches!(
            verdict_of(StatusCode::SERVICE_UNAVAILABLE, b"{}"),
            Err(GatewayFailure::Unavailable(_))
        ));
    }

    #[test]
    fn denials_and_approvals_carry_what_the_model_is_told() {
        let denied = br#"{"allowed":false,"decision":"deny","code":"denied_by_rule","reason":"no","policy":"p","rule":"r"}"#;
        assert_eq!(
            verdict_of(StatusCode::FORBIDDEN, denied),
            Ok(Verdict::Denied(Refusal {
                code: "denied_by_rule".into(),
                reason: "no".into(),
                policy: Some("p".into()),
                rule: Some("r".into()),
            }))
        );
        let approval = br#"{"allowed":false,"decision":"require_approval","code":"approval_required","reason":"ask","approval_id":"ap1"}"#;
        assert_eq!(
            verdict_of(StatusCode::FORBIDDEN, approval),
            Ok(Verdict::ApprovalRequired {
                approval_id: "ap1".into(),
                reason: "ask".into()
            })
        );
    }

    #[test]
    fn a_ca_file_must_hold_a_pem_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let client = || GatewayClient::new("https://localhost:3100", Some("t".into())).unwrap();
        let missing = client().trusting(&dir.path().join("none.pem")).unwrap_err();
        assert!(missing.to_string().contains("none.pem"), "{missing}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        assert!(client().trusting(&garbage).is_err());
        let cert = dir.path().join("gw.crt");
        let made = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=localhost", "-keyout"])
            .arg(dir.path().join("gw.key"))
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(made.status.success());
        assert!(client().trusting(&cert).is_ok());
    }

    #[test]
    fn a_listing_is_closed_only_for_denials_no_resource_can_lift() {
        let answer = |body: &str| listing_of(&serde_json::from_str::<Answer>(body).unwrap());
        let deny = |code: &str| {
            answer(&format!(
                r#"{{"allowed":false,"decision":"deny","code":"{code}"}}"#
            ))
        };
        assert_eq!(deny("denied_by_rule"), Listing::Closed);
        assert_eq!(deny("default_deny"), Listing::Closed);
        assert_eq!(deny("no_policy"), Listing::Closed);
        assert_eq!(deny("rate_limited"), Listing::Open);
        assert_eq!(
            answer(r#"{"allowed":false,"decision":"require_approval","code":"approval_required"}"#),
            Listing::NeedsApproval
        );
        assert_eq!(
            answer(r#"{"allowed":false,"decision":"deny","code":"default_deny","enforced":false}"#),
            Listing::Open
        );
    }

    #[test]
    fn a_client_needs_a_token_and_an_http_url() {
        assert!(matches!(
            GatewayClient::new("http://localhost:3100", None),
            Err(ClientError::NoToken)
        ));
        assert!(matches!(
            GatewayClient::new("http://localhost:3100", Some(" ".into())),
            Err(ClientError::NoToken)
        ));
        assert!(matches!(
            GatewayClient::new("localhost:3100", Some("t".into())),
            Err(ClientError::BadUrl(_))
        ));
        let client = GatewayClient::new("http://localhost:3100/mg/", Some("t".into())).unwrap();
        assert_eq!(
            client.url(&["proxy", "governance", "check"]).as_str(),
            "http://localhost:3100/mg/proxy/governance/check"
        );
    }
}
