use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A token the gateway issued. Only its id (`jti`) is stored, never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    /// The JWT's `jti`.
    pub jti: String,
    /// The agent the token identifies.
    pub agent_id: String,
    /// The JWT's `iat`.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// The JWT's `exp`, if any.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// When the token was revoked (rotation); a revoked `jti` is refused.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl TokenRecord {
    /// Whether a request carrying this token id is honoured at `now` (the agent's status aside).
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|exp| exp > now)
    }
}

/// A token id to remember when a token is issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// The JWT's `jti`.
    pub jti: String,
    /// The agent the token identifies; must exist.
    pub agent_id: String,
    /// The JWT's `iat`.
    pub issued_at: OffsetDateTime,
    /// The JWT's `exp`, if any.
    pub expires_at: Option<OffsetDateTime>,
}
