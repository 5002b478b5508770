//! `POST /proxy/governance/preview`: the decision a check would get, asked by the agent itself.
//! Nothing is charged and no approval is created, so a client can ask ahead of time which of its
//! actions are open to it (the MCP proxy hides the tools it can never use) without spending its
//! limits or leaving approvals for a human. The question is audited (kind `test`), like the
//! admin `decide`.

use std::time::Instant;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use meshguard_policy::{CheckRequest, Effect};
use meshguard_store::EventCode;
use meshguard_store::{AuditKind, NewAuditEvent};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::approvals::{self, ApprovalMode, ApprovalSettings, Asking};
use crate::config::Mode;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{LimitedBody, parse_json};
use crate::openapi::BodyRefusals;
use crate::rate_limit::Charging;
use crate::state::AppState;
use crate::trace::TraceId;

use super::check::{Route, audit_agent, authenticated, lenient_action, require_action};
use super::sorted::SortedJson;

/// The body of `POST /proxy/governance/preview`: a check's body without an approval id.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PreviewBody {
    /// `verb:object`.
    action: String,
    /// What the action would touch; `*` when absent.
    #[serde(default)]
    resource: Option<String>,
    /// The context a check would send.
    #[serde(default)]
    context: Option<Map<String, Value>>,
}

/// The decision a check would get now. It never allows anything: only a check's 200 does.
#[derive(Debug, Serialize, ToSchema)]
struct PreviewAnswer {
    /// The action as received.
    action: String,
    /// The resource as received (`*` when none was sent).
    resource: String,
    /// Whether a check would be allowed now.
    allowed: bool,
    /// `allow`, `deny` or `require_approval`.
    #[schema(required = true)]
    decision: Option<Effect>,
    /// The decision's machine code.
    #[schema(required = true)]
    code: Option<EventCode>,
    /// Why, for a person.
    #[schema(required = true)]
    reason: Option<String>,
    /// The policy that would decide.
    #[schema(required = true)]
    policy: Option<String>,
    /// The rule that would decide.
    #[schema(required = true)]
    rule: Option<String>,
    /// Whether a human would have to decide first.
    requires_approval: bool,
    /// False in `audit` and `bypass` mode.
    enforced: bool,
    /// The trace id of this preview (its `test` audit event).
    trace_id: String,
}

/// `POST /proxy/governance/preview`. Always 200 when the agent is authenticated: the answer is
/// information, never a permission (only a check's 200 allows anything).
#[utoipa::path(
    post,
    path = "/proxy/governance/preview",
    summary = "What a check would get now",
    description = "The decision a check would get now, for the agent itself. Nothing is charged \
        and no approval is created; the question is audited as kind `test`.",
    request_body = PreviewBody,
    responses(
        (status = 200, body = PreviewAnswer, description = "The would-be decision."),
        (status = 503, body = ErrorBody, description = "`unavailable`: the store or Redis cannot be reached."),
        BodyRefusals,
    )
)]
pub async fn preview(
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
    let body = match parse_json::<PreviewBody>(&body)
        .and_then(|b| Ok((require_action(b.action, "action")?, b.resource, b.context)))
    {
        Ok(body) => body,
        Err(err) => return err.into_response(),
    };
    let (action, resource, context) = body;
    let resource = resource.unwrap_or_else(|| "*".to_owned());
    let context = context.unwrap_or_default();
    let request = CheckRequest {
        action: &action,
        resource: &resource,
        context: &context,
        now: (state.wall_clock)(),
    };
    // The peeking oracle reports an exhausted limit as a check would see it, and charges nothing.
    let policies = state.policies.current();
    let decision = state
        .limiter
        .decide_with_limits(&agent.record.id, Charging::Peek, |oracle| {
            policies.decide(&agent.profile, &request, oracle)
        })
        .await;
    let decision = match decision {
        Ok(decision) => decision,
        Err(err) => return ApiError::Unavailable(err.to_string()).into_response(),
    };
    let asking = Asking {
        agent_id: &agent.record.id,
        named: None,
        trace_id: None,
        context: &context,
    };
    let decision = match approvals::settle(
        &*state.store,
        asking,
        decision,
        ApprovalSettings::of(&state),
        ApprovalMode::Peek,
    )
    .await
    {
        Ok(decision) => decision,
        Err(err) => return ApiError::from(err).into_response(),
    };
    let event = NewAuditEvent {
        agent: Some(audit_agent(&agent)),
        resource: Some(resource.clone()),
        trace_id: Some(trace.0.clone()),
        context,
        latency_us: Some(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)),
        ..NewAuditEvent::new(AuditKind::Test, &action, &state.instance_id).decided(&decision)
    };
    let (effect, code, reason) = (event.decision, event.code, event.reason.clone());
    if let Err(err) = state.audit.append(event).await {
        return ApiError::Unavailable(err.to_string()).into_response();
    }
    let answer = PreviewAnswer {
        allowed: decision.effect() == Effect::Allow,
        requires_approval: decision.effect() == Effect::RequireApproval,
        action,
        resource,
        decision: effect,
        code,
        reason,
        policy: decision.policy,
        rule: decision.rule,
        enforced: state.mode == Mode::Enforce,
        trace_id: trace.0,
    };
    (StatusCode::OK, SortedJson(answer)).into_response()
}
