//! `POST /admin/alerts/test`: an operator checks the receivers before relying on them.

use axum::Json;
use axum::extract::State;
use meshguard_policy::Effect;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::alerts::{Alert, AlertAgent, DeliveryReport, Trigger};
use crate::config::ConfigKey;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{LimitedBody, parse_json};
use crate::state::AppState;

/// The body: which trigger to imitate (`deny` when absent).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct TestRequest {
    /// `deny`, `rate_limit`, `approval_required`, `agent_revoked` or `error`.
    #[serde(default)]
    trigger: Option<String>,
}

/// The answer: one line per configured receiver.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestReport {
    /// The trigger imitated.
    trigger: Trigger,
    /// Each configured receiver and whether it took the alert.
    receivers: Vec<DeliveryReport>,
}

/// Sends one alert marked `"test": true` to every receiver, once, and reports each outcome; a
/// gateway without receivers answers 400 so a misconfiguration is not mistaken for silence.
#[utoipa::path(
    post,
    path = "/alerts/test",
    operation_id = "test_alerts",
    summary = "Send a test alert",
    request_body(content = Option<TestRequest>, description = "Optional: `deny` when absent."),
    responses(
        (status = 200, body = TestReport, description = "Each receiver's outcome."),
        (status = 400, body = ErrorBody, description = "`bad_request`: no receiver is configured, or an unknown trigger."),
        (status = 413, body = ErrorBody, description = "`payload_too_large`: the body is over the limit."),
    )
)]
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
