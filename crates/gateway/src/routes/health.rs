//! `/`, `/health` and `/metrics`: unauthenticated, for load balancers and Prometheus.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::ApiError;
use crate::rate_limit_redis::RATE_LIMITS_UNAVAILABLE;
use crate::state::AppState;

/// The gateway's version, as built.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `GET /`: what is answering.
pub async fn root(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({
        "name": "meshguard",
        "version": VERSION,
        "mode": state.mode.as_str(),
    }))
}

/// `GET /health`: 200 `healthy` when the store (and Redis, with `--redis-url`) answers, 503
/// `unhealthy` otherwise: without either every check is answered 503.
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
    let body = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "version": VERSION,
        "mode": state.mode.as_str(),
        "uptime": state.started.elapsed().as_secs(),
        "gateway": state.instance_id,
        "checks": {
            "store": {
                "status": if store.is_ok() { "ok" } else { "unavailable" },
                "backend": state.store.backend(),
            },
            "rate_limits": {
                "status": if limits.is_ok() { "ok" } else { "unavailable" },
                "backend": state.limiter.backend(),
            },
            "policies": {
                "status": "ok",
                "loaded": state.policies.current().len(),
            },
        },
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text exposition.
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
