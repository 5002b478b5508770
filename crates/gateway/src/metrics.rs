//! Prometheus metrics: decisions, check latency, audit group commits, and the refusals that are
//! not audited (401, 400, 413) or could not be (503).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
    exponential_buckets,
};

/// Every metric of one gateway, registered in its own registry (no global state, so tests can
/// run several gateways in one process).
#[derive(Clone)]
pub struct GatewayMetrics {
    registry: Registry,
    /// Decisions answered, by `decision` and `code`.
    pub decisions: IntCounterVec,
    /// Time from request to response of checks, by route.
    pub check_seconds: HistogramVec,
    /// Events per audit transaction.
    pub audit_batch_size: HistogramVec,
    /// Time one audit transaction takes to commit.
    pub audit_commit_seconds: HistogramVec,
    /// Audit batches that failed to commit.
    pub audit_failures: IntCounterVec,
    /// Responses with status 400, 401, 408, 413, 500 or 503, by status.
    pub rejections: IntCounterVec,
    /// Alerts delivered, by receiver.
    pub alerts_sent: IntCounterVec,
    /// Alerts given up after every attempt, by receiver.
    pub alerts_failed: IntCounterVec,
    /// Alerts dropped because a queue was full, by trigger.
    pub alerts_dropped: IntCounterVec,
    /// Alerts over the per-trigger rate limit, by trigger.
    pub alerts_suppressed: IntCounterVec,
}

impl std::fmt::Debug for GatewayMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewayMetrics { .. }")
    }
}

impl GatewayMetrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<GatewayMetrics, prometheus::Error> {
        let registry = Registry::new_custom(Some("meshguard".into()), None)?;
        let decisions = IntCounterVec::new(
            Opts::new(
                "decisions_total",
                "Decisions answered, by decision and code",
            ),
            &["decision", "code"],
        )?;
        let check_seconds = HistogramVec::new(
            HistogramOpts::new(
                "check_duration_seconds",
                "Check latency, request to response",
            )
            .buckets(exponential_buckets(0.000_05, 2.0, 16)?),
            &["route"],
        )?;
        let audit_batch_size = HistogramVec::new(
            HistogramOpts::new("audit_batch_size", "Events committed per audit transaction")
                .buckets(exponential_buckets(1.0, 2.0, 11)?),
            &["gateway"],
        )?;
        let audit_commit_seconds = HistogramVec::new(
            HistogramOpts::new(
                "audit_commit_duration_seconds",
                "Audit transaction commit time",
            )
            .buckets(exponential_buckets(0.000_1, 2.0, 16)?),
            &["gateway"],
        )?;
        let audit_failures = IntCounterVec::new(
            Opts::new(
                "audit_commit_failures_total",
                "Audit batches that failed to commit",
            ),
            &["gateway"],
        )?;
        let rejections = IntCounterVec::new(
            Opts::new(
                "http_rejections_total",
                "Responses with status 400, 401, 408, 413, 500 or 503",
            ),
            &["status"],
        )?;
        let alert_counter = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(Opts::new(name, help), &[label])
        };
        let alerts_sent = alert_counter("alerts_sent_total", "Alerts delivered", "receiver")?;
        let alerts_failed = alert_counter(
            "alerts_failed_total",
            "Alerts not delivered after every attempt",
            "receiver",
        )?;
        let alerts_dropped = alert_counter(
            "alerts_dropped_total",
            "Alerts dropped because a queue was full",
            "trigger",
        )?;
        let alerts_suppressed = alert_counter(
            "alerts_suppressed_total",
            "Alerts over the per-trigger rate limit",
            "trigger",
        )?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(check_seconds.clone()))?;
        registry.register(Box::new(audit_batch_size.clone()))?;
        registry.register(Box::new(audit_commit_seconds.clone()))?;
        registry.register(Box::new(audit_failures.clone()))?;
        registry.register(Box::new(rejections.clone()))?;
        for counter in [
            &alerts_sent,
            &alerts_failed,
            &alerts_dropped,
            &alerts_suppressed,
        ] {
            registry.register(Box::new(counter.clone()))?;
        }
        Ok(GatewayMetrics {
            registry,
            decisions,
            check_seconds,
            audit_batch_size,
            audit_commit_seconds,
            audit_failures,
            rejections,
            alerts_sent,
            alerts_failed,
            alerts_dropped,
            alerts_suppressed,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}
