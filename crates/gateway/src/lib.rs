//! MeshGuard gateway: the HTTP service that decides, limits, audits and proxies agent actions.

pub mod config;
pub mod data_dir;
pub mod error;
pub mod extract;
pub mod rate_limit;
pub mod token;
