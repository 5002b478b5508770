//! `meshguard mcp run`: the governing stdio proxy of `meshguard-mcp`, started as an MCP client
//! would start the server it wraps. Stdout belongs to the protocol: logs go to stderr.

use std::process::ExitCode;

use meshguard_mcp::{McpConfig, ProxyOptions};
use tracing_subscriber::EnvFilter;

use crate::cli::{McpCommand, McpRunArgs};
use crate::commands::Context;
use crate::error::CliError;

/// The environment variable that holds the agent token the proxy checks with.
pub const TOKEN_ENV: &str = "MESHGUARD_TOKEN";

/// Runs an `mcp` subcommand.
pub async fn run(ctx: &Context, command: McpCommand) -> anyhow::Result<ExitCode> {
    match command {
        McpCommand::Run(args) => run_proxy(ctx, args).await,
    }
}

async fn run_proxy(ctx: &Context, args: McpRunArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let config = match &args.config {
        Some(file) => McpConfig::load(file).map_err(|e| CliError::Usage(e.to_string()))?,
        None => McpConfig::default(),
    };
    let options = ProxyOptions {
        server: args.server,
        config,
        gateway_url: ctx.url.clone(),
        token: std::env::var(TOKEN_ENV).ok(),
        show_denied: args.show_denied,
        max_message_bytes: args.max_message_bytes,
        approval_wait: std::time::Duration::from_secs(args.approval_wait),
    };
    let status = meshguard_mcp::run_stdio(options, &args.command)
        .await
        .map_err(|e| match e {
            meshguard_mcp::ProxyError::Client(_)
            | meshguard_mcp::ProxyError::BadServerName(_)
            | meshguard_mcp::ProxyError::NoCommand => {
                anyhow::Error::new(CliError::Usage(e.to_string()))
            }
            other => anyhow::Error::new(other),
        })?;
    // The proxy exits as the server did; a server killed by a signal is a failure.
    let code = status
        .code()
        .and_then(|c| u8::try_from(c).ok())
        .unwrap_or(1);
    Ok(ExitCode::from(code))
}

/// Warnings (a call not forwarded, an outcome not recorded) on stderr, which MCP clients show in
/// their server log; `RUST_LOG` picks another level.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    // Already set up only in tests that run several commands in one process.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
}
