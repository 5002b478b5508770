//! `/admin/agents`: create, list, show, change, revoke, restore and delete agents, and issue
//! their tokens. Every change goes through [`apply`]: committed with its audit event (kind
//! `admin`), then the auth cache is cleared.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use meshguard_store::{
    AdminMutation, AdminOutcome, AgentPatch, AgentRecord, AgentStatus, AuditAgent, NewAgent,
    TokenGrant, TokenRecord,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::admin_event::{AdminChange, ChangedBy, apply, trace_of, unexpected};
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
pub(super) struct IssuedToken {
    /// The signed token, shown once.
    pub(super) token: String,
    token_id: String,
    #[serde(with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
}

/// The id and lifetime of a token to issue, checked before anything is stored.
fn grant(ttl_seconds: Option<u64>) -> Result<TokenGrant, ApiError> {
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
    Ok(TokenGrant {
        jti: format!("tok_{}", uuid::Uuid::new_v4().simple()),
        issued_at: now,
        expires_at,
    })
}

/// Signs a token whose id is committed.
fn sign(
    state: &AppState,
    agent: &AgentRecord,
    token: &TokenRecord,
) -> Result<IssuedToken, ApiError> {
    let signed = state
        .keys
        .sign(&AgentClaims {
            iss: ISSUER.to_owned(),
            sub: agent.id.clone(),
            name: agent.name.clone(),
            jti: token.jti.clone(),
            iat: token.issued_at.unix_timestamp(),
            exp: token.expires_at.map(OffsetDateTime::unix_timestamp),
        })
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(IssuedToken {
        token: signed,
        token_id: token.jti.clone(),
        expires_at: token.expires_at,
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

/// The change to one agent, as the trail tells it.
fn agent_change(
    action: &str,
    agent: &AgentRecord,
    reason: String,
    context: Map<String, Value>,
) -> AdminChange {
    AdminChange {
        action: action.to_owned(),
        agent: audit_agent(agent),
        resource: agent.name.clone(),
        reason,
        context,
        by: ChangedBy::Operator,
    }
}

/// `POST /admin/agents`: the agent plus its first token, shown once.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateAgent>,
) -> Result<Response, ApiError> {
    let agent = NewAgent {
        name: body.name,
        trust: body.trust_tier.unwrap_or_else(|| "verified".to_owned()),
        tags: body.tags.unwrap_or_default(),
        description: body.description,
    };
    let (agent, issued) = create_agent(&state, &headers, agent, body.ttl_seconds, None).await?;
    Ok((StatusCode::CREATED, Json(with_token(&agent, issued)?)).into_response())
}

/// Creates an agent with its first token, audited (naming the console `operator` when one made
/// it): the admin API's and the console's one path.
pub(super) async fn create_agent(
    state: &AppState,
    headers: &HeaderMap,
    agent: NewAgent,
    ttl_seconds: Option<u64>,
    operator: Option<&str>,
) -> Result<(AgentRecord, IssuedToken), ApiError> {
    let mutation = AdminMutation::CreateAgent {
        agent,
        token: grant(ttl_seconds)?,
    };
    let operator = operator.map(str::to_owned);
    let outcome = apply(state, headers, mutation, move |outcome| {
        let AdminOutcome::Token { agent, token, .. } = outcome else {
            return None;
        };
        let mut context = Map::new();
        context.insert("trustTier".into(), Value::String(agent.trust.clone()));
        context.insert("tags".into(), json!(agent.tags));
        context.insert("tokenId".into(), Value::String(token.jti.clone()));
        if let Some(operator) = operator {
            context.insert("operator".into(), Value::String(operator));
        }
        Some(agent_change(
            "agent.create",
            agent,
            format!("agent `{}` created", agent.name),
            context,
        ))
    })
    .await?;
    let AdminOutcome::Token { agent, token, .. } = &outcome else {
        return Err(unexpected(&outcome));
    };
    let issued = sign(state, agent, token)?;
    Ok((agent.clone(), issued))
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
    let mutation = AdminMutation::UpdateAgent {
        agent,
        patch: AgentPatch {
            trust: body.trust_tier,
            tags: body.tags,
            description: body.description,
        },
    };
    let outcome = apply(&state, &headers, mutation, |outcome| {
        let AdminOutcome::Agent(updated) = outcome else {
            return None;
        };
        let reason = format!("agent `{}` updated", updated.name);
        Some(agent_change("agent.update", updated, reason, changed))
    })
    .await?;
    let AdminOutcome::Agent(updated) = outcome else {
        return Err(unexpected(&outcome));
    };
    Ok(Json(updated))
}

pub(super) async fn set_status(
    state: &AppState,
    headers: &HeaderMap,
    agent: String,
    status: AgentStatus,
    operator: Option<&str>,
) -> Result<AgentRecord, ApiError> {
    let mut context = Map::new();
    if let Some(operator) = operator {
        context.insert("operator".into(), Value::String(operator.to_owned()));
    }
    let (action, verb) = match status {
        AgentStatus::Revoked => ("agent.revoke", "revoked"),
        AgentStatus::Active => ("agent.restore", "restored"),
    };
    let mutation = AdminMutation::SetAgentStatus { agent, status };
    let outcome = apply(state, headers, mutation, move |outcome| {
        let AdminOutcome::Agent(updated) = outcome else {
            return None;
        };
        let reason = format!("agent `{}` {verb}", updated.name);
        Some(agent_change(action, updated, reason, context))
    })
    .await?;
    let AdminOutcome::Agent(updated) = outcome else {
        return Err(unexpected(&outcome));
    };
    if status == AgentStatus::Revoked {
        tracing::warn!(agent = %updated.name, "agent revoked: its next request is refused");
        raise_revoked(state, headers, &updated);
    }
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
    set_status(&state, &headers, agent, AgentStatus::Revoked, None)
        .await
        .map(Json)
}

/// `POST /admin/agents/{id-or-name}/restore`: the agent's unrevoked tokens work again.
pub async fn restore(
    State(state): State<AppState>,
    Path(agent): Path<String>,
    headers: HeaderMap,
) -> Result<Json<AgentRecord>, ApiError> {
    set_status(&state, &headers, agent, AgentStatus::Active, None)
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
        let revoked = set_status(&state, &headers, agent, AgentStatus::Revoked, None).await?;
        return Ok(Json(
            json!({ "revoked": true, "purged": false, "agent": revoked }),
        ));
    }
    let outcome = apply(
        &state,
        &headers,
        AdminMutation::PurgeAgent { agent },
        |outcome| {
            let AdminOutcome::Agent(purged) = outcome else {
                return None;
            };
            let reason = format!("agent `{}` deleted with its tokens", purged.name);
            Some(agent_change("agent.purge", purged, reason, Map::new()))
        },
    )
    .await?;
    let AdminOutcome::Agent(purged) = outcome else {
        return Err(unexpected(&outcome));
    };
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
    let rotate = query.rotate.unwrap_or(false);
    let (agent, issued, revoked) =
        issue(&state, &headers, agent, body.ttl_seconds, rotate, None).await?;
    let mut body = serde_json::to_value(&issued).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(body) = body.as_object_mut() {
        body.insert("agentId".into(), Value::String(agent.id.clone()));
        body.insert("name".into(), Value::String(agent.name.clone()));
        body.insert("revokedTokens".into(), json!(revoked));
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Issues a token to an agent, with `rotate` revoking its older ones, audited: the admin API's
/// and the console's one path. Returns the agent, the token and how many tokens were revoked.
pub(super) async fn issue(
    state: &AppState,
    headers: &HeaderMap,
    agent: String,
    ttl_seconds: Option<u64>,
    rotate: bool,
    operator: Option<&str>,
) -> Result<(AgentRecord, IssuedToken, u64), ApiError> {
    let mutation = AdminMutation::IssueToken {
        agent,
        token: grant(ttl_seconds)?,
        rotate,
    };
    let operator = operator.map(str::to_owned);
    let outcome = apply(state, headers, mutation, move |outcome| {
        let AdminOutcome::Token {
            agent,
            token,
            revoked,
        } = outcome
        else {
            return None;
        };
        let mut context = Map::new();
        context.insert("tokenId".into(), Value::String(token.jti.clone()));
        context.insert("rotate".into(), Value::Bool(rotate));
        context.insert("revokedTokens".into(), json!(revoked));
        if let Some(operator) = operator {
            context.insert("operator".into(), Value::String(operator));
        }
        let reason = if rotate {
            format!(
                "token issued for agent `{}`; {revoked} older token(s) revoked",
                agent.name
            )
        } else {
            format!("token issued for agent `{}`", agent.name)
        };
        Some(agent_change("agent.token", agent, reason, context))
    })
    .await?;
    let AdminOutcome::Token {
        agent,
        token,
        revoked,
    } = &outcome
    else {
        return Err(unexpected(&outcome));
    };
    let issued = sign(state, agent, token)?;
    Ok((agent.clone(), issued, *revoked))
}

/// `GET /admin/agents/{id-or-name}/permissions`: what the policies in force let it do.
pub async fn permissions(
    State(state): State<AppState>,
    Path(agent): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (record, permissions) = permissions_of(&state, &agent).await?;
    Ok(Json(json!({ "agent": record, "permissions": permissions })))
}

/// An agent and what the policies in force let it do (`policy allowed`).
pub(super) async fn permissions_of(
    state: &AppState,
    agent: &str,
) -> Result<(AgentRecord, meshguard_policy::Permissions), ApiError> {
    let record = state.store.get_agent(agent).await?;
    let profile = profile_of(&record).map_err(ApiError::Internal)?;
    let permissions = state.policies.current().permissions(&profile);
    Ok((record, permissions))
}
