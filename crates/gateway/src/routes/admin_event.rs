//! The audit event of an admin change (kind `admin`), committed before the change is answered.

use axum::http::HeaderMap;
use meshguard_store::{AuditAgent, AuditKind, NewAuditEvent};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::state::AppState;

/// What changed, for the trail: `action` like `agent.revoke`, `resource` the name changed.
pub struct AdminChange<'a> {
    /// `agent.create`, `policy.apply`, …
    pub action: &'a str,
    /// The agent concerned, if any.
    pub agent: Option<AuditAgent>,
    /// The agent or policy name.
    pub resource: &'a str,
    /// One human sentence.
    pub reason: String,
    /// Details (revision numbers, fields changed).
    pub context: Map<String, Value>,
}

/// The trace id a client sent on an admin call, if any.
pub fn trace_of(headers: &HeaderMap) -> Option<String> {
    ["x-trace-id", "x-meshguard-trace-id"]
        .iter()
        .filter_map(|name| headers.get(*name))
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .find(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
}

/// Appends and commits the event of an admin change.
pub async fn record_change(
    state: &AppState,
    headers: &HeaderMap,
    change: AdminChange<'_>,
) -> Result<String, ApiError> {
    let event = NewAuditEvent {
        agent: change.agent,
        resource: Some(change.resource.to_owned()),
        reason: Some(change.reason),
        trace_id: trace_of(headers),
        status: Some("success".to_owned()),
        context: change.context,
        ..NewAuditEvent::new(AuditKind::Admin, change.action, &state.instance_id)
    };
    let id = event.id.clone();
    state
        .audit
        .append_committed(event)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(id)
}
