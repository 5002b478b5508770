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

/// Prints `error: …` as one line on stderr and picks the exit code from the [`CliError`] inside,
/// if any.
pub fn report(err: &anyhow::Error) -> ExitCode {
    let code = err
        .downcast_ref::<CliError>()
        .map_or(1, CliError::exit_code);
    eprintln!("error: {}", one_line(err));
    ExitCode::from(code)
}

/// The error and its causes joined by `: ` on one line, each said once (many errors repeat their
/// source in their own message).
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain().map(ToString::to_string) {
        if line.contains(&cause) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&cause);
    }
    // Messages quote gateway answers, which may quote agent input.
    crate::output::escape(&line.replace('\n', " ")).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_joined_once_on_one_line() {
        let io = std::io::Error::other("Address already in use");
        let err = anyhow::Error::new(io)
            .context("cannot listen on 127.0.0.1:1: Address already in use")
            .context("the gateway stopped");
        assert_eq!(
            one_line(&err),
            "the gateway stopped: cannot listen on 127.0.0.1:1: Address already in use"
        );
        let err = anyhow::anyhow!("first line\nsecond line");
        assert_eq!(one_line(&err), "first line second line");
    }

    #[test]
    fn exit_codes_survive_context() {
        let err = anyhow::Error::new(CliError::Unreachable {
            url: "http://x".into(),
        })
        .context("applying `p`");
        assert_eq!(
            err.downcast_ref::<CliError>().map(CliError::exit_code),
            Some(5)
        );
        assert_eq!(
            one_line(&err),
            "applying `p`: cannot reach the gateway at http://x: is `meshguard serve` running?"
        );
    }
}
