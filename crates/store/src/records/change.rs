use serde::{Deserialize, Serialize};

/// Something changed that a gateway may hold in memory (its compiled policy set, a long-polled
/// approval). Announced by [`crate::Store::subscribe_changes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum StoreChange {
    /// An agent was created, updated, revoked, restored or purged.
    Agent {
        /// The agent's id.
        id: String,
    },
    /// Tokens of an agent were revoked.
    Tokens {
        /// The agent's id.
        agent_id: String,
    },
    /// A policy was applied (with a changed body or origin) or deleted.
    Policy {
        /// The policy's name.
        name: String,
    },
    /// An approval was created, decided, used or expired.
    Approval {
        /// The approval's id.
        id: String,
    },
    /// Changes may have been missed (the notification connection was re-established, or the
    /// receiver lagged behind): reload everything held in memory.
    Resync,
}
