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
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use meshguard_policy::Code;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::check::{CheckInput, Route, authenticated, evaluate, lenient_action};
use super::outcome::{Asked, CheckAnswer, CheckOutcome};
use super::sorted::SortedJson;
use crate::auth::AuthenticatedAgent;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{LimitedBody, parse_json};
use crate::openapi::BodyRefusals;
use crate::state::AppState;
use crate::trace::TraceId;

/// The most evaluations one batch may ask for.
pub const MAX_EVALUATIONS: usize = 100;

/// AuthZEN's subject, action and resource entities: `type`, `id` / `name`, `properties` (only
/// `id` and `name` are read; the others are accepted and ignored).
#[derive(Debug, Default, Clone, Deserialize, ToSchema)]
struct Entity {
    /// The subject's agent id or name; the resource.
    #[serde(default)]
    id: Option<String>,
    /// The action.
    #[serde(default)]
    name: Option<String>,
}

/// One evaluation request, or the defaults of a batch.
#[derive(Debug, Default, Clone, Deserialize, ToSchema)]
struct Evaluation {
    /// When given, `id` must be the authenticated agent's id or name.
    #[serde(default)]
    subject: Option<Entity>,
    /// `name` is the MeshGuard action (required).
    #[serde(default)]
    action: Option<Entity>,
    /// `id` is the resource (`*` when absent).
    #[serde(default)]
    resource: Option<Entity>,
    /// The check's context.
    #[serde(default)]
    context: Option<Map<String, Value>>,
}

/// The batch body: defaults at the top, one entry per evaluation overriding them.
#[derive(Debug, Deserialize, ToSchema)]
struct Batch {
    /// Defaults for every evaluation.
    #[serde(flatten)]
    defaults: Evaluation,
    /// At most 100, all validated before any is decided.
    evaluations: Vec<Evaluation>,
    /// When the batch stops.
    #[serde(default)]
    options: Option<BatchOptions>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
struct BatchOptions {
    /// `execute_all` (default), `deny_on_first_deny` or `permit_on_first_permit`.
    #[serde(default)]
    evaluations_semantic: Option<String>,
}

/// One AuthZEN answer: `decision` is true only for an allow, whatever the gateway's mode.
#[derive(Debug, Serialize, ToSchema)]
struct EvaluationAnswer {
    /// True only when the check was allowed.
    decision: bool,
    /// Why, as a check's answer says it.
    context: EvaluationContext,
}

/// The reasons of an AuthZEN answer.
#[derive(Debug, Serialize, ToSchema)]
struct EvaluationContext {
    /// The decision's machine code.
    code: Code,
    /// Why, for a person.
    reason: String,
    /// The policy that decided.
    #[schema(required = true)]
    policy: Option<String>,
    /// The rule that decided.
    #[schema(required = true)]
    rule: Option<String>,
    /// The approval a human must decide, when there is one.
    #[schema(required = true)]
    approval_id: Option<String>,
    /// Whole seconds until a rate-limited check would fit.
    #[schema(required = true)]
    retry_after_seconds: Option<u64>,
    /// The request's trace id.
    trace_id: String,
    /// The check's audit event.
    audit_id: String,
}

/// The answer to a batch: one answer per evaluation decided, in order.
#[derive(Debug, Serialize, ToSchema)]
struct EvaluationsAnswer {
    /// Stops after the first deny or permit with those semantics.
    evaluations: Vec<EvaluationAnswer>,
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
#[utoipa::path(
    post,
    path = "/access/v1/evaluation",
    summary = "OpenID AuthZEN evaluation",
    description = "One AuthZEN evaluation, decided as a check (charged, settled, audited).",
    request_body = Evaluation,
    responses(
        (status = 200, body = EvaluationAnswer, description = "The decision, true only for an allow."),
        (status = 403, body = ErrorBody, description = "`forbidden`: `subject.id` names another agent."),
        (status = 503, body = CheckAnswer, description = "`unavailable`: nothing is allowed."),
        BodyRefusals,
    )
)]
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
        Ok(answer) => SortedJson(answer).into_response(),
        Err(response) => response,
    }
}

/// `POST /access/v1/evaluations`.
#[utoipa::path(
    post,
    path = "/access/v1/evaluations",
    summary = "OpenID AuthZEN batch evaluation",
    description = "Up to 100 evaluations over top-level defaults, each decided as a check, all \
        validated before any is decided.",
    request_body = Batch,
    responses(
        (status = 200, body = EvaluationsAnswer, description = "One answer per evaluation decided."),
        (status = 403, body = ErrorBody, description = "`forbidden`: a `subject.id` names another agent."),
        (status = 503, body = CheckAnswer, description = "`unavailable`: nothing is allowed."),
        BodyRefusals,
    )
)]
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
        let allowed = answer.decision;
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
    SortedJson(EvaluationsAnswer {
        evaluations: answers,
    })
    .into_response()
}

/// One evaluation as a check; `Err` is the answer when it could not be decided (503).
async fn evaluate_as_check(
    state: &AppState,
    agent: &AuthenticatedAgent,
    input: CheckInput,
    trace: &TraceId,
) -> Result<EvaluationAnswer, Response> {
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
            Ok(EvaluationAnswer {
                decision: decision.is_allowed(),
                context: EvaluationContext {
                    code: decision.code,
                    reason: decision.reason.clone(),
                    policy: decision.policy.clone(),
                    rule: decision.rule.clone(),
                    approval_id: decision.approval_id.clone(),
                    retry_after_seconds: decision.retry_after_secs,
                    trace_id: trace.0.clone(),
                    audit_id: audit_id.clone(),
                },
            })
        }
        CheckOutcome::Refused(_) | CheckOutcome::Unavailable { .. } => {
            Err(outcome.answer(state, &asked))
        }
    }
}
