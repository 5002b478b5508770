//! `ANY /proxy/{path…}`: the reverse proxy, an enforcement point that sees the real call. A
//! proxied request is a check (charged, audited) whose action comes from the method and the
//! canonical path; the same canonical path picks the target and is what the upstream receives.
//! An `X-MeshGuard-Action` or `X-MeshGuard-Resource` the agent sends is a claim: it may only
//! narrow the decision, never widen it. An allowed request is forwarded with an allow-list of the
//! agent's headers and the target's credentials, which never come back to the agent.

use std::time::Instant;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use meshguard_policy::{ApprovalNeed, CheckRequest, Code, Decision, Effect};
use serde_json::{Map, Value};

use super::check::{CheckInput, Route, authenticated, evaluate, header_value};
use super::outcome::CheckAnswer;
use super::outcome::{Asked, CheckOutcome, Outage};
use crate::auth::AuthenticatedAgent;
use crate::config::Mode;
use crate::error::{ApiError, ErrorBody};
use crate::openapi::DecisionOrRefusal;
use crate::proxy::{PathRefusal, ProxyPath, Routed};
use crate::rate_limit::Charging;
use crate::state::AppState;
use crate::trace::TraceId;

/// The verb of the action a method performs: `GET`/`HEAD` read, `DELETE` delete, anything else
/// writes.
pub(super) fn verb(method: &Method) -> &'static str {
    match *method {
        Method::GET | Method::HEAD => "read",
        Method::DELETE => "delete",
        _ => "write",
    }
}

/// Answer headers that belong to the hop between the upstream and the gateway.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "te" | "trailer" | "transfer-encoding" | "upgrade"
    )
}

/// Answer headers the agent never receives from an upstream: hop-by-hop headers, cookies (a
/// session the upstream opened with the target's credentials would let the agent call it
/// without the gateway), and MeshGuard's own headers, which only the gateway sets.
fn kept_from_agent(name: &HeaderName) -> bool {
    hop_by_hop(name)
        || matches!(name.as_str(), "set-cookie" | "set-cookie2")
        || name.as_str().starts_with("x-meshguard-")
}

/// What the proxy saw of a request: recorded in the context of its audit event, and a bound on
/// the engine's decision about it.
#[derive(Debug)]
pub(super) struct Proxied {
    /// The method as received.
    method: Method,
    /// The path as received, still percent-encoded.
    path: String,
    /// `X-MeshGuard-Action`, when the agent sent one.
    claimed_action: Option<String>,
    /// `X-MeshGuard-Resource`, when the agent sent one.
    claimed_resource: Option<String>,
    bound: Bound,
}

/// What bounds the decision about the real request.
#[derive(Debug)]
enum Bound {
    /// Nothing but the real request's own decision.
    Free,
    /// The path was refused before routing: this denial is the decision, in every mode.
    Refused(Decision),
    /// The dry-run decision about what the agent claimed (`X-MeshGuard-Action`,
    /// `X-MeshGuard-Resource`): both it and the real decision must allow.
    Claimed(Decision),
}

impl Proxied {
    /// A request another gateway asks about (forward auth): what it saw, with no claim, and a
    /// path refused before deciding when it is `refused`.
    pub(super) fn seen(method: Method, path: String, refused: Option<Decision>) -> Proxied {
        Proxied {
            method,
            path,
            claimed_action: None,
            claimed_resource: None,
            bound: refused.map_or(Bound::Free, Bound::Refused),
        }
    }

    /// The decision about the real request (`action`, resource `*`), bounded by what the proxy
    /// saw. A refused path is denied whatever the engine said (the engine was still asked, so
    /// the request is charged like any denied check). A claim narrows: an explicit deny of
    /// either wins, then a human decides about the real action if either needs one; only when
    /// both allow is the request allowed.
    pub(super) fn narrow(&self, real: Decision, action: &str) -> Decision {
        let claimed = match &self.bound {
            Bound::Free => return real,
            Bound::Refused(refusal) => return refusal.clone(),
            Bound::Claimed(claimed) => claimed,
        };
        let note = format!(" (claimed by the agent; the request itself is '{action}')");
        match (real.effect(), claimed.effect()) {
            (Effect::Deny, _) => real,
            (Effect::Allow | Effect::RequireApproval, Effect::Deny) => Decision {
                reason: format!("{}{note}", claimed.reason),
                approval: None,
                approval_id: None,
                ..claimed.clone()
            },
            // The human is asked about the call that will be made, not about the claim.
            (Effect::Allow, Effect::RequireApproval) => Decision {
                reason: format!("{}{note}", claimed.reason),
                approval: claimed.approval.as_ref().map(|need| ApprovalNeed {
                    action: action.to_owned(),
                    resource: "*".to_owned(),
                    ..need.clone()
                }),
                approval_id: None,
                ..claimed.clone()
            },
            (Effect::RequireApproval, Effect::Allow | Effect::RequireApproval)
            | (Effect::Allow, Effect::Allow) => real,
        }
    }

