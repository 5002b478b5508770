//! Every integration test of this crate in one test binary: one link instead of 13,
//! which keeps the build small and fast. Each module is one former test file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed step must fail the test, loudly"
)]

mod admin;
mod alerts;
mod approvals;
mod attacks;
mod auth_cache;
mod authzen;
mod check;
mod common;
mod conformance;
mod console;
mod forward_auth;
mod group_commit;
mod mcp_metrics;
mod openapi;
mod operators;
mod outage;
mod paging;
mod policy_files;
mod preview;
mod proxy;
mod rate_limits;
mod redis_limits;
mod schedules;
mod serve;
mod shadow;
