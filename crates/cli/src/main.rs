//! The `meshguard` binary: the gateway (`serve`) and the admin commands, which talk to a running
//! gateway over its admin API (SPEC section 4). See docs/cli.md for every command and exit code.

#[macro_use]
mod output;

mod cli;
mod client;
mod commands;
mod error;
mod policy_files;
mod yaml;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command, PolicyCommand};
use crate::commands::Context;

/// mimalloc rather than glibc's malloc: the check path allocates per request (the body, the
/// event, the answer) from several threads, where glibc's arenas cost about 15% of the CPU under
/// load (docs/benchmarks.md, "Gateway load").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // clap prints usage errors itself and exits 2 (0 for --help and --version).
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return error::report(&anyhow::Error::new(e).context("cannot start the async runtime"));
        }
    };
    let is_policy_test = matches!(cli.command, Command::Policy(PolicyCommand::Test(_)));
    let is_mcp = matches!(cli.command, Command::Mcp(_));
    let ctx = Context::resolve(cli.global);
    let result = runtime.block_on(run(&ctx, cli.command));
    if is_mcp {
        // The relay's stdin reader sits in a blocking read that only a new line would end: the
        // proxy must exit with the server without waiting for the client.
        runtime.shutdown_background();
    }
    match result {
        Ok(code) => code,
        // `policy test` has its own scheme: 0 allowed, 1 denied, 2 any error.
        Err(e) if is_policy_test => {
            error::report(&e);
            ExitCode::from(2)
        }
        Err(e) => error::report(&e),
    }
}

async fn run(ctx: &Context, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => commands::serve::run(ctx, args).await,
        Command::Agent(command) => commands::agent::run(ctx, command)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Policy(command) => commands::policy::run(ctx, command).await,
        Command::Audit(command) => commands::audit::run(ctx, command).await,
        Command::Approval(command) => commands::approval::run(ctx, command)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Operator(command) => commands::operator::run(ctx, command)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Alerts(command) => commands::alerts::run(ctx, command)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Mcp(command) => commands::mcp::run(ctx, command).await,
        Command::Completions { shell } => {
            commands::shell::completions(shell);
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => commands::shell::man(dir.as_deref()).map(|()| ExitCode::SUCCESS),
        Command::Openapi => commands::shell::openapi().map(|()| ExitCode::SUCCESS),
        Command::Doctor(args) => commands::doctor::run(ctx, args).await,
    }
}
