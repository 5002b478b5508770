use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::StoreError;

/// The trust tiers, lowest first, as stored. The store keeps them as text so that it does not
/// depend on the policy crate; the gateway converts with `TrustTier`'s `Display`/`FromStr`.
pub const TRUST_TIERS: [&str; 4] = ["unverified", "verified", "trusted", "privileged"];

/// An agent as stored. Trust, tags and status are read on every request, so an update here takes
/// effect on the agent's next call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AgentRecord {
    /// `agent_` + 20 random hex digits; never reused.
    pub id: String,
    /// Unique, `[a-z0-9][a-z0-9._-]{0,63}`.
    pub name: String,
    /// One of [`TRUST_TIERS`].
    #[serde(rename = "trustTier")]
    pub trust: String,
    /// Free labels that policies select on (`appliesTo.tags`).
    pub tags: BTreeSet<String>,
    /// Whether the agent may act at all.
    pub status: AgentStatus,
    /// Operator's note.
    pub description: Option<String>,
    /// When the agent was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last change of trust, tags, description or status.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Whether an agent may act. Revocation keeps the agent and its history; purge deletes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    /// Tokens of this agent are honoured.
    Active,
    /// Every request of this agent is refused (401, audited).
    Revoked,
}

impl AgentStatus {
    /// The stored and serialised spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "revoked" => Some(Self::Revoked),
            _ => None,
        }
    }
}

/// What an operator gives to create an agent; the store assigns id, status and timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewAgent {
    /// Unique name; see [`validate_name`].
    pub name: String,
    /// A tier name; `untrusted` is read as `unverified`.
    pub trust: String,
    /// Labels for `appliesTo.tags`.
    pub tags: BTreeSet<String>,
    /// Operator's note.
    pub description: Option<String>,
}

/// A partial update: `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentPatch {
    /// New tier name.
    pub trust: Option<String>,
    /// Replaces the whole tag set.
    pub tags: Option<BTreeSet<String>>,
    /// `Some(None)` clears the description.
    pub description: Option<Option<String>>,
}

/// What every agent id starts with; no agent name may, so a key that starts with it is an id
/// and anything else is a name ([`AgentKey`]).
pub const AGENT_ID_PREFIX: &str = "agent_";

/// How the store reads an agent key: ids and names are disjoint, so a key names at most one
/// agent whatever names others chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentKey<'a> {
    /// A key with [`AGENT_ID_PREFIX`]: only the id column is searched.
    Id(&'a str),
    /// Any other key: only the name column is searched.
    Name(&'a str),
}

impl<'a> AgentKey<'a> {
    /// Reads `id_or_name` as an id when it has the id prefix, as a name otherwise.
    pub fn of(id_or_name: &'a str) -> AgentKey<'a> {
        if id_or_name.starts_with(AGENT_ID_PREFIX) {
            AgentKey::Id(id_or_name)
        } else {
            AgentKey::Name(id_or_name)
        }
    }
}

/// Checks an agent name: the shared syntax ([`validate_name`]) and not shaped like an id, so
/// that no name can ever be mistaken for another agent's id.
pub fn validate_agent_name(field: &'static str, name: &str) -> Result<(), StoreError> {
    validate_name(field, name)?;
    if name.starts_with(AGENT_ID_PREFIX) {
        return Err(StoreError::invalid(
            field,
            format!(
                "`{name}` is not a valid agent name: names must not start with `{AGENT_ID_PREFIX}`, which marks agent ids"
            ),
        ));
    }
    Ok(())
}

/// Checks the name syntax shared by agents and policies: `[a-z0-9][a-z0-9._-]{0,63}`.
pub fn validate_name(field: &'static str, name: &str) -> Result<(), StoreError> {
    let mut chars = name.chars();
    let valid_first = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let valid_rest =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c));
    if valid_first && valid_rest && name.len() <= 64 {
        Ok(())
    } else {
        Err(StoreError::invalid(
            field,
            format!(
                "`{name}` is not a valid name: use 1 to 64 characters from a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit"
            ),
        ))
    }
}

/// Returns the canonical tier name, or an error naming the accepted ones.
pub(crate) fn canonical_trust(trust: &str) -> Result<&'static str, StoreError> {
    if trust == "untrusted" {
        return Ok("unverified");
    }
    TRUST_TIERS
        .iter()
        .copied()
        .find(|tier| *tier == trust)
        .ok_or_else(|| {
            StoreError::invalid(
                "trustTier",
                format!(
                    "`{trust}` is not a trust tier (expected one of {})",
                    TRUST_TIERS.join(", ")
                ),
            )
        })
}

pub(crate) fn validate_tags(tags: &BTreeSet<String>) -> Result<(), StoreError> {
    match tags
        .iter()
        .find(|tag| tag.trim().is_empty() || tag.len() > 128)
    {
        Some(tag) => Err(StoreError::invalid(
            "tags",
            format!("`{tag}` is not a valid tag: tags are 1 to 128 characters, not blank"),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_syntax_follows_the_spec() {
        for good in ["a", "autogpt-agent", "0.x_y-z", &"a".repeat(64)] {
            assert!(validate_name("name", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            "_a",
            ".a",
            "Agent",
            "a b",
            "a/b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(validate_name("name", bad).is_err(), "{bad}");
        }
        let err = validate_name("name", "Bad").unwrap_err().to_string();
        assert!(err.starts_with("name: `Bad` is not a valid name"), "{err}");
    }

    #[test]
    fn an_agent_name_can_never_be_an_id() {
        for id_shaped in ["agent_x", "agent_0123456789abcdef0123", "agent_"] {
            let err = validate_agent_name("name", id_shaped)
                .unwrap_err()
                .to_string();
            assert!(err.contains("must not start with `agent_`"), "{err}");
            assert_eq!(AgentKey::of(id_shaped), AgentKey::Id(id_shaped));
        }
        for name in ["agent", "agent-x", "my_agent_x"] {
            assert!(validate_agent_name("name", name).is_ok(), "{name}");
            assert_eq!(AgentKey::of(name), AgentKey::Name(name));
        }
    }

    #[test]
    fn untrusted_is_another_name_for_unverified() {
        assert_eq!(canonical_trust("untrusted").unwrap(), "unverified");
        assert_eq!(canonical_trust("trusted").unwrap(), "trusted");
        assert!(canonical_trust("root").is_err());
    }
}
