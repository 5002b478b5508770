//! The router: which path goes to which handler, and which guard protects it.

mod admin_event;
mod agents;
mod alerts;
mod approvals;
mod audit;
mod authzen;
mod check;
pub(crate) mod console;
mod decide;
mod forward;
mod forward_auth;
mod health;
mod mcp;
mod operators;
mod outcome;
mod page;
mod policies;
mod preview;
mod record;
mod replay;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, delete, get, post};

use crate::auth::require_admin;
use crate::error::ApiError;
use crate::state::AppState;
use crate::trace::with_trace_id;

/// Builds the whole application: agent endpoints under `/proxy`, the admin API under `/admin`,
/// and `/`, `/health`, `/metrics`.
pub fn app(state: AppState) -> Router {
    let proxy = Router::new()
        .route("/proxy/governance/check", post(check::post_check))
        .route("/proxy/check", get(check::get_check))
        .route("/proxy/governance/record", post(record::record))
        .route("/proxy/governance/preview", post(preview::preview))
        .route(
            "/proxy/governance/approvals/{id}",
            get(approvals::agent_approval),
        )
        .route("/proxy/{*path}", any(forward::forward))
        .route(
            "/mcp/{server}",
            post(mcp::post).get(mcp::get).delete(mcp::delete),
        )
        .route("/access/v1/evaluation", post(authzen::evaluation))
        .route("/access/v1/evaluations", post(authzen::evaluations))
        .route(
            forward_auth::FORWARD_AUTH_PREFIX,
            any(forward_auth::forward_auth),
        )
        .route("/auth/forward/{*path}", any(forward_auth::forward_auth))
        .layer(middleware::from_fn(with_trace_id));

    let admin = Router::new()
        .route("/agents", get(agents::list).post(agents::create))
        .route(
            "/agents/{agent}",
            get(agents::show)
                .patch(agents::update)
                .delete(agents::delete),
        )
        .route("/agents/{agent}/token", post(agents::issue_token))
        .route("/agents/{agent}/revoke", post(agents::revoke))
        .route("/agents/{agent}/restore", post(agents::restore))
        .route("/agents/{agent}/permissions", get(agents::permissions))
        .route("/policies", get(policies::list).post(policies::apply_any))
        .route("/policies/validate", post(policies::validate))
        .route(
            "/policies/{name}",
            get(policies::show)
                .put(policies::apply_named)
                .delete(policies::delete),
        )
        .route("/policies/{name}/revisions", get(policies::revisions))
        .route("/operators", get(operators::list).post(operators::create))
        .route("/operators/{name}", delete(operators::delete))
        .route("/decide", post(decide::explain_check))
        .route("/replay", post(replay::replay))
        .route("/approvals", get(approvals::list))
        .route("/approvals/{id}/approve", post(approvals::approve))
        .route("/approvals/{id}/deny", post(approvals::deny))
        .route("/audit", get(audit::query))
        .route("/audit/stream", get(audit::stream))
        .route("/audit/stats", get(audit::stats))
        .route("/audit/verify", get(audit::verify))
        .route("/audit/export", get(audit::export))
        .route("/alerts/test", post(alerts::test))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));

    let console = if state.console_enabled {
        console::router()
    } else {
        Router::new()
    };
    Router::new()
        .route("/", get(health::root))
        .route("/health", get(health::health))
        .route("/metrics", get(health::metrics))
        .merge(proxy)
        .merge(console)
        .nest("/admin", admin)
        .fallback(unknown_route)
        // Our extractors enforce the configured limit themselves and answer in our error shape.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_rejections,
        ))
        .with_state(state)
}

/// Any path the gateway does not serve: a 404 in MeshGuard's error shape, naming the path.
async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no endpoint `{method} {}`", uri.path()))
}

/// Counts the answers that are not audited (400, 401, 408, 413) or could not be (500, 503).
async fn count_rejections(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status().as_u16();
    if matches!(status, 400 | 401 | 408 | 413 | 500 | 503) {
        state
            .metrics
            .rejections
            .with_label_values(&[&status.to_string()])
            .inc();
    }
    response
}
