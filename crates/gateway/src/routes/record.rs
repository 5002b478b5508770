//! `POST /proxy/governance/record`: the agent reports what an action did, after its own check.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use meshguard_store::{
    AuditFilter, AuditKind, AuditOrder, MAX_RESULT_BYTES, NewAuditEvent, StoreError,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::auth::{AgentAuthError, AuthenticatedAgent, authenticate_agent};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{LimitedBody, parse_json};
use crate::openapi::BodyRefusals;
use crate::state::AppState;
use crate::trace::TraceId;

use super::check::{Route, audit_agent, lenient_action, refuse, require_action};

/// The body of `POST /proxy/governance/record`.
#[derive(Debug, Deserialize, ToSchema)]
struct RecordBody {
    /// The action that was carried out, as checked.
    action: String,
    /// What it touched.
    #[serde(default)]
    resource: Option<String>,
    /// `success`, `error` or free text.
    #[serde(default)]
    status: Option<String>,
    /// What came of it; stored cut to 4 KiB.
    #[serde(default)]
    result: Option<String>,
    /// The `audit_id` of the agent's own check this record follows.
    #[serde(default)]
    audit_id: Option<String>,
    /// How long the action took.
    #[serde(default)]
    duration_ms: Option<f64>,
    /// Anything else worth keeping in the audit trail.
    #[serde(default)]
    context: Option<Map<String, Value>>,
}

/// The answer to a record.
#[derive(Debug, Serialize, ToSchema)]
struct Recorded {
    /// Always true: the event is committed (queued with `audit.durability = "async"`).
    recorded: bool,
    /// The record's own audit event.
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
        state.audit.settled().await;
        let mut looked_up = state.store.audit_event(id).await;
        // With async durability the check was answered before its event committed: a record
        // that follows at once may arrive first, so it waits (briefly) for that commit.
        if matches!(looked_up, Err(StoreError::NotFound { .. }))
            && state.audit.answers_before_commit()
        {
            let store = &state.store;
            let found = || async move { store.audit_event(id).await.is_ok() };
            if state
                .audit
                .await_commit(id, std::time::Duration::from_secs(2), found)
                .await
            {
                looked_up = state.store.audit_event(id).await;
            }
        }
        match looked_up {
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
#[utoipa::path(
    post,
    path = "/proxy/governance/record",
    summary = "Report what an action did",
    description = "Appends a `record` event to the audit trail. A record may only follow the \
        agent's own checks. Never counted against policy limits; charged to the agent's record \
        budget (`agents.records_per_minute`).",
    request_body = RecordBody,
    responses(
        (status = 201, body = Recorded, description = "Recorded."),
        (status = 403, body = ErrorBody, description = "`forbidden`: `audit_id` is not a check \
            of this agent, or the trace's first check is another agent's."),
        (status = 404, body = ErrorBody, description = "`not_found`: no check `audit_id` in the trail."),
        (status = 503, body = ErrorBody, description = "`unavailable`: the store cannot be reached."),
        BodyRefusals,
    )
)]
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
