use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

/// Where a policy came from. A policy loaded from `serve --policies DIR` belongs to its file: the
/// gateway refuses API changes to it and names the file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PolicyOrigin {
    /// Applied through the admin API (serialised as `"api"`).
    Api,
    /// Loaded from this file (serialised as the path).
    File(String),
}

impl PolicyOrigin {
    /// The stored and serialised form: `api` or the file path.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Api => "api",
            Self::File(path) => path,
        }
    }

    pub(crate) fn from_stored(text: String) -> Self {
        if text == "api" {
            Self::Api
        } else {
            Self::File(text)
        }
    }
}

impl fmt::Display for PolicyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for PolicyOrigin {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PolicyOrigin {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::from_stored)
    }
}

/// A policy to store, as applied: the source text is kept byte for byte so that `policy show`
/// returns what the operator wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPolicy {
    /// The policy's `name` (agent-name syntax).
    pub name: String,
    /// The author's `version` label, as written.
    pub version: String,
    /// Where it came from.
    pub origin: PolicyOrigin,
    /// The YAML (or JSON) text as applied.
    pub source: String,
}

/// The current revision of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredPolicy {
    /// The policy's `name`.
    pub name: String,
    /// The author's `version` label.
    pub version: String,
    /// Where it came from.
    pub origin: PolicyOrigin,
    /// The text as applied.
    pub source: String,
    /// Stored revision number, from 1; grows by one each time the body changes.
    pub revision: u64,
    /// When the first revision was stored.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the current revision was stored (or its origin last changed).
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// One stored body of a policy, kept after it is replaced (and after the policy is deleted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PolicyRevision {
    /// The policy's `name`.
    pub name: String,
    /// Revision number, from 1.
    pub revision: u64,
    /// The author's `version` label of this body.
    pub version: String,
    /// Where this body came from.
    pub origin: PolicyOrigin,
    /// The text of this body.
    pub source: String,
    /// When this body was stored.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The outcome of an upsert: re-applying the same body is not a new revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyUpsert {
    /// The policy as now stored.
    pub policy: StoredPolicy,
    /// Whether the body changed (a new revision was stored).
    pub changed: bool,
    /// The current revision number.
    pub revision: u64,
}
