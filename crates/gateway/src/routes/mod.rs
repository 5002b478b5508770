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
mod sorted;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, post};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::require_admin;
use crate::error::ApiError;
use crate::openapi::{ApiDoc, Group};
use crate::state::AppState;
use crate::trace::with_trace_id;

pub(crate) use outcome::CheckAnswer;

/// Builds the whole application: agent endpoints under `/proxy` (and AuthZEN, forward auth,
/// hosted MCP servers), the admin API under `/admin`, the console, and `/`, `/health`,
/// `/metrics`, `/openapi.json`.
pub fn app(state: AppState) -> Router {
    let agent = agent_routes().layer(middleware::from_fn_with_state(state.clone(), with_trace_id));
    let admin =
        admin_routes().route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    // The document these routes make is served from `openapi::document`, built the same way.
    let (documented, _) = OpenApiRouter::new()
        .merge(public_routes())
        .merge(agent)
        .nest("/admin", admin)
        .split_for_parts();
    let mcp = Router::new()
        .route(
            "/mcp/{server}",
            post(mcp::post).get(mcp::get).delete(mcp::delete),
        )
        .layer(middleware::from_fn_with_state(state.clone(), with_trace_id));
    let console = if state.console_enabled {
        console::router()
    } else {
        Router::new()
    };
    Router::new()
        .merge(documented)
        .merge(mcp)
        .merge(console)
        .fallback(unknown_route)
        // Our extractors enforce the configured limit themselves and answer in our error shape.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_rejections,
        ))
        .with_state(state)
}

/// The routes the OpenAPI document describes, grouped as [`app`] groups them but without the
/// guards' layers (which need the state): the document of `GET /openapi.json` and
/// `meshguard openapi`.
pub(crate) fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(public_routes())
        .merge(agent_routes())
        .nest("/admin", admin_routes())
}

/// Tags and describes the operations of `routes` as `group`'s.
fn grouped(mut routes: OpenApiRouter<AppState>, group: Group) -> OpenApiRouter<AppState> {
    group.describe(&mut routes.get_openapi_mut().paths);
    routes
}

/// Unauthenticated: for load balancers, Prometheus and API tooling.
fn public_routes() -> OpenApiRouter<AppState> {
    let routes = OpenApiRouter::new()
        .routes(routes!(health::root))
        .routes(routes!(health::health))
        .routes(routes!(health::metrics))
        .routes(routes!(crate::openapi::serve));
    grouped(routes, Group::Public)
}

/// The agent endpoints; each handler authenticates the agent token itself, before it reads the
/// body, so an unauthenticated caller learns nothing.
fn agent_routes() -> OpenApiRouter<AppState> {
    let routes = OpenApiRouter::with_openapi(forward::Passthrough::openapi())
        .routes(routes!(check::post_check))
        .routes(routes!(check::get_check))
        .routes(routes!(record::record))
        .routes(routes!(preview::preview))
        .routes(routes!(approvals::agent_approval))
        .routes(routes!(authzen::evaluation))
        .routes(routes!(authzen::evaluations))
        // Any method and any path below these: described once each by `forward::Passthrough`.
        .route("/proxy/{*path}", any(forward::forward))
        .route(
            forward_auth::FORWARD_AUTH_PREFIX,
            any(forward_auth::forward_auth),
        )
        .route("/auth/forward/{*path}", any(forward_auth::forward_auth));
    grouped(routes, Group::Agent)
}

/// The admin API, nested under `/admin` behind the admin token.
fn admin_routes() -> OpenApiRouter<AppState> {
    let routes = OpenApiRouter::new()
        .routes(routes!(agents::list, agents::create))
        .routes(routes!(agents::show, agents::update, agents::delete))
        .routes(routes!(agents::issue_token))
        .routes(routes!(agents::revoke))
        .routes(routes!(agents::restore))
        .routes(routes!(agents::permissions))
        .routes(routes!(policies::list, policies::apply_any))
        .routes(routes!(policies::validate))
        .routes(routes!(
            policies::show,
            policies::apply_named,
            policies::delete
        ))
        .routes(routes!(policies::revisions))
        .routes(routes!(operators::list, operators::create))
        .routes(routes!(operators::delete))
        .routes(routes!(decide::explain_check))
        .routes(routes!(replay::replay))
        .routes(routes!(approvals::list))
        .routes(routes!(approvals::approve))
        .routes(routes!(approvals::deny))
        .routes(routes!(audit::query))
        .routes(routes!(audit::stream))
        .routes(routes!(audit::stats))
        .routes(routes!(audit::verify))
        .routes(routes!(audit::export))
        .routes(routes!(alerts::test));
    grouped(routes, Group::Admin)
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
