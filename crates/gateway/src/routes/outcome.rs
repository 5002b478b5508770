//! What the gateway made of one agent request, as one typed value, and the one place each of its
//! traces is derived from it: the HTTP answer ([`CheckOutcome::into_response`]), the alert
//! ([`CheckOutcome::alert`]), the metric labels ([`CheckOutcome::labels`]) and the attributes of
//! its trace span ([`CheckOutcome::span_attributes`]). The audit event of
//! a decision is derived from the [`Decision`] (`NewAuditEvent::decided`) before the outcome
//! exists, because the answer waits for its commit; a refusal's event is the per-minute count
//! (`refusals`), and an outage has none.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use meshguard_policy::{Code, Decision, Effect};
use opentelemetry::KeyValue;
use serde::Serialize;
use utoipa::ToSchema;

use crate::alerts::{Alert, AlertAgent, Trigger};
use crate::auth::AuthenticatedAgent;
use crate::config::Mode;
use crate::error::{ApiError, STORE_UNAVAILABLE};
use crate::metrics::McpCall;
use crate::rate_limit_redis::RATE_LIMITS_UNAVAILABLE;
use crate::state::AppState;
use crate::trace::TraceId;
use crate::wire::WireCode;

use super::check::{CheckInput, Route};

/// The three ways an agent request ends.
#[derive(Debug)]
pub(super) enum CheckOutcome {
    /// The engine decided, and the decision's audit event (`audit_id`) is committed.
    Decided {
        /// The decision, bounded by what a proxy saw.
        decision: Decision,
        /// The committed event.
        audit_id: String,
    },
    /// Refused before any decision: the token is not one MeshGuard honours.
    Refused(AuthRefusal),
    /// The store or Redis could not be reached (or the event not written): nothing is allowed,
    /// whatever the mode, and no event exists for this answer.
    Unavailable {
        /// What could not be reached.
        outage: Outage,
        /// Why, for the log only.
        cause: String,
    },
}

/// Why a request was refused before any decision.
#[derive(Debug)]
pub(super) enum AuthRefusal {
    /// 401: no token, a forged or expired one, the admin token. Not audited.
    Rejected(String),
    /// A validly signed token that is no longer honoured (a revoked agent or token): counted in
    /// the agent's per-minute refusal event, 401, or 429 once the agent's refusal budget is
    /// spent (`Err` holds the seconds to wait).
    NotHonoured {
        /// Why.
        message: String,
        /// What charging the agent's refusal budget said.
        charged: Result<(), u64>,
        /// The budget per minute, for the 429's message.
        per_minute: u32,
    },
}

/// What could not be reached when a request is answered 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outage {
    /// The store (or the audit trail could not be written).
    Store,
    /// Redis, which holds the global rate limits (`--redis-url`).
    RateLimits,
}

impl Outage {
    /// What is unavailable, as the answer, the log line and the alert say it.
    fn message(self) -> &'static str {
        match self {
            Outage::Store => STORE_UNAVAILABLE,
            Outage::RateLimits => RATE_LIMITS_UNAVAILABLE,
        }
    }
}

/// Who asked what, for the answer and the alert.
pub(super) struct Asked<'a> {
    /// The agent, once authenticated.
    pub(super) agent: Option<&'a AuthenticatedAgent>,
    /// The action and resource as received.
    pub(super) input: &'a CheckInput,
    /// The request's trace.
    pub(super) trace: &'a TraceId,
    /// The endpoint.
    pub(super) route: Route,
    /// Whether a decision is enforced: the gateway's mode, except for a proxied path refused
    /// before routing, which is never forwarded in any mode.
    pub(super) mode: Mode,
}

/// The body of every decision answer (SPEC 2): 200 for an allow, 403 (or 429) for a denial or an
/// approval to wait for, 503 when nothing can be decided. Only a 200 means allow.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CheckAnswer<'a> {
    /// True only when the action may go ahead (in `audit` mode: always, see `enforced`).
    allowed: bool,
    /// `allow`, `deny` or `require_approval`, as computed.
    decision: Effect,
    /// The machine code of the decision (`unavailable` when nothing could be decided).
    code: WireCode,
    /// Why, for a person: names the action, the rule and the policy.
    reason: &'a str,
    /// The same as `reason`, for clients of MeshGuard's first SDK.
    message: &'a str,
    /// The action as received.
    action: &'a str,
    /// The resource as received (`*` when none was sent).
    resource: &'a str,
    /// The policy that decided, when one did.
    #[schema(required = true)]
    policy: Option<&'a str>,
    /// The rule that decided, when a rule did.
    #[schema(required = true)]
    rule: Option<&'a str>,
    /// True when a human must decide first (`decision` is `require_approval`).
    requires_approval: bool,
    /// The approval this decision is about, when there is one.
    #[schema(required = true)]
    approval_id: Option<&'a str>,
    /// Whole seconds until a rate-limited (or budget-limited) check would fit; also sent as
    /// `Retry-After`.
    #[schema(required = true)]
    retry_after_seconds: Option<u64>,
    /// False when the gateway runs in `audit` or `bypass` mode: the decision was not enforced.
    enforced: bool,
    /// The request's trace id (also in `X-Trace-ID`).
    trace_id: &'a str,
    /// The committed audit event of this decision; null when none could be written (503).
    #[schema(required = true)]
    audit_id: Option<&'a str>,
}

