//! `POST /proxy/governance/check`, `GET /proxy/check` and `POST /proxy/governance/record`.

use std::time::Instant;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use meshguard_policy::{CheckRequest, Code, Decision};
use meshguard_store::{
    AuditAgent, AuditFilter, AuditKind, AuditOrder, MAX_RESULT_BYTES, NewAuditEvent, StoreError,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::approvals::{self, ApprovalMode, ApprovalSettings};
use crate::auth::{AgentAuthError, AuthenticatedAgent, authenticate_agent};
use crate::config::Mode;
use crate::error::ApiError;
use crate::extract::{LimitedBody, parse_json};
use crate::rate_limit::Charging;
use crate::rate_limit_redis::RedisLimitError;
use crate::refusals::{self, Refusal};
use crate::state::AppState;
use crate::trace::TraceId;

use super::forward::Proxied;
use super::outcome::{Asked, AuthRefusal, CheckOutcome, Outage};

/// The body of `POST /proxy/governance/check`. `null` reads as absent for the optional fields.
#[derive(Debug, Deserialize)]
struct CheckBody {
    action: String,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    context: Option<Map<String, Value>>,
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

fn require_action(action: String, field: &str) -> Result<String, ApiError> {
    if action.trim().is_empty() {
        return Err(ApiError::BadRequest(format!("{field}: must not be empty")));
    }
    Ok(action)
}

/// `POST /proxy/governance/check`.
pub async fn post_check(
    State(state): State<AppState>,
    Extension(trace): Extension<TraceId>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Response {
    let started = Instant::now();
    let agent = match authenticate_agent(&state, &headers).await {
        Ok(agent) => agent,
        Err(err) => {
            return refuse(&state, err, &trace, Route::Post, lenient_action(&body)).await;
        }
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
pub async fn get_check(
    State(state): State<AppState>,
    Extension(trace): Extension<TraceId>,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let action = header_value(&headers, "x-meshguard-action");
    let resource = header_value(&headers, "x-meshguard-resource");
    let agent = match authenticate_agent(&state, &headers).await {
        Ok(agent) => agent,
        Err(err) => {
            let named = action.as_ref().ok().cloned().flatten();
            let resource = resource.as_ref().ok().cloned().flatten();
            return refuse(&state, err, &trace, Route::Get, (named, resource)).await;
        }
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
    let decision = match decide_in_mode(state, agent, input).await {
        Ok(decision) => decision,
        Err(err) => return CheckOutcome::unavailable(Outage::RateLimits, err),
    };
    let decision = match proxied {
        Some(proxied) => proxied.narrow(decision, &input.action),
        None => decision,
    };
    // 3. Approvals: only a decision that needs a human touches the approval store, after the
    //    engine, because an explicit deny must win before any approval is created or consumed.
    let settled = approvals::settle(
        &*state.store,
        &agent.record.id,
        decision,
        input.approval_id.as_deref(),
        Some(&trace.0),
        ApprovalSettings::of(state),
        ApprovalMode::Apply,
    )
    .await;
    let decision = match settled {
        Ok(decision) => decision,
        Err(err) => return CheckOutcome::unavailable(Outage::Store, err),
    };
    // 4. Audit: the event is committed (group commit) before the answer leaves, so no decision
    //    an agent acted on is missing from the trail. If it cannot be written, nothing is allowed.
    let mut event = check_event(state, agent, input, &decision, trace, started);
    if let Some(proxied) = proxied {
        event.context.extend(proxied.context());
    }
    let audit_id = event.id.clone();
    if let Err(err) = state.audit.append(event).await {
        return CheckOutcome::unavailable(Outage::Store, err);
    }
    state
        .metrics
        .check_seconds
        .with_label_values(&[route.label()])
        .observe(started.elapsed().as_secs_f64());
    CheckOutcome::Decided { decision, audit_id }
}

/// What the engine says in the gateway's mode, charging the limits it consults.
async fn decide_in_mode(
    state: &AppState,
    agent: &AuthenticatedAgent,
    input: &CheckInput,
) -> Result<Decision, RedisLimitError> {
    let request = CheckRequest {
        action: &input.action,
        resource: &input.resource,
        context: &input.context,
    };
    match state.mode {
        Mode::Enforce | Mode::Audit => {
            // One snapshot of the policies, so a second run (Redis) decides on the same set.
            let policies = state.policies.current();
            state
                .limiter
                .decide_with_limits(&agent.record.id, Charging::Charge, |oracle| {
                    policies.decide(&agent.profile, &request, oracle)
                })
                .await
        }
        Mode::Bypass => Ok(Decision {
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
        }),
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

fn audit_agent(agent: &AuthenticatedAgent) -> AuditAgent {
    AuditAgent {
        id: agent.record.id.clone(),
        name: agent.record.name.clone(),
    }
}

/// The action and resource of a body that has not been validated, for the audit event of a
/// refused request (best effort: a refused request may send anything).
fn lenient_action(body: &[u8]) -> (Option<String>, Option<String>) {
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

/// The body of `POST /proxy/governance/record`.
#[derive(Debug, Deserialize)]
struct RecordBody {
    action: String,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    result: Option<String>,
    #[serde(default)]
    audit_id: Option<String>,
    #[serde(default)]
    duration_ms: Option<f64>,
    #[serde(default)]
    context: Option<Map<String, Value>>,
}

/// The answer to a record.
#[derive(Debug, Serialize)]
struct Recorded {
    recorded: bool,
    audit_id: String,
}

/// Cuts `text` to at most `max` bytes at a character boundary.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Refuses a record that names another agent's check, by its `audit_id` or by the trace it is
/// sent in: an agent writes into its own history only.
async fn own_check(
    state: &AppState,
    agent: &AuthenticatedAgent,
    audit_id: Option<&str>,
    trace: &TraceId,
) -> Result<(), ApiError> {
    let own = |event: &meshguard_store::AuditEvent| {
        event
            .event
            .agent
            .as_ref()
            .is_some_and(|a| a.id == agent.record.id)
    };
    if let Some(id) = audit_id {
        match state.store.audit_event(id).await {
            Ok(event) if event.event.kind == AuditKind::Check && own(&event) => {}
            Ok(_) => {
                return Err(ApiError::Forbidden(format!(
                    "audit_id: `{id}` is not a check of this agent: a record can only follow the agent's own checks"
                )));
            }
            Err(StoreError::NotFound { .. }) => {
                return Err(ApiError::NotFound(format!(
                    "audit_id: no check `{id}` in the audit trail"
                )));
            }
            Err(other) => return Err(other.into()),
        }
    }
    // The trace's first check says whose trace it is.
    let first = state
        .store
        .query_audit(&AuditFilter {
            limit: 1,
            trace_id: Some(trace.0.clone()),
            kind: Some(AuditKind::Check),
            order: AuditOrder::OldestFirst,
            ..AuditFilter::default()
        })
        .await?;
    if first.entries.first().is_some_and(|event| !own(event)) {
        return Err(ApiError::Forbidden(format!(
            "trace `{}` belongs to another agent's checks: send the record in a trace of this agent's own",
            trace.0
        )));
    }
    Ok(())
}

/// `POST /proxy/governance/record`: the agent reports what an action did. Policies never count
/// it (SPEC 3); the agent's record budget does.
pub async fn record(
    State(state): State<AppState>,
    Extension(trace): Extension<TraceId>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Response {
    let agent = match authenticate_agent(&state, &headers).await {
        Ok(agent) => agent,
        Err(AgentAuthError::Unavailable(cause)) => {
            return ApiError::Unavailable(cause).into_response();
        }
        Err(err) => {
            return refuse(&state, err, &trace, Route::Post, lenient_action(&body)).await;
        }
    };
    // Charged before the body is read: a spent budget costs no parsing and no store access.
    if let Err(retry_after_secs) = state.record_budget.charge(&agent.record.id) {
        return ApiError::RateLimited {
            message: format!(
                "this agent's budget of {} records per minute is spent; retry in {retry_after_secs} s",
                state.record_budget.per_minute()
            ),
            retry_after_secs,
        }
        .into_response();
    }
    let input = match parse_json::<RecordBody>(&body) {
        Ok(input) => input,
        Err(err) => return err.into_response(),
    };
    let action = match require_action(input.action, "action") {
        Ok(action) => action,
        Err(err) => return err.into_response(),
    };
    if let Err(err) = own_check(&state, &agent, input.audit_id.as_deref(), &trace).await {
        return err.into_response();
    }
    // The check this record belongs to and the reported duration go with the context: they are
    // the agent's statements, not the gateway's measurements.
    let mut context = input.context.unwrap_or_default();
    if let Some(check) = input.audit_id {
        context.insert("check_audit_id".into(), Value::String(check));
    }
    if let Some(ms) = input.duration_ms.and_then(serde_json::Number::from_f64) {
        context.insert("duration_ms".into(), Value::Number(ms));
    }
    let event = NewAuditEvent {
        agent: Some(audit_agent(&agent)),
        resource: input.resource,
        trace_id: Some(trace.0.clone()),
        status: input.status,
        result: input.result.map(|r| truncate(r, MAX_RESULT_BYTES)),
        context,
        ..NewAuditEvent::new(AuditKind::Record, action, &state.instance_id)
    };
    let audit_id = event.id.clone();
    match state.audit.append(event).await {
        Ok(()) => (
            StatusCode::CREATED,
            Json(Recorded {
                recorded: true,
                audit_id,
            }),
        )
            .into_response(),
        Err(err) => ApiError::Unavailable(err.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncate("héllo".into(), 2), "h");
        assert_eq!(truncate("hello".into(), 10), "hello");
    }
}
