//! `/admin/policies`: apply (YAML or JSON body, upsert by name), list, show, delete, revisions,
//! and validate without applying. Every change goes through [`apply`]: committed with its
//! audit event (kind `admin`), then the auth cache is cleared.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use meshguard_policy::{AgentProfile, LintWarning, Policy, PolicyMode, lint, parse_policy};
use meshguard_store::{
    AdminMutation, AdminOutcome, PolicyOrigin, PolicyRevision, PolicyUpsert, StoredPolicy,
};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::admin_event::{AdminChange, ChangedBy, apply, unexpected};
use super::page::PageParams;
use super::sorted::SortedJson;
use crate::auth::profile_of;
use crate::error::{ApiError, ErrorBody, InvalidPolicyBody};
use crate::extract::{ApiQuery, LimitedBody};
use crate::state::AppState;

fn text_of(body: &[u8]) -> Result<&str, ApiError> {
    std::str::from_utf8(body).map_err(|_| ApiError::BadRequest("body: not UTF-8 text".into()))
}

/// A stored policy as the API shows it: the stored fields, the source text, and the parsed
/// policy in camelCase JSON.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct PolicyView {
    /// The policy's name.
    name: String,
    /// The author's label (`version` in the YAML).
    version: String,
    /// The policy's description.
    description: Option<String>,
    /// `api`, or the file it was loaded from (`serve --policies DIR`).
    origin: PolicyOrigin,
    /// The stored revision, from 1; every apply that changes the body adds one.
    revision: u64,
    /// `enforce` or `shadow`.
    mode: Option<PolicyMode>,
    /// When the policy was first applied.
    #[schema(format = DateTime)]
    created_at: Option<String>,
    /// When its body last changed.
    #[schema(format = DateTime)]
    updated_at: Option<String>,
    /// The parsed policy, with the YAML's keys.
    policy: Option<Policy>,
    /// The source text (one policy, and an apply's answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    /// Whether the apply changed the body (an apply's answer only).
    #[serde(skip_serializing_if = "Option::is_none")]
    changed: Option<bool>,
}

impl PolicyView {
    fn of(stored: &StoredPolicy, with_source: bool) -> PolicyView {
        let parsed = parse_policy(stored.origin.as_str(), &stored.source).ok();
        let rfc3339 = |at: time::OffsetDateTime| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        };
        PolicyView {
            name: stored.name.clone(),
            version: stored.version.clone(),
            description: parsed
                .as_ref()
                .and_then(|p| p.description().map(str::to_owned)),
            origin: stored.origin.clone(),
            revision: stored.revision,
            mode: parsed.as_ref().map(Policy::mode),
            created_at: rfc3339(stored.created_at),
            updated_at: rfc3339(stored.updated_at),
            policy: parsed,
            source: with_source.then(|| stored.source.clone()),
            changed: None,
        }
    }
}

/// One page of the policies in force.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyList {
    /// The policies, by name (without their source).
    policies: Vec<PolicyView>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// One page of a policy's stored revisions.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionList {
    /// The revisions, oldest first.
    revisions: Vec<PolicyRevision>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
    /// The policy's name.
    name: String,
}

/// What `DELETE /admin/policies/{name}` did.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyDeleted {
    /// Always true.
    deleted: bool,
    /// The policy's name.
    name: String,
    /// Its last revision (the revisions stay).
    revision: u64,
}

/// What `POST /admin/policies/validate` found.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Validation {
    /// Whether the policy parses and validates (warnings aside).
    pub(super) valid: bool,
    /// The policy's name, when it parses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) name: Option<String>,
    /// The error that stops it, with its position (at most one).
    pub(super) errors: Vec<ValidationError>,
    /// Lint warnings about it, together with the policies in force and the stored agents.
    pub(super) warnings: Vec<ValidationWarning>,
}

/// Why a policy does not validate, and where.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ValidationError {
    /// `file:line:col: path: message`.
    pub(super) message: String,
    /// 1-based line.
    line: u32,
    /// 1-based column.
    column: u32,
    /// The field path (`rules[2].effect`).
    path: String,
}

/// A lint warning, with its one-line text.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ValidationWarning {
    /// The warning.
    #[serde(flatten)]
    warning: LintWarning,
    /// `file:line:col: warning: message`.
    pub(super) text: String,
}

