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
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};

use super::admin_event::{AdminChange, ChangedBy, apply, unexpected};
use super::page::PageParams;
use super::sorted::SortedJson;
use crate::auth::{AgentAuthError, authenticate_agent};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery};
use crate::openapi::BodyRefusals;
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
#[derive(Debug, Serialize, ToSchema)]
struct AgentView {
    /// The approval.
    approval_id: String,
    /// Where it stands (`expired` once its time ran out).
    status: ApprovalStatus,
    /// Who decided.
    decided_by: Option<String>,
    /// The decider's reason.
    reason: Option<String>,
    /// The normalised action it is about.
    action: String,
    /// The normalised resource it is about.
    resource: String,
    /// When the current status runs out.
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
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Seconds to wait for a decision (at most 60; default 0: answer at once).
    #[serde(default)]
    wait: Option<u64>,
}

/// `GET /proxy/governance/approvals/{id}?wait=SECONDS`: the agent's own approval, answered as soon
/// as it is decided or after `wait` seconds (at most 60). Another agent's approval is a 404.
#[utoipa::path(
    get,
    path = "/proxy/governance/approvals/{id}",
    operation_id = "poll_approval",
    summary = "Wait for an approval",
    description = "The agent's own approval, long-polled until it is decided or `wait` runs out.",
    params(
        ("id" = String, Path, description = "The approval id (`apr_…`)."),
        WaitQuery,
    ),
    responses(
        (status = 200, body = AgentView, description = "The approval as it stands."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such approval of this agent."),
        (status = 400, body = ErrorBody, description = "`bad_request`: `wait` is not a number."),
        (status = 503, body = ErrorBody, description = "`unavailable`: the store cannot be reached."),
    )
)]
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
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `pending`, `approved`, `denied`, `expired` or `used`; absent or `all`: every approval.
    #[serde(default)]
    status: Option<String>,
}

/// One page of approvals.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalList {
    /// The approvals, oldest first, each with its effective status.
    approvals: Vec<ApprovalRecord>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

fn admin_view(record: ApprovalRecord) -> ApprovalRecord {
    ApprovalRecord {
        status: effective_status(&record, OffsetDateTime::now_utc()),
        ..record
    }
}

/// `GET /admin/approvals?status=pending&limit=&cursor=`: one page, newest first.
#[utoipa::path(
    get,
    path = "/approvals",
    operation_id = "list_approvals",
    summary = "List approvals",
    params(ListQuery, PageParams),
    responses(
        (status = 200, body = ApprovalList, description = "One page of approvals."),
        (status = 400, body = ErrorBody, description = "`bad_request`: an unknown `status`, a bad `limit` or cursor."),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<SortedJson<ApprovalList>, ApiError> {
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
    let approvals: Vec<ApprovalRecord> = page
        .items
        .into_iter()
        .filter(|r| status.is_none_or(|wanted| effective_status(r, now) == wanted))
        .map(admin_view)
        .collect();
    Ok(SortedJson(ApprovalList {
        approvals,
        next_cursor: page.next_cursor,
    }))
}

/// The optional body of approve and deny: the human's verdict, with why and who.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerdictBody {
    /// Why; shown to the agent.
    #[serde(default)]
    reason: Option<String>,
    /// Who decided; `admin` when absent.
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
) -> Result<SortedJson<ApprovalRecord>, ApiError> {
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
    Ok(SortedJson(admin_view(record)))
}

/// `POST /admin/approvals/{id}/approve`: one request of the agent may go ahead.
#[utoipa::path(
    post,
    path = "/approvals/{id}/approve",
    operation_id = "approve_approval",
    summary = "Approve",
    description = "Lets one request through: the agent's next matching check is allowed with \
        `allowed_with_approval`, once.",
    params(("id" = String, Path, description = "The approval id (`apr_…`).")),
    request_body(content = Option<VerdictBody>, description = "Optional."),
    responses(
        (status = 200, body = ApprovalRecord, description = "The approval, `approved`."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such approval."),
        (status = 409, body = ErrorBody, description = "`conflict`: it is no longer pending."),
        BodyRefusals,
    )
)]
pub async fn approve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<VerdictBody>,
) -> Result<SortedJson<ApprovalRecord>, ApiError> {
    settle_by_human(&state, &headers, &id, ApprovalVerdict::Approve, body).await
}

/// `POST /admin/approvals/{id}/deny {"reason"}`: refused until the approval's timeout runs out.
#[utoipa::path(
    post,
    path = "/approvals/{id}/deny",
    operation_id = "deny_approval",
    summary = "Deny",
    description = "The agent's matching checks are denied `approval_denied` until the timeout runs out.",
    params(("id" = String, Path, description = "The approval id (`apr_…`).")),
    request_body(content = Option<VerdictBody>, description = "Optional."),
    responses(
        (status = 200, body = ApprovalRecord, description = "The approval, `denied`."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such approval."),
        (status = 409, body = ErrorBody, description = "`conflict`: it is no longer pending."),
        BodyRefusals,
    )
)]
pub async fn deny(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<VerdictBody>,
) -> Result<SortedJson<ApprovalRecord>, ApiError> {
    settle_by_human(&state, &headers, &id, ApprovalVerdict::Deny, body).await
}
