//! `/admin/agents`: create, list, show, change, revoke, restore and delete agents, and issue
//! their tokens. Every change is audited (kind `admin`).

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use meshguard_store::{AgentPatch, AgentRecord, AgentStatus, AuditAgent, NewAgent, NewToken};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::admin_event::{AdminChange, record_change, trace_of};
use super::page::{PageParams, listing};
use crate::alerts::{Alert, AlertAgent, Trigger};
use crate::auth::profile_of;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;
use crate::token::{AgentClaims, ISSUER};

fn audit_agent(record: &AgentRecord) -> Option<AuditAgent> {
    Some(AuditAgent {
        id: record.id.clone(),
        name: record.name.clone(),
    })
}

/// `GET /admin/agents?limit=&cursor=`: one page of agents, by name.
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Value>, ApiError> {
    let page = state.store.list_agents(&page.request()).await?;
    Ok(Json(listing("agents", json!(page.items), page.next_cursor)))
}

/// The body of `POST /admin/agents`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateAgent {
    name: String,
    #[serde(default, alias = "trust")]
    trust_tier: Option<String>,
    #[serde(default)]
    tags: Option<BTreeSet<String>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

/// A freshly issued token: shown once, never stored.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct IssuedToken {
    token: String,
    token_id: String,
    #[serde(with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
}

async fn issue(
    state: &AppState,
    agent: &AgentRecord,
    ttl_seconds: Option<u64>,
) -> Result<IssuedToken, ApiError> {
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::now_utc());
    let expires_at = match ttl_seconds {
        None => None,
        Some(0) => {
            return Err(ApiError::BadRequest(
                "ttlSeconds: must be at least 1".into(),
            ));
        }
        Some(secs) => Some(
            i64::try_from(secs)
                .ok()
                .and_then(|s| now.checked_add(time::Duration::seconds(s)))
                .ok_or_else(|| ApiError::BadRequest("ttlSeconds: too large".into()))?,
        ),
    };
    let jti = format!("tok_{}", uuid::Uuid::new_v4().simple());
    state
        .store
        .insert_token(NewToken {
            jti: jti.clone(),
            agent_id: agent.id.clone(),
            issued_at: now,
            expires_at,
        })
        .await?;
    let token = state
        .keys
        .sign(&AgentClaims {
            iss: ISSUER.to_owned(),
            sub: agent.id.clone(),
            name: agent.name.clone(),
            jti: jti.clone(),
            iat: now.unix_timestamp(),
            exp: expires_at.map(OffsetDateTime::unix_timestamp),
        })
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(IssuedToken {
        token,
        token_id: jti,
        expires_at,
    })
}

fn with_token(agent: &AgentRecord, token: IssuedToken) -> Result<Value, ApiError> {
    let mut body = serde_json::to_value(agent).map_err(|e| ApiError::Internal(e.to_string()))?;
    let token = serde_json::to_value(token).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let (Some(body), Value::Object(token)) = (body.as_object_mut(), token) {
        body.extend(token);
    }
    Ok(body)
}

/// `POST /admin/agents`: the agent plus its first token, shown once.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateAgent>,
) -> Result<Response, ApiError> {
    let agent = state
        .store
        .create_agent(NewAgent {
            name: body.name,
            trust: body.trust_tier.unwrap_or_else(|| "verified".to_owned()),
            tags: body.tags.unwrap_or_default(),
            description: body.description,
        })
        .await?;
    let token = issue(&state, &agent, body.ttl_seconds).await?;
    let mut context = Map::new();
    context.insert("trustTier".into(), Value::String(agent.trust.clone()));
    context.insert("tags".into(), json!(agent.tags));
    context.insert("tokenId".into(), Value::String(token.token_id.clone()));
    record_change(
        &state,
        &headers,
        AdminChange {
            action: "agent.create",
            agent: audit_agent(&agent),
            resource: &agent.name,
            reason: format!("agent `{}` created", agent.name),
            context,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(with_token(&agent, token)?)).into_response())
}

