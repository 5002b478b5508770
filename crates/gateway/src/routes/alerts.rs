//! `POST /admin/alerts/test`: an operator checks the receivers before relying on them.

use axum::Json;
use axum::extract::State;
use meshguard_policy::Effect;
use serde::{Deserialize, Serialize};

use crate::alerts::{Alert, AlertAgent, DeliveryReport, Trigger};
use crate::config::ConfigKey;
use crate::error::ApiError;
use crate::extract::{LimitedBody, parse_json};
use crate::state::AppState;

/// The body: which trigger to imitate (`deny` when absent).
#[derive(Debug, Default, Deserialize)]
pub struct TestRequest {
    #[serde(default)]
    trigger: Option<String>,
}

/// The answer: one line per configured receiver.
#[derive(Debug, Serialize)]
pub struct TestReport {
    trigger: Trigger,
    receivers: Vec<DeliveryReport>,
}

/// Sends one alert marked `"test": true` to every receiver, once, and reports each outcome; a
/// gateway without receivers answers 400 so a misconfiguration is not mistaken for silence.
pub async fn test(
    State(state): State<AppState>,
    LimitedBody(body): LimitedBody,
) -> Result<Json<TestReport>, ApiError> {
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        TestRequest::default()
    } else {
        parse_json::<TestRequest>(&body)?
    };
    let trigger = match request.trigger.as_deref() {
        None => Trigger::Deny,
        Some(name) => name
            .parse()
            .map_err(|e: String| ApiError::BadRequest(format!("trigger: {e}")))?,
    };
    let alert = Alert {
        agent: Some(AlertAgent {
            id: "00000000-0000-0000-0000-000000000000".into(),
            name: "meshguard-test-agent".into(),
        }),
        resource: Some("*".into()),
        decision: Some(Effect::Deny),
        policy: Some("meshguard-test".into()),
        test: true,
        ..Alert::new(
            trigger,
            &state.instance_id,
            "alerts:test",
            "test alert sent with `meshguard alerts test`".into(),
        )
    };
    let receivers = state.alerts.test(alert).await;
    if receivers.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "no alert receiver is configured: set `{}` or `{}`",
            ConfigKey::AlertWebhookUrl.file_key(),
            ConfigKey::AlertSlackWebhook.file_key()
        )));
    }
    Ok(Json(TestReport { trigger, receivers }))
}
