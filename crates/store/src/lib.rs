//! MeshGuard storage: agents, tokens, policies, approvals and the hash-chained audit trail.
