//! `meshguard serve`: builds the gateway configuration (flag > environment > file > default) and
//! runs the gateway until SIGINT or SIGTERM.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use meshguard_gateway::{Config, ConfigFlags, Mode, ServeError};
use tracing_subscriber::EnvFilter;

use crate::cli::{ModeArg, ServeArgs};
use crate::commands::Context;
use crate::error::CliError;

/// Runs the gateway in this process.
pub async fn run(ctx: &Context, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(ctx, &args)?;
    if args.validate_only {
        return validate_only(&config);
    }
    init_logging()?;
    meshguard_gateway::serve(config, meshguard_gateway::shutdown_signal())
        .await
        .context("the gateway stopped with an error")?;
    Ok(ExitCode::SUCCESS)
}

/// The configuration from every layer. The environment is read here, once, and handed to the
/// gateway's pure loader.
fn load_config(ctx: &Context, args: &ServeArgs) -> anyhow::Result<Config> {
    let file_text = match &args.config {
        Some(path) => Some((
            path.display().to_string(),
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the config file `{}`", path.display()))?,
        )),
        None => None,
    };
    let env: HashMap<String, String> = std::env::vars().collect();
    let flags = ConfigFlags {
        listen: args.addr.clone(),
        mode: args.mode.map(mode),
        data_dir: ctx.data_dir_flag.clone(),
        policies_dir: args.policies.clone(),
        database_url: args.database_url.clone(),
        redis_url: args.redis_url.clone(),
        admin_token: ctx.admin_token_flag()?,
        header_timeout: args.header_timeout.clone(),
        body_timeout: args.body_timeout.clone(),
        idle_timeout: args.idle_timeout.clone(),
        max_connections: args.max_connections.clone(),
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
    };
    let home = std::env::home_dir();
    Config::load(
        file_text.as_ref().map(|(o, t)| (o.as_str(), t.as_str())),
        &env,
        &flags,
        home.as_deref(),
    )
    .map_err(|e| {
        CliError::Reported {
            summary: format!("invalid configuration: {e}"),
            code: 1,
        }
        .into()
    })
}

fn mode(mode: ModeArg) -> Mode {
    match mode {
        ModeArg::Enforce => Mode::Enforce,
        ModeArg::Audit => Mode::Audit,
        ModeArg::Bypass => Mode::Bypass,
    }
}

/// `--validate-only`: the configuration, the store URL and every policy file are checked; nothing
/// is created or started.
fn validate_only(config: &Config) -> anyhow::Result<ExitCode> {
    match meshguard_gateway::validate_only(config) {
        Ok(report) => {
            for line in report {
                outln!("{line}");
            }
            outln!("configuration OK");
            Ok(ExitCode::SUCCESS)
        }
        Err(ServeError::InvalidPolicies { count, errors }) => {
            for error in errors.lines() {
                eprintln!("error: {error}");
            }
            Err(CliError::Reported {
                summary: format!("{count} policy file(s) do not validate"),
                code: 1,
            }
            .into())
        }
        Err(e) => Err(CliError::Reported {
            summary: format!("invalid configuration: {e}"),
            code: 1,
        }
        .into()),
    }
}

/// Logs to stderr; `RUST_LOG` picks the level (default `info`), `MESHGUARD_LOG_FORMAT=json` gives
/// one JSON object per line for log shippers.
fn init_logging() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: log files and journald get plain text.
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let result = if std::env::var("MESHGUARD_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}
