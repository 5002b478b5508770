//! OpenTelemetry traces of the check path: one `meshguard.check` span per check, with the
//! decision as attributes and child spans for authentication, the decision, the rate limits and
//! the audit commit, exported over OTLP (HTTP, protobuf) to `otel.endpoint`.
//!
//! Off unless an endpoint is configured, and then nothing on the check path changes: a request's
//! [`CheckSpans`] is `None` and every recording call returns at once. When on, phases are only
//! timestamped as the request runs; the spans are built when it ends (with those timestamps), so
//! no span context is threaded through the code, and the SDK's batch processor exports them from a
//! thread of its own. An incoming W3C `traceparent` makes the check span a child of the caller's
//! span; docs/operations.md#opentelemetry says which trace id the audit event keeps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags,
    TraceId as OtelTraceId, TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter};

/// The service name spans carry unless `OTEL_SERVICE_NAME` says otherwise.
const SERVICE_NAME: &str = "meshguard";
/// The OTLP/HTTP path of traces, below the endpoint (as `OTEL_EXPORTER_OTLP_ENDPOINT` means it).
const TRACES_PATH: &str = "/v1/traces";
/// How long a stopping gateway waits for its last spans to be exported.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);

/// Why traces cannot be exported as configured.
#[derive(Debug, thiserror::Error)]
#[error("otel.endpoint: {0}")]
pub struct TelemetryError(String);

/// The span of one step of the check path, a child of the check's span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The bearer token verified and the agent loaded.
    Auth,
    /// The policy engine's decision.
    Decide,
    /// The rate limits and budgets charged (all or nothing, around the decision that consults
    /// them).
    RateLimit,
    /// The audit event committed (or handed to the writer, with `audit.durability = async`).
    AuditCommit,
}

impl Phase {
    /// The span's name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Auth => "meshguard.auth",
            Phase::Decide => "meshguard.decide",
            Phase::RateLimit => "meshguard.rate_limit",
            Phase::AuditCommit => "meshguard.audit_commit",
        }
    }
}

/// The tracer of a gateway that exports traces.
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Starts exporting to `endpoint` (the OTLP base URL, e.g. `http://collector:4318`); the
    /// batch processor's settings come from the standard `OTEL_BSP_*` variables.
    pub fn start(endpoint: &str, service_name: Option<&str>) -> Result<Self, TelemetryError> {
        let base = endpoint.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(TelemetryError(format!(
                "`{endpoint}` is not an http:// or https:// URL (OTLP over HTTP)"
            )));
        }
        // The exporter's HTTP client speaks TLS to `https://` collectors with the process-wide
        // rustls provider, which is installed here if nothing installed one yet.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{base}{TRACES_PATH}"))
            .build()
            .map_err(|err| TelemetryError(format!("cannot export to `{endpoint}`: {err}")))?;
        let resource = Resource::builder()
            .with_service_name(service_name.unwrap_or(SERVICE_NAME).to_owned())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(Reported {
                exporter,
                endpoint: base.to_owned(),
                failing: AtomicBool::new(false),
            })
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("meshguard");
        Ok(Self { provider, tracer })
    }

    /// Starts recording a request's spans: now, under the caller's `traceparent` if it sent a
    /// valid one, else under `trace_id` when that is a W3C trace id.
    pub fn begin(self: &Arc<Self>, headers: &HeaderMap, trace_id: &str) -> CheckSpans {
        let mut parent = TraceContextPropagator::new().extract(&HeaderFields(headers));
        if !parent.span().span_context().is_valid()
            && let Some(trace_id) = w3c_trace_id(trace_id)
        {
            // An `X-Trace-ID` that is a W3C trace id puts the span in that trace. Its caller's
            // span is unknown: the parent id is a stand-in made from the trace id, so that a
            // tracing backend shows the span in the trace (under a parent it does not have).
            let low = trace_id.to_bytes();
            let stand_in = u64::from_be_bytes(
                low.get(8..)
                    .and_then(|low| <[u8; 8]>::try_from(low).ok())
                    .unwrap_or([1; 8]),
            ) | 1;
            parent = Context::new().with_remote_span_context(SpanContext::new(
                trace_id,
                SpanId::from_bytes(stand_in.to_be_bytes()),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            ));
        }
        CheckSpans(Some(Arc::new(Mutex::new(Recording {
            telemetry: Arc::clone(self),
            parent,
            started: SystemTime::now(),
            phases: Vec::with_capacity(4),
            checks: Vec::with_capacity(1),
        }))))
    }

    /// Exports what is left; called as the gateway stops (blocking, at most a few seconds).
    pub fn shutdown(&self) {
        if let Err(err) = self.provider.shutdown_with_timeout(SHUTDOWN_LIMIT) {
            tracing::warn!(error = %err, "the last spans could not be exported");
        }
    }
}

/// The OTLP exporter, saying in the gateway's log when exports start failing and when they
/// work again: once per outage, as a store outage is, since the SDK itself reports nothing and a
/// failing export every few seconds would flood the log.
#[derive(Debug)]
struct Reported<E> {
    exporter: E,
    endpoint: String,
    failing: AtomicBool,
}

