//! `/`, `/health` and `/metrics`: unauthenticated, for load balancers and Prometheus.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::sorted::SortedJson;
use crate::config::Mode;
use crate::error::ApiError;
use crate::rate_limit_redis::RATE_LIMITS_UNAVAILABLE;
use crate::state::AppState;

/// The gateway's version, as built.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What `GET /` says is answering.
#[derive(Debug, Serialize, ToSchema)]
pub struct Identity {
    /// Always `meshguard`.
    name: &'static str,
    /// The gateway's version.
    version: &'static str,
    /// `enforce`, `audit` or `bypass`.
    mode: Mode,
}

/// `GET /`: what is answering.
#[utoipa::path(
    get,
    path = "/",
    summary = "What is answering",
    responses((status = 200, body = Identity, description = "Name, version and mode."))
)]
pub async fn root(State(state): State<AppState>) -> SortedJson<Identity> {
    SortedJson(Identity {
        name: "meshguard",
        version: VERSION,
        mode: state.mode,
    })
}

/// Whether the gateway can decide at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// The store (and Redis, with `--redis-url`) answer.
    Healthy,
    /// One of them does not: every check is answered 503.
    Unhealthy,
}

/// Whether one dependency answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ComponentStatus {
    /// It answered.
    Ok,
    /// It did not.
    Unavailable,
}

/// The body of `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `healthy` (200) or `unhealthy` (503).
    status: HealthStatus,
    /// The gateway's version.
    version: &'static str,
    /// `enforce`, `audit` or `bypass`.
    mode: Mode,
    /// Seconds since start.
    uptime: u64,
    /// This gateway's instance id (its audit chain).
    gateway: String,
    /// Each dependency.
    checks: HealthChecks,
}

/// The dependencies `/health` looks at.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthChecks {
    /// The database.
    store: Dependency,
    /// Where rate limits are counted.
    rate_limits: Dependency,
    /// The policies in force.
    policies: PoliciesLoaded,
}

/// One dependency and what it runs on.
#[derive(Debug, Serialize, ToSchema)]
pub struct Dependency {
    /// Whether it answered.
    status: ComponentStatus,
    /// `sqlite` or `postgres` for the store, `memory` or `redis` for rate limits.
    backend: &'static str,
}

/// The policies in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct PoliciesLoaded {
    /// Always `ok`: the last good set stays in force.
    status: ComponentStatus,
    /// How many policies are in force.
    loaded: usize,
}

fn status_of<E>(result: &Result<(), E>) -> ComponentStatus {
    if result.is_ok() {
        ComponentStatus::Ok
    } else {
        ComponentStatus::Unavailable
    }
}

/// `GET /health`: 200 `healthy` when the store (and Redis, with `--redis-url`) answers, 503
/// `unhealthy` otherwise: without either every check is answered 503.
#[utoipa::path(
    get,
    path = "/health",
    summary = "Whether the gateway can decide",
    responses(
        (status = 200, body = Health, description = "`healthy`: the store and rate limits answer."),
        (status = 503, body = Health, description = "`unhealthy`: every check is answered 503 meanwhile."),
    )
)]
pub async fn health(State(state): State<AppState>) -> Response {
    let store = state.store.ping().await;
    if let Err(err) = &store {
        tracing::error!(error = %err, "health check: store unavailable");
    }
    let limits = state.limiter.ping().await;
    if let Err(err) = &limits {
        tracing::error!(error = %err, "health check: {RATE_LIMITS_UNAVAILABLE}");
    }
    let healthy = store.is_ok() && limits.is_ok();
    let body = Health {
        status: if healthy {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        },
        version: VERSION,
        mode: state.mode,
        uptime: state.started.elapsed().as_secs(),
        gateway: state.instance_id.clone(),
        checks: HealthChecks {
            store: Dependency {
                status: status_of(&store),
                backend: state.store.backend(),
            },
            rate_limits: Dependency {
                status: status_of(&limits),
                backend: state.limiter.backend(),
            },
            policies: PoliciesLoaded {
                status: ComponentStatus::Ok,
                loaded: state.policies.current().len(),
            },
        },
    };
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, SortedJson(body)).into_response()
}

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    summary = "Prometheus metrics",
    responses(
        (status = 200, content_type = "text/plain; version=0.0.4; charset=utf-8", body = String,
         description = "Prometheus text exposition (docs/operations.md lists the metrics)."),
        (status = 500, body = crate::error::ErrorBody, description = "`internal`: the metrics could not be rendered."),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(err) => ApiError::Internal(err.to_string()).into_response(),
    }
}
