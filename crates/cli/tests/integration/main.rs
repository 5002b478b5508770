//! Every integration test of this crate in one test binary: one link instead of 10,
//! which keeps the build small and fast. Each module is one former test file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed step must fail the test, loudly"
)]

mod admin_commands;
mod alerts;
mod approvals;
mod attacks_cli;
mod audit_checkpoints;
mod autogpt_walkthrough;
mod cli_errors;
mod crash_recovery;
mod docs_examples;
mod mcp_proxy;
mod multi_gateway;
mod openapi_responses;
mod operator_tools;
mod otel_traces;
mod paging;
mod policy_replay;
mod policy_test_files;
mod readme_quickstart;
mod support;
mod tls;
