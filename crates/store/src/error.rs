//! The one error type every `Store` method returns.

/// What went wrong in the store, in terms the gateway can map to an answer without knowing the
/// database: `NotFound` → 404, `Conflict` → 409, `Invalid` → 400, `Unavailable` → 503 (fail
/// closed), `Corrupt` → 500. No database types appear here on purpose: a PostgreSQL or SQLite
/// error is rendered to text once, at the boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named thing does not exist (`what` reads like "agent `bob`").
    #[error("{what} not found")]
    NotFound {
        /// The thing looked up, with the key the caller gave.
        what: String,
    },
    /// The change would break a uniqueness or state rule (a taken name, an approval decided twice).
    #[error("{what}: {reason}")]
    Conflict {
        /// The thing that conflicts, with its key.
        what: String,
        /// Why the change is refused.
        reason: String,
    },
    /// The caller passed a value the store refuses; nothing was changed.
    #[error("{field}: {message}")]
    Invalid {
        /// The field at fault, as the API names it.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The database cannot be reached or refused the operation; the caller must fail closed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data cannot be read back (a row that does not decode, a broken migration history).
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound { what: what.into() }
    }

    pub(crate) fn conflict(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Conflict {
            what: what.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }
}
