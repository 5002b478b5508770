//! Validated alert settings: receivers, triggers, queue, retries and rate limit.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;

use crate::config::{Alerts, Secret};

/// What makes the gateway raise an alert (SPEC 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A check denied for any reason but a rate limit.
    Deny,
    /// A check denied by an exhausted rate limit.
    RateLimit,
    /// A check that waits for a human.
    ApprovalRequired,
    /// An operator revoked an agent.
    AgentRevoked,
    /// The gateway could not decide (store unavailable, internal error) and denied; a policy
    /// file failed to load or reload; an audit batch could not be committed.
    Error,
}

impl Trigger {
    /// Every trigger, in documentation order.
    pub const ALL: [Trigger; 5] = [
        Trigger::Deny,
        Trigger::RateLimit,
        Trigger::ApprovalRequired,
        Trigger::AgentRevoked,
        Trigger::Error,
    ];

    /// The wire name, also the `X-MeshGuard-Event` header and the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Deny => "deny",
            Trigger::RateLimit => "rate_limit",
            Trigger::ApprovalRequired => "approval_required",
            Trigger::AgentRevoked => "agent_revoked",
            Trigger::Error => "error",
        }
    }
}

impl std::str::FromStr for Trigger {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Trigger::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<_> = Trigger::ALL.iter().map(|t| t.as_str()).collect();
                format!(
                    "unknown trigger `{s}` (expected one of {})",
                    known.join(", ")
                )
            })
    }
}

/// A generic webhook: where to POST, and the HMAC secret that signs the body.
#[derive(Debug, Clone)]
pub struct WebhookReceiver {
    /// The URL (often embeds a token: never logged).
    pub url: Secret,
    /// The HMAC-SHA256 key; without one the body is sent unsigned.
    pub secret: Option<Secret>,
}

/// Everything the dispatcher needs; tests build it directly with short delays.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// The generic JSON webhook.
    pub webhook: Option<WebhookReceiver>,
    /// The Slack incoming-webhook URL.
    pub slack: Option<Secret>,
    /// The triggers that raise alerts.
    pub triggers: BTreeSet<Trigger>,
    /// Alerts waiting for the dispatcher (and, per receiver, for delivery); more are dropped.
    pub queue_capacity: usize,
    /// Delivery attempts per alert and receiver, the first included.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled after each failure.
    pub backoff_initial: Duration,
    /// The longest wait between retries.
    pub backoff_max: Duration,
    /// How long one HTTP request may take, so a receiver that never answers frees its slot.
    pub request_timeout: Duration,
    /// Alerts per trigger per minute; the rest are suppressed and counted.
    pub per_minute: u32,
    /// Deliveries in flight per receiver.
    pub concurrency: usize,
    /// How long shutdown waits for queued alerts to be delivered.
    pub drain_timeout: Duration,
}

/// Defaults documented in `docs/alerts.md`.
impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            webhook: None,
            slack: None,
            triggers: Trigger::ALL.into_iter().collect(),
            queue_capacity: 1024,
            max_attempts: 5,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            request_timeout: Duration::from_secs(5),
            per_minute: 60,
            concurrency: 4,
            drain_timeout: Duration::from_secs(5),
        }
    }
}

impl AlertSettings {
    /// The settings of a validated config; triggers default to all of them when `alerts.on` is
    /// not set, so configuring a receiver is enough to hear about everything.
    pub fn from_config(alerts: &Alerts) -> AlertSettings {
        let defaults = AlertSettings::default();
        AlertSettings {
            webhook: alerts.webhook_url.clone().map(|url| WebhookReceiver {
                url,
                secret: alerts.webhook_secret.clone(),
            }),
            slack: alerts.slack_webhook.clone(),
            triggers: if alerts.on.is_empty() {
                defaults.triggers.clone()
            } else {
                alerts.on.iter().copied().collect()
            },
            queue_capacity: alerts.queue_size.unwrap_or(defaults.queue_capacity),
            max_attempts: alerts.max_attempts.unwrap_or(defaults.max_attempts),
            backoff_initial: alerts.backoff.unwrap_or(defaults.backoff_initial),
            backoff_max: alerts.backoff_max.unwrap_or(defaults.backoff_max),
            request_timeout: alerts.timeout.unwrap_or(defaults.request_timeout),
            per_minute: alerts.per_minute.unwrap_or(defaults.per_minute),
            ..defaults
        }
    }

    /// Whether any receiver is configured.
    pub fn has_receivers(&self) -> bool {
        self.webhook.is_some() || self.slack.is_some()
    }

    /// The wait before retry number `retry` (1-based): initial × 2^(retry-1), capped.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let settings = AlertSettings {
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(3),
            ..AlertSettings::default()
        };
        let waits: Vec<_> = (1..=5).map(|n| settings.backoff(n).as_millis()).collect();
        assert_eq!(waits, vec![500, 1000, 2000, 3000, 3000]);
    }

    #[test]
    fn triggers_parse_by_wire_name() {
        assert_eq!("rate_limit".parse::<Trigger>(), Ok(Trigger::RateLimit));
        let err = "denied".parse::<Trigger>().unwrap_err();
        assert!(err.contains("unknown trigger `denied`"), "{err}");
    }
}
