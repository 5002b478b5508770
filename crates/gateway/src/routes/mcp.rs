//! `/mcp/{server}`: the MCP servers this gateway hosts, as streamable-HTTP MCP endpoints for
//! agents that authenticate with their MeshGuard token ([`crate::mcp_host`]).

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use meshguard_mcp::gateway::InProcessGateway;
use tower::ServiceExt as _;

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
    let own = || -> Arc<dyn InProcessGateway> { Arc::new(OwnRouter(super::app(state.clone()))) };
    mcp_host::post(
        &state.mcp,
        &server,
        &agent.record.id,
        token,
        &headers,
        &body,
        own,
    )
    .unwrap_or_else(IntoResponse::into_response)
}

/// This gateway's router, where the checks of the MCP sessions it hosts go: the same
/// authentication, decision, limits and audit as `POST /proxy/governance/check`, without the
/// loopback connection.
struct OwnRouter(axum::Router);

impl InProcessGateway for OwnRouter {
    fn serve(&self, request: Request<Vec<u8>>) -> BoxFuture<'static, Response<Vec<u8>>> {
        let router = self.0.clone();
        Box::pin(async move {
            let response = match router.oneshot(request.map(Body::from)).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let (parts, body) = response.into_parts();
            match axum::body::to_bytes(body, usize::MAX).await {
                Ok(bytes) => Response::from_parts(parts, bytes.to_vec()),
                // The caller reads any status but 200 and 403 as no answer: it fails closed.
                Err(e) => {
                    let mut failed = Response::new(e.to_string().into_bytes());
                    *failed.status_mut() = StatusCode::BAD_GATEWAY;
                    failed
                }
            }
        })
    }
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