    /// The audit event's context: the real method and path, and what the agent claimed.
    pub(super) fn context(&self) -> Map<String, Value> {
        let mut context = Map::new();
        context.insert("method".into(), Value::String(self.method.to_string()));
        context.insert("path".into(), Value::String(self.path.clone()));
        if let Some(action) = &self.claimed_action {
            context.insert("claimedAction".into(), Value::String(action.clone()));
        }
        if let Some(resource) = &self.claimed_resource {
            context.insert("claimedResource".into(), Value::String(resource.clone()));
        }
        context
    }
}

/// The decision the claimed action and resource would get, charging nothing and creating no
/// approval: a claim is checked, the real request is what is charged.
async fn dry_run(
    state: &AppState,
    agent: &AuthenticatedAgent,
    (action, resource): (&str, &str),
) -> Result<Decision, crate::rate_limit_redis::RedisLimitError> {
    let context = Map::new();
    let request = CheckRequest {
        action,
        resource,
        context: &context,
        now: (state.wall_clock)(),
    };
    let policies = state.policies.current();
    state
        .limiter
        .decide_with_limits(&agent.record.id, Charging::Peek, |oracle| {
            policies.decide(&agent.profile, &request, oracle)
        })
        .await
}

/// The routes that take any method and any path below them, described once each (the router
/// registers them with a wildcard `routes!` cannot express).
#[derive(utoipa::OpenApi)]
#[openapi(paths(forward, super::forward_auth::forward_auth))]
pub(super) struct Passthrough;

