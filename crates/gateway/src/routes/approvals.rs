//! Approvals over HTTP: the agent long-polls its own approval; operators list, approve and deny
//! them. A decision goes through the admin change path: committed with its audit event (kind
//! `approval`), then the auth cache is cleared.

use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use meshguard_store::{
    AdminMutation, AdminOutcome, ApprovalDecision, ApprovalRecord, ApprovalStatus, ApprovalVerdict,
    AuditAgent, StoreChange, StoreError,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use tokio::sync::broadcast::error::RecvError;

use super::admin_event::{AdminChange, ChangedBy, apply, unexpected};
use super::page::{PageParams, listing};
use crate::auth::{AgentAuthError, authenticate_agent};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;
use crate::trace::TraceId;

use super::outcome::AuthRefusal;

/// The longest an agent may wait in one long poll.
pub const MAX_WAIT_SECS: u64 = 60;

/// The status as of now: a pending or approved approval whose time ran out is `expired` even
/// before the housekeeping task writes it.
fn effective_status(record: &ApprovalRecord, now: OffsetDateTime) -> ApprovalStatus {
    match record.status {
        ApprovalStatus::Pending | ApprovalStatus::Approved if record.expires_at <= now => {
            ApprovalStatus::Expired
        }
        status => status,
    }
}

/// What an agent sees of its approval.
#[derive(Debug, Serialize)]
struct AgentView {
    approval_id: String,
    status: ApprovalStatus,
    decided_by: Option<String>,
    reason: Option<String>,
    action: String,
    resource: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

impl AgentView {
    fn of(record: ApprovalRecord) -> AgentView {
        AgentView {
            status: effective_status(&record, OffsetDateTime::now_utc()),
            approval_id: record.id,
            decided_by: record.decided_by,
            reason: record.reason,
            action: record.action,
            resource: record.resource,
            expires_at: record.expires_at,
        }
    }
}

/// `?wait=SECONDS`.
#[derive(Debug, Deserialize)]
pub struct WaitQuery {
    #[serde(default)]
    wait: Option<u64>,
}

/// `GET /proxy/governance/approvals/{id}?wait=SECONDS`: the agent's own approval, answered as soon
/// as it is decided or after `wait` seconds (at most 60). Another agent's approval is a 404.
pub async fn agent_approval(
    State(state): State<AppState>,
    Extension(trace): Extension<TraceId>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<WaitQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let agent = match authenticate_agent(&state, &headers).await {
        Ok(agent) => agent,
        Err(AgentAuthError::Rejected(message)) => {
            tracing::info!(trace = %trace.0, %message, "approval poll refused");
            return Err(ApiError::Unauthorized(message));
        }
        Err(AgentAuthError::RejectedAudited { message, agent }) => {
            tracing::info!(trace = %trace.0, %message, "approval poll refused");
            return Err(AuthRefusal::not_honoured(&state, &agent.id, message).into_error());
        }
        Err(AgentAuthError::Unavailable(cause)) => return Err(ApiError::Unavailable(cause)),
        Err(AgentAuthError::Internal(cause)) => return Err(ApiError::Internal(cause)),
    };
    let wait = Duration::from_secs(query.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    let not_found = || ApiError::NotFound(format!("approval `{id}` not found"));
    // Subscribe before the first read, so a decision between the read and the wait is not missed.
    let mut changes = state.store.subscribe_changes();
    let mut stopping = state.stopping.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let record = match state.store.get_approval(&id).await {
            Ok(record) if record.agent_id == agent.record.id => record,
            Ok(_) | Err(StoreError::NotFound { .. }) => return Err(not_found()),
            Err(other) => return Err(other.into()),
        };
        let now = OffsetDateTime::now_utc();
        if effective_status(&record, now) != ApprovalStatus::Pending {
            return Ok(Json(AgentView::of(record)).into_response());
        }
        // Wake up when the approval changes, when it expires, or when the wait is over.
        let expiry = tokio::time::Instant::now()
            + Duration::try_from(record.expires_at - now).unwrap_or(Duration::ZERO);
        let wake = deadline.min(expiry);
        if tokio::time::Instant::now() >= deadline {
            return Ok(Json(AgentView::of(record)).into_response());
        }
        let waiting = state.metrics.approval_poll_waiting();
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(StoreChange::Approval { id: changed }) if changed == id => break,
                    Ok(StoreChange::Resync) | Err(RecvError::Lagged(_)) => break,
                    Ok(_) => continue,
                    Err(RecvError::Closed) => {
                        tokio::time::sleep_until(wake).await;
                        break;
                    }
                },
                () = tokio::time::sleep_until(wake) => break,
                _ = stopping.changed() => break,
            }
        }
        drop(waiting);
        if *stopping.borrow() {
            return Ok(Json(AgentView::of(record)).into_response());
        }
    }
}

