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
use utoipa::{IntoParams, ToSchema};

use super::admin_event::{AdminChange, ChangedBy, apply, trace_of, unexpected};
use super::page::PageParams;
use super::sorted::SortedJson;
use crate::alerts::{Alert, AlertAgent, Trigger};
use crate::auth::profile_of;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery};
use crate::openapi::BodyRefusals;
use crate::state::AppState;
use crate::token::{AgentClaims, ISSUER};

fn audit_agent(record: &AgentRecord) -> Option<AuditAgent> {
    Some(AuditAgent {
        id: record.id.clone(),
        name: record.name.clone(),
    })
}

/// One page of agents.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentList {
    /// The agents, by name.
    agents: Vec<AgentRecord>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// `GET /admin/agents?limit=&cursor=`: one page of agents, by name.
#[utoipa::path(
    get,
    path = "/agents",
    operation_id = "list_agents",
    summary = "List agents",
    params(PageParams),
    responses(
        (status = 200, body = AgentList, description = "One page of agents."),
        (status = 400, body = ErrorBody, description = "`bad_request`: a bad `limit` or a cursor the gateway did not give."),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<SortedJson<AgentList>, ApiError> {
    let page = state.store.list_agents(&page.request()).await?;
    Ok(SortedJson(AgentList {
        agents: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// The body of `POST /admin/agents`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateAgent {
    /// Unique, `[a-z0-9][a-z0-9._-]{0,63}`, not starting with `agent_`.
    name: String,
    /// `unverified`, `verified` (default), `trusted` or `privileged` (also as `trust`).
    #[serde(default, alias = "trust")]
    trust_tier: Option<String>,
    /// Labels that policies select on.
    #[serde(default)]
    tags: Option<BTreeSet<String>>,
    /// The operator's note.
    #[serde(default)]
    description: Option<String>,
    /// Lifetime of the first token; none: it does not expire.
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

/// A freshly issued token: shown once, never stored.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct IssuedToken {
    /// The signed token, shown once.
    pub(super) token: String,
    /// The token's id (`jti`), which the gateway keeps.
    token_id: String,
    /// When the token expires; null: never.
    #[serde(with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
}

/// A new agent and its first token.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedAgent {
    /// The agent.
    #[serde(flatten)]
    agent: AgentRecord,
    /// Its first token, shown once.
    #[serde(flatten)]
    token: IssuedToken,
}

/// An agent and its token ids.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentWithTokens {
    /// The agent.
    #[serde(flatten)]
    agent: AgentRecord,
    /// Every token issued to it (ids only; the gateway never keeps a token).
    tokens: Vec<TokenRecord>,
}

/// What `DELETE /admin/agents/{agent}` did.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentRemoval {
    /// Always true: the agent's requests are refused from now on.
    revoked: bool,
    /// True with `?purge=true`: the agent, its tokens and approvals are deleted.
    purged: bool,
    /// The agent as it was last.
    agent: AgentRecord,
}

/// A new token of an existing agent.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentToken {
    /// The token, shown once.
    #[serde(flatten)]
    token: IssuedToken,
    /// The agent's id.
    agent_id: String,
    /// The agent's name.
    name: String,
    /// How many older tokens `?rotate=true` revoked.
    revoked_tokens: u64,
}

