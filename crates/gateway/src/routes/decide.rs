//! `POST /admin/decide`: what a check would get, with every rule considered and why. Nothing is
//! charged and no approval is created; the question itself is audited (kind `test`).

use axum::extract::State;
use axum::http::HeaderMap;
use meshguard_policy::Explanation;
use meshguard_policy::{CheckRequest, Effect};
use meshguard_store::AgentRecord;
use meshguard_store::{AgentStatus, AuditAgent, AuditKind, EventCode, NewAuditEvent};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::admin_event::trace_of;
use super::sorted::SortedJson;
use crate::approvals::{self, ApprovalMode, ApprovalSettings, Asking};
use crate::auth::profile_of;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;
use crate::openapi::BodyRefusals;
use crate::rate_limit::Charging;
use crate::state::AppState;

/// The body of `POST /admin/decide`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DecideBody {
    /// The agent's id or name.
    agent: String,
    /// `verb:object`.
    action: String,
    /// `*` when absent.
    #[serde(default)]
    resource: Option<String>,
    /// The context a check would send.
    #[serde(default)]
    context: Option<Map<String, Value>>,
    /// An approval the check would name (also as `approvalId`).
    #[serde(default, alias = "approvalId")]
    approval_id: Option<String>,
    /// Decide as if asked at this time (RFC 3339), for schedules; the gateway's clock when
    /// absent.
    #[serde(default, with = "time::serde::rfc3339::option")]
    now: Option<OffsetDateTime>,
}

/// The decision a check would get, with every rule considered and why.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecideAnswer {
    /// The agent asked about.
    agent: AgentRecord,
    /// The action as given.
    action: String,
    /// The resource as given (`*` when none was).
    resource: String,
    /// Whether a check would be allowed (never for a revoked agent).
    allowed: bool,
    /// `allow`, `deny` or `require_approval` (`deny` for a revoked agent).
    decision: Option<Effect>,
    /// The machine code (`unauthorized` for a revoked agent).
    code: Option<EventCode>,
    /// Why, for a person.
    reason: Option<String>,
    /// The policy that would decide.
    policy: Option<String>,
    /// The rule that would decide.
    rule: Option<String>,
    /// Whether a human would have to decide first.
    requires_approval: bool,
    /// The approval the check would be about.
    approval_id: Option<String>,
    /// Whole seconds until a rate-limited check would fit.
    retry_after_seconds: Option<u64>,
    /// Every policy and rule considered and why each did or did not count.
    explanation: Explanation,
    /// The question's own audit event (kind `test`).
    audit_id: String,
}

/// `POST /admin/decide`.
#[utoipa::path(
    post,
    path = "/decide",
    operation_id = "decide",
    summary = "What a check would get, and why",
    description = "No quota charged, no approval created; audited as kind `test`.",
    request_body = DecideBody,
    responses(
        (status = 200, body = DecideAnswer, description = "The decision and its explanation."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such agent."),
        BodyRefusals,
    )
)]
pub async fn explain_check(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<DecideBody>,
) -> Result<SortedJson<DecideAnswer>, ApiError> {
    if body.action.trim().is_empty() {
        return Err(ApiError::BadRequest("action: must not be empty".into()));
    }
    let record = state.store.get_agent(&body.agent).await?;
    let profile = profile_of(&record).map_err(ApiError::Internal)?;
    let resource = body.resource.unwrap_or_else(|| "*".to_owned());
    let context = body.context.unwrap_or_default();
    let request = CheckRequest {
        action: &body.action,
        resource: &resource,
        context: &context,
        now: body.now.unwrap_or_else(|| (state.wall_clock)()),
    };
    // The peeking oracle reports an exhausted limit exactly as a check would see it, and charges
    // nothing.
    let policies = state.policies.current();
    // The agent's past as its next check would see it (outside any session).
    let history = state
        .history
        .view(&record.id, None, policies.history_patterns())
        .await?;
    let explanation = state
        .limiter
        .decide_with_limits(&record.id, Charging::Peek, |oracle| {
            policies.explain_with_history(&profile, &request, &history, oracle)
        })
        .await?;
    let asking = Asking {
        agent_id: &record.id,
        named: body.approval_id.as_deref(),
        trace_id: None,
        context: &context,
    };
    let decision = approvals::settle(
        &*state.store,
        asking,
        explanation.decision.clone(),
        ApprovalSettings::of(&state),
        ApprovalMode::Peek,
    )
    .await?;
    // A revoked agent's checks never reach the engine: the answer is the refusal it would get.
    let revoked = record.status == AgentStatus::Revoked;
    let event = NewAuditEvent {
        agent: Some(AuditAgent {
            id: record.id.clone(),
            name: record.name.clone(),
        }),
        resource: Some(resource.clone()),
        trace_id: trace_of(&headers),
        context: context.clone(),
        ..NewAuditEvent::new(AuditKind::Test, &body.action, &state.instance_id).decided(&decision)
    };
    let event = if revoked {
        NewAuditEvent {
            decision: Some(Effect::Deny),
            code: Some(EventCode::Unauthorized),
            reason: Some(format!(
                "agent `{}` is revoked: every request is refused with 401",
                record.name
            )),
            ..event
        }
    } else {
        event
    };
    let (effect, code, reason) = (event.decision, event.code, event.reason.clone());
    let audit_id = event.id.clone();
    state
        .audit
        .append_committed(event)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(SortedJson(DecideAnswer {
        allowed: !revoked && decision.effect() == Effect::Allow,
        requires_approval: !revoked && decision.effect() == Effect::RequireApproval,
        agent: record,
        action: body.action,
        resource,
        decision: effect,
        code,
        reason,
        policy: decision.policy,
        rule: decision.rule,
        approval_id: decision.approval_id,
        retry_after_seconds: decision.retry_after_secs,
        explanation,
        audit_id,
    }))
}
