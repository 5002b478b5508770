//! Prometheus metrics: decisions, MCP calls, check latency, audit group commits, and the refusals
//! that are not audited (401, 400, 413) or could not be (503).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Map, Value};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
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
    /// Time one index transaction of logged events takes (a SQLite gateway's write-ahead log).
    pub audit_index_seconds: HistogramVec,
    /// Index transactions of logged events that failed (and are retried).
    pub audit_index_failures: IntCounterVec,
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
    /// MCP calls checked, by server, tool and decision.
    pub mcp_calls: McpCallCounter,
    /// Approval long polls waiting for a decision right now: how many agents are parked on a
    /// human, and the sign that a poll is subscribed to decisions.
    approval_polls_waiting: IntGauge,
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
        let audit_index_seconds = HistogramVec::new(
            HistogramOpts::new(
                "audit_index_duration_seconds",
                "Time to index a batch of logged audit events into the store",
            )
            .buckets(exponential_buckets(0.000_1, 2.0, 16)?),
            &["gateway"],
        )?;
        let audit_index_failures = IntCounterVec::new(
            Opts::new(
                "audit_index_failures_total",
                "Index transactions of logged audit events that failed and are retried",
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
        let approval_polls_waiting = IntGauge::with_opts(Opts::new(
            "approval_polls_waiting",
            "Approval long polls waiting for a decision",
        ))?;
        registry.register(Box::new(approval_polls_waiting.clone()))?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(check_seconds.clone()))?;
        registry.register(Box::new(audit_batch_size.clone()))?;
        registry.register(Box::new(audit_commit_seconds.clone()))?;
        registry.register(Box::new(audit_failures.clone()))?;
        registry.register(Box::new(audit_index_seconds.clone()))?;
        registry.register(Box::new(audit_index_failures.clone()))?;
        registry.register(Box::new(rejections.clone()))?;
        let mcp_calls = McpCallCounter::new()?;
        registry.register(Box::new(mcp_calls.counter.clone()))?;
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
            audit_index_seconds,
            audit_index_failures,
            rejections,
            alerts_sent,
            alerts_failed,
            alerts_dropped,
            alerts_suppressed,
            mcp_calls,
            approval_polls_waiting,
        })
    }

    /// Counts one long poll as waiting until the guard is dropped, however the wait ends.
    pub fn approval_poll_waiting(&self) -> WaitingPoll {
        self.approval_polls_waiting.inc();
        WaitingPoll(self.approval_polls_waiting.clone())
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// The label of every server past [`MAX_MCP_SERVERS`] and every tool past [`MAX_MCP_TOOLS`] of
/// its server.
pub const MCP_OTHER: &str = "other";
/// Distinct servers counted by name; tool and server names come from agents, so the number of
/// series they can create is bounded.
pub const MAX_MCP_SERVERS: usize = 32;
/// Distinct tools counted by name per server.
pub const MAX_MCP_TOOLS: usize = 64;
/// The longest name counted as it is; a longer one counts as [`MCP_OTHER`].
const MAX_MCP_NAME_BYTES: usize = 128;

/// The MCP call a check is about: MeshGuard's MCP proxies put the server and the tool in
/// `context.server` and `context.tool` (SPEC, "MCP tool calls"), whatever action a mapping
/// turns the call into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct McpCall<'a> {
    /// The server's name.
    pub server: &'a str,
    /// The tool (or `resources/read`, `prompts/NAME`).
    pub tool: &'a str,
}

impl<'a> McpCall<'a> {
    /// The context key of the server's name.
    pub const SERVER_KEY: &'static str = "server";
    /// The context key of the tool's name.
    pub const TOOL_KEY: &'static str = "tool";

