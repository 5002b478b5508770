//! MeshGuard gateway: the HTTP service that decides, limits and audits every agent action.
//!
//! # Model
//!
//! Agents ask before they act (`POST /proxy/governance/check`). For each check the gateway
//! authenticates the agent's EdDSA token, reads the agent from the store, lets the policy engine
//! decide (charging rate limits through an exact sliding-window oracle), settles approvals,
//! commits one audit event (group commit), and only then answers. Operators manage agents,
//! policies and the audit trail under `/admin` with the admin token.
//!
//! The pieces, one module each: [`config`] (flag > env > file > default), [`data_dir`] (keys,
//! admin token, instance id), [`token`] (JWTs), [`auth`], [`rate_limit`], [`audit_writer`],
//! [`policies`] and [`policy_files`] (the set in force and `--policies DIR`), [`routes`]
//! (the axum router), [`server`] (start and graceful stop).
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::collections::HashMap;
//! use meshguard_gateway::{Config, ConfigFlags, serve, shutdown_signal};
//!
//! let env: HashMap<String, String> = std::env::vars().collect();
//! let config = Config::load(None, &env, &ConfigFlags::default(), std::env::home_dir().as_deref())?;
//! serve(config, shutdown_signal()).await?;
//! # Ok(()) }
//! ```

pub mod approvals;
pub mod audit_writer;
pub mod auth;
pub mod config;
pub mod data_dir;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod policies;
pub mod policy_files;
pub mod rate_limit;
pub mod routes;
pub mod server;
pub mod state;
pub mod token;
pub mod trace;

pub use config::{AuditDurability, Config, ConfigError, ConfigFlags, Mode};
pub use routes::app;
pub use server::{ServeError, serve, serve_listener, shutdown_signal, validate_only};
pub use state::{AppState, Background, GatewayOptions};