/// `GET /admin/agents/{id-or-name}`: the agent and its token ids.
pub async fn show(
    State(state): State<AppState>,
    Path(agent): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let agent = state.store.get_agent(&agent).await?;
    let tokens = state.store.list_tokens(&agent.id).await?;
    let mut body = serde_json::to_value(&agent).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(body) = body.as_object_mut() {
        body.insert("tokens".into(), json!(tokens));
    }
    Ok(Json(body))
}

/// The body of `PATCH /admin/agents/{id-or-name}`; absent fields stay as they are.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateAgent {
    #[serde(default, alias = "trust")]
    trust_tier: Option<String>,
    #[serde(default)]
    tags: Option<BTreeSet<String>>,
    #[serde(default, deserialize_with = "present")]
    description: Option<Option<String>>,
}

/// Tells `"description": null` (clear it) from an absent field (keep it).
fn present<'de, D>(deserializer: D) -> Result<Option<Option<String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<String>::deserialize(deserializer).map(Some)
}

/// `PATCH /admin/agents/{id-or-name}`: trust, tags, description. Takes effect on the agent's
/// next request (the auth cache is cleared before the answer).
pub async fn update(
    State(state): State<AppState>,
    Path(agent): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateAgent>,
) -> Result<Json<AgentRecord>, ApiError> {
    let mut changed = Map::new();
    if let Some(trust) = &body.trust_tier {
        changed.insert("trustTier".into(), Value::String(trust.clone()));
    }
    if let Some(tags) = &body.tags {
        changed.insert("tags".into(), json!(tags));
    }
    if let Some(description) = &body.description {
        changed.insert("description".into(), json!(description));
    }
    let updated = state
        .store
        .update_agent(
            &agent,
            AgentPatch {
                trust: body.trust_tier,
                tags: body.tags,
                description: body.description,
            },
        )
        .await;
    // Cleared whatever the outcome (an error may follow a commit), before the answer leaves.
    state.auth_cache.clear();
    let updated = updated?;
    record_change(
        &state,
        &headers,
        AdminChange {
            action: "agent.update",
            agent: audit_agent(&updated),
            resource: &updated.name,
            reason: format!("agent `{}` updated", updated.name),
            context: changed,
        },
    )
    .await?;
    Ok(Json(updated))
}

async fn set_status(
    state: &AppState,
    headers: &HeaderMap,
    agent: &str,
    status: AgentStatus,
) -> Result<AgentRecord, ApiError> {
    let updated = state.store.set_agent_status(agent, status).await;
    state.auth_cache.clear();
    let updated = updated?;
    let (action, verb) = match status {
        AgentStatus::Revoked => ("agent.revoke", "revoked"),
        AgentStatus::Active => ("agent.restore", "restored"),
    };
    if status == AgentStatus::Revoked {
        tracing::warn!(agent = %updated.name, "agent revoked: its next request is refused");
        raise_revoked(state, headers, &updated);
    }
    record_change(
        state,
        headers,
        AdminChange {
            action,
            agent: audit_agent(&updated),
            resource: &updated.name,
            reason: format!("agent `{}` {verb}", updated.name),
            context: Map::new(),
        },
    )
    .await?;
    Ok(updated)
}

/// Tells the operators' receivers that an agent was cut off.
fn raise_revoked(state: &AppState, headers: &HeaderMap, agent: &AgentRecord) {
    if !state.alerts.wants(Trigger::AgentRevoked) {
        return;
    }
    state.alerts.emit(Alert {
        agent: Some(AlertAgent {
            id: agent.id.clone(),
            name: agent.name.clone(),
        }),
        resource: Some(agent.name.clone()),
        trace_id: trace_of(headers),
        ..Alert::new(
            Trigger::AgentRevoked,
            &state.instance_id,
            "agent.revoke",
            format!("agent `{}` revoked: its requests are refused", agent.name),
        )
    });
}

/// `POST /admin/agents/{id-or-name}/revoke`: every request of the agent is refused from now on.
pub async fn revoke(
    State(state): State<AppState>,
    Path(agent): Path<String>,
    headers: HeaderMap,
) -> Result<Json<AgentRecord>, ApiError> {
    set_status(&state, &headers, &agent, AgentStatus::Revoked)
        .await
        .map(Json)
}