    /// The MCP call of a check's context, when it carries both names.
    pub fn of(context: &'a Map<String, Value>) -> Option<McpCall<'a>> {
        let name = |key: &str| context.get(key).and_then(Value::as_str);
        Some(McpCall {
            server: name(Self::SERVER_KEY)?,
            tool: name(Self::TOOL_KEY)?,
        })
    }
}

/// `meshguard_mcp_calls_total{server,tool,decision}`, with the names it has seen so that the
/// series stay bounded: at most [`MAX_MCP_SERVERS`] × ([`MAX_MCP_TOOLS`] + 1) plus the `other`
/// server, times the decisions.
#[derive(Clone)]
pub struct McpCallCounter {
    counter: IntCounterVec,
    seen: Arc<Mutex<HashMap<String, HashSet<String>>>>,
}

impl McpCallCounter {
    fn new() -> Result<McpCallCounter, prometheus::Error> {
        let counter = IntCounterVec::new(
            Opts::new(
                "mcp_calls_total",
                "MCP calls checked, by server, tool and decision (names past the caps count as other)",
            ),
            &["server", "tool", "decision"],
        )?;
        Ok(McpCallCounter {
            counter,
            seen: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Counts one checked call with its decision's label.
    pub fn observe(&self, call: McpCall<'_>, decision: &str) {
        let (server, tool) = self.labels(call);
        self.counter
            .with_label_values(&[server.as_str(), tool.as_str(), decision])
            .inc();
    }

    /// The labels of `call`: its names while the caps leave room for them, else `other`.
    fn labels(&self, call: McpCall<'_>) -> (String, String) {
        let fits = |name: &str| !name.is_empty() && name.len() <= MAX_MCP_NAME_BYTES;
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let room_for_server = seen.len() < MAX_MCP_SERVERS;
        let tools = match seen.get_mut(call.server) {
            Some(tools) => tools,
            None if fits(call.server) && room_for_server => {
                seen.entry(call.server.to_owned()).or_default()
            }
            None => return (MCP_OTHER.to_owned(), MCP_OTHER.to_owned()),
        };
        let tool = if tools.contains(call.tool)
            || (fits(call.tool)
                && tools.len() < MAX_MCP_TOOLS
                && tools.insert(call.tool.to_owned()))
        {
            call.tool.to_owned()
        } else {
            MCP_OTHER.to_owned()
        };
        (call.server.to_owned(), tool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcp_call_labels_are_bounded_per_server_and_overall() {
        let counter = McpCallCounter::new().unwrap();
        let call = |server: &'static str, tool: String| (server, tool);
        for n in 0..MAX_MCP_TOOLS {
            let (server, tool) = call("fs", format!("tool{n}"));
            assert_eq!(
                counter.labels(McpCall {
                    server,
                    tool: &tool
                }),
                (server.into(), tool)
            );
        }
        // Past the cap a new tool is `other`; the ones already seen keep their names.
        let labels = counter.labels(McpCall {
            server: "fs",
            tool: "one-more",
        });
        assert_eq!(labels, ("fs".into(), MCP_OTHER.into()));
        let labels = counter.labels(McpCall {
            server: "fs",
            tool: "tool0",
        });
        assert_eq!(labels, ("fs".into(), "tool0".into()));
        let long = "x".repeat(MAX_MCP_NAME_BYTES + 1);
        let labels = counter.labels(McpCall {
            server: "other-server",
            tool: &long,
        });
        assert_eq!(labels, ("other-server".into(), MCP_OTHER.into()));
        let servers: Vec<String> = (0..MAX_MCP_SERVERS).map(|n| format!("s{n}")).collect();
        for server in &servers {
            counter.labels(McpCall { server, tool: "t" });
        }
        let labels = counter.labels(McpCall {
            server: "late",
            tool: "t",
        });
        assert_eq!(labels, (MCP_OTHER.into(), MCP_OTHER.into()));
    }
}

/// One approval long poll counted in `meshguard_approval_polls_waiting` while it lives.
#[derive(Debug)]
pub struct WaitingPoll(IntGauge);

impl Drop for WaitingPoll {
    fn drop(&mut self) {
        self.0.dec();
    }
}
