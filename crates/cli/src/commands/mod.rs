//! One module per command group; each turns parsed arguments into admin API calls and output.

pub mod agent;
pub mod alerts;
pub mod approval;
pub mod audit;
pub mod audit_view;
pub mod corpus;
pub mod doctor;
pub mod mcp;
pub mod permissions;
pub mod policy;
pub mod policy_replay;
pub mod policy_test;
pub mod serve;
pub mod shell;

use std::path::PathBuf;

use crate::cli::{DEFAULT_URL, GlobalOptions};
use crate::client::{AdminClient, read_admin_token_file, resolve_admin_token};
use crate::error::CliError;
use crate::output::Output;

/// Global options resolved once: where the gateway is, where its data dir is, how to print.
#[derive(Debug)]
pub struct Context {
    /// Gateway base URL.
    pub url: String,
    /// The gateway's data dir (where the admin token is read from when none is given).
    pub data_dir: PathBuf,
    /// `--data-dir` / `MESHGUARD_HOME` as given, for `serve`'s configuration layers.
    pub data_dir_flag: Option<PathBuf>,
    admin_token: Option<String>,
    admin_token_file: Option<PathBuf>,
    /// Output mode.
    pub out: Output,
}

impl Context {
    /// Applies the documented fallbacks: `--url` > `MESHGUARD_URL` > `MESHGUARD_GATEWAY_URL` >
    /// default; `--data-dir` > `MESHGUARD_HOME` > `~/.meshguard`.
    pub fn resolve(global: GlobalOptions) -> Self {
        let url = global
            .url
            .or_else(|| env_nonempty("MESHGUARD_URL"))
            .or_else(|| env_nonempty("MESHGUARD_GATEWAY_URL"))
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let data_dir = global.data_dir.clone().unwrap_or_else(default_data_dir);
        Context {
            url,
            data_dir,
            data_dir_flag: global.data_dir,
            admin_token: global.admin_token,
            admin_token_file: global.admin_token_file,
            out: Output::detect(global.json),
        }
    }

    /// The admin token given by `--admin-token` / `MESHGUARD_ADMIN_TOKEN` or read from
    /// `--admin-token-file` / `MESHGUARD_ADMIN_TOKEN_FILE`, if any (for `serve`'s configuration
    /// layers and the client). Both at once is a usage error: which one wins would be a guess.
    pub fn admin_token_given(&self) -> Result<Option<String>, CliError> {
        match (&self.admin_token, &self.admin_token_file) {
            (Some(_), Some(_)) => Err(CliError::Usage(
                "give the admin token either by --admin-token (MESHGUARD_ADMIN_TOKEN) or by --admin-token-file (MESHGUARD_ADMIN_TOKEN_FILE), not both".into(),
            )),
            (Some(token), None) => Ok(Some(token.clone())),
            (None, Some(path)) => read_admin_token_file(path).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// A client for the admin API; fails with exit code 3 when no admin token can be found.
    pub fn client(&self) -> anyhow::Result<AdminClient> {
        let token = resolve_admin_token(self.admin_token_given()?.as_deref(), &self.data_dir)?;
        AdminClient::new(&self.url, token)
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `~/.meshguard`, or `./.meshguard` when the home directory is unknown.
pub fn default_data_dir() -> PathBuf {
    std::env::home_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".meshguard")
}