impl<E: SpanExporter> SpanExporter for Reported<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let exported = self.exporter.export(batch).await;
        // Exports never run concurrently (the batch processor's one thread), so a plain flag
        // tells the first failure and the first success after it.
        match &exported {
            Err(err) if !self.failing.swap(true, Ordering::Relaxed) => tracing::warn!(
                endpoint = %self.endpoint,
                error = %err,
                "traces cannot be exported: spans are dropped until the collector takes them"
            ),
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!(endpoint = %self.endpoint, "traces are exported again");
            }
            _ => {}
        }
        exported
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.exporter.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.exporter.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.exporter.set_resource(resource);
    }
}

/// A W3C trace id (32 lowercase hex digits, not all zero) as OpenTelemetry's, if `text` is one.
pub fn w3c_trace_id(text: &str) -> Option<OtelTraceId> {
    let valid = text.len() == 32 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    OtelTraceId::from_hex(text)
        .ok()
        .filter(|id| valid && *id != OtelTraceId::INVALID)
}

/// `traceparent` (and `tracestate`) read from the request's headers.
struct HeaderFields<'a>(&'a HeaderMap);

impl Extractor for HeaderFields<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
}

/// A phase of the check path, from its start to its end.
type Timed = (Phase, SystemTime, SystemTime);

/// What one request records while it runs.
struct Recording {
    telemetry: Arc<Telemetry>,
    parent: Context,
    started: SystemTime,
    /// The phases since the last decision: they belong to the next one.
    phases: Vec<Timed>,
    /// The request's decisions: one for a check; none for a request that is not one (it has no
    /// span); one per evaluation of an AuthZEN batch.
    checks: Vec<Decided>,
}

/// One decision of a request, with the phases that led to it.
struct Decided {
    started: SystemTime,
    ended: SystemTime,
    attributes: Vec<KeyValue>,
    phases: Vec<Timed>,
}

/// The spans of one request, recorded as it runs: nothing at all when traces are off.
#[derive(Clone, Default)]
pub struct CheckSpans(Option<Arc<Mutex<Recording>>>);

impl std::fmt::Debug for CheckSpans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CheckSpans")
            .field(&self.0.is_some())
            .finish()
    }
}

impl CheckSpans {
    /// Whether this request's spans are recorded (traces are on).
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// The start of a phase: the time now, when recording.
    pub fn now(&self) -> Option<SystemTime> {
        self.0.as_ref().map(|_| SystemTime::now())
    }

    /// Records a phase that started at `since` (from [`CheckSpans::now`]) and ends now.
    pub fn record(&self, phase: Phase, since: Option<SystemTime>) {
        if let (Some(recording), Some(since)) = (&self.0, since) {
            let mut recording = recording.lock().unwrap_or_else(PoisonError::into_inner);
            recording.phases.push((phase, since, SystemTime::now()));
        }
    }

    /// Marks the request as a check with this outcome: its span, with the phases recorded since
    /// the previous decision (or the request's start), is exported when the request ends. A
    /// request that decides several times (an AuthZEN batch) is one span per decision, each from
    /// where the previous one ended.
    pub fn decided(&self, attributes: impl FnOnce() -> Vec<KeyValue>) {
        if let Some(recording) = &self.0 {
            let attributes = attributes();
            let mut recording = recording.lock().unwrap_or_else(PoisonError::into_inner);
            let started = recording
                .checks
                .last()
                .map_or(recording.started, |check| check.ended);
            let phases = std::mem::take(&mut recording.phases);
            recording.checks.push(Decided {
                started,
                ended: SystemTime::now(),
                attributes,
                phases,
            });
        }
    }

    /// Builds and hands over the spans of a request that was a check; called once it is
    /// answered, which is where the last (usually the only) decision's span ends.
    pub fn finish(&self) {
        let Some(recording) = &self.0 else {
            return;
        };
        let mut recording = recording.lock().unwrap_or_else(PoisonError::into_inner);
        let ended = SystemTime::now();
        let trailing = std::mem::take(&mut recording.phases);
        if let Some(last) = recording.checks.last_mut() {
            last.ended = ended;
            last.phases.extend(trailing);
        }
        for check in std::mem::take(&mut recording.checks) {
            recording.export(check);
        }
    }
}

impl Recording {
    /// Hands one decision's `meshguard.check` span and its phases' child spans to the exporter.
    fn export(&self, check: Decided) {
        let latency = check
            .ended
            .duration_since(check.started)
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0;
        let tracer = &self.telemetry.tracer;
        let mut attributes = check.attributes;
        attributes.push(KeyValue::new("meshguard.latency_ms", latency));
        let span = tracer
            .span_builder("meshguard.check")
            .with_kind(SpanKind::Server)
            .with_start_time(check.started)
            .with_attributes(attributes)
            .start_with_context(tracer, &self.parent);
        let context = self.parent.with_span(span);
        for (phase, start, end) in check.phases {
            tracer
                .span_builder(phase.name())
                .with_kind(SpanKind::Internal)
                .with_start_time(start)
                .start_with_context(tracer, &context)
                .end_with_timestamp(end);
        }
        context.span().end_with_timestamp(check.ended);
    }
}
