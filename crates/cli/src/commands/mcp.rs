//! `meshguard mcp run`: the governing stdio proxy of `meshguard-mcp`, started as an MCP client
//! would start the server it wraps. Stdout belongs to the protocol: logs go to stderr.
//! `meshguard mcp tools`: what the policies let an agent do with a server's tools.

use std::process::ExitCode;

use meshguard_mcp::naming::Naming;
use meshguard_mcp::{McpConfig, ProxyOptions};
use reqwest::Method;
use serde_json::{Value, json};
use tracing_subscriber::EnvFilter;

use crate::cli::{McpCommand, McpRunArgs, McpToolsArgs};
use crate::commands::Context;
use crate::error::CliError;
use crate::output::field;

/// The environment variable that holds the agent token the proxy checks with.
pub const TOKEN_ENV: &str = "MESHGUARD_TOKEN";

/// Runs an `mcp` subcommand.
pub async fn run(ctx: &Context, command: McpCommand) -> anyhow::Result<ExitCode> {
    match command {
        McpCommand::Run(args) => run_proxy(ctx, args).await,
        McpCommand::Tools(args) => tools(ctx, args).await.map(|()| ExitCode::SUCCESS),
    }
}

fn load_config(file: Option<&std::path::Path>) -> Result<McpConfig, CliError> {
    match file {
        Some(file) => McpConfig::load(file).map_err(|e| CliError::Usage(e.to_string())),
        None => Ok(McpConfig::default()),
    }
}

/// Lists the server's tools and asks `POST /admin/decide` about each, named as `mcp run` names
/// a call of it with no arguments (the same question `tools/list` filtering asks).
async fn tools(ctx: &Context, args: McpToolsArgs) -> anyhow::Result<()> {
    if !meshguard_mcp::config::is_server_name(&args.server) {
        return Err(CliError::Usage(format!(
            "server `{}`: a server name is 1 to 64 of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit",
            args.server
        ))
        .into());
    }
    let config = load_config(args.config.as_deref())?;
    let client = ctx.client()?;
    let cwd = std::env::current_dir()?;
    let naming = Naming::new(&args.server, config.server(&args.server), cwd);
    let listed = meshguard_mcp::inventory::list_tools(&args.command).await?;
    let mut answers = Vec::with_capacity(listed.len());
    for tool in &listed {
        let call = naming.tool_listing(&tool.name);
        let body = json!({
            "agent": args.agent,
            "action": call.action,
            "resource": call.resource,
            "context": call.context,
        });
        let answer = client
            .send_json(Method::POST, &["admin", "decide"], &[], Some(&body))
            .await?;
        let pick = |key: &str| answer.get(key).cloned().unwrap_or(Value::Null);
        answers.push(json!({
            "tool": tool.name,
            "action": call.action,
            "resource": call.resource,
            "decision": pick("decision"),
            "code": pick("code"),
            "reason": pick("reason"),
            "policy": pick("policy"),
            "rule": pick("rule"),
        }));
    }
    if ctx.out.json {
        ctx.out.print_json(&json!({
            "server": args.server,
            "agent": args.agent,
            "tools": answers,
        }));
        return Ok(());
    }
    if answers.is_empty() {
        outln!("the server lists no tools");
        return Ok(());
    }
    let rows = answers
        .iter()
        .map(|a| {
            vec![
                field(a, "tool"),
                field(a, "action"),
                ctx.out.decision(&field(a, "decision")),
                field(a, "code"),
                field(a, "policy"),
                field(a, "rule"),
            ]
        })
        .collect();
    ctx.out.print_table(
        &["tool", "action", "decision", "code", "policy", "rule"],
        rows,
    );
    Ok(())
}

async fn run_proxy(ctx: &Context, args: McpRunArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let config = load_config(args.config.as_deref())?;
    let options = ProxyOptions {
        server: args.server,
        config,
        gateway_url: ctx.url.clone(),
        token: std::env::var(TOKEN_ENV).ok(),
        show_denied: args.show_denied,
        max_message_bytes: args.max_message_bytes,
        approval_wait: std::time::Duration::from_secs(args.approval_wait),
        ca_file: ctx.ca_file.clone(),
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

#[cfg(test)]
mod tests {
    use meshguard_mcp::naming::context_key;

    /// The proxy and the gateway are separate crates that meet over HTTP: the context keys the
    /// proxy sends must be the ones the gateway binds approvals to and counts MCP calls by.
    #[test]
    fn the_proxy_sends_the_context_keys_the_gateway_reads() {
        use meshguard_gateway::metrics::McpCall;
        assert_eq!(context_key::SERVER, McpCall::SERVER_KEY);
        assert_eq!(context_key::TOOL, McpCall::TOOL_KEY);
        assert_eq!(
            context_key::ARGUMENTS,
            meshguard_store::BoundArguments::CONTEXT_KEY
        );
    }
}
