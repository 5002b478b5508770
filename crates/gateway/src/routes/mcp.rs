//! `/mcp/{server}`: the MCP servers this gateway hosts, as streamable-HTTP MCP endpoints for
//! agents that authenticate with their MeshGuard token ([`crate::mcp_host`]).

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use crate::auth::{AuthenticatedAgent, bearer};
use crate::extract::LimitedBody;
use crate::mcp_host;
use crate::state::AppState;
use crate::trace::TraceId;

use super::check::{Route, authenticated};

/// The agent of an MCP request, or its refusal: every request authenticates, so a revoked
/// agent's next message reaches no server, whatever its method.
async fn agent(
    state: &AppState,
    headers: &HeaderMap,
    trace: &TraceId,
    server: &str,
) -> Result<AuthenticatedAgent, Response> {
    let named = || (Some(format!("mcp:{server}")), None);
    authenticated(state, headers, trace, Route::Post, named).await
}

/// `POST /mcp/{server}`: one JSON-RPC message of the client's.
pub async fn post(
    State(state): State<AppState>,
    Extension(trace): Extension<TraceId>,
    Path(server): Path<String>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Response {
    let agent = match agent(&state, &headers, &trace, &server).await {
        Ok(agent) => agent,
        Err(refused) => return refused,
    };
    let token = bearer(&headers).unwrap_or_default();
    mcp_host::post(
        &state.mcp,
        &server,
        &agent.record.id,
        token,
        &headers,
        &body,
    )
    .unwrap_or_else(IntoResponse::into_response)
}

/// `GET /mcp/{server}`: the session's stream of server messages that belong to no request.
pub async fn get(
    State(state): State<AppState>,
    Extension(trace): Extension<TraceId>,
    Path(server): Path<String>,
    headers: HeaderMap,
) -> Response {
    let agent = match agent(&state, &headers, &trace, &server).await {
        Ok(agent) => agent,
        Err(refused) => return refused,
    };
    mcp_host::get(&state.mcp, &server, &agent.record.id, &headers)
        .unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /mcp/{server}`: the client ends its session.
pub async fn delete(
    State(state): State<AppState>,
    Extension(trace): Extension<TraceId>,
    Path(server): Path<String>,
    headers: HeaderMap,
) -> Response {
    let agent = match agent(&state, &headers, &trace, &server).await {
        Ok(agent) => agent,
        Err(refused) => return refused,
    };
    mcp_host::delete(&state.mcp, &server, &agent.record.id, &headers)
        .unwrap_or_else(IntoResponse::into_response)
}
