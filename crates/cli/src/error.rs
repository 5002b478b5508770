//! Failures the CLI reports, each mapped to the exit code that scripts branch on.

use std::process::ExitCode;

/// Why a command failed, in the terms a user acts on.
///
/// Anything else (I/O, bad files) travels as a plain `anyhow::Error` and exits 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The gateway did not answer at all: nothing was changed.
    #[error("cannot reach the gateway at {url}: is `meshguard serve` running?")]
    Unreachable {
        /// The base URL that was tried.
        url: String,
    },
    /// The gateway answered 401/403 to the admin token, or no token could be found.
    #[error("{0}")]
    Auth(String),
    /// The gateway answered with an error of its own (4xx/5xx other than auth).
    #[error("{message}")]
    Api {
        /// HTTP status of the answer.
        status: u16,
        /// The gateway's message, or the status text.
        message: String,
    },
    /// The arguments make no sense together (caught after clap's own checks).
    #[error("{0}")]
    Usage(String),
    /// The details were already printed (one line per problem); only the summary remains.
    #[error("{summary}")]
    Reported {
        /// The closing line, e.g. "2 policy files are invalid; nothing was applied".
        summary: String,
        /// The exit code.
        code: u8,
    },
}

impl CliError {
    /// The process exit code documented in docs/cli.md.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Unreachable { .. } => 5,
            CliError::Auth(_) => 3,
            CliError::Api { .. } => 1,
            CliError::Usage(_) => 2,
            CliError::Reported { code, .. } => *code,
        }
    }
}

/// Prints `error: …` as one line on stderr (the error and its causes, joined by `: `) and picks
/// the exit code from the [`CliError`] inside, if any.
pub fn report(err: &anyhow::Error) -> ExitCode {
    let code = err
        .downcast_ref::<CliError>()
        .map_or(1, CliError::exit_code);
    let line = err
        .chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ");
    eprintln!("error: {}", line.replace('\n', " "));
    ExitCode::from(code)
}
