//! Alerts: operators hear about denials, rate limits, approvals, revocations and outages without
//! watching a terminal.
//!
//! # Model
//!
//! The check path never waits for an alert. It builds an [`Alert`] and hands it to the
//! [`AlertDispatcher`] with a non-blocking `try_send` onto a bounded queue; when the queue is
//! full the alert is dropped and counted (`meshguard_alerts_dropped_total`). A background task
//! applies the per-trigger rate limit and fans each alert out to one queue per receiver (webhook,
//! Slack), so a slow receiver never delays another. Each receiver delivers with a per-request
//! timeout and retries with exponential backoff. On shutdown the queues are drained within a
//! bound.

mod dispatcher;
mod receivers;
mod settings;

use serde::Serialize;
use time::OffsetDateTime;

pub use dispatcher::{AlertDispatcher, AlertTasks, DeliveryReport};
pub use receivers::{SIGNATURE_HEADER, sign, slack_text};
pub use settings::{AlertSettings, Trigger, WebhookReceiver};

/// The agent an alert is about.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AlertAgent {
    /// The agent's id.
    pub id: String,
    /// The agent's name.
    pub name: String,
}

/// One alert: the webhook body, field for field, so what a receiver verifies is what was built.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// The trigger that fired.
    pub event: Trigger,
    /// The agent concerned, when known (an outage may strike before the agent is read).
    pub agent: Option<AlertAgent>,
    /// The action asked for (or `agent.revoke`).
    pub action: String,
    /// The resource.
    pub resource: Option<String>,
    /// `allow`, `deny` or `require_approval`.
    pub decision: Option<String>,
    /// The decision code (`denied_by_rule`, `rate_limited`, `unavailable`, …).
    pub code: Option<String>,
    /// The human-readable reason.
    pub reason: String,
    /// The policy that decided.
    pub policy: Option<String>,
    /// The rule that decided.
    pub rule: Option<String>,
    /// The approval a human must settle (`approval_required`).
    pub approval_id: Option<String>,
    /// The request's trace id.
    pub trace_id: Option<String>,
    /// The audit event of the decision, when one was written.
    pub audit_id: Option<String>,
    /// When the alert was raised (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// The gateway instance that raised it.
    pub gateway: String,
    /// Whether the decision was enforced (`false` in audit mode).
    pub enforced: bool,
    /// `true` only for `meshguard alerts test`.
    pub test: bool,
}
