//! `POST /admin/replay`: what a policy change would have changed. Every audited check of a
//! period is decided again with the candidate policies (in place of the live policies of the same
//! names, plus the new ones), for the agents as they are now and at the time each check was asked,
//! and the answer counts what moved. The trail is read page by page, oldest first, so memory stays
//! flat however many events the period holds; limits are not replayed (nothing is charged) and
//! approvals are not looked up, so a check is compared by its engine verdict.

use std::collections::HashMap;

use axum::extract::State;
use meshguard_policy::{
    AgentProfile, CheckRequest, Code, Decision, Effect, Policy, PolicySet, Unlimited, parse_policy,
};
use meshguard_store::{
    AuditEvent, AuditFilter, AuditKind, AuditOrder, EventCode, MAX_PAGE_SIZE, StoreError,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::sorted::SortedJson;
use crate::auth::profile_of;
use crate::error::{ApiError, ErrorBody, InvalidPolicyBody};
use crate::extract::ApiJson;
use crate::openapi::BodyRefusals;
use crate::state::AppState;

/// Examples of changed checks kept in the answer.
const MAX_EXAMPLES: usize = 20;
/// Changed actions listed in the answer.
const TOP_ACTIONS: usize = 10;

/// The body of `POST /admin/replay`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplayBody {
    /// The candidate policies, as YAML texts.
    policies: Vec<CandidatePolicy>,
    /// Start of the period (inclusive).
    #[serde(with = "time::serde::rfc3339")]
    since: OffsetDateTime,
    /// End of the period (exclusive); now when absent.
    #[serde(default, with = "time::serde::rfc3339::option")]
    until: Option<OffsetDateTime>,
    /// Only this agent's checks (id or name).
    #[serde(default)]
    agent: Option<String>,
}

/// One candidate policy and where it comes from, for error positions.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CandidatePolicy {
    /// A file name, or any label.
    origin: String,
    /// The YAML text.
    text: String,
}

/// One check's verdict, before or after.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = ReplayVerdict)]
struct Verdict {
    decision: Effect,
    code: String,
    policy: Option<String>,
    rule: Option<String>,
}

/// A check whose verdict would change.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ReplayExample)]
struct Example {
    audit_id: String,
    trace_id: Option<String>,
    agent: Option<String>,
    action: String,
    resource: Option<String>,
    from: Verdict,
    to: Verdict,
}

/// How many checks moved from one decision to another.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ReplayTransition)]
struct Transition {
    from: Effect,
    to: Effect,
    count: u64,
}

/// An action and how many of its checks would change.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ReplayActionCount)]
struct ActionCount {
    action: String,
    count: u64,
}

/// The answer of `POST /admin/replay`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ReplayReport {
    #[serde(with = "time::serde::rfc3339")]
    since: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    until: OffsetDateTime,
    /// The live policies the candidates replace.
    replaced: Vec<String>,
    /// The candidates no live policy is named like.
    added: Vec<String>,
    /// Checks decided again.
    checked: u64,
    /// Checks whose code would change.
    changed: u64,
    /// Checks not decided again: refusals of dead tokens, and checks of agents purged since.
    skipped: u64,
    /// Changes by transition of the decision (a change of code alone counts under its decision).
    transitions: Vec<Transition>,
    /// The actions with the most changed checks.
    top_changed_actions: Vec<ActionCount>,
    /// The first changed checks, oldest first.
    examples: Vec<Example>,
}

/// `POST /admin/replay`.
#[utoipa::path(
    post,
    path = "/replay",
    operation_id = "replay_policies",
    summary = "What a policy change would have changed",
    description = "Every audited check of the period decided again with the candidate policies \
        in place of the live ones of the same names; nothing charged, no approval looked up.",
    request_body = ReplayBody,
    responses(
        (status = 200, body = ReplayReport, description = "What would have changed."),
        (status = 400, body = ErrorBody, description = "`bad_request`: no candidate, or `until` not after `since`."),
        (status = 422, body = InvalidPolicyBody, description = "`invalid_policy`: a candidate does not validate; every position."),
        BodyRefusals,
    )
)]
pub async fn replay(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ReplayBody>,
) -> Result<SortedJson<ReplayReport>, ApiError> {
    if body.policies.is_empty() {
        return Err(ApiError::BadRequest(
            "policies: give at least one candidate policy".into(),
        ));
    }
    let until = body.until.unwrap_or_else(OffsetDateTime::now_utc);
    if until <= body.since {
        return Err(ApiError::BadRequest("until: must be after `since`".into()));
    }
    let candidates = parse_candidates(&body.policies)?;
    let live = state.policies.current();
    let (set, replaced, added) = candidate_set(&live, candidates)?;

    let mut report = ReplayReport {
        since: body.since,
        until,
        replaced,
        added,
        checked: 0,
        changed: 0,
        skipped: 0,
        transitions: Vec::new(),
        top_changed_actions: Vec::new(),
        examples: Vec::new(),
    };
    let mut transitions: HashMap<(Effect, Effect), u64> = HashMap::new();
    let mut actions: HashMap<String, u64> = HashMap::new();
    let mut agents: HashMap<String, Option<AgentProfile>> = HashMap::new();
    let mut filter = AuditFilter {
        limit: MAX_PAGE_SIZE,
        agent: body.agent,
        kind: Some(AuditKind::Check),
        from: Some(body.since),
        to: Some(until),
        order: AuditOrder::OldestFirst,
        ..AuditFilter::default()
    };
    state.audit.settled().await;
    loop {
        let page = state.store.query_audit(&filter).await?;
        for event in &page.entries {
            let Some((before, profile)) = replayable(&state, &mut agents, event).await? else {
                report.skipped += 1;
                continue;
            };
            report.checked += 1;
            let request = CheckRequest {
                action: &event.event.action,
                resource: event.event.resource.as_deref().unwrap_or("*"),
                context: &event.event.context,
                now: event.event.ts,
            };
            let after = set.decide(&profile, &request, &mut Unlimited);
            if after.code == before.code_value {
                continue;
            }
            report.changed += 1;
            *transitions
                .entry((before.verdict.decision, after.effect()))
                .or_default() += 1;
            *actions.entry(event.event.action.clone()).or_default() += 1;
            if report.examples.len() < MAX_EXAMPLES {
                report.examples.push(Example {
                    audit_id: event.event.id.clone(),
                    trace_id: event.event.trace_id.clone(),
                    agent: event.event.agent.as_ref().map(|a| a.name.clone()),
                    action: event.event.action.clone(),
                    resource: event.event.resource.clone(),
                    from: before.verdict,
                    to: verdict_of(&after),
                });
            }
        }
        match page.next_cursor {
            Some(cursor) => filter.cursor = Some(cursor),
            None => break,
        }
    }
    let mut transitions: Vec<Transition> = transitions
        .into_iter()
        .map(|((from, to), count)| Transition { from, to, count })
        .collect();
    transitions.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| (a.from.as_str(), a.to.as_str()).cmp(&(b.from.as_str(), b.to.as_str())))
    });
    report.transitions = transitions;
    let mut actions: Vec<ActionCount> = actions
        .into_iter()
        .map(|(action, count)| ActionCount { action, count })
        .collect();
    actions.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.action.cmp(&b.action)));
    actions.truncate(TOP_ACTIONS);
    report.top_changed_actions = actions;
    Ok(SortedJson(report))
}