impl CheckOutcome {
    /// A 503 because `outage`; `cause` is logged.
    pub(super) fn unavailable(outage: Outage, cause: impl std::fmt::Display) -> CheckOutcome {
        CheckOutcome::Unavailable {
            outage,
            cause: cause.to_string(),
        }
    }

    /// The `decision` and `code` labels of `meshguard_decisions_total`; `None` for a rejected
    /// token, which is counted with the other 401s by status.
    pub(super) fn labels(&self) -> Option<(Effect, WireCode)> {
        match self {
            CheckOutcome::Decided { decision, .. } => {
                Some((decision.effect(), decision.code.into()))
            }
            CheckOutcome::Refused(AuthRefusal::NotHonoured { .. }) => {
                Some((Effect::Deny, WireCode::Unauthorized))
            }
            CheckOutcome::Refused(AuthRefusal::Rejected(_)) => None,
            CheckOutcome::Unavailable { .. } => Some((Effect::Deny, WireCode::Unavailable)),
        }
    }

    /// The attributes of the request's `meshguard.check` span (crate::telemetry): the decision
    /// as the metric labels name it, where it came from, and who asked for what.
    pub(super) fn span_attributes(&self, asked: &Asked<'_>) -> Vec<KeyValue> {
        let mut attributes = Vec::with_capacity(10);
        if let Some((effect, code)) = self.labels() {
            attributes.push(KeyValue::new("meshguard.decision", effect.as_str()));
            attributes.push(KeyValue::new("meshguard.code", code.as_str()));
        }
        if let CheckOutcome::Decided { decision, audit_id } = self {
            if let Some(policy) = &decision.policy {
                attributes.push(KeyValue::new("meshguard.policy", policy.clone()));
            }
            if let Some(rule) = &decision.rule {
                attributes.push(KeyValue::new("meshguard.rule", rule.clone()));
            }
            attributes.push(KeyValue::new("meshguard.audit_id", audit_id.clone()));
        }
        if let Some(agent) = asked.agent {
            attributes.push(KeyValue::new("meshguard.agent", agent.record.name.clone()));
            attributes.push(KeyValue::new("meshguard.agent_id", agent.record.id.clone()));
        }
        attributes.push(KeyValue::new(
            "meshguard.action",
            asked.input.action.clone(),
        ));
        attributes.push(KeyValue::new(
            "meshguard.resource",
            asked.input.resource.clone(),
        ));
        attributes.push(KeyValue::new("meshguard.trace_id", asked.trace.0.clone()));
        attributes.push(KeyValue::new("meshguard.route", asked.route.label()));
        attributes
    }

    /// The alert this outcome raises, if its trigger fires at all (the dispatcher still drops
    /// triggers the operator did not ask for).
    pub(super) fn alert(&self, gateway: &str, asked: &Asked<'_>) -> Option<Alert> {
        let Asked { input, trace, .. } = asked;
        let alert = match self {
            CheckOutcome::Decided { decision, audit_id } => {
                let trigger = Trigger::of_decision(decision)?;
                Alert {
                    agent: asked.agent.map(|agent| AlertAgent {
                        id: agent.record.id.clone(),
                        name: agent.record.name.clone(),
                    }),
                    audit_id: Some(audit_id.clone()),
                    enforced: asked.mode == Mode::Enforce,
                    ..Alert::new(trigger, gateway, &input.action, decision.reason.clone())
                        .decided(decision)
                }
            }
            CheckOutcome::Refused(_) => return None,
            CheckOutcome::Unavailable { outage, .. } => Alert {
                decision: Some(Effect::Deny),
                code: Some(WireCode::Unavailable.as_str()),
                ..Alert::new(
                    Trigger::Error,
                    gateway,
                    &input.action,
                    Self::outage_reason(*outage),
                )
            },
        };
        Some(Alert {
            resource: Some(input.resource.clone()),
            trace_id: Some(trace.0.clone()),
            ..alert
        })
    }

    fn outage_reason(outage: Outage) -> String {
        format!("{}: nothing is allowed until it is back", outage.message())
    }

