//! Trace ids on agent endpoints: read from `X-Trace-ID` or `X-MeshGuard-Trace-ID`, else the
//! trace id of a W3C `traceparent`, generated when absent, and echoed back in both headers on
//! every answer (errors included), so a client can always find its request in the audit trail.
//! With traces on (crate::telemetry), the request's spans are recorded beside it.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::state::AppState;
use crate::telemetry::CheckSpans;

/// The trace id of the current request, and its spans (recorded only when traces are on).
#[derive(Debug, Clone)]
pub struct TraceId(pub String, pub CheckSpans);

/// The generic header.
pub const X_TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");
/// MeshGuard's SDK header.
pub const X_MESHGUARD_TRACE_ID: HeaderName = HeaderName::from_static("x-meshguard-trace-id");

/// Longest accepted trace id; longer ones are replaced by a generated id.
const MAX_LEN: usize = 128;

/// The W3C header whose trace id a request without `X-Trace-ID` is audited under.
const TRACEPARENT: &str = "traceparent";

/// The trace id of a valid `traceparent` (`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`).
fn from_traceparent(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(TRACEPARENT)?.to_str().ok()?.trim();
    let mut parts = value.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |text: &str, len: usize| {
        text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    (hex(version, 2)
        && version != "ff"
        && hex(span, 16)
        && span != "0000000000000000"
        && hex(flags, 2))
    .then(|| crate::telemetry::w3c_trace_id(trace))
    .flatten()
    .map(|_| trace.to_owned())
}

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
/// trail's trace index instead of on a random page of it for every check. With traces on, the
/// request's spans start here and are handed to the exporter once it is answered.
pub async fn with_trace_id(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let trace = from_headers(headers)
        .or_else(|| from_traceparent(headers))
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let spans = match &state.telemetry {
        Some(telemetry) => telemetry.begin(headers, &trace),
        None => CheckSpans::default(),
    };
    request
        .extensions_mut()
        .insert(TraceId(trace.clone(), spans.clone()));
    let mut response = next.run(request).await;
    spans.finish();
    if let Ok(value) = HeaderValue::from_str(&trace) {
        response.headers_mut().insert(X_TRACE_ID, value.clone());
        response.headers_mut().insert(X_MESHGUARD_TRACE_ID, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: &str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    #[test]
    fn a_valid_traceparent_gives_its_trace_id_and_nothing_else_does() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let parent = format!("00-{trace}-00f067aa0ba902b7-01");
        assert_eq!(
            from_traceparent(&with("traceparent", &parent)).as_deref(),
            Some(trace)
        );
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(from_traceparent(&with("traceparent", bad)), None, "{bad}");
        }
    }

    #[test]
    fn x_trace_id_wins_over_traceparent() {
        let mut headers = with("x-trace-id", "task-42");
        headers.insert(
            HeaderName::from_static("traceparent"),
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let chosen = from_headers(&headers).or_else(|| from_traceparent(&headers));
        assert_eq!(chosen.as_deref(), Some("task-42"));
    }
}
