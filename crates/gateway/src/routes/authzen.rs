//! OpenID AuthZEN evaluation (`POST /access/v1/evaluation` and the batch `/access/v1/evaluations`):
//! MeshGuard as the policy decision point of a policy enforcement point that speaks AuthZEN.
//!
//! The caller authenticates with the agent's bearer token, so the subject is that agent (a
//! `subject.id` naming anyone else is refused). `action.name` is the MeshGuard action,
//! `resource.id` the resource (`*` when absent) and `context` the check's context. Each
//! evaluation is a check: decided, charged, approvals settled, audited, and answered `decision:
//! true` only when allowed (in audit mode too: the caller enforces, so MeshGuard says what the
//! policies say).

use std::time::Instant;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::check::{CheckInput, Route, authenticated, evaluate, lenient_action};
use super::outcome::{Asked, CheckOutcome};
use crate::auth::AuthenticatedAgent;
use crate::error::ApiError;
use crate::extract::{LimitedBody, parse_json};
use crate::state::AppState;
use crate::trace::TraceId;

/// The most evaluations one batch may ask for.
pub const MAX_EVALUATIONS: usize = 100;

/// AuthZEN's subject, action and resource entities: `type`, `id` / `name`, `properties`.
#[derive(Debug, Default, Clone, Deserialize)]
struct Entity {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// One evaluation request, or the defaults of a batch.
#[derive(Debug, Default, Clone, Deserialize)]
struct Evaluation {
    #[serde(default)]
    subject: Option<Entity>,
    #[serde(default)]
    action: Option<Entity>,
    #[serde(default)]
    resource: Option<Entity>,
    #[serde(default)]
    context: Option<Map<String, Value>>,
}

/// The batch body: defaults at the top, one entry per evaluation overriding them.
#[derive(Debug, Deserialize)]
struct Batch {
    #[serde(flatten)]
    defaults: Evaluation,
    evaluations: Vec<Evaluation>,
    #[serde(default)]
    options: Option<BatchOptions>,
}

#[derive(Debug, Default, Deserialize)]
struct BatchOptions {
    #[serde(default)]
    evaluations_semantic: Option<String>,
}

/// When a batch stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Semantic {
    ExecuteAll,
    DenyOnFirstDeny,
    PermitOnFirstPermit,
}

impl Evaluation {
    /// This evaluation with the batch's defaults filled in.
    fn over(self, defaults: &Evaluation) -> Evaluation {
        Evaluation {
            subject: self.subject.or_else(|| defaults.subject.clone()),
            action: self.action.or_else(|| defaults.action.clone()),
            resource: self.resource.or_else(|| defaults.resource.clone()),
            context: self.context.or_else(|| defaults.context.clone()),
        }
    }

    /// The check it asks for; the subject must be the authenticated agent.
    fn input(self, agent: &AuthenticatedAgent, at: &str) -> Result<CheckInput, ApiError> {
        if let Some(id) = self.subject.and_then(|s| s.id)
            && id != agent.record.id
            && id != agent.record.name
        {
            return Err(ApiError::Forbidden(format!(
                "{at}subject.id: `{id}` is not the agent whose token was sent"
            )));
        }
        let action = self
            .action
            .and_then(|a| a.name)
            .filter(|name| !name.trim().is_empty())
            .ok_or_else(|| ApiError::BadRequest(format!("{at}action.name: required")))?;
        Ok(CheckInput {
            action,
            resource: self
                .resource
                .and_then(|r| r.id)
                .unwrap_or_else(|| "*".to_owned()),
            context: self.context.unwrap_or_default(),
            approval_id: None,
        })
    }
}

