//! `/auth/forward`: MeshGuard as the authorization service of another gateway, in the shape
//! nginx `auth_request`, Traefik ForwardAuth and Envoy's HTTP `ext_authz` share: the original
//! request's method, path and headers come in, a 2xx answer lets it through, anything else stops
//! it, and the reason travels in `X-MeshGuard-Reason`. The request is a check like a proxied one
//! (the action from the method and the canonical path, authenticated with the agent's bearer
//! token, rate-limited, audited), but the other gateway forwards it, so a path that could be read
//! two ways is refused rather than decided.

use std::time::Instant;

use axum::Extension;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::Response;
use serde_json::Map;

use super::check::{CheckInput, Route, authenticated, evaluate};
use super::forward::{Proxied, refused_path, verb};
use super::outcome::CheckAnswer;
use super::outcome::{Asked, CheckOutcome};
use crate::config::Mode;
use crate::openapi::DecisionOrRefusal;
use crate::proxy::ProxyPath;
use crate::state::AppState;
use crate::trace::TraceId;

/// Where the endpoint lives; Envoy sends the original path after it.
pub const FORWARD_AUTH_PREFIX: &str = "/auth/forward";

/// The original method and path: Traefik's `X-Forwarded-Method` / `X-Forwarded-Uri`, nginx's
/// `X-Original-Method` / `X-Original-URI` (set in its config), else (Envoy) this request's own
/// method and the path after [`FORWARD_AUTH_PREFIX`]. The query is not part of the action.
fn original(parts: &Parts) -> (Method, String) {
    let header = |names: [&str; 2]| {
        names
            .iter()
            .filter_map(|name| parts.headers.get(*name))
            .find_map(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let method = header(["x-forwarded-method", "x-original-method"])
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .unwrap_or_else(|| parts.method.clone());
    let uri = header(["x-forwarded-uri", "x-original-uri"]).unwrap_or_else(|| {
        parts
            .uri
            .path()
            .strip_prefix(FORWARD_AUTH_PREFIX)
            .unwrap_or_default()
            .to_owned()
    });
    let path = uri.split(['?', '#']).next().unwrap_or_default().to_owned();
    (method, path)
}

/// `ANY /auth/forward[/{path}]`.
#[utoipa::path(
    method(get, put, post, delete, patch, head, options),
    path = "/auth/forward",
    summary = "Forward auth for another gateway",
    description = "nginx `auth_request`, Traefik ForwardAuth, Envoy HTTP `ext_authz`. The original \
        request is named by `X-Forwarded-Method` / `X-Forwarded-Uri`, else `X-Original-Method` / \
        `X-Original-URI`, else this request's own method and the path after `/auth/forward` \
        (any path below it is accepted). Decided, charged and audited like a proxied request. \
        Every answer carries `X-MeshGuard-Decision`, `X-MeshGuard-Reason`, `X-MeshGuard-Policy` \
        and `X-MeshGuard-Trace-Id`. A 2xx lets the original request through.",
    params(
        ("X-Forwarded-Method" = Option<String>, Header, description = "The original method (Traefik)."),
        ("X-Forwarded-Uri" = Option<String>, Header, description = "The original path (Traefik); the query is ignored."),
        ("X-Original-Method" = Option<String>, Header, description = "The original method (nginx)."),
        ("X-Original-URI" = Option<String>, Header, description = "The original path (nginx)."),
    ),
    responses(
        (status = 200, body = CheckAnswer, description = "`allow`: let the original request through."),
        (status = 403, body = CheckAnswer,
         headers(("Retry-After" = u64, description = "With `budget_exceeded`, whole seconds until the request would fit.")),
         description = "`deny` or `require_approval` (also a path refused as `invalid_resource`, in every mode)."),
        (status = 429, body = DecisionOrRefusal,
         headers(("Retry-After" = u64, description = "Whole seconds until one more request fits.")),
         description = "`rate_limited`: a limit is exhausted, or a dead token was replayed past the agent's refusal budget."),
        (status = 503, body = CheckAnswer, description = "`unavailable`: nothing is allowed."),
    )
)]
pub async fn forward_auth(
    State(state): State<AppState>,
    Extension(trace): Extension<TraceId>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let (parts, _) = request.into_parts();
    let (method, path) = original(&parts);
    let verb = verb(&method);
    let raw = path.trim_start_matches('/').to_owned();
    let named = || (Some(format!("{verb}:{raw}")), None);
    let agent = match authenticated(&state, &parts.headers, &trace, Route::Forward, named).await {
        Ok(agent) => agent,
        Err(refused) => return with_reason(refused).await,
    };
    let (action, refused) = match ProxyPath::parse(&raw) {
        Ok(canonical) => (format!("{verb}:{}", canonical.object()), None),
        Err(refusal) => {
            let action = format!("{verb}:{raw}");
            let decision = refused_path(&action, &raw, &refusal);
            (action, Some(decision))
        }
    };
    let mode = if refused.is_some() {
        Mode::Enforce
    } else {
        state.mode
    };
    let seen = Proxied::seen(method, path, refused);
    let input = CheckInput {
        action,
        resource: "*".to_owned(),
        context: Map::new(),
        approval_id: None,
    };
    let outcome: CheckOutcome = evaluate(
        &state,
        &agent,
        &input,
        Some(&seen),
        &trace,
        Route::Forward,
        started,
    )
    .await;
    let asked = Asked {
        agent: Some(&agent),
        input: &input,
        trace: &trace,
        route: Route::Forward,
        mode,
    };
    with_reason(outcome.answer(&state, &asked)).await
}

/// The largest answer body read back to copy its reason into a header (decision bodies are far
/// smaller).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Copies the answer's decision and reason into headers, where the other gateway can pass them
/// on (`auth_request_set`, `authResponseHeaders`, `allowed_client_headers`). Text that is not a
/// valid header value is left out rather than mangled.
async fn with_reason(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ANSWER_BYTES).await else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    if let Ok(answer) = serde_json::from_slice::<serde_json::Value>(&bytes) {
        let fields = [
            ("x-meshguard-decision", "decision"),
            ("x-meshguard-reason", "reason"),
            ("x-meshguard-policy", "policy"),
            ("x-meshguard-trace-id", "trace_id"),
        ];
        for (header, field) in fields {
            let text = answer
                .get(field)
                .or_else(|| (field == "reason").then(|| answer.get("message")).flatten())
                .and_then(serde_json::Value::as_str);
            if let Some(value) = text.and_then(|t| HeaderValue::from_str(t).ok()) {
                parts.headers.insert(HeaderName::from_static(header), value);
            }
        }
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}