/// `?status=pending`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    status: Option<String>,
}

fn admin_view(record: ApprovalRecord) -> Value {
    let status = effective_status(&record, OffsetDateTime::now_utc());
    let mut value = serde_json::to_value(record).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.insert("status".into(), json!(status));
    }
    value
}

/// `GET /admin/approvals?status=pending&limit=&cursor=`: one page, newest first.
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Value>, ApiError> {
    let status = match query.status.as_deref() {
        None | Some("" | "all") => None,
        Some(s) => Some(ApprovalStatus::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "status: expected `pending`, `approved`, `denied`, `expired` or `used`, got `{s}`"
            ))
        })?),
    };
    let now = OffsetDateTime::now_utc();
    // The store lists by stored status; one whose time ran out is shown as expired, and only
    // under `expired`. Filtering a page after reading it can leave it short (even empty) while
    // more follow: only a null `nextCursor` ends the listing.
    let request = page.request();
    let page = match status {
        Some(ApprovalStatus::Expired) | None => state.store.list_approvals(None, &request).await?,
        Some(wanted) => state.store.list_approvals(Some(wanted), &request).await?,
    };
    let approvals: Vec<Value> = page
        .items
        .into_iter()
        .filter(|r| status.is_none_or(|wanted| effective_status(r, now) == wanted))
        .map(admin_view)
        .collect();
    Ok(Json(listing(
        "approvals",
        Value::Array(approvals),
        page.next_cursor,
    )))
}

/// The optional body of approve and deny: the human's verdict, with why and who.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerdictBody {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    decided_by: Option<String>,
}

impl VerdictBody {
    /// A verdict by `operator`, with an optional note.
    pub(super) fn by(operator: &str, reason: Option<String>) -> VerdictBody {
        VerdictBody {
            reason,
            decided_by: Some(operator.to_owned()),
        }
    }
}

/// Settles a pending approval by a human's verdict: the decision and its audit event (kind
/// `approval`) commit together.
pub(super) async fn settle_by_human(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    verdict: ApprovalVerdict,
    body: VerdictBody,
) -> Result<Json<Value>, ApiError> {
    let decided_by = body
        .decided_by
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "admin".to_owned());
    // The agent's name is read first: the event is built inside the decision's transaction.
    let pending = state.store.get_approval(id).await?;
    let agent_name = match state.store.get_agent(&pending.agent_id).await {
        Ok(agent) => agent.name,
        Err(_) => pending.agent_id.clone(),
    };
    let verb = match verdict {
        ApprovalVerdict::Approve => "approved",
        ApprovalVerdict::Deny => "denied",
    };
    let reason = body.reason.clone();
    let by = decided_by.clone();
    let mutation = AdminMutation::DecideApproval {
        id: id.to_owned(),
        decision: ApprovalDecision {
            verdict,
            decided_by,
            reason: body.reason,
            decided_at: OffsetDateTime::now_utc(),
        },
    };
    let outcome = apply(state, headers, mutation, move |outcome| {
        let AdminOutcome::Approval(record) = outcome else {
            return None;
        };
        let mut context = Map::new();
        context.insert("decidedBy".into(), Value::String(by.clone()));
        Some(AdminChange {
            action: record.action.clone(),
            agent: Some(AuditAgent {
                id: record.agent_id.clone(),
                name: agent_name,
            }),
            resource: record.resource.clone(),
            reason: match &reason {
                Some(reason) => format!("approval '{}' {verb} by {by}: {reason}", record.id),
                None => format!("approval '{}' {verb} by {by}", record.id),
            },
            context,
            by: ChangedBy::Approver {
                verdict,
                approval_id: record.id.clone(),
                request_trace: record.trace_id.clone(),
            },
        })
    })
    .await?;
    let AdminOutcome::Approval(record) = outcome else {
        return Err(unexpected(&outcome));
    };
    Ok(Json(admin_view(record)))
}

/// `POST /admin/approvals/{id}/approve`: one request of the agent may go ahead.
pub async fn approve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<VerdictBody>,
) -> Result<Json<Value>, ApiError> {
    settle_by_human(&state, &headers, &id, ApprovalVerdict::Approve, body).await
}

/// `POST /admin/approvals/{id}/deny {"reason"}`: refused until the approval's timeout runs out.
pub async fn deny(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<VerdictBody>,
) -> Result<Json<Value>, ApiError> {
    settle_by_human(&state, &headers, &id, ApprovalVerdict::Deny, body).await
}