/// `GET /admin/policies?limit=&cursor=`: one page of the policies in force, by name.
#[utoipa::path(
    get,
    path = "/policies",
    operation_id = "list_policies",
    summary = "List policies",
    params(PageParams),
    responses(
        (status = 200, body = PolicyList, description = "One page of policies."),
        (status = 400, body = ErrorBody, description = "`bad_request`: a bad `limit` or cursor."),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<SortedJson<PolicyList>, ApiError> {
    let page = state.store.list_policies(&page.request()).await?;
    Ok(SortedJson(PolicyList {
        policies: page
            .items
            .iter()
            .map(|p| PolicyView::of(p, false))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// `GET /admin/policies/{name}`.
#[utoipa::path(
    get,
    path = "/policies/{name}",
    operation_id = "show_policy",
    summary = "Show a policy",
    params(("name" = String, Path, description = "The policy's name.")),
    responses(
        (status = 200, body = PolicyView, description = "The policy, with its source."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such policy."),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<SortedJson<PolicyView>, ApiError> {
    let stored = state.store.get_policy(&name).await?;
    Ok(SortedJson(PolicyView::of(&stored, true)))
}

/// `GET /admin/policies/{name}/revisions?limit=&cursor=`: one page of the stored bodies,
/// oldest first.
#[utoipa::path(
    get,
    path = "/policies/{name}/revisions",
    operation_id = "policy_revisions",
    summary = "A policy's revisions",
    params(("name" = String, Path, description = "The policy's name."), PageParams),
    responses(
        (status = 200, body = RevisionList, description = "One page of revisions."),
        (status = 400, body = ErrorBody, description = "`bad_request`: a bad `limit` or cursor."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such policy."),
    )
)]
pub async fn revisions(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<SortedJson<RevisionList>, ApiError> {
    let page = state.store.policy_revisions(&name, &page.request()).await?;
    Ok(SortedJson(RevisionList {
        revisions: page.items,
        next_cursor: page.next_cursor,
        name,
    }))
}

/// The change to one policy, as the trail tells it.
fn policy_change(
    action: &str,
    policy: &StoredPolicy,
    reason: String,
    context: Map<String, Value>,
) -> AdminChange {
    AdminChange {
        action: action.to_owned(),
        agent: None,
        resource: policy.name.clone(),
        reason,
        context,
        by: ChangedBy::Operator,
    }
}

pub(super) async fn apply_text(
    state: &AppState,
    headers: &HeaderMap,
    text: &str,
    expected_name: Option<&str>,
) -> Result<Response, ApiError> {
    // Check the path's name before anything is stored, so a mismatch changes nothing.
    if let Some(expected) = expected_name {
        let parsed = parse_policy("request body", text).map_err(|err| ApiError::InvalidPolicy {
            message: err.to_string(),
            errors: vec![err.to_string()],
        })?;
        if parsed.name() != expected {
            return Err(ApiError::BadRequest(format!(
                "name: the body names policy `{}` but the path names `{expected}`",
                parsed.name()
            )));
        }
    }
    let (_, upsert): (Policy, PolicyUpsert) = state
        .policies
        .apply_by_admin(text, |policy| async {
            let outcome = apply(
                state,
                headers,
                AdminMutation::UpsertPolicy(policy),
                |outcome| {
                    let AdminOutcome::Policy(upsert) = outcome else {
                        return None;
                    };
                    let stored = &upsert.policy;
                    let mut context = Map::new();
                    context.insert("revision".into(), json!(upsert.revision));
                    context.insert("version".into(), Value::String(stored.version.clone()));
                    Some(policy_change(
                        "policy.apply",
                        stored,
                        format!(
                            "policy `{}` applied (revision {})",
                            stored.name, upsert.revision
                        ),
                        context,
                    ))
                },
            )
            .await?;
            match outcome {
                AdminOutcome::Policy(upsert) => Ok(upsert),
                other => Err(unexpected(&other)),
            }
        })
        .await?;
    let status = if upsert.revision == 1 && upsert.changed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = PolicyView {
        changed: Some(upsert.changed),
        ..PolicyView::of(&upsert.policy, true)
    };
    Ok((status, SortedJson(body)).into_response())
}

/// `POST /admin/policies`: upsert by the body's `name`.
#[utoipa::path(
    post,
    path = "/policies",
    operation_id = "apply_policy",
    summary = "Apply a policy",
    description = "Upserts by the body's `name`. Every apply that changes the body is a new revision.",
    request_body(content = String, content_type = "application/yaml",
        description = "One policy: YAML (or JSON, which is YAML too)."),
    responses(
        (status = 200, body = PolicyView, description = "Applied over an existing policy (`changed` says whether its body changed)."),
        (status = 201, body = PolicyView, description = "Applied: a new policy."),
        (status = 400, body = ErrorBody, description = "`bad_request`: the body is not UTF-8 text, or names another policy than the path."),
        (status = 409, body = ErrorBody, description = "`conflict`: the policy belongs to a file of `serve --policies DIR`, or the set would not load."),
        (status = 413, body = ErrorBody, description = "`payload_too_large`: the body is over the limit."),
        (status = 422, body = InvalidPolicyBody, description = "`invalid_policy`: it does not validate; every problem with its position."),
    )
)]
pub async fn apply_any(
    State(state): State<AppState>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    apply_text(&state, &headers, text_of(&body)?, None).await
}

/// `PUT /admin/policies/{name}`: upsert; the body's `name` must be `{name}`.
#[utoipa::path(
    put,
    path = "/policies/{name}",
    operation_id = "apply_named_policy",
    summary = "Apply a policy by name",
    params(("name" = String, Path, description = "The policy's name.")),
    request_body(content = String, content_type = "application/yaml",
        description = "One policy: YAML (or JSON, which is YAML too)."),
    responses(
        (status = 200, body = PolicyView, description = "Applied over an existing policy (`changed` says whether its body changed)."),
        (status = 201, body = PolicyView, description = "Applied: a new policy."),
        (status = 400, body = ErrorBody, description = "`bad_request`: the body is not UTF-8 text, or names another policy than the path."),
        (status = 409, body = ErrorBody, description = "`conflict`: the policy belongs to a file of `serve --policies DIR`, or the set would not load."),
        (status = 413, body = ErrorBody, description = "`payload_too_large`: the body is over the limit."),
        (status = 422, body = InvalidPolicyBody, description = "`invalid_policy`: it does not validate; every problem with its position."),
    )
)]
pub async fn apply_named(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    apply_text(&state, &headers, text_of(&body)?, Some(&name)).await
}

/// `DELETE /admin/policies/{name}`: out of force; its revisions stay.
#[utoipa::path(
    delete,
    path = "/policies/{name}",
    operation_id = "delete_policy",
    summary = "Delete a policy",
    params(("name" = String, Path, description = "The policy's name.")),
    responses(
        (status = 200, body = PolicyDeleted, description = "Out of force; its revisions stay."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such policy."),
        (status = 409, body = ErrorBody, description = "`conflict`: the policy belongs to a file of `serve --policies DIR`."),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<SortedJson<PolicyDeleted>, ApiError> {
    let deleted = state
        .policies
        .delete_by_admin(&name, || async {
            let mutation = AdminMutation::DeletePolicy { name: name.clone() };
            let outcome = apply(&state, &headers, mutation, |outcome| {
                let AdminOutcome::PolicyDeleted(deleted) = outcome else {
                    return None;
                };
                let mut context = Map::new();
                context.insert("revision".into(), json!(deleted.revision));
                let reason = format!("policy `{}` deleted", deleted.name);
                Some(policy_change("policy.delete", deleted, reason, context))
            })
            .await?;
            match outcome {
                AdminOutcome::PolicyDeleted(deleted) => Ok(deleted),
                other => Err(unexpected(&other)),
            }
        })
        .await?;
    Ok(SortedJson(PolicyDeleted {
        deleted: true,
        name: deleted.name,
        revision: deleted.revision,
    }))
}

/// `POST /admin/policies/validate`: parses the body as one policy and lints it together with the
/// policies in force and the stored agents; changes nothing. Always 200 with `valid`.
#[utoipa::path(
    post,
    path = "/policies/validate",
    operation_id = "validate_policy",
    summary = "Validate and lint a policy",
    request_body(content = String, content_type = "application/yaml",
        description = "One policy: YAML (or JSON, which is YAML too)."),
    responses(
        (status = 200, body = Validation, description = "Whether it validates, its error and its lint warnings."),
        (status = 400, body = ErrorBody, description = "`bad_request`: the body is not UTF-8 text."),
        (status = 413, body = ErrorBody, description = "`payload_too_large`: the body is over the limit."),
    )
)]
pub async fn validate(
    State(state): State<AppState>,
    LimitedBody(body): LimitedBody,
) -> Result<SortedJson<Validation>, ApiError> {
    validation(&state, text_of(&body)?).await.map(SortedJson)
}

/// Parses `text` as one policy and lints it with the policies in force and the stored agents:
/// `{"valid", "name"?, "errors": [{"message", "line", "column", "path"}], "warnings": [...]}`.
pub(super) async fn validation(state: &AppState, text: &str) -> Result<Validation, ApiError> {
    let policy = match parse_policy("request body", text) {
        Ok(policy) => policy,
        Err(err) => {
            return Ok(Validation {
                valid: false,
                name: None,
                errors: vec![ValidationError {
                    message: err.to_string(),
                    line: err.line(),
                    column: err.column(),
                    path: err.path().to_owned(),
                }],
                warnings: Vec::new(),
            });
        }
    };
    let mut policies: Vec<Policy> = state
        .policies
        .current()
        .policies()
        .filter(|p| p.name() != policy.name())
        .cloned()
        .collect();
    policies.push(policy.clone());
    let agents: Vec<AgentProfile> = meshguard_store::all_agents(&*state.store)
        .await?
        .iter()
        .filter_map(|a| profile_of(a).ok())
        .collect();
    let warnings: Vec<ValidationWarning> = lint(&policies, Some(&agents))
        .into_iter()
        .filter(|w| w.policy == policy.name())
        .map(|warning| ValidationWarning {
            text: warning.to_string(),
            warning,
        })
        .collect();
    Ok(Validation {
        valid: true,
        name: Some(policy.name().to_owned()),
        errors: Vec::new(),
        warnings,
    })
}