/// `POST /admin/agents/{id-or-name}/restore`: the agent's unrevoked tokens work again.
pub async fn restore(
    State(state): State<AppState>,
    Path(agent): Path<String>,
    headers: HeaderMap,
) -> Result<Json<AgentRecord>, ApiError> {
    set_status(&state, &headers, &agent, AgentStatus::Active)
        .await
        .map(Json)
}

/// `?purge=true` on DELETE.
#[derive(Debug, Deserialize)]
pub struct DeleteQuery {
    #[serde(default)]
    purge: Option<String>,
}

/// `DELETE /admin/agents/{id-or-name}`: revokes (as MeshGuard's SDK expects); `?purge=true`
/// deletes the agent, its tokens and approvals (its audit events stay).
pub async fn delete(
    State(state): State<AppState>,
    Path(agent): Path<String>,
    ApiQuery(query): ApiQuery<DeleteQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let purge = match query.purge.as_deref() {
        None | Some("false" | "0") => false,
        Some("true" | "1" | "") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "purge: expected `true` or `false`, got `{other}`"
            )));
        }
    };
    if !purge {
        let revoked = set_status(&state, &headers, &agent, AgentStatus::Revoked).await?;
        return Ok(Json(
            json!({ "revoked": true, "purged": false, "agent": revoked }),
        ));
    }
    let purged = state.store.purge_agent(&agent).await;
    state.auth_cache.clear();
    let purged = purged?;
    record_change(
        &state,
        &headers,
        AdminChange {
            action: "agent.purge",
            agent: audit_agent(&purged),
            resource: &purged.name,
            reason: format!("agent `{}` deleted with its tokens", purged.name),
            context: Map::new(),
        },
    )
    .await?;
    Ok(Json(
        json!({ "revoked": true, "purged": true, "agent": purged }),
    ))
}

/// `?rotate=true` on token issue.
#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    rotate: Option<bool>,
}

/// The optional body of `POST …/token`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenBody {
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

/// `POST /admin/agents/{id-or-name}/token`: a new token; `?rotate=true` revokes the older ones.
pub async fn issue_token(
    State(state): State<AppState>,
    Path(agent): Path<String>,
    ApiQuery(query): ApiQuery<TokenQuery>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<TokenBody>,
) -> Result<Response, ApiError> {
    let agent = state.store.get_agent(&agent).await?;
    let token = issue(&state, &agent, body.ttl_seconds).await?;
    let rotate = query.rotate.unwrap_or(false);
    let revoked = if rotate {
        let revoked = state
            .store
            .revoke_tokens(&agent.id, Some(&token.token_id), OffsetDateTime::now_utc())
            .await;
        state.auth_cache.clear();
        revoked?
    } else {
        0
    };
    let mut context = Map::new();
    context.insert("tokenId".into(), Value::String(token.token_id.clone()));
    context.insert("rotate".into(), Value::Bool(rotate));
    context.insert("revokedTokens".into(), json!(revoked));
    record_change(
        &state,
        &headers,
        AdminChange {
            action: "agent.token",
            agent: audit_agent(&agent),
            resource: &agent.name,
            reason: if rotate {
                format!(
                    "token issued for agent `{}`; {revoked} older token(s) revoked",
                    agent.name
                )
            } else {
                format!("token issued for agent `{}`", agent.name)
            },
            context,
        },
    )
    .await?;
    let mut body = serde_json::to_value(&token).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(body) = body.as_object_mut() {
        body.insert("agentId".into(), Value::String(agent.id.clone()));
        body.insert("name".into(), Value::String(agent.name.clone()));
        body.insert("revokedTokens".into(), json!(revoked));
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /admin/agents/{id-or-name}/permissions`: what the policies in force let it do.
pub async fn permissions(
    State(state): State<AppState>,
    Path(agent): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = state.store.get_agent(&agent).await?;
    let profile = profile_of(&record).map_err(ApiError::Internal)?;
    let permissions = state.policies.current().permissions(&profile);
    Ok(Json(json!({ "agent": record, "permissions": permissions })))
}
