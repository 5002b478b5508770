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
//! admin token, instance id), [`token`] (JWTs), [`auth`] with [`auth_cache`], [`rate_limit`] (in
//! memory, or global in Redis: [`rate_limit_redis`]), [`audit_writer`], [`policies`] and
//! [`policy_files`] (the set in force and `--policies DIR`), [`routes`] (the axum router),
//! [`server`] (start and graceful stop) with [`connections`] (the connection cap and timeouts).
//!
//! # Example
//!
//! A gateway in-process over a temp-dir SQLite store, asked one question through the router
//! (this is how most of the crate's tests run; `meshguard serve` calls [`serve`] instead):
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! use axum::body::Body;
//! use axum::http::Request;
//! use meshguard_gateway::data_dir::DataDir;
//! use meshguard_gateway::{AppState, GatewayOptions, app};
//! use meshguard_store::StoreLocation;
//! use tower::ServiceExt;
//!
//! let dir = tempfile::tempdir()?;
//! let keys_and_ids = DataDir::open(dir.path(), None)?;
//! let store = meshguard_store::open(&StoreLocation::in_data_dir(dir.path())).await?;
//! let (state, _background) =
//!     AppState::new(store, &keys_and_ids, GatewayOptions::default()).await?;
//!
//! // No token: refused before anything else happens.
//! let request = Request::post("/proxy/governance/check").body(Body::from(r#"{"action":"read:x"}"#))?;
//! let response = app(state).oneshot(request).await?;
//! assert_eq!(response.status(), 401);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```

pub mod alerts;
pub mod approvals;
pub mod audit_log;
pub mod audit_peers;
pub mod audit_writer;
pub mod auth;
pub mod auth_cache;
pub mod checkpoints;
pub mod config;
pub mod connections;
pub mod data_dir;
pub mod error;
pub mod extract;
pub mod history;
pub mod mcp_host;
pub mod metrics;
pub mod openapi;
pub mod policies;
pub mod policy_files;
pub mod proxy;
pub mod rate_limit;
pub mod rate_limit_redis;
pub mod refusals;
pub mod routes;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod trace;
pub mod wire;

pub use config::{
    AuditDurability, Config, ConfigError, ConfigFlags, ConfigKey, Mode, ServerLimits,
};
pub use routes::app;
pub use server::{ServeError, serve, serve_listener, shutdown_signal, validate_only};
pub use state::{AppState, Background, GatewayOptions};
