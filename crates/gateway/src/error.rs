//! Every error an HTTP handler can return, and the one exhaustive `match` that turns it into a
//! status and a body. A 5xx tells the client only "internal error" (or which store is
//! unavailable); the cause is logged here, once.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::rate_limit_redis::{RATE_LIMITS_UNAVAILABLE, RedisLimitError};
use crate::wire::WireCode;

/// What a 503 says when the store (or the audit trail in it) cannot be reached.
pub const STORE_UNAVAILABLE: &str = "store unavailable";

/// MeshGuard's error shape: every answer that is not a decision (SPEC 2).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The machine code (`unauthorized`, `bad_request`, `not_found`, …).
    pub error: WireCode,
    /// What went wrong, for a person: it names the field, the agent or the policy at fault.
    pub message: String,
}

/// The 422 answer to a policy that does not validate: the error shape plus every problem.
/// Fields in sorted order, the order this body has always been written in.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvalidPolicyBody {
    /// Always `invalid_policy`.
    pub error: WireCode,
    /// Every problem, `file:line:col: path: message`.
    pub errors: Vec<String>,
    /// The first problem.
    pub message: String,
}

/// The 429 answer to an agent that spent a per-agent budget (records, refusals): the error
/// shape, with the code and the wait a client needs to back off (also sent as `Retry-After`).
/// Fields in sorted order, the order this body has always been written in.
#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitedBody {
    /// Always `rate_limited`, as a decision's `code` would say.
    pub code: WireCode,
    /// Always `rate_limited`.
    pub error: WireCode,
    /// What was spent.
    pub message: String,
    /// Whole seconds until one more request fits.
    pub retry_after_seconds: u64,
}

