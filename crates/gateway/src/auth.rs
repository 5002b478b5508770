//! Who is calling: agents on `/proxy` (their JWT, then the store), operators on `/admin` (the
//! admin token). The two never overlap: an agent token is not an admin token and the admin token
//! is refused on `/proxy`.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use meshguard_policy::{AgentProfile, TrustTier};
use meshguard_store::{AgentRecord, AgentStatus, AuditAgent, StoreError};
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::state::AppState;
use crate::token::TokenError;

/// An agent whose token verified and whose record says it may act.
#[derive(Debug, Clone)]
pub struct AuthenticatedAgent {
    /// The stored agent, as of this request (read now or from the auth cache).
    pub record: AgentRecord,
    /// What the policy engine sees.
    pub profile: AgentProfile,
    /// The token id used.
    pub jti: String,
}

/// Why an agent request was refused before any decision.
#[derive(Debug)]
pub enum AgentAuthError {
    /// 401, not audited: no token, a malformed or forged one, an expired one, the admin token.
    Rejected(String),
    /// 401, audited: a validly signed token of a revoked agent, or an unknown or revoked token id.
    RejectedAudited {
        /// Why.
        message: String,
        /// The agent the token names.
        agent: AuditAgent,
    },
    /// 503: the store could not be asked; nothing is allowed.
    Unavailable(String),
    /// 500: stored data does not make sense.
    Internal(String),
}

/// The bearer token of a request, if it sends one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Compares secrets in time independent of where they differ.
pub fn secrets_match(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Authenticates an agent request: signature and expiry from the token, everything else from the
/// store or from the [`crate::auth_cache::AuthCache`], which every admin change clears before it
/// answers, so a revocation applies to the very next request.
pub async fn authenticate_agent(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<AuthenticatedAgent, AgentAuthError> {
    let token = bearer(headers).ok_or_else(|| {
        AgentAuthError::Rejected("missing agent token: send `Authorization: Bearer <token>`".into())
    })?;
    if secrets_match(token, state.admin_token.expose()) {
        return Err(AgentAuthError::Rejected(
            "the admin token is not accepted here: use an agent token".into(),
        ));
    }
    let claims = state.keys.verify(token).map_err(|e| match e {
        TokenError::Expired => AgentAuthError::Rejected("token expired".into()),
        TokenError::Invalid(_) | TokenError::Signing(_) => {
            AgentAuthError::Rejected("invalid token".into())
        }
    })?;
    let named = AuditAgent {
        id: claims.sub.clone(),
        name: claims.name.clone(),
    };
    let store_error = |e: StoreError| match e {
        StoreError::Unavailable(cause) => AgentAuthError::Unavailable(cause),
        other @ (StoreError::NotFound { .. }
        | StoreError::Conflict { .. }
        | StoreError::Invalid { .. }
        | StoreError::Corrupt(_)) => AgentAuthError::Internal(other.to_string()),
    };
    // The ticket is taken before any store read: a copy read while an admin change commits is
    // not kept (see `AuthCache`). Expiry is compared with `now` on every request, cached or not.
    let cache = &state.auth_cache;
    let ticket = cache.ticket();
    let now = OffsetDateTime::now_utc();
    let owner = match cache.token_owner(&claims.jti, now) {
        Some(owner) => Some(owner),
        None => {
            let token = state
                .store
                .active_token(&claims.jti, now)
                .await
                .map_err(store_error)?;
            if let (Some(token), Some(ticket)) = (&token, ticket) {
                cache.put_token(ticket, token);
            }
            token.map(|t| t.agent_id)
        }
    };
    if owner.is_none_or(|owner| owner != claims.sub) {
        return Err(AgentAuthError::RejectedAudited {
            message: "token revoked or unknown".into(),
            agent: named,
        });
    }
    let (record, profile) = match cache.agent(&claims.sub) {
        Some(cached) => cached,
        None => {
            let record = match state.store.get_agent(&claims.sub).await {
                Ok(record) => record,
                Err(StoreError::NotFound { .. }) => {
                    return Err(AgentAuthError::RejectedAudited {
                        message: "agent no longer exists".into(),
                        agent: named,
                    });
                }
                Err(other) => return Err(store_error(other)),
            };
            let profile = profile_of(&record).map_err(AgentAuthError::Internal)?;
            if let Some(ticket) = ticket {
                cache.put_agent(ticket, &record, &profile);
            }
            (record, profile)
        }
    };
    // The store looks an `agent_` key up by id only, so this holds; it is checked anyway because
    // the whole authorisation rests on it: the agent decided for is the token's subject.
    if record.id != claims.sub {
        return Err(AgentAuthError::Internal(format!(
            "the agent found for token subject `{}` is `{}`",
            claims.sub, record.id
        )));
    }
    if record.status == AgentStatus::Revoked {
        return Err(AgentAuthError::RejectedAudited {
            message: format!("agent `{}` is revoked", record.name),
            agent: AuditAgent {
                id: record.id,
                name: record.name,
            },
        });
    }
    Ok(AuthenticatedAgent {
        record,
        profile,
        jti: claims.jti.clone(),
    })
}

/// What the policy engine sees of a stored agent.
pub fn profile_of(record: &AgentRecord) -> Result<AgentProfile, String> {
    let trust: TrustTier = record
        .trust
        .parse()
        .map_err(|e| format!("agent `{}`: {e}", record.name))?;
    Ok(AgentProfile {
        id: record.id.clone(),
        name: record.name.clone(),
        trust,
        tags: record.tags.clone(),
    })
}

/// Middleware for `/admin`: the admin token in `X-Admin-Token` or `Authorization: Bearer`.
pub async fn require_admin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let given = headers
        .get("x-admin-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .or_else(|| bearer(headers));
    match given {
        Some(token) if secrets_match(token, state.admin_token.expose()) => next.run(request).await,
        Some(_) => ApiError::Unauthorized("invalid admin token".into()).into_response(),
        None => ApiError::Unauthorized(
            "missing admin token: send `X-Admin-Token: <token>` or `Authorization: Bearer <token>`"
                .into(),
        )
        .into_response(),
    }
}
