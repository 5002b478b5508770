//! MeshGuard policy engine: parse, lint, compile and evaluate agent policies.
