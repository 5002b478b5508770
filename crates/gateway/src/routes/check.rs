//! `POST /proxy/governance/check` and `GET /proxy/check`: authenticate, parse, then the steps of
//! [`evaluate`] (decide → charge → settle approvals → audit), answered through one
//! [`CheckOutcome`].

use std::time::Instant;

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use meshguard_policy::{CheckRequest, Code, Decision, History, PolicySet};
use meshguard_store::{AuditAgent, AuditKind, NewAuditEvent, ShadowVerdict};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::approvals::{self, ApprovalMode, ApprovalSettings, Asking};
use crate::auth::{AgentAuthError, AuthenticatedAgent, authenticate_agent};
use crate::config::Mode;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{LimitedBody, parse_json};
use crate::openapi::{BodyRefusals, DecisionOrRefusal};
use crate::rate_limit::Charging;
use crate::rate_limit_redis::RedisLimitError;
use crate::refusals::{self, Refusal};
use crate::state::AppState;
use crate::telemetry::Phase;
use crate::trace::TraceId;

use super::forward::Proxied;
use super::outcome::{Asked, AuthRefusal, CheckAnswer, CheckOutcome, Outage};

/// The body of `POST /proxy/governance/check`. `null` reads as absent for the optional fields.
#[derive(Debug, Deserialize, ToSchema)]
struct CheckBody {
    /// `verb:object`, e.g. `read:workspace/notes.txt` or `execute:shell`.
    action: String,
    /// What the action touches; `*` when absent.
    #[serde(default)]
    resource: Option<String>,
    /// Facts for `context` conditions and budgets; `arguments` binds an approval to them.
    #[serde(default)]
    context: Option<Map<String, Value>>,
    /// The approval this check means to use (also `X-Approval-ID`).
    #[serde(default)]
    approval_id: Option<String>,
}

/// One check, however it arrived.
#[derive(Debug)]
pub(super) struct CheckInput {
    pub(super) action: String,
    pub(super) resource: String,
    pub(super) context: Map<String, Value>,
    pub(super) approval_id: Option<String>,
}

/// Which endpoint asked: `GET /proxy/check` answers a rate limit with 429, as MeshGuard's SDKs
/// expect; the POST endpoint answers every denial with 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    Post,
    Get,
    /// A proxied request: a rate limit answers 429, like `GET /proxy/check`.
    Forward,
}

impl Route {
    pub(super) fn label(self) -> &'static str {
        match self {
            Route::Post => "governance_check",
            Route::Get => "proxy_check",
            Route::Forward => "proxy_forward",
        }
    }
}

pub(super) fn header_value(headers: &HeaderMap, name: &str) -> Result<Option<String>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::BadRequest(format!("{name}: not valid text")))
        })
        .transpose()
}

pub(super) fn require_action(action: String, field: &str) -> Result<String, ApiError> {
    if action.trim().is_empty() {
        return Err(ApiError::BadRequest(format!("{field}: must not be empty")));
    }
    Ok(action)
}

/// The agent a request comes from, or the answer that refuses it (audited as SPEC 6 asks, naming
/// the action and resource that `named` reads from the request only when it is refused). Every
/// agent endpoint starts here, before it parses its body, so an unauthenticated caller learns
/// nothing.
pub(super) async fn authenticated(
    state: &AppState,
    headers: &HeaderMap,
    trace: &TraceId,
    route: Route,
    named: impl FnOnce() -> (Option<String>, Option<String>),
) -> Result<AuthenticatedAgent, Response> {
    let since = trace.1.now();
    let authenticated = authenticate_agent(state, headers).await;
    trace.1.record(Phase::Auth, since);
    match authenticated {
        Ok(agent) => Ok(agent),
        Err(err) => Err(refuse(state, err, trace, route, named()).await),
    }
}