/// `ANY /proxy/{path…}`: one screen of steps, each before the next on purpose.
#[utoipa::path(
    method(get, put, post, delete, patch, head, options),
    path = "/proxy/{path}",
    summary = "Reverse proxy, governed",
    description = "Any method on any path below `/proxy/` other than MeshGuard's own: the call \
        is decided as action `<verb>:<canonical path>` (`GET`/`HEAD` read, `DELETE` delete, \
        other methods write; resource `*`), charged and audited, and only when allowed forwarded \
        to the upstream (`PROXY_TARGET`, or `/proxy/{target}/…` with named targets). \
        `X-MeshGuard-Action` / `X-MeshGuard-Resource` may only narrow the decision. `TRACE` and \
        `CONNECT` answer 405.",
    params(
        ("path" = String, Path, description = "The upstream path; may hold `/`."),
        ("X-MeshGuard-Action" = Option<String>, Header, description = "A claimed action, decided too as a dry run."),
        ("X-MeshGuard-Resource" = Option<String>, Header, description = "A claimed resource, decided too as a dry run."),
    ),
    responses(
        (status = "default", description = "Allowed: the upstream's answer, streamed back with \
            `X-MeshGuard-Decision`, `X-MeshGuard-Policy`, `X-MeshGuard-Trace-Id` and \
            `X-MeshGuard-Agent-Id`."),
        (status = 403, body = CheckAnswer,
         headers(("Retry-After" = u64, description = "With `budget_exceeded`, whole seconds until the request would fit.")),
         description = "`deny` or `require_approval` (also a path refused as `invalid_resource`, in every mode)."),
        (status = 429, body = DecisionOrRefusal,
         headers(("Retry-After" = u64, description = "Whole seconds until one more request fits.")),
         description = "`rate_limited`: a limit is exhausted, or a dead token was replayed past the agent's refusal budget."),
        (status = 503, body = CheckAnswer, description = "`unavailable`: nothing is allowed."),
        (status = 404, body = ErrorBody, description = "`not_found`: no upstream is configured, or no target of that name."),
        (status = 405, body = ErrorBody, description = "`method_not_allowed`: `TRACE` or `CONNECT`."),
        (status = 502, body = ErrorBody, description = "`bad_gateway`: the upstream did not answer."),
    )
)]
pub async fn forward(
    State(state): State<AppState>,
    Extension(trace): Extension<TraceId>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    // 1. TRACE would echo the gateway's view of the request (credentials included) and CONNECT
    //    would open a tunnel no decision covers: neither is ever forwarded.
    if parts.method == Method::TRACE || parts.method == Method::CONNECT {
        let mut refused = ApiError::MethodNotAllowed(format!(
            "`{}` is never forwarded by the proxy",
            parts.method
        ))
        .into_response();
        refused.headers_mut().insert(
            axum::http::header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        return refused;
    }
    let raw = parts
        .uri
        .path()
        .strip_prefix("/proxy/")
        .unwrap_or_default()
        .to_owned();
    let verb = verb(&parts.method);
    // 2. Authenticate; a refused token is audited with the real method and path.
    let named = || (Some(format!("{verb}:{raw}")), None);
    let agent = match authenticated(&state, &parts.headers, &trace, Route::Forward, named).await {
        Ok(agent) => agent,
        Err(refused) => return refused,
    };
    let (claimed_action, claimed_resource, approval_id) = match (
        header_value(&parts.headers, "x-meshguard-action"),
        header_value(&parts.headers, "x-meshguard-resource"),
        header_value(&parts.headers, "x-approval-id"),
    ) {
        (Ok(action), Ok(resource), Ok(approval)) => (
            action.filter(|a| !a.trim().is_empty()),
            resource.filter(|r| !r.trim().is_empty()),
            approval,
        ),
        (Err(err), ..) | (_, Err(err), _) | (.., Err(err)) => return err.into_response(),
    };
    // 3. One canonical path, read before any target is chosen: it names the action, picks the
    //    target and is forwarded. A path that could be read two ways is refused, not routed.
    let (routed, action, bound) = match ProxyPath::parse(&raw) {
        Err(refusal) => {
            let action = format!("{verb}:{raw}");
            let decision = refused_path(&action, &raw, &refusal);
            (None, action, Bound::Refused(decision))
        }
        Ok(path) => {
            let Some(routed) = state.upstreams.resolve(&path) else {
                return ApiError::NotFound(format!(
                    "no upstream for `/proxy/{raw}`: configure `proxy.target` or a `[targets.NAME]`"
                ))
                .into_response();
            };
            let action = format!("{verb}:{}", routed.object);
            // 4. A claim is decided too (dry run) when it says anything else than the request.
            let claim = (
                claimed_action.as_deref().unwrap_or(&action),
                claimed_resource.as_deref().unwrap_or("*"),
            );
            let bound = if state.mode == Mode::Bypass || claim == (action.as_str(), "*") {
                Bound::Free
            } else {
                match dry_run(&state, &agent, claim).await {
                    Ok(decision) => Bound::Claimed(decision),
                    Err(err) => {
                        let input = CheckInput {
                            action,
                            resource: "*".into(),
                            context: Map::new(),
                            approval_id,
                        };
                        let asked = Asked {
                            agent: Some(&agent),
                            input: &input,
                            trace: &trace,
                            route: Route::Forward,
                            mode: state.mode,
                        };
                        return CheckOutcome::unavailable(Outage::RateLimits, err)
                            .answer(&state, &asked);
                    }
                }
            };
            (Some(routed), action, bound)
        }
    };
    let proxied = Proxied {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        claimed_action,
        claimed_resource,
        bound,
    };
    let input = CheckInput {
        action,
        resource: "*".to_owned(),
        context: Map::new(),
        approval_id,
    };
    // 5. Decide, charge, settle approvals and audit, as a check does.
    let outcome = evaluate(
        &state,
        &agent,
        &input,
        Some(&proxied),
        &trace,
        Route::Forward,
        started,
    )
    .await;
    // 6. Denials are answered here, never forwarded; audit and bypass modes forward everything
    //    they decided on, but a refused path has nothing that could be forwarded.
    let asked = Asked {
        agent: Some(&agent),
        input: &input,
        trace: &trace,
        route: Route::Forward,
        mode: if routed.is_some() {
            state.mode
        } else {
            Mode::Enforce
        },
    };
    outcome.observe(&state, &asked);
    match (&outcome, routed) {
        (CheckOutcome::Decided { decision, .. }, Some(routed))
            if state.mode != Mode::Enforce || decision.is_allowed() =>
        {
            // 7. Forward exactly what was decided, and answer without what the agent must not
            //    get.
            relay(&routed, parts, body, decision, &agent).await
        }
        _ => outcome.into_response(&asked),
    }
}

/// The path refusal as a decision: deny, `invalid_resource`, saying what was wrong.
pub(super) fn refused_path(action: &str, raw: &str, refusal: &PathRefusal) -> Decision {
    Decision {
        code: Code::InvalidResource,
        reason: format!(
            "Action '{action}' denied: the path `/proxy/{raw}` is refused because {refusal}"
        ),
        policy: None,
        rule: None,
        retry_after_secs: None,
        approval: None,
        approval_id: None,
    }
}

/// Sends an allowed request upstream (the canonical path, the query, the allow-listed headers,
/// the target's credentials, the body) and streams the answer back without hop-by-hop headers,
/// cookies, the upstream's `X-MeshGuard-*` or any header holding an injected credential.
async fn relay(
    routed: &Routed<'_>,
    parts: Parts,
    body: Body,
    decision: &Decision,
    agent: &AuthenticatedAgent,
) -> Response {
    let upstream = routed.upstream;
    let version = parts.version;
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let uri = format!("{}{}{query}", upstream.base, routed.forward);
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if upstream.forwards(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    for (name, value) in &upstream.headers {
        headers.insert(name.clone(), value.clone());
    }
    let mut outgoing = match axum::http::Request::builder()
        .method(parts.method.clone())
        .uri(&uri)
        .body(body)
    {
        Ok(request) => request,
        Err(err) => return ApiError::BadRequest(format!("path: {err}")).into_response(),
    };
    *outgoing.headers_mut() = headers;

    let answer = match upstream.client.request(outgoing).await {
        Ok(answer) => answer,
        Err(err) => {
            return ApiError::BadGateway {
                upstream: upstream.base.clone(),
                cause: err.to_string(),
            }
            .into_response();
        }
    };
    let (mut answer_parts, answer_body) = answer.into_parts();
    // The client talks to the gateway, not to the upstream: answer in the client's HTTP version.
    answer_parts.version = version;
    let withheld: Vec<HeaderName> = answer_parts
        .headers
        .iter()
        .filter(|(name, value)| kept_from_agent(name) || upstream.leaks(value))
        .map(|(name, _)| name.clone())
        .collect();
    for name in withheld {
        answer_parts.headers.remove(name);
    }
    let extra = [
        (
            "x-meshguard-decision",
            Some(decision.effect().as_str().to_owned()),
        ),
        ("x-meshguard-policy", decision.policy.clone()),
        ("x-meshguard-agent-id", Some(agent.record.id.clone())),
    ];
    for (name, value) in extra {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            answer_parts
                .headers
                .insert(HeaderName::from_static(name), value);
        }
    }
    Response::from_parts(answer_parts, Body::new(answer_body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(code: Code, policy: &str) -> Decision {
        Decision {
            code,
            reason: format!("{} by {policy}", code.as_str()),
            policy: Some(policy.to_owned()),
            rule: None,
            retry_after_secs: None,
            approval: (code == Code::ApprovalRequired).then(|| ApprovalNeed {
                action: "create:issue".into(),
                resource: "*".into(),
                timeout_secs: Some(60),
                default_timeout_applies: false,
            }),
            approval_id: None,
        }
    }

    fn claimed(claim: Decision) -> Proxied {
        Proxied {
            method: Method::POST,
            path: "/proxy/github/issues".into(),
            claimed_action: Some("create:issue".into()),
            claimed_resource: None,
            bound: Bound::Claimed(claim),
        }
    }

    #[test]
    fn a_claim_only_narrows_and_a_human_is_asked_about_the_real_call() {
        use Code::{Allowed, ApprovalRequired, DefaultDeny, DeniedByRule};
        let real_action = "write:github/issues";
        // (real, claim) → (code, policy that decided)
        let table = [
            (Allowed, Allowed, Allowed, "real"),
            (Allowed, DeniedByRule, DeniedByRule, "claim"),
            (DefaultDeny, Allowed, DefaultDeny, "real"),
            (DeniedByRule, ApprovalRequired, DeniedByRule, "real"),
            (ApprovalRequired, DeniedByRule, DeniedByRule, "claim"),
            (ApprovalRequired, Allowed, ApprovalRequired, "real"),
            (Allowed, ApprovalRequired, ApprovalRequired, "claim"),
        ];
        for (real, claim, code, by) in table {
            let narrowed =
                claimed(decision(claim, "claim")).narrow(decision(real, "real"), real_action);
            assert_eq!(
                (narrowed.code, narrowed.policy.as_deref()),
                (code, Some(by))
            );
            if by == "claim" {
                assert!(narrowed.reason.contains("claimed by the agent"));
            }
        }
        let asked = claimed(decision(ApprovalRequired, "claim"))
            .narrow(decision(Allowed, "real"), real_action);
        let need = asked.approval.unwrap();
        assert_eq!(
            (need.action.as_str(), need.timeout_secs),
            (real_action, Some(60))
        );
    }

    #[test]
    fn a_refused_path_is_denied_whatever_the_engine_said() {
        let refusal = decision(Code::InvalidResource, "none");
        let proxied = Proxied {
            bound: Bound::Refused(refusal),
            ..claimed(decision(Code::Allowed, "claim"))
        };
        let narrowed = proxied.narrow(decision(Code::Allowed, "real"), "read:x");
        assert_eq!(narrowed.code, Code::InvalidResource);
        let context = proxied.context();
        assert_eq!(context["method"], "POST");
        assert_eq!(context["claimedAction"], "create:issue");
        assert!(context.get("claimedResource").is_none());
    }
}