/// An agent and what the policies in force let it do.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentPermissions {
    /// The agent.
    agent: AgentRecord,
    /// Its effective permissions (`meshguard policy allowed`).
    permissions: meshguard_policy::Permissions,
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
#[utoipa::path(
    post,
    path = "/agents",
    operation_id = "create_agent",
    summary = "Create an agent",
    request_body = CreateAgent,
    responses(
        (status = 201, body = CreatedAgent, description = "The agent and its first token (shown once)."),
        (status = 409, body = ErrorBody, description = "`conflict`: the name is taken."),
        BodyRefusals,
    )
)]
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
    let created = CreatedAgent {
        agent,
        token: issued,
    };
    Ok((StatusCode::CREATED, SortedJson(created)).into_response())
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
#[utoipa::path(
    get,
    path = "/agents/{agent}",
    operation_id = "show_agent",
    summary = "Show an agent",
    params(("agent" = String, Path, description = "The agent's id (`agent_…`) or name.")),
    responses(
        (status = 200, body = AgentWithTokens, description = "The agent and its token ids."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such agent."),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    Path(agent): Path<String>,
) -> Result<SortedJson<AgentWithTokens>, ApiError> {
    let agent = state.store.get_agent(&agent).await?;
    let tokens = state.store.list_tokens(&agent.id).await?;
    Ok(SortedJson(AgentWithTokens { agent, tokens }))
}

/// The body of `PATCH /admin/agents/{id-or-name}`; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateAgent {
    /// The new tier (also as `trust`).
    #[serde(default, alias = "trust")]
    trust_tier: Option<String>,
    /// Replaces the whole tag set.
    #[serde(default)]
    tags: Option<BTreeSet<String>>,
    /// The new note; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
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
#[utoipa::path(
    patch,
    path = "/agents/{agent}",
    operation_id = "update_agent",
    summary = "Change an agent's trust, tags or description",
    params(("agent" = String, Path, description = "The agent's id (`agent_…`) or name.")),
    request_body = UpdateAgent,
    responses(
        (status = 200, body = AgentRecord, description = "The agent as changed."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such agent."),
        BodyRefusals,
    )
)]
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
#[utoipa::path(
    post,
    path = "/agents/{agent}/revoke",
    operation_id = "revoke_agent",
    summary = "Revoke an agent",
    params(("agent" = String, Path, description = "The agent's id (`agent_…`) or name.")),
    responses(
        (status = 200, body = AgentRecord, description = "The agent, `revoked`."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such agent."),
    )
)]
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
#[utoipa::path(
    post,
    path = "/agents/{agent}/restore",
    operation_id = "restore_agent",
    summary = "Restore a revoked agent",
    params(("agent" = String, Path, description = "The agent's id (`agent_…`) or name.")),
    responses(
        (status = 200, body = AgentRecord, description = "The agent, `active`."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such agent."),
    )
)]
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
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// `true`: delete the agent, its tokens and approvals (its audit events stay); default
    /// `false`: revoke it.
    #[serde(default)]
    purge: Option<String>,
}

/// `DELETE /admin/agents/{id-or-name}`: revokes (as MeshGuard's SDK expects); `?purge=true`
/// deletes the agent, its tokens and approvals (its audit events stay).
#[utoipa::path(
    delete,
    path = "/agents/{agent}",
    operation_id = "delete_agent",
    summary = "Revoke an agent, or purge it",
    params(("agent" = String, Path, description = "The agent's id (`agent_…`) or name."), DeleteQuery),
    responses(
        (status = 200, body = AgentRemoval, description = "Revoked (and purged with `?purge=true`)."),
        (status = 400, body = ErrorBody, description = "`bad_request`: `purge` is not `true` or `false`."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such agent."),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Path(agent): Path<String>,
    ApiQuery(query): ApiQuery<DeleteQuery>,
    headers: HeaderMap,
) -> Result<SortedJson<AgentRemoval>, ApiError> {
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
        return Ok(SortedJson(AgentRemoval {
            revoked: true,
            purged: false,
            agent: revoked,
        }));
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
    Ok(SortedJson(AgentRemoval {
        revoked: true,
        purged: true,
        agent: purged,
    }))
}

/// `?rotate=true` on token issue.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// `true`: revoke the agent's older tokens.
    #[serde(default)]
    rotate: Option<bool>,
}

/// The optional body of `POST …/token`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenBody {
    /// Lifetime of the token; none: it does not expire.
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

/// `POST /admin/agents/{id-or-name}/token`: a new token; `?rotate=true` revokes the older ones.
#[utoipa::path(
    post,
    path = "/agents/{agent}/token",
    operation_id = "issue_agent_token",
    summary = "Issue a token",
    params(("agent" = String, Path, description = "The agent's id (`agent_…`) or name."), TokenQuery),
    request_body(content = Option<TokenBody>, description = "Optional."),
    responses(
        (status = 201, body = AgentToken, description = "The token, shown once."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such agent."),
        BodyRefusals,
    )
)]
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
    let body = AgentToken {
        token: issued,
        agent_id: agent.id,
        name: agent.name,
        revoked_tokens: revoked,
    };
    Ok((StatusCode::CREATED, SortedJson(body)).into_response())
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
#[utoipa::path(
    get,
    path = "/agents/{agent}/permissions",
    operation_id = "agent_permissions",
    summary = "What an agent may do",
    params(("agent" = String, Path, description = "The agent's id (`agent_…`) or name.")),
    responses(
        (status = 200, body = AgentPermissions, description = "Effective allow, deny and approval patterns, rate limits and budgets."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such agent."),
    )
)]
pub async fn permissions(
    State(state): State<AppState>,
    Path(agent): Path<String>,
) -> Result<SortedJson<AgentPermissions>, ApiError> {
    let (agent, permissions) = permissions_of(&state, &agent).await?;
    Ok(SortedJson(AgentPermissions { agent, permissions }))
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