    /// The HTTP answer: a decision body (200, 403, 429 or 503), or MeshGuard's error shape for
    /// a refused token.
    pub(super) fn into_response(self, asked: &Asked<'_>) -> Response {
        let Asked {
            input,
            trace,
            route,
            mode,
            ..
        } = *asked;
        let enforced = mode == Mode::Enforce;
        match self {
            CheckOutcome::Decided { decision, audit_id } => {
                let effect = decision.effect();
                let status = match (enforced, effect, decision.code, route) {
                    (false, ..) | (true, Effect::Allow, ..) => StatusCode::OK,
                    (true, _, Code::RateLimited, Route::Get | Route::Forward) => {
                        StatusCode::TOO_MANY_REQUESTS
                    }
                    (true, Effect::Deny | Effect::RequireApproval, ..) => StatusCode::FORBIDDEN,
                };
                let body = CheckAnswer {
                    allowed: !enforced || effect == Effect::Allow,
                    decision: effect,
                    code: decision.code.into(),
                    reason: &decision.reason,
                    message: &decision.reason,
                    action: &input.action,
                    resource: &input.resource,
                    policy: decision.policy.as_deref(),
                    rule: decision.rule.as_deref(),
                    requires_approval: effect == Effect::RequireApproval,
                    approval_id: decision.approval_id.as_deref(),
                    retry_after_seconds: decision.retry_after_secs,
                    enforced,
                    trace_id: &trace.0,
                    audit_id: Some(&audit_id),
                };
                let mut response = (status, Json(body)).into_response();
                if let (Some(secs), true) = (decision.retry_after_secs, status != StatusCode::OK) {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                response
            }
            CheckOutcome::Refused(refusal) => refusal.into_error().into_response(),
            CheckOutcome::Unavailable { outage, .. } => {
                let reason = Self::outage_reason(outage);
                let body = CheckAnswer {
                    allowed: false,
                    decision: Effect::Deny,
                    code: WireCode::Unavailable,
                    reason: &reason,
                    message: &reason,
                    action: &input.action,
                    resource: &input.resource,
                    policy: None,
                    rule: None,
                    requires_approval: false,
                    approval_id: None,
                    retry_after_seconds: None,
                    enforced: true,
                    trace_id: &trace.0,
                    audit_id: None,
                };
                (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
            }
        }
    }

    /// Logs, counts and alerts the outcome, then answers: every agent request the gateway
    /// answers itself ends here.
    pub(super) fn answer(self, state: &AppState, asked: &Asked<'_>) -> Response {
        self.observe(state, asked);
        self.into_response(asked)
    }

    /// Logs, counts and alerts the outcome: what every outcome leaves behind, whether the
    /// gateway answers it or forwards the request.
    pub(super) fn observe(&self, state: &AppState, asked: &Asked<'_>) {
        match self {
            CheckOutcome::Decided { .. } => {}
            CheckOutcome::Refused(AuthRefusal::Rejected(message)) => {
                tracing::info!(trace = %asked.trace.0, %message, "agent request refused");
            }
            CheckOutcome::Refused(AuthRefusal::NotHonoured { message, .. }) => {
                tracing::warn!(trace = %asked.trace.0, %message, "agent request refused");
            }
            CheckOutcome::Unavailable { outage, cause } => {
                tracing::error!(
                    %cause,
                    action = %asked.input.action,
                    trace = %asked.trace.0,
                    "{}: check denied",
                    outage.message()
                );
            }
        }
        if let Some((effect, code)) = self.labels() {
            state
                .metrics
                .decisions
                .with_label_values(&[effect.as_str(), code.as_str()])
                .inc();
            if let Some(call) = McpCall::of(&asked.input.context) {
                state.metrics.mcp_calls.observe(call, effect.as_str());
            }
        }
        if let Some(alert) = self.alert(&state.instance_id, asked) {
            state.alerts.emit(alert);
        }
        asked.trace.1.decided(|| self.span_attributes(asked));
    }
}

impl AuthRefusal {
    /// The refusal of a validly signed token that is no longer honoured, charged to the agent's
    /// refusal budget.
    pub(super) fn not_honoured(state: &AppState, agent_id: &str, message: String) -> AuthRefusal {
        AuthRefusal::NotHonoured {
            message,
            charged: state.refusal_budget.charge(agent_id),
            per_minute: state.refusal_budget.per_minute(),
        }
    }

    /// The error answer: 401, or 429 once whoever replays a dead token should back off.
    pub(super) fn into_error(self) -> ApiError {
        match self {
            AuthRefusal::Rejected(message)
            | AuthRefusal::NotHonoured {
                message,
                charged: Ok(()),
                ..
            } => ApiError::Unauthorized(message),
            AuthRefusal::NotHonoured {
                message,
                charged: Err(retry_after_secs),
                per_minute,
            } => ApiError::RateLimited {
                message: format!(
                    "{message}; this agent's refused requests are over {per_minute} per minute: retry in {retry_after_secs} s"
                ),
                retry_after_secs,
            },
        }
    }
}
