//! `POST /admin/decide`: what a check would get, with every rule considered and why. Nothing is
//! charged and no approval is created; the question itself is audited (kind `test`).

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use meshguard_policy::{CheckRequest, Effect};
use meshguard_store::{AgentStatus, AuditAgent, AuditKind, NewAuditEvent};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::admin_event::trace_of;
use crate::approvals::{self, ApprovalMode, ApprovalSettings};
use crate::auth::profile_of;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::rate_limit::Charging;
use crate::state::AppState;

/// The body of `POST /admin/decide`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideBody {
    agent: String,
    action: String,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    context: Option<Map<String, Value>>,
    #[serde(default, alias = "approvalId")]
    approval_id: Option<String>,
}

/// `POST /admin/decide`.
pub async fn decide(
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
    };
    // The peeking oracle reports an exhausted limit exactly as a check would see it, and charges
    // nothing.
    let policies = state.policies.current();
    let explanation = state
        .limiter
        .decide(&record.id, Charging::Peek, |oracle| {
            policies.explain(&profile, &request, oracle)
        })
        .await?;
    let decision = approvals::settle(
        &*state.store,
        &record.id,
        explanation.decision.clone(),
        body.approval_id.as_deref(),
        None,
        ApprovalSettings::of(&state),
        ApprovalMode::Peek,
    )
    .await?;
    let revoked = record.status == AgentStatus::Revoked;
    let (effect, code, reason) = if revoked {
        (
            "deny",
            "unauthorized",
            format!(
                "agent `{}` is revoked: every request is refused with 401",
                record.name
            ),
        )
    } else {
        (
            decision.effect.as_str(),
            decision.code.as_str(),
            decision.reason.clone(),
        )
    };
    let event = NewAuditEvent {
        id: uuid::Uuid::now_v7().to_string(),
        ts: OffsetDateTime::now_utc(),
        kind: AuditKind::Test,
        agent: Some(AuditAgent {
            id: record.id.clone(),
            name: record.name.clone(),
        }),
        action: body.action.clone(),
        resource: Some(resource.clone()),
        decision: Some(effect.to_owned()),
        code: Some(code.to_owned()),
        reason: Some(reason.clone()),
        policy: decision.policy.clone(),
        rule: decision.rule.clone(),
        trace_id: trace_of(&headers),
        approval_id: decision.approval_id.clone(),
        status: None,
        result: None,
        context: context.clone(),
        latency_us: None,
        gateway: state.instance_id.clone(),
    };
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
        "allowed": !revoked && decision.effect == Effect::Allow,
        "decision": effect,
        "code": code,
        "reason": reason,
        "policy": decision.policy,
        "rule": decision.rule,
        "requiresApproval": !revoked && decision.effect == Effect::RequireApproval,
        "approvalId": decision.approval_id,
        "retryAfterSeconds": decision.retry_after_secs,
        "explanation": explanation,
        "auditId": audit_id,
    })))
}