/// `POST /proxy/governance/check`.
#[utoipa::path(
    post,
    path = "/proxy/governance/check",
    summary = "Ask before acting",
    description = "Decides, charges the rate limits and budgets, settles approvals and commits \
        the audit event before answering. Only a 200 means allow; in `audit` mode every decision \
        answers 200 with `enforced: false`.",
    request_body = CheckBody,
    params(("X-Approval-ID" = Option<String>, Header,
        description = "The approval to use, when the body names none.")),
    responses(
        (status = 200, body = CheckAnswer, description = "`allow`: the action may go ahead."),
        (status = 403, body = CheckAnswer,
         headers(("Retry-After" = u64, description = "With `rate_limited` and `budget_exceeded`, \
            whole seconds until the check would fit.")),
         description = "`deny` or `require_approval`: the action must not happen (yet)."),
        (status = 503, body = CheckAnswer,
         description = "`unavailable`: the store or Redis cannot be reached; nothing is allowed."),
        BodyRefusals,
    )
)]
pub async fn post_check(
    State(state): State<AppState>,
    Extension(trace): Extension<TraceId>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Response {
    let started = Instant::now();
    let named = || lenient_action(&body);
    let agent = match authenticated(&state, &headers, &trace, Route::Post, named).await {
        Ok(agent) => agent,
        Err(refused) => return refused,
    };
    let input = parse_json::<CheckBody>(&body).and_then(|b| {
        Ok(CheckInput {
            action: require_action(b.action, "action")?,
            resource: b.resource.unwrap_or_else(|| "*".to_owned()),
            context: b.context.unwrap_or_default(),
            approval_id: match b.approval_id {
                Some(id) => Some(id),
                None => header_value(&headers, "x-approval-id")?,
            },
        })
    });
    match input {
        Ok(input) => check(&state, &agent, input, &trace, Route::Post, started).await,
        Err(err) => err.into_response(),
    }
}

/// `GET /proxy/check`: the action and resource come in `X-MeshGuard-Action` and
/// `X-MeshGuard-Resource`.
#[utoipa::path(
    get,
    path = "/proxy/check",
    summary = "Ask before acting, in headers",
    description = "The same decision as `POST /proxy/governance/check`, but a rate limit \
        answers 429, as MeshGuard's SDKs expect.",
    params(
        ("X-MeshGuard-Action" = String, Header, description = "The action, `verb:object`."),
        ("X-MeshGuard-Resource" = Option<String>, Header, description = "The resource; `*` when absent."),
        ("X-Approval-ID" = Option<String>, Header, description = "The approval to use."),
    ),
    responses(
        (status = 200, body = CheckAnswer, description = "`allow`: the action may go ahead."),
        (status = 403, body = CheckAnswer,
         headers(("Retry-After" = u64, description = "With `budget_exceeded`, whole seconds \
            until the check would fit.")),
         description = "`deny` or `require_approval`."),
        (status = 429, body = DecisionOrRefusal,
         headers(("Retry-After" = u64, description = "Whole seconds until one more check fits.")),
         description = "`rate_limited`: a limit is exhausted, or a dead token was replayed past \
            the agent's refusal budget."),
        (status = 503, body = CheckAnswer, description = "`unavailable`: nothing is allowed."),
        (status = 400, body = ErrorBody, description = "`bad_request`: no `X-MeshGuard-Action`, \
            or a header that is not text."),
    )
)]
pub async fn get_check(
    State(state): State<AppState>,
    Extension(trace): Extension<TraceId>,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let action = header_value(&headers, "x-meshguard-action");
    let resource = header_value(&headers, "x-meshguard-resource");
    let named = || {
        let named = action.as_ref().ok().cloned().flatten();
        (named, resource.as_ref().ok().cloned().flatten())
    };
    let agent = match authenticated(&state, &headers, &trace, Route::Get, named).await {
        Ok(agent) => agent,
        Err(refused) => return refused,
    };
    let input = (|| -> Result<CheckInput, ApiError> {
        let action =
            action?.ok_or_else(|| ApiError::BadRequest("X-MeshGuard-Action: required".into()))?;
        Ok(CheckInput {
            action: require_action(action, "X-MeshGuard-Action")?,
            resource: resource?.unwrap_or_else(|| "*".to_owned()),
            context: Map::new(),
            approval_id: header_value(&headers, "x-approval-id")?,
        })
    })();
    match input {
        Ok(input) => check(&state, &agent, input, &trace, Route::Get, started).await,
        Err(err) => err.into_response(),
    }
}

/// The check path, after the handler has (a) authenticated the token and (b) loaded the agent
/// from the store or the auth cache — both before the body is parsed, so an unauthenticated
/// caller learns nothing. The cache is cleared by every admin change before it answers, so trust,
/// tags and status are never a stale copy (docs/architecture/auth-cache.md).
async fn check(
    state: &AppState,
    agent: &AuthenticatedAgent,
    input: CheckInput,
    trace: &TraceId,
    route: Route,
    started: Instant,
) -> Response {
    let outcome = evaluate(state, agent, &input, None, trace, route, started).await;
    let asked = Asked {
        agent: Some(agent),
        input: &input,
        trace,
        route,
        mode: state.mode,
    };
    outcome.answer(state, &asked)
}

