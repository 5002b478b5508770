//! Every integration test of this crate in one test binary: one link instead of 5,
//! which keeps the build small and fast. Each module is one former test file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed step must fail the test, loudly"
)]

mod admin_changes;
mod agent_keys;
mod audit_concurrency;
mod changes;
mod checkpoints;
mod common;
mod compact_rows;
mod follow;
mod numbering;
mod open;
mod paging;
mod pending_approvals;
mod purge;
mod rollups;
mod story;