/// `POST /access/v1/evaluation`.
pub async fn evaluation(
    State(state): State<AppState>,
    Extension(trace): Extension<TraceId>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Response {
    let named = || lenient_action(&body);
    let agent = match authenticated(&state, &headers, &trace, Route::Post, named).await {
        Ok(agent) => agent,
        Err(refused) => return refused,
    };
    let input = match parse_json::<Evaluation>(&body).and_then(|e| e.input(&agent, "")) {
        Ok(input) => input,
        Err(err) => return err.into_response(),
    };
    match evaluate_as_check(&state, &agent, input, &trace).await {
        Ok(answer) => Json(answer).into_response(),
        Err(response) => response,
    }
}

/// `POST /access/v1/evaluations`.
pub async fn evaluations(
    State(state): State<AppState>,
    Extension(trace): Extension<TraceId>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Response {
    let agent = match authenticated(&state, &headers, &trace, Route::Post, || (None, None)).await {
        Ok(agent) => agent,
        Err(refused) => return refused,
    };
    let batch = match parse_json::<Batch>(&body) {
        Ok(batch) => batch,
        Err(err) => return err.into_response(),
    };
    if batch.evaluations.len() > MAX_EVALUATIONS {
        return ApiError::BadRequest(format!(
            "evaluations: at most {MAX_EVALUATIONS} per request, got {}",
            batch.evaluations.len()
        ))
        .into_response();
    }
    let semantic = match batch
        .options
        .unwrap_or_default()
        .evaluations_semantic
        .as_deref()
    {
        None | Some("execute_all") => Semantic::ExecuteAll,
        Some("deny_on_first_deny") => Semantic::DenyOnFirstDeny,
        Some("permit_on_first_permit") => Semantic::PermitOnFirstPermit,
        Some(other) => {
            return ApiError::BadRequest(format!(
                "options.evaluations_semantic: expected `execute_all`, `deny_on_first_deny` or `permit_on_first_permit`, got `{other}`"
            ))
            .into_response();
        }
    };
    // Every entry is validated before any is decided: a bad one decides nothing.
    let inputs: Result<Vec<CheckInput>, ApiError> = batch
        .evaluations
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            e.over(&batch.defaults)
                .input(&agent, &format!("evaluations[{i}]."))
        })
        .collect();
    let inputs = match inputs {
        Ok(inputs) => inputs,
        Err(err) => return err.into_response(),
    };
    let mut answers = Vec::with_capacity(inputs.len());
    for input in inputs {
        let answer = match evaluate_as_check(&state, &agent, input, &trace).await {
            Ok(answer) => answer,
            Err(response) => return response,
        };
        let allowed = answer.get("decision") == Some(&Value::Bool(true));
        answers.push(answer);
        let stop = match semantic {
            Semantic::ExecuteAll => false,
            Semantic::DenyOnFirstDeny => !allowed,
            Semantic::PermitOnFirstPermit => allowed,
        };
        if stop {
            break;
        }
    }
    Json(json!({ "evaluations": answers })).into_response()
}

/// One evaluation as a check; `Err` is the answer when it could not be decided (503).
async fn evaluate_as_check(
    state: &AppState,
    agent: &AuthenticatedAgent,
    input: CheckInput,
    trace: &TraceId,
) -> Result<Value, Response> {
    let started = Instant::now();
    let outcome = evaluate(state, agent, &input, None, trace, Route::Post, started).await;
    let asked = Asked {
        agent: Some(agent),
        input: &input,
        trace,
        route: Route::Post,
        mode: state.mode,
    };
    match &outcome {
        CheckOutcome::Decided { decision, audit_id } => {
            outcome.observe(state, &asked);
            Ok(json!({
                "decision": decision.is_allowed(),
                "context": {
                    "code": decision.code.as_str(),
                    "reason": decision.reason,
                    "policy": decision.policy,
                    "rule": decision.rule,
                    "approval_id": decision.approval_id,
                    "retry_after_seconds": decision.retry_after_secs,
                    "trace_id": trace.0,
                    "audit_id": audit_id,
                },
            }))
        }
        CheckOutcome::Refused(_) | CheckOutcome::Unavailable { .. } => {
            Err(outcome.answer(state, &asked))
        }
    }
}