/// Decides, charges, settles approvals and commits the audit event of one check (also of a
/// proxied request, which `proxied` describes). Only [`CheckOutcome::Decided`] or
/// [`CheckOutcome::Unavailable`] come out of here.
pub(super) async fn evaluate(
    state: &AppState,
    agent: &AuthenticatedAgent,
    input: &CheckInput,
    proxied: Option<&Proxied>,
    trace: &TraceId,
    route: Route,
    started: Instant,
) -> CheckOutcome {
    // 1. Decide, and 2. charge the limits: the engine asks the oracle once, inside
    //    `decide_in_mode`, with every limit of every applicable policy (denied checks count
    //    too), all-or-nothing, so a limit can never be charged for a decision that was not made.
    //    With Redis the limits are global; if Redis cannot answer, nothing is allowed (503).
    //    A proxied request is bounded by what the proxy saw: a path refused before routing is
    //    denied (and still charged), and what the agent claims can only narrow the decision.
    // One snapshot of the policies decides, and says what history to remember.
    let policies = state.policies.current();
    let (decision, shadow) = match decide_in_mode(state, &policies, agent, input, trace).await {
        Ok(decided) => decided,
        Err(err) => return CheckOutcome::unavailable(Outage::RateLimits, err),
    };
    let decision = match proxied {
        Some(proxied) => proxied.narrow(decision, &input.action),
        None => decision,
    };
    // 3. Approvals: only a decision that needs a human touches the approval store, after the
    //    engine, because an explicit deny must win before any approval is created or consumed.
    let asking = Asking {
        agent_id: &agent.record.id,
        named: input.approval_id.as_deref(),
        trace_id: Some(&trace.0),
        context: &input.context,
    };
    let settled = approvals::settle(
        &*state.store,
        asking,
        decision,
        ApprovalSettings::of(state),
        ApprovalMode::Apply,
    )
    .await;
    let decision = match settled {
        Ok(decision) => decision,
        Err(err) => return CheckOutcome::unavailable(Outage::Store, err),
    };
    // 4. History: an allowed check is remembered under the history patterns it matches before it
    //    is answered, so a later `notAfter` never misses it (if it cannot be, nothing is allowed).
    if decision.is_allowed()
        && let Err(err) = remember(state, &policies, agent, input, trace).await
    {
        return CheckOutcome::unavailable(Outage::RateLimits, err);
    }
    // 5. Audit: the event is committed (group commit) before the answer leaves, so no decision
    //    an agent acted on is missing from the trail. If it cannot be written, nothing is allowed.
    let mut event = check_event(state, agent, input, &decision, trace, started);
    event.shadow = shadow;
    if let Some(proxied) = proxied {
        event.context.extend(proxied.context());
    }
    let audit_id = event.id.clone();
    let since = trace.1.now();
    let committed = state.audit.append(event).await;
    trace.1.record(Phase::AuditCommit, since);
    if let Err(err) = committed {
        return CheckOutcome::unavailable(Outage::Store, err);
    }
    state
        .metrics
        .check_seconds
        .with_label_values(&[route.label()])
        .observe(started.elapsed().as_secs_f64());
    CheckOutcome::Decided { decision, audit_id }
}

/// Records an allowed check in the agent's history, under every history pattern it matches.
async fn remember(
    state: &AppState,
    policies: &PolicySet,
    agent: &AuthenticatedAgent,
    input: &CheckInput,
    trace: &TraceId,
) -> Result<(), RedisLimitError> {
    let matched = policies.history_matches(&input.action, &input.resource);
    let Some(keep) = policies.history_patterns().iter().map(|(_, w)| *w).max() else {
        return Ok(());
    };
    state
        .history
        .record(
            &agent.record.id,
            Some(&trace.0),
            &matched,
            (state.wall_clock)(),
            keep,
        )
        .await
}