/// An error answered by the gateway, in MeshGuard's shape `{"error": code, "message": …}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: no credentials, wrong credentials, or credentials of the wrong kind.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// 400: the body or a parameter is malformed; the message names the field.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 413: the body is over the configured limit.
    #[error("payload too large (limit {limit} bytes)")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// 403: authenticated, but the request touches what belongs to another agent.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 408: the request body did not arrive within the body timeout.
    #[error("request timeout: {0}")]
    RequestTimeout(String),
    /// 404: the named agent, policy or event does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// 405: a method the endpoint never serves (the proxy's `TRACE` and `CONNECT`).
    #[error("method not allowed: {0}")]
    MethodNotAllowed(String),
    /// 409: the change conflicts with existing state (a taken name, a file-owned policy).
    #[error("conflict: {0}")]
    Conflict(String),
    /// 422: a policy that does not validate; `errors` lists each problem with its position.
    #[error("invalid policy: {message}")]
    InvalidPolicy {
        /// One line summary.
        message: String,
        /// Every error, `file:line:col: path: message`.
        errors: Vec<String>,
    },
    /// 502: an allowed request could not be forwarded; the cause is logged, not sent.
    #[error("upstream {upstream} failed: {cause}")]
    BadGateway {
        /// The upstream's base URL.
        upstream: String,
        /// Why (logged only).
        cause: String,
    },
    /// 429: the agent spent a per-agent budget (its records per minute); nothing was written.
    #[error("rate limited: {message}")]
    RateLimited {
        /// What was spent.
        message: String,
        /// When one more request fits, sent as `Retry-After`.
        retry_after_secs: u64,
    },
    /// 503: the store cannot be reached; nothing is allowed meanwhile.
    #[error("{STORE_UNAVAILABLE}: {0}")]
    Unavailable(String),
    /// 503: Redis, which holds the global rate limits (`--redis-url`), cannot answer; said
    /// apart from the store so an operator looks at the right server.
    #[error("{RATE_LIMITS_UNAVAILABLE}: {0}")]
    RateLimitsUnavailable(#[from] RedisLimitError),
    /// 500: a bug or a broken invariant; the cause is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            ApiError::Unauthorized(message) => {
                (StatusCode::UNAUTHORIZED, WireCode::Unauthorized, message)
            }
            ApiError::BadRequest(message) => {
                (StatusCode::BAD_REQUEST, WireCode::BadRequest, message)
            }
            ApiError::PayloadTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                WireCode::PayloadTooLarge,
                format!("request body is larger than the limit of {limit} bytes"),
            ),
            ApiError::Forbidden(message) => (StatusCode::FORBIDDEN, WireCode::Forbidden, message),
            ApiError::RequestTimeout(message) => (
                StatusCode::REQUEST_TIMEOUT,
                WireCode::RequestTimeout,
                message,
            ),
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, WireCode::NotFound, message),
            ApiError::MethodNotAllowed(message) => (
                StatusCode::METHOD_NOT_ALLOWED,
                WireCode::MethodNotAllowed,
                message,
            ),
            ApiError::Conflict(message) => (StatusCode::CONFLICT, WireCode::Conflict, message),
            ApiError::InvalidPolicy { message, errors } => {
                let body = InvalidPolicyBody {
                    error: WireCode::InvalidPolicy,
                    errors,
                    message,
                };
                return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
            }
            ApiError::RateLimited {
                message,
                retry_after_secs,
            } => {
                let code = WireCode::Decided(meshguard_policy::Code::RateLimited);
                let body = RateLimitedBody {
                    code,
                    error: code,
                    message,
                    retry_after_seconds: retry_after_secs,
                };
                let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from(retry_after_secs),
                );
                return response;
            }
            ApiError::BadGateway { upstream, cause } => {
                tracing::error!(%upstream, %cause, "upstream request failed");
                (
                    StatusCode::BAD_GATEWAY,
                    WireCode::BadGateway,
                    "the upstream did not answer".to_owned(),
                )
            }
            ApiError::Unavailable(cause) => {
                tracing::error!(%cause, "{STORE_UNAVAILABLE}");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    WireCode::Unavailable,
                    STORE_UNAVAILABLE.to_owned(),
                )
            }
            ApiError::RateLimitsUnavailable(cause) => {
                tracing::error!(%cause, "{RATE_LIMITS_UNAVAILABLE}");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    WireCode::Unavailable,
                    RATE_LIMITS_UNAVAILABLE.to_owned(),
                )
            }
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    WireCode::Internal,
                    "internal error".to_owned(),
                )
            }
        };
        (
            status,
            Json(ErrorBody {
                error: code,
                message,
            }),
        )
            .into_response()
    }
}

impl From<meshguard_store::StoreError> for ApiError {
    fn from(err: meshguard_store::StoreError) -> ApiError {
        use meshguard_store::StoreError;
        // One exhaustive match: a variant added to the store must be mapped here to compile.
        match err {
            StoreError::NotFound { what } => ApiError::NotFound(format!("{what} not found")),
            StoreError::Conflict { what, reason } => {
                ApiError::Conflict(format!("{what}: {reason}"))
            }
            StoreError::Invalid { field, message } => {
                ApiError::BadRequest(format!("{field}: {message}"))
            }
            StoreError::Unavailable(cause) => ApiError::Unavailable(cause),
            StoreError::Corrupt(cause) => {
                ApiError::Internal(format!("corrupt store data: {cause}"))
            }
        }
    }
}

impl From<crate::policies::PolicyChangeError> for ApiError {
    fn from(err: crate::policies::PolicyChangeError) -> ApiError {
        use crate::policies::PolicyChangeError;
        match err {
            PolicyChangeError::Invalid(err) => ApiError::InvalidPolicy {
                message: err.to_string(),
                errors: vec![err.to_string()],
            },
            PolicyChangeError::Set(err) => ApiError::Conflict(err.to_string()),
            err
            @ (PolicyChangeError::FileOwned { .. } | PolicyChangeError::DefinedTwice { .. }) => {
                ApiError::Conflict(err.to_string())
            }
            PolicyChangeError::Store(err) => err.into(),
        }
    }
}
