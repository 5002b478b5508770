//! `/admin/policies`: apply (YAML or JSON body, upsert by name), list, show, delete, revisions,
//! and validate without applying. Every change goes through [`apply`]: committed with its
//! audit event (kind `admin`), then the auth cache is cleared.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use meshguard_policy::{AgentProfile, Policy, lint, parse_policy};
use meshguard_store::{AdminMutation, AdminOutcome, PolicyUpsert, StoredPolicy};
use serde_json::{Map, Value, json};

use super::admin_event::{AdminChange, ChangedBy, apply, unexpected};
use super::page::{PageParams, listing};
use crate::auth::profile_of;
use crate::error::ApiError;
use crate::extract::{ApiQuery, LimitedBody};
use crate::state::AppState;

fn text_of(body: &[u8]) -> Result<&str, ApiError> {
    std::str::from_utf8(body).map_err(|_| ApiError::BadRequest("body: not UTF-8 text".into()))
}

/// A stored policy as the API shows it: the stored fields, the source text, and the parsed
/// policy in camelCase JSON.
fn policy_json(stored: &StoredPolicy, with_source: bool) -> Value {
    let parsed = parse_policy(stored.origin.as_str(), &stored.source).ok();
    let mut body = json!({
        "name": stored.name,
        "version": stored.version,
        "description": parsed.as_ref().and_then(|p| p.description().map(str::to_owned)),
        "origin": stored.origin,
        "revision": stored.revision,
        "mode": parsed.as_ref().map(|p| p.mode()),
        "createdAt": stored.created_at.format(&time::format_description::well_known::Rfc3339).ok(),
        "updatedAt": stored.updated_at.format(&time::format_description::well_known::Rfc3339).ok(),
        "policy": parsed,
    });
    if let (true, Some(map)) = (with_source, body.as_object_mut()) {
        map.insert("source".into(), Value::String(stored.source.clone()));
    }
    body
}

/// `GET /admin/policies?limit=&cursor=`: one page of the policies in force, by name.
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Value>, ApiError> {
    let page = state.store.list_policies(&page.request()).await?;
    let policies: Vec<Value> = page.items.iter().map(|p| policy_json(p, false)).collect();
    Ok(Json(listing(
        "policies",
        Value::Array(policies),
        page.next_cursor,
    )))
}

/// `GET /admin/policies/{name}`.
pub async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let stored = state.store.get_policy(&name).await?;
    Ok(Json(policy_json(&stored, true)))
}

/// `GET /admin/policies/{name}/revisions?limit=&cursor=`: one page of the stored bodies,
/// oldest first.
pub async fn revisions(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Value>, ApiError> {
    let page = state.store.policy_revisions(&name, &page.request()).await?;
    let mut body = listing("revisions", json!(page.items), page.next_cursor);
    if let Some(body) = body.as_object_mut() {
        body.insert("name".into(), Value::String(name));
    }
    Ok(Json(body))
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
    let mut body = policy_json(&upsert.policy, true);
    if let Some(map) = body.as_object_mut() {
        map.insert("changed".into(), Value::Bool(upsert.changed));
    }
    Ok((status, Json(body)).into_response())
}

/// `POST /admin/policies`: upsert by the body's `name`.
pub async fn apply_any(
    State(state): State<AppState>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    apply_text(&state, &headers, text_of(&body)?, None).await
}

/// `PUT /admin/policies/{name}`: upsert; the body's `name` must be `{name}`.
pub async fn apply_named(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    apply_text(&state, &headers, text_of(&body)?, Some(&name)).await
}

/// `DELETE /admin/policies/{name}`: out of force; its revisions stay.
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(
        json!({ "deleted": true, "name": deleted.name, "revision": deleted.revision }),
    ))
}

/// `POST /admin/policies/validate`: parses the body as one policy and lints it together with the
/// policies in force and the stored agents; changes nothing. Always 200 with `valid`.
pub async fn validate(
    State(state): State<AppState>,
    LimitedBody(body): LimitedBody,
) -> Result<Json<Value>, ApiError> {
    validation(&state, text_of(&body)?).await.map(Json)
}

/// Parses `text` as one policy and lints it with the policies in force and the stored agents:
/// `{"valid", "name"?, "errors": [{"message", "line", "column", "path"}], "warnings": [...]}`.
pub(super) async fn validation(state: &AppState, text: &str) -> Result<Value, ApiError> {
    let policy = match parse_policy("request body", text) {
        Ok(policy) => policy,
        Err(err) => {
            return Ok(json!({
                "valid": false,
                "errors": [{"message": err.to_string(), "line": err.line(), "column": err.column(), "path": err.path()}],
                "warnings": [],
            }));
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
    let warnings: Vec<Value> = lint(&policies, Some(&agents))
        .into_iter()
        .filter(|w| w.policy == policy.name())
        .map(|w| {
            let text = w.to_string();
            let mut value = serde_json::to_value(&w).unwrap_or(Value::Null);
            if let Some(map) = value.as_object_mut() {
                map.insert("text".into(), Value::String(text));
            }
            value
        })
        .collect();
    Ok(json!({
        "valid": true,
        "name": policy.name(),
        "errors": [],
        "warnings": warnings,
    }))
}
