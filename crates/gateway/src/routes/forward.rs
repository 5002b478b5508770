//! `ANY /proxy/{path…}`: the reverse proxy. A proxied request is a check (charged, audited) whose
//! action comes from `X-MeshGuard-Action` or the method and path; it is forwarded only when
//! allowed, with the agent's token stripped and the target's credentials injected.

use std::time::Instant;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use meshguard_policy::Effect;
use serde_json::Map;

use super::check::{CheckInput, Route, evaluate, header_value, refuse, respond};
use crate::auth::authenticate_agent;
use crate::config::Mode;
use crate::error::ApiError;
use crate::state::AppState;
use crate::trace::TraceId;

/// `<verb>:<path>`: `GET`/`HEAD` read, `DELETE` delete, anything else writes.
fn default_action(method: &Method, path: &str) -> String {
    let verb = match *method {
        Method::GET | Method::HEAD => "read",
        Method::DELETE => "delete",
        _ => "write",
    };
    format!("{verb}:{path}")
}

/// Headers that stay at the gateway: hop-by-hop headers, the agent's credentials, and the
/// headers that talk to MeshGuard itself.
fn stays_here(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "authorization"
            | "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "x-admin-token"
            | "x-approval-id"
    ) || name.as_str().starts_with("x-meshguard-action")
        || name.as_str().starts_with("x-meshguard-resource")
}

fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "te" | "trailer" | "transfer-encoding" | "upgrade"
    )
}

/// `ANY /proxy/{path…}`.
pub async fn forward(
    State(state): State<AppState>,
    Extension(trace): Extension<TraceId>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let path = parts
        .uri
        .path()
        .strip_prefix("/proxy/")
        .unwrap_or_default()
        .to_owned();
    let action = header_value(&parts.headers, "x-meshguard-action");
    let resource = header_value(&parts.headers, "x-meshguard-resource");
    let agent = match authenticate_agent(&state, &parts.headers).await {
        Ok(agent) => agent,
        Err(err) => {
            let named = (
                action.as_ref().ok().cloned().flatten(),
                resource.as_ref().ok().cloned().flatten(),
            );
            return refuse(&state, err, &trace, named).await;
        }
    };
    let Some((upstream, upstream_path)) = state.upstreams.resolve(&path) else {
        return ApiError::NotFound(format!(
            "no upstream for `/proxy/{path}`: configure `proxy.target` or a `[targets.NAME]`"
        ))
        .into_response();
    };
    let input = match (
        action,
        resource,
        header_value(&parts.headers, "x-approval-id"),
    ) {
        (Ok(action), Ok(resource), Ok(approval_id)) => CheckInput {
            action: action
                .filter(|a| !a.trim().is_empty())
                .unwrap_or_else(|| default_action(&parts.method, &path)),
            resource: resource.unwrap_or_else(|| "*".to_owned()),
            context: Map::new(),
            approval_id,
        },
        (Err(err), ..) | (_, Err(err), _) | (.., Err(err)) => return err.into_response(),
    };
    let (decision, audit_id) =
        match evaluate(&state, &agent, &input, &trace, Route::Forward, started).await {
            Ok(outcome) => outcome,
            Err(unavailable) => return unavailable,
        };
    // Denials are answered here, never forwarded; audit and bypass modes forward everything.
    if state.mode == Mode::Enforce && decision.effect != Effect::Allow {
        return respond(
            state.mode,
            Route::Forward,
            decision,
            input,
            &trace,
            audit_id,
        );
    }

    let version = parts.version;
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let uri = format!("{}/{upstream_path}{query}", upstream.base);
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !stays_here(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    for (name, value) in &upstream.headers {
        headers.insert(name.clone(), value.clone());
    }
    let mut outgoing = match axum::http::Request::builder()
        .method(parts.method.clone())
        .uri(&uri)
        .body(body)
    {
        Ok(request) => request,
        Err(err) => return ApiError::BadRequest(format!("path: {err}")).into_response(),
    };
    *outgoing.headers_mut() = headers;

    let answer = match state.upstreams.client.request(outgoing).await {
        Ok(answer) => answer,
        Err(err) => {
            return ApiError::BadGateway {
                upstream: upstream.base.clone(),
                cause: err.to_string(),
            }
            .into_response();
        }
    };
    let (mut answer_parts, answer_body) = answer.into_parts();
    // The client talks to the gateway, not to the upstream: answer in the client's HTTP version.
    answer_parts.version = version;
    let hops: Vec<HeaderName> = answer_parts
        .headers
        .keys()
        .filter(|name| hop_by_hop(name))
        .cloned()
        .collect();
    for name in hops {
        answer_parts.headers.remove(name);
    }
    let extra = [
        (
            "x-meshguard-decision",
            Some(decision.effect.as_str().to_owned()),
        ),
        ("x-meshguard-policy", decision.policy.clone()),
        ("x-meshguard-agent-id", Some(agent.record.id.clone())),
    ];
    for (name, value) in extra {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            answer_parts
                .headers
                .insert(HeaderName::from_static(name), value);
        }
    }
    Response::from_parts(answer_parts, Body::new(answer_body))
}
