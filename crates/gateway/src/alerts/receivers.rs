//! The receivers: a signed JSON webhook and a Slack incoming webhook, each delivered with a
//! per-request timeout and retried with exponential backoff.

use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use sha2::Sha256;

use super::{
    AUDIT_NOT_COMMITTED, Alert, AlertSettings, POLICY_FILE_NOT_APPLIED, Trigger, WebhookReceiver,
};
use crate::config::Secret;

/// The header carrying `sha256=<hex HMAC-SHA256(secret, raw body)>`.
pub const SIGNATURE_HEADER: &str = "x-meshguard-signature";
/// The header naming the trigger, so a receiver can route without parsing the body.
const EVENT_HEADER: &str = "x-meshguard-event";
/// The same id on every attempt of one delivery, so a receiver can drop duplicates.
const DELIVERY_HEADER: &str = "x-meshguard-delivery";

/// One place alerts go.
#[derive(Debug, Clone)]
pub(super) enum Receiver {
    /// The generic JSON webhook.
    Webhook(WebhookReceiver),
    /// A Slack incoming webhook.
    Slack(Secret),
}

impl Receiver {
    /// The name in metrics, logs and the `alerts test` report.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Receiver::Webhook(_) => "webhook",
            Receiver::Slack(_) => "slack",
        }
    }
}

/// The `X-MeshGuard-Signature` value of `body`: `sha256=` and the hex HMAC-SHA256 keyed with
/// `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here; an error would be
    // a bug in the hmac crate, and an unsigned header is the safe answer to it.
    match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        Err(_) => "sha256=".to_owned(),
    }
}

/// Slack's control characters in user-supplied text.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('`', "'")
}

/// The one-line Slack message of an alert.
pub fn slack_text(alert: &Alert) -> String {
    let agent = alert
        .agent
        .as_ref()
        .map_or_else(String::new, |a| format!(" for agent `{}`", escape(&a.name)));
    let action = format!("`{}`", escape(&alert.action));
    let on = match alert.resource.as_deref() {
        Some(resource) if resource != "*" => format!(" on `{}`", escape(resource)),
        _ => String::new(),
    };
    let by = match (&alert.rule, &alert.policy) {
        (Some(rule), Some(policy)) => format!(" ({} of {})", escape(rule), escape(policy)),
        (None, Some(policy)) => format!(" ({})", escape(policy)),
        _ => String::new(),
    };
    let audit_only = if alert.enforced {
        ""
    } else {
        " [audit mode: not enforced]"
    };
    let line = match alert.event {
        Trigger::Deny => format!(":no_entry: MeshGuard denied {action}{on}{agent}{by}{audit_only}"),
        Trigger::RateLimit => {
            format!(":hourglass: MeshGuard rate-limited {action}{on}{agent}{by}{audit_only}")
        }
        Trigger::ApprovalRequired => {
            let approval = alert.approval_id.as_deref().map_or_else(String::new, |id| {
                format!(": approve with `meshguard approval approve {}`", escape(id))
            });
            format!(":raised_hand: MeshGuard holds {action}{on}{agent} for a human{by}{approval}")
        }
        Trigger::AgentRevoked => match &alert.agent {
            Some(a) => format!(
                ":lock: MeshGuard agent `{}` was revoked: its requests are refused",
                escape(&a.name)
            ),
            None => ":lock: MeshGuard revoked an agent".to_owned(),
        },
        Trigger::Error => match (alert.code, alert.resource.as_deref()) {
            (Some(POLICY_FILE_NOT_APPLIED), Some(file)) => format!(
                ":rotating_light: MeshGuard did not apply policy file `{}`: {}",
                escape(file),
                escape(&alert.reason)
            ),
            (Some(AUDIT_NOT_COMMITTED), _) => format!(
                ":rotating_light: MeshGuard could not write the audit trail: {}",
                escape(&alert.reason)
            ),
            _ => format!(
                ":rotating_light: MeshGuard could not decide {action}{agent} and denied it: {}",
                escape(&alert.reason)
            ),
        },
    };
    if alert.test {
        format!("[test] {line}")
    } else {
        line
    }
}

/// Why one attempt failed, and whether another could succeed.
struct AttemptError {
    message: String,
    retry: bool,
}

/// POSTs the alert once.
async fn attempt(
    client: &reqwest::Client,
    receiver: &Receiver,
    alert: &Alert,
    body: &[u8],
    delivery: &str,
    settings: &AlertSettings,
) -> Result<(), AttemptError> {
    let request = match receiver {
        Receiver::Webhook(hook) => {
            let mut request = client
                .post(hook.url.expose())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(EVENT_HEADER, alert.event.as_str())
                .header(DELIVERY_HEADER, delivery);
            if let Some(secret) = &hook.secret {
                request = request.header(SIGNATURE_HEADER, sign(secret.expose(), body));
            }
            request
        }
        Receiver::Slack(url) => client
            .post(url.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json"),
    };
    let sent = request
        .body(body.to_vec())
        .timeout(settings.request_timeout)
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => {
            let status = response.status();
            // A 4xx other than 408/429 says the request itself is wrong (bad URL, revoked Slack
            // hook): repeating it cannot help.
            let retry = status.is_server_error()
                || status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::REQUEST_TIMEOUT;
            Err(AttemptError {
                message: format!("receiver answered {status}"),
                retry,
            })
        }
        Err(err) => {
            // The URL may embed a credential (Slack): never put it in a message.
            let message = if err.is_timeout() {
                format!(
                    "no answer within {} ms",
                    settings.request_timeout.as_millis()
                )
            } else {
                format!("request failed: {}", err.without_url())
            };
            Err(AttemptError {
                message,
                retry: true,
            })
        }
    }
}

/// Delivers one alert to one receiver, retrying with backoff; returns the attempts made, or the
/// last error.
pub(super) async fn deliver(
    client: &reqwest::Client,
    receiver: &Receiver,
    alert: &Alert,
    settings: &AlertSettings,
) -> Result<u32, String> {
    let body = match receiver {
        Receiver::Webhook(_) => serde_json::to_vec(alert),
        Receiver::Slack(_) => serde_json::to_vec(&serde_json::json!({ "text": slack_text(alert) })),
    }
    .map_err(|e| format!("alert not serialisable: {e}"))?;
    let delivery = uuid::Uuid::now_v7().to_string();
    let attempts = settings.max_attempts.max(1);
    let mut attempt_no = 1;
    loop {
        match attempt(client, receiver, alert, &body, &delivery, settings).await {
            Ok(()) => return Ok(attempt_no),
            Err(err) if !err.retry || attempt_no >= attempts => {
                return Err(format!("{} (after {attempt_no} attempt(s))", err.message));
            }
            Err(err) => {
                tracing::debug!(receiver = receiver.name(), attempt = attempt_no, error = %err.message, "alert delivery failed; retrying");
                tokio::time::sleep(settings.backoff(attempt_no)).await;
                attempt_no += 1;
            }
        }
    }
}
