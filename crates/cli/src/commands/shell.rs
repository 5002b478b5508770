//! `meshguard completions SHELL` and `meshguard man`: generated from the same clap definition
//! the binary parses, so they cannot drift from the commands. `meshguard openapi`: the HTTP
//! API's document, generated from the gateway's router the same way.

use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::cli::Cli;

/// Prints the completion script of `shell` on stdout. It is rendered first, then written like
/// every other output: clap_complete panics on a failed write, and a reader that stops early
/// (`meshguard completions bash | head`) must end the command quietly, not crash it.
pub fn completions(shell: clap_complete::Shell) {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "meshguard", &mut script);
    crate::output::write_stdout(format_args!("{}", String::from_utf8_lossy(&script)));
}

/// Prints the OpenAPI document `GET /openapi.json` serves, byte for byte, so that
/// `docs/openapi.json` can be regenerated without a running gateway.
pub fn openapi() -> anyhow::Result<()> {
    let document = meshguard_gateway::openapi::document_json()
        .map_err(|e| anyhow::anyhow!("cannot write the OpenAPI document: {e}"))?;
    crate::output::write_stdout(format_args!("{document}"));
    Ok(())
}

/// Writes `meshguard.1` and one page per command into `dir`, or prints `meshguard.1`.
pub fn man(dir: Option<&Path>) -> anyhow::Result<()> {
    let command = Cli::command();
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create `{}`", dir.display()))?;
            clap_mangen::generate_to(command, dir).with_context(|| {
                format!("cannot write the manual pages into `{}`", dir.display())
            })?;
            outln!("manual pages written to {}", dir.display());
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .context("cannot render the manual page")?;
            outln!("{}", String::from_utf8_lossy(&page));
        }
    }
    Ok(())
}
