//! MeshGuard storage: agents, tokens, policies, approvals and the hash-chained audit trail.
//!
//! The model: one object-safe [`Store`] trait, held by the gateway as `Arc<dyn Store>`, and one
//! SQL implementation that speaks two dialects — SQLite (the default, a WAL file at
//! `<data-dir>/meshguard.db`) and PostgreSQL (several gateways sharing one database). Each
//! dialect has its own versioned migrations (`migrations/sqlite/`, `migrations/postgres/`),
//! applied by [`open`]. No database type crosses this crate's boundary: callers see records,
//! [`StoreError`] and `time::OffsetDateTime`.
//!
//! The audit trail is a hash chain per gateway instance; [`chain`] defines the canonical JSON and
//! hash, and docs/architecture/audit-chain.md explains what `verify` proves. Appends come in
//! batches, one transaction each, because the gateway group-commits: `benches/audit_append.rs`
//! compares one transaction per event with one per batch.
//!
//! Gateways that share a PostgreSQL database learn of each other's changes (a revoked agent's
//! tokens, an applied policy, a decided approval) through [`Store::subscribe_changes`], fed by
//! LISTEN/NOTIFY.
//!
//! ```
//! # async fn demo() -> Result<(), meshguard_store::StoreError> {
//! use meshguard_store::{NewAgent, StoreLocation};
//!
//! let dir = tempfile::tempdir().map_err(|e| meshguard_store::StoreError::Unavailable(e.to_string()))?;
//! let store = meshguard_store::open(&StoreLocation::in_data_dir(dir.path())).await?;
//! let agent = store
//!     .create_agent(NewAgent { name: "autogpt".into(), trust: "verified".into(), ..NewAgent::default() })
//!     .await?;
//! assert_eq!(store.get_agent("autogpt").await?.id, agent.id);
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

pub mod archive;
pub mod chain;
pub mod chain_walk;
pub mod checkpoint;
mod error;
mod export;
mod location;
#[cfg(feature = "openapi")]
mod openapi;
mod records;
mod sql;
mod store;

use std::sync::Arc;

pub use checkpoint::{AuditCheckpoint, CheckpointKeys};
pub use error::StoreError;
pub use export::{ExportLine, export_audit};
pub use location::{SQLITE_FILE_NAME, StoreLocation};
pub use records::*;
pub use sql::chain_event;
pub use store::{Store, all_agents, all_policies};

/// Opens (creating if needed) the store at `location` and brings its schema up to date.
///
/// Fails with `Unavailable` when the database cannot be reached, and with `Corrupt` when its
/// migration history does not match this build (a database from a newer MeshGuard).
pub async fn open(location: &StoreLocation) -> Result<Arc<dyn Store>, StoreError> {
    let store = sql::SqlStore::open(location).await?;
    Ok(Arc::new(store))
}
