//! Operators of the web console: a name, a role, and a password kept only as a hash.

use serde::Serialize;
use time::OffsetDateTime;

use crate::StoreError;
use crate::records::agent::validate_name;

/// What an operator may do; the store keeps the name.
pub const OPERATOR_ROLES: [&str; 3] = ["admin", "approver", "viewer"];

/// One operator as stored. The hash never leaves the gateway: it is skipped when serialised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OperatorRecord {
    /// The sign-in name (agent-name syntax).
    pub name: String,
    /// `admin`, `approver` or `viewer`.
    pub role: String,
    /// The argon2id PHC string of the password.
    #[serde(skip)]
    pub password_hash: String,
    /// When the operator was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// An operator to create; the caller has already hashed the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOperator {
    /// The sign-in name.
    pub name: String,
    /// `admin`, `approver` or `viewer`.
    pub role: String,
    /// The argon2id PHC string of the password.
    pub password_hash: String,
}

impl NewOperator {
    /// Refuses a name outside the agent-name syntax, an unknown role or an empty hash.
    pub fn validate(&self) -> Result<(), StoreError> {
        validate_name("name", &self.name)?;
        if !OPERATOR_ROLES.contains(&self.role.as_str()) {
            return Err(StoreError::invalid(
                "role",
                format!(
                    "`{}` is not a role: expected `admin`, `approver` or `viewer`",
                    self.role
                ),
            ));
        }
        if self.password_hash.is_empty() {
            return Err(StoreError::invalid("password", "no password hash"));
        }
        Ok(())
    }
}
