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

use meshguard_policy::{Code, Decision, Effect};
use serde::Serialize;
use time::OffsetDateTime;

pub use dispatcher::{AlertDispatcher, AlertQueue, AlertTasks, DeliveryReport};
pub use receivers::{SIGNATURE_HEADER, sign, slack_text};
pub use settings::{AlertSettings, Trigger, WebhookReceiver};

/// The `code` of an `error` alert: a file of `serve --policies DIR` failed to load or reload, and
/// the last good version of its policy stays in force.
pub const POLICY_FILE_NOT_APPLIED: &str = "policy_file_not_applied";
/// The `code` of an `error` alert: a batch of audit events could not be committed.
pub const AUDIT_NOT_COMMITTED: &str = "audit_not_committed";

/// The agent an alert is about.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AlertAgent {
    /// The agent's id.
    pub id: String,
    /// The agent's name.
    pub name: String,
}

/// One alert: the webhook body, field for field, so what a receiver verifies is what was built.
/// Begun only by [`Alert::new`], so every alert names its gateway and time the same way.
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
    /// The decision; `None` when no decision was made.
    pub decision: Option<Effect>,
    /// The decision code (`denied_by_rule`, `rate_limited`, `unavailable`, …), or what failed
    /// for an `error` outside a check ([`POLICY_FILE_NOT_APPLIED`], [`AUDIT_NOT_COMMITTED`]):
    /// always one of the gateway's constant spellings.
    pub code: Option<&'static str>,
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

impl Trigger {
    /// The trigger a decision fires, if any. A re-check of an approval that still waits fires
    /// nothing: the operator heard when it was created, and agents poll.
    pub fn of_decision(decision: &Decision) -> Option<Trigger> {
        match (decision.effect(), decision.code) {
            (Effect::Allow, _) => None,
            (Effect::Deny, Code::RateLimited) => Some(Trigger::RateLimit),
            (Effect::Deny, _) => Some(Trigger::Deny),
            (Effect::RequireApproval, Code::ApprovalRequired) => Some(Trigger::ApprovalRequired),
            (Effect::RequireApproval, _) => None,
        }
    }
}

impl Alert {
    /// An alert of `event` raised now by `gateway` about `action`, enforced, not a test, with
    /// every optional field empty: callers fill in what they know.
    pub fn new(event: Trigger, gateway: &str, action: &str, reason: String) -> Alert {
        Alert {
            event,
            agent: None,
            action: action.to_owned(),
            resource: None,
            decision: None,
            code: None,
            reason,
            policy: None,
            rule: None,
            approval_id: None,
            trace_id: None,
            audit_id: None,
            timestamp: OffsetDateTime::now_utc(),
            gateway: gateway.to_owned(),
            enforced: true,
            test: false,
        }
    }

    /// Fills in what `decision` says: effect, code, policy, rule and approval.
    #[must_use]
    pub fn decided(self, decision: &Decision) -> Alert {
        Alert {
            decision: Some(decision.effect()),
            code: Some(decision.code.as_str()),
            policy: decision.policy.clone(),
            rule: decision.rule.clone(),
            approval_id: decision.approval_id.clone(),
            ..self
        }
    }

    /// An `error` alert about a failure outside any check that changes what the gateway
    /// enforces or records: no agent, no decision, no trace, no audit event.
    pub fn failure(
        code: &'static str,
        action: &str,
        resource: Option<&str>,
        reason: String,
        gateway: &str,
    ) -> Alert {
        Alert {
            resource: resource.map(str::to_owned),
            code: Some(code),
            ..Alert::new(Trigger::Error, gateway, action, reason)
        }
    }
}
