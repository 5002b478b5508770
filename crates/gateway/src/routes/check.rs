//! `POST /proxy/governance/check`, `GET /proxy/check` and `POST /proxy/governance/record`.

use std::time::Instant;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use meshguard_policy::{CheckRequest, Code, Decision, Effect};
use meshguard_store::{
    AuditAgent, AuditFilter, AuditKind, AuditOrder, MAX_RESULT_BYTES, NewAuditEvent, StoreError,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::alerts::{Alert, AlertAgent, Trigger};
use crate::approvals::{self, ApprovalMode, ApprovalSettings};
use crate::auth::{AgentAuthError, AuthenticatedAgent, authenticate_agent};
use crate::config::Mode;
use crate::error::ApiError;
use crate::extract::{LimitedBody, parse_json};
use crate::rate_limit::Charging;
use crate::rate_limit_redis::{RATE_LIMITS_UNAVAILABLE, RedisLimitError};
use crate::refusals::{self, Refusal};
use crate::state::AppState;
use crate::trace::TraceId;

use super::forward::Proxied;

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

/// The body of every decision answer (SPEC 2), built from one [`Decision`].
#[derive(Debug, Serialize)]
pub struct DecisionBody {
    allowed: bool,
    decision: &'static str,
    code: &'static str,
    reason: String,
    message: String,
    action: String,
    resource: String,
    policy: Option<String>,
    rule: Option<String>,
    requires_approval: bool,
    approval_id: Option<String>,
    retry_after_seconds: Option<u64>,
    enforced: bool,
    trace_id: String,
    audit_id: Option<String>,
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
        Err(err) => return refuse(&state, err, &trace, lenient_action(&body)).await,
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
            return refuse(&state, err, &trace, (named, resource)).await;
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
    match evaluate(state, agent, &input, None, trace, route, started).await {
        Ok((decision, audit_id)) => respond(state.mode, route, decision, input, trace, audit_id),
        Err(unavailable) => unavailable,
    }
}

/// Decides, charges, settles approvals and commits the audit event of one check (also of a
/// proxied request, which `proxied` describes); `Err` is the 503 answer when the store or the
/// trail cannot be written.
pub(super) async fn evaluate(
    state: &AppState,
    agent: &AuthenticatedAgent,
    input: &CheckInput,
    proxied: Option<&Proxied>,
    trace: &TraceId,
    route: Route,
    started: Instant,
) -> Result<(Decision, String), Response> {
    // 1. Decide, and 2. charge the limits: the engine asks the oracle once, inside `decide`,
    //    with every limit of every applicable policy (denied checks count too), all-or-nothing,
    //    so a limit can never be charged for a decision that was not made. With Redis the
    //    limits are global; if Redis cannot answer, nothing is allowed (503, like the store).
    //    A proxied request is bounded by what the proxy saw: a path refused before routing is
    //    denied (and still charged), and what the agent claims can only narrow the decision.
    let decision = decide(state, agent, input)
        .await
        .map_err(|err| unavailable(state, input, trace, Outage::RateLimits, &err.to_string()))?;
    let decision = match proxied {
        Some(proxied) => proxied.narrow(decision, &input.action),
        None => decision,
    };
    // 3. Approvals: only a decision that needs a human touches the approval store, after the
    //    engine, because an explicit deny must win before any approval is created or consumed.
    let decision = approvals::settle(
        &*state.store,
        &agent.record.id,
        decision,
        input.approval_id.as_deref(),
        Some(&trace.0),
        ApprovalSettings::of(state),
        ApprovalMode::Apply,
    )
    .await
    .map_err(|err| unavailable(state, input, trace, Outage::Store, &err.to_string()))?;
    // 4. Audit: the event is committed (group commit) before the answer leaves, so no decision
    //    an agent acted on is missing from the trail. If it cannot be written, nothing is allowed.
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let mut event = decision_event(state, agent, input, &decision, trace, latency_us);
    if let Some(proxied) = proxied {
        event.context.extend(proxied.context());
    }
    let audit_id = event.id.clone();
    state
        .audit
        .append(event)
        .await
        .map_err(|err| unavailable(state, input, trace, Outage::Store, &err.to_string()))?;
    // 5. Count it; the caller responds.
    state
        .metrics
        .decisions
        .with_label_values(&[decision.effect.as_str(), decision.code.as_str()])
        .inc();
    state
        .metrics
        .check_seconds
        .with_label_values(&[route.label()])
        .observe(started.elapsed().as_secs_f64());
    // 6. Alert last, with a non-blocking hand-over: the decision is recorded and never waits.
    raise_alert(state, agent, input, &decision, trace, &audit_id);
    Ok((decision, audit_id))
}

fn raise_alert(
    state: &AppState,
    agent: &AuthenticatedAgent,
    input: &CheckInput,
    decision: &Decision,
    trace: &TraceId,
    audit_id: &str,
) {
    let Some(trigger) = Trigger::of_decision(decision).filter(|t| state.alerts.wants(*t)) else {
        return;
    };
    let agent = AlertAgent {
        id: agent.record.id.clone(),
        name: agent.record.name.clone(),
    };
    state.alerts.emit(Alert {
        trace_id: Some(trace.0.clone()),
        audit_id: Some(audit_id.to_owned()),
        gateway: state.instance_id.clone(),
        enforced: state.mode == Mode::Enforce,
        ..Alert::of_decision(trigger, decision, agent, &input.action, &input.resource)
    });
}

async fn decide(
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
                .decide(&agent.record.id, Charging::Charge, |oracle| {
                    policies.decide(&agent.profile, &request, oracle)
                })
                .await
        }
        Mode::Bypass => Ok(Decision {
            effect: Effect::Allow,
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

fn decision_event(
    state: &AppState,
    agent: &AuthenticatedAgent,
    input: &CheckInput,
    decision: &Decision,
    trace: &TraceId,
    latency_us: u64,
) -> NewAuditEvent {
    NewAuditEvent {
        id: uuid::Uuid::now_v7().to_string(),
        ts: OffsetDateTime::now_utc(),
        kind: AuditKind::Check,
        agent: Some(AuditAgent {
            id: agent.record.id.clone(),
            name: agent.record.name.clone(),
        }),
        action: input.action.clone(),
        resource: Some(input.resource.clone()),
        decision: Some(decision.effect.as_str().to_owned()),
        code: Some(decision.code.as_str().to_owned()),
        reason: Some(decision.reason.clone()),
        policy: decision.policy.clone(),
        rule: decision.rule.clone(),
        trace_id: Some(trace.0.clone()),
        approval_id: decision.approval_id.clone(),
        status: None,
        result: None,
        context: input.context.clone(),
        latency_us: Some(latency_us),
        gateway: state.instance_id.clone(),
    }
}

pub(super) fn respond(
    mode: Mode,
    route: Route,
    decision: Decision,
    input: CheckInput,
    trace: &TraceId,
    audit_id: String,
) -> Response {
    let enforced = mode == Mode::Enforce;
    let status = match (enforced, decision.effect, decision.code, route) {
        (false, ..) | (true, Effect::Allow, ..) => StatusCode::OK,
        (true, _, Code::RateLimited, Route::Get | Route::Forward) => StatusCode::TOO_MANY_REQUESTS,
        (true, Effect::Deny | Effect::RequireApproval, ..) => StatusCode::FORBIDDEN,
    };
    let retry_after = decision.retry_after_secs;
    let body = DecisionBody {
        allowed: !enforced || decision.effect == Effect::Allow,
        decision: decision.effect.as_str(),
        code: decision.code.as_str(),
        message: decision.reason.clone(),
        reason: decision.reason,
        action: input.action,
        resource: input.resource,
        policy: decision.policy,
        rule: decision.rule,
        requires_approval: decision.effect == Effect::RequireApproval,
        approval_id: decision.approval_id,
        retry_after_seconds: retry_after,
        enforced,
        trace_id: trace.0.clone(),
        audit_id: Some(audit_id),
    };
    let mut response = (status, Json(body)).into_response();
    if let (Some(secs), true) = (retry_after, status != StatusCode::OK) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// What could not be reached when a check is answered 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outage {
    /// The store (or the audit trail could not be written).
    Store,
    /// Redis, which holds the global rate limits (`--redis-url`).
    RateLimits,
}

impl Outage {
    /// What is unavailable, as the answer, the log line and the alert say it.
    fn message(self) -> &'static str {
        match self {
            Outage::Store => "store unavailable",
            Outage::RateLimits => RATE_LIMITS_UNAVAILABLE,
        }
    }
}

/// 503: the store or Redis could not be reached (or the audit event not written); nothing is
/// allowed, whatever the mode, and no event exists for this answer.
pub(super) fn unavailable(
    state: &AppState,
    input: &CheckInput,
    trace: &TraceId,
    outage: Outage,
    cause: &str,
) -> Response {
    let what = outage.message();
    tracing::error!(%cause, action = %input.action, trace = %trace.0, "{what}: check denied");
    state
        .metrics
        .decisions
        .with_label_values(&["deny", "unavailable"])
        .inc();
    let reason = format!("{what}: nothing is allowed until it is back");
    if state.alerts.wants(Trigger::Error) {
        state.alerts.emit(Alert {
            event: Trigger::Error,
            agent: None,
            action: input.action.clone(),
            resource: Some(input.resource.clone()),
            decision: Some("deny".into()),
            code: Some("unavailable".into()),
            reason: reason.clone(),
            policy: None,
            rule: None,
            approval_id: None,
            trace_id: Some(trace.0.clone()),
            audit_id: None,
            timestamp: OffsetDateTime::now_utc(),
            gateway: state.instance_id.clone(),
            enforced: true,
            test: false,
        });
    }
    let body = DecisionBody {
        allowed: false,
        decision: "deny",
        code: "unavailable",
        message: reason.clone(),
        reason,
        action: input.action.clone(),
        resource: input.resource.clone(),
        policy: None,
        rule: None,
        requires_approval: false,
        approval_id: None,
        retry_after_seconds: None,
        enforced: true,
        trace_id: trace.0.clone(),
        audit_id: None,
    };
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
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
    (action, resource): (Option<String>, Option<String>),
) -> Response {
    match err {
        AgentAuthError::Rejected(message) => {
            tracing::info!(trace = %trace.0, %message, "agent request refused");
            ApiError::Unauthorized(message).into_response()
        }
        AgentAuthError::RejectedAudited { message, agent } => {
            tracing::warn!(trace = %trace.0, agent = %agent.name, %message, "agent request refused");
            let over_budget = state.refusal_budget.charge(&agent.id);
            let due = state.refusals.count(Refusal {
                agent,
                reason: message.clone(),
                action,
                resource,
                trace_id: trace.0.clone(),
            });
            refusals::write(&state.audit, due).await;
            state
                .metrics
                .decisions
                .with_label_values(&["deny", "unauthorized"])
                .inc();
            refused(state, over_budget, message).into_response()
        }
        AgentAuthError::Unavailable(cause) => {
            let input = CheckInput {
                action: action.unwrap_or_default(),
                resource: resource.unwrap_or_else(|| "*".into()),
                context: Map::new(),
                approval_id: None,
            };
            unavailable(state, &input, trace, Outage::Store, &cause)
        }
        AgentAuthError::Internal(cause) => ApiError::Internal(cause).into_response(),
    }
}

/// The answer to a request whose token is no longer honoured, given what charging it to the
/// agent's refusal budget said: 401, or 429 once whoever replays the dead token should back off.
pub(super) fn refused(state: &AppState, charged: Result<(), u64>, message: String) -> ApiError {
    match charged {
        Ok(()) => ApiError::Unauthorized(message),
        Err(retry_after_secs) => ApiError::RateLimited {
            message: format!(
                "{message}; this agent's refused requests are over {} per minute: retry in {retry_after_secs} s",
                state.refusal_budget.per_minute()
            ),
            retry_after_secs,
        },
    }
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
        Err(err) => return refuse(&state, err, &trace, lenient_action(&body)).await,
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
        id: uuid::Uuid::now_v7().to_string(),
        ts: OffsetDateTime::now_utc(),
        kind: AuditKind::Record,
        agent: Some(AuditAgent {
            id: agent.record.id.clone(),
            name: agent.record.name.clone(),
        }),
        action,
        resource: input.resource,
        decision: None,
        code: None,
        reason: None,
        policy: None,
        rule: None,
        trace_id: Some(trace.0.clone()),
        approval_id: None,
        status: input.status,
        result: input.result.map(|r| truncate(r, MAX_RESULT_BYTES)),
        context,
        latency_us: None,
        gateway: state.instance_id.clone(),
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