/// Parses every candidate; any error refuses the replay with every position.
fn parse_candidates(candidates: &[CandidatePolicy]) -> Result<Vec<Policy>, ApiError> {
    let mut policies = Vec::with_capacity(candidates.len());
    let mut errors = Vec::new();
    for candidate in candidates {
        match parse_policy(&candidate.origin, &candidate.text) {
            Ok(policy) => policies.push(policy),
            Err(err) => errors.push(err.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(policies)
    } else {
        Err(ApiError::InvalidPolicy {
            message: format!("{} candidate policies do not validate", errors.len()),
            errors,
        })
    }
}

/// The live set with the candidates in place of the policies of the same names.
fn candidate_set(
    live: &PolicySet,
    candidates: Vec<Policy>,
) -> Result<(PolicySet, Vec<String>, Vec<String>), ApiError> {
    let names: Vec<String> = candidates.iter().map(|p| p.name().to_owned()).collect();
    let (replaced, added) = names
        .iter()
        .cloned()
        .partition(|name| live.get(name).is_some());
    let mut policies: Vec<Policy> = live
        .policies()
        .filter(|p| !names.iter().any(|n| n == p.name()))
        .cloned()
        .collect();
    policies.extend(candidates);
    let set = PolicySet::new(policies).map_err(|err| ApiError::InvalidPolicy {
        message: err.to_string(),
        errors: vec![err.to_string()],
    })?;
    Ok((set, replaced, added))
}

/// What an audited check was decided, as the replay compares it.
struct Before {
    verdict: Verdict,
    code_value: Code,
}

/// The audited verdict and the agent as it is now, or `None` for an event that is not a
/// decision of the engine (a dead token's refusal count) or whose agent has been purged.
async fn replayable(
    state: &AppState,
    agents: &mut HashMap<String, Option<AgentProfile>>,
    event: &AuditEvent,
) -> Result<Option<(Before, AgentProfile)>, ApiError> {
    let e = &event.event;
    let (Some(decision), Some(EventCode::Decided(code)), Some(agent)) =
        (e.decision, e.code, &e.agent)
    else {
        return Ok(None);
    };
    let profile = match agents.get(&agent.id) {
        Some(profile) => profile.clone(),
        None => {
            let profile = match state.store.get_agent(&agent.id).await {
                Ok(record) => Some(profile_of(&record).map_err(ApiError::Internal)?),
                Err(StoreError::NotFound { .. }) => None,
                Err(other) => return Err(other.into()),
            };
            agents.insert(agent.id.clone(), profile.clone());
            profile
        }
    };
    Ok(profile.map(|profile| {
        // An approval's outcome is the engine's `approval_required` before a human settled it.
        let engine_code = match code {
            Code::ApprovalPending
            | Code::AllowedWithApproval
            | Code::ApprovalDenied
            | Code::TooManyPendingApprovals => Code::ApprovalRequired,
            other => other,
        };
        let verdict = Verdict {
            decision: if engine_code == Code::ApprovalRequired {
                Effect::RequireApproval
            } else {
                decision
            },
            code: code.as_str().to_owned(),
            policy: e.policy.clone(),
            rule: e.rule.clone(),
        };
        (
            Before {
                verdict,
                code_value: engine_code,
            },
            profile,
        )
    }))
}

fn verdict_of(decision: &Decision) -> Verdict {
    Verdict {
        decision: decision.effect(),
        code: decision.code.as_str().to_owned(),
        policy: decision.policy.clone(),
        rule: decision.rule.clone(),
    }
}
