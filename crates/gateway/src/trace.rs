//! Trace ids on agent endpoints: read from `X-Trace-ID` or `X-MeshGuard-Trace-ID`, generated
//! when absent, and echoed back in both headers on every answer (errors included), so a client
//! can always find its request in the audit trail.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// The trace id of the current request.
#[derive(Debug, Clone)]
pub struct TraceId(pub String);

/// The generic header.
pub const X_TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");
/// MeshGuard's SDK header.
pub const X_MESHGUARD_TRACE_ID: HeaderName = HeaderName::from_static("x-meshguard-trace-id");

/// Longest accepted trace id; longer ones are replaced by a generated id.
const MAX_LEN: usize = 128;

fn from_headers(headers: &HeaderMap) -> Option<String> {
    [X_TRACE_ID, X_MESHGUARD_TRACE_ID]
        .iter()
        .filter_map(|name| headers.get(name))
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .find(|v| !v.is_empty() && v.len() <= MAX_LEN && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
}

/// Middleware: attaches the [`TraceId`] to the request and echoes it on the response. A
/// generated id is a UUIDv7: time-ordered ids sort by arrival and land at the end of the audit
/// trail's trace index instead of on a random page of it for every check.
pub async fn with_trace_id(mut request: Request, next: Next) -> Response {
    let trace = from_headers(request.headers()).unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    request.extensions_mut().insert(TraceId(trace.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&trace) {
        response.headers_mut().insert(X_TRACE_ID, value.clone());
        response.headers_mut().insert(X_MESHGUARD_TRACE_ID, value);
    }
    response
}