/// What the engine says in the gateway's mode, charging the limits it consults, and what the
/// shadow policies would have said instead, when they would have said something else.
async fn decide_in_mode(
    state: &AppState,
    policies: &PolicySet,
    agent: &AuthenticatedAgent,
    input: &CheckInput,
    trace: &TraceId,
) -> Result<(Decision, Option<ShadowVerdict>), RedisLimitError> {
    let request = CheckRequest {
        action: &input.action,
        resource: &input.resource,
        context: &input.context,
        now: (state.wall_clock)(),
    };
    match state.mode {
        Mode::Enforce | Mode::Audit => {
            // The agent's past is read only when some policy looks at it.
            let patterns = policies.history_patterns();
            let history = if patterns.is_empty() {
                History::empty()
            } else {
                state
                    .history
                    .view(&agent.record.id, Some(&trace.0), patterns)
                    .await?
            };
            let spans = &trace.1;
            let charging = spans.now();
            let decision = state
                .limiter
                .decide_with_limits(&agent.record.id, Charging::Charge, |oracle| {
                    let deciding = spans.now();
                    let decision =
                        policies.decide_with_history(&agent.profile, &request, &history, oracle);
                    spans.record(Phase::Decide, deciding);
                    decision
                })
                .await;
            spans.record(Phase::RateLimit, charging);
            let decision = decision?;
            // A shadow decision charges no limit or budget, so it is not compared with a decision
            // that one of them refused.
            let shadow = policies
                .decide_shadow(&agent.profile, &request, &history)
                .filter(|_| !matches!(decision.code, Code::RateLimited | Code::BudgetExceeded))
                .and_then(|shadow| ShadowVerdict::differing(&decision, &shadow));
            Ok((decision, shadow))
        }
        Mode::Bypass => Ok((
            Decision {
                code: Code::Allowed,
                reason: format!(
                    "Action '{}' allowed: the gateway runs in bypass mode and evaluates no policy",
                    input.action
                ),
                policy: None,
                rule: None,
                retry_after_secs: None,
                approval: None,
                approval_id: None,
            },
            None,
        )),
    }
}

/// The audit event of a decided check.
fn check_event(
    state: &AppState,
    agent: &AuthenticatedAgent,
    input: &CheckInput,
    decision: &Decision,
    trace: &TraceId,
    started: Instant,
) -> NewAuditEvent {
    NewAuditEvent {
        agent: Some(audit_agent(agent)),
        resource: Some(input.resource.clone()),
        trace_id: Some(trace.0.clone()),
        context: input.context.clone(),
        latency_us: Some(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)),
        ..NewAuditEvent::new(AuditKind::Check, &input.action, &state.instance_id).decided(decision)
    }
}

pub(super) fn audit_agent(agent: &AuthenticatedAgent) -> AuditAgent {
    AuditAgent {
        id: agent.record.id.clone(),
        name: agent.record.name.clone(),
    }
}

/// The action and resource of a body that has not been validated, for the audit event of a
/// refused request (best effort: a refused request may send anything).
pub(super) fn lenient_action(body: &[u8]) -> (Option<String>, Option<String>) {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let field = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    (field("action"), field("resource"))
}

/// Answers an agent request refused before any decision; counts it when the token was validly
/// signed, for the one audit event per agent per minute that says how many (SPEC 6).
pub(super) async fn refuse(
    state: &AppState,
    err: AgentAuthError,
    trace: &TraceId,
    route: Route,
    (action, resource): (Option<String>, Option<String>),
) -> Response {
    let input = CheckInput {
        action: action.clone().unwrap_or_default(),
        resource: resource.clone().unwrap_or_else(|| "*".into()),
        context: Map::new(),
        approval_id: None,
    };
    let outcome = match err {
        AgentAuthError::Rejected(message) => CheckOutcome::Refused(AuthRefusal::Rejected(message)),
        AgentAuthError::RejectedAudited { message, agent } => {
            let refusal = AuthRefusal::not_honoured(state, &agent.id, message.clone());
            let due = state.refusals.count(Refusal {
                agent,
                reason: message,
                action,
                resource,
                trace_id: trace.0.clone(),
            });
            refusals::write(&state.audit, due).await;
            CheckOutcome::Refused(refusal)
        }
        AgentAuthError::Unavailable(cause) => CheckOutcome::Unavailable {
            outage: Outage::Store,
            cause,
        },
        AgentAuthError::Internal(cause) => return ApiError::Internal(cause).into_response(),
    };
    let asked = Asked {
        agent: None,
        input: &input,
        trace,
        route,
        mode: state.mode,
    };
    outcome.answer(state, &asked)
}
