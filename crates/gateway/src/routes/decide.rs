//! `POST /admin/decide`: what a check would get, with every rule considered and why. Nothing is
//! charged and no approval is created; the question itself is audited (kind `test`).

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use meshguard_policy::{CheckRequest, Effect};
use meshguard_store::{AgentStatus, AuditAgent, AuditKind, EventCode, NewAuditEvent};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::admin_event::trace_of;
use crate::approvals::{self, ApprovalMode, ApprovalSettings, Asking};
use crate::auth::profile_of;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::rate_limit::Charging;
use crate::state::AppState;

/// The body of `POST /admin/decide`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DecideBody {
    agent: String,
    action: String,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    context: Option<Map<String, Value>>,
    #[serde(default, alias = "approvalId")]
    approval_id: Option<String>,
    /// Decide as if asked at this time (RFC 3339), for schedules; the gateway's clock when
    /// absent.
    #[serde(default, with = "time::serde::rfc3339::option")]
    now: Option<OffsetDateTime>,
}

/// `POST /admin/decide`.
pub async fn explain_check(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<DecideBody>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({
        "agent": record,
        "action": body.action,
        "resource": resource,
        "allowed": !revoked && decision.effect() == Effect::Allow,
        "decision": effect,
        "code": code,
        "reason": reason,
        "policy": decision.policy,
        "rule": decision.rule,
        "requiresApproval": !revoked && decision.effect() == Effect::RequireApproval,
        "approvalId": decision.approval_id,
        "retryAfterSeconds": decision.retry_after_secs,
        "explanation": explanation,
        "auditId": audit_id,
    })))
}
