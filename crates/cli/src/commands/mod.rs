//! One module per command group; each turns parsed arguments into admin API calls and output.

pub mod agent;
pub mod alerts;
pub mod approval;
pub mod audit;
pub mod audit_offline;
pub mod audit_view;
pub mod corpus;
pub mod doctor;
pub mod mcp;
pub mod operator;
pub mod permissions;
pub mod policy;
pub mod policy_replay;
pub mod policy_test;
pub mod serve;
pub mod shell;

use std::collections::HashMap;
use std::path::PathBuf;

use meshguard_gateway::ConfigKey;

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
    /// `--data-dir` as typed, for the flag layer of `serve`'s configuration (whose environment
    /// layer reads the variables itself).
    pub data_dir_flag: Option<PathBuf>,
    /// `--admin-token` as typed.
    admin_token_flag: Option<String>,
    /// `MESHGUARD_ADMIN_TOKEN` ([`ConfigKey::AdminToken`]).
    admin_token_env: Option<String>,
    admin_token_file: Option<PathBuf>,
    /// `--ca-file` / `MESHGUARD_CA_FILE`: a CA to trust for an https:// gateway.
    pub ca_file: Option<PathBuf>,
    /// Output mode.
    pub out: Output,
}

impl Context {
    /// Applies the documented fallbacks: `--url` > `MESHGUARD_URL` > `MESHGUARD_GATEWAY_URL` >
    /// default; `--data-dir` > the `data_dir` key's variables > `~/.meshguard`; `--admin-token` >
    /// `MESHGUARD_ADMIN_TOKEN`.
    pub fn resolve(global: GlobalOptions) -> Self {
        let url = global
            .url
            .or_else(|| env_nonempty("MESHGUARD_URL"))
            .or_else(|| env_nonempty("MESHGUARD_GATEWAY_URL"))
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        // The same variables, in the same order, as `serve` reads for its data dir.
        let env: HashMap<String, String> = std::env::vars().collect();
        let data_dir = global
            .data_dir
            .clone()
            .or_else(|| {
                ConfigKey::DataDir
                    .env_value(&env)
                    .map(|(_, dir)| dir)
                    .filter(|dir| !dir.trim().is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(default_data_dir);
        Context {
            url,
            data_dir,
            data_dir_flag: global.data_dir,
            admin_token_flag: global.admin_token,
            // Only the MeshGuard name: a generic `ADMIN_TOKEN` meant for another program must
            // not be sent to the gateway at `url`.
            admin_token_env: env_nonempty(&ConfigKey::AdminToken.env()),
            admin_token_file: global.admin_token_file,
            ca_file: global.ca_file,
            out: Output::detect(global.json),
        }
    }

    /// The admin token given by `--admin-token` or its variable, or read from
    /// `--admin-token-file` / `MESHGUARD_ADMIN_TOKEN_FILE`, if any (for the client).
    pub fn admin_token_given(&self) -> Result<Option<String>, CliError> {
        let token = self
            .admin_token_flag
            .as_ref()
            .or(self.admin_token_env.as_ref());
        self.one_admin_token(token)
    }

    /// The admin token given on the command line (`--admin-token`, `--admin-token-file`), if any:
    /// the flag layer of `serve`'s configuration, whose environment layer reads the variable
    /// itself so that the variable stays below a flag and is named as itself in errors.
    pub fn admin_token_flag(&self) -> Result<Option<String>, CliError> {
        if self.admin_token_env.is_some() && self.admin_token_file.is_some() {
            return Err(two_admin_tokens());
        }
        self.one_admin_token(self.admin_token_flag.as_ref())
    }

    /// `token`, or the contents of the token file. Both at once is a usage error: which one wins
    /// would be a guess.
    fn one_admin_token(&self, token: Option<&String>) -> Result<Option<String>, CliError> {
        match (token, &self.admin_token_file) {
            (Some(_), Some(_)) => Err(two_admin_tokens()),
            (Some(token), None) => Ok(Some(token.clone())),
            (None, Some(path)) => read_admin_token_file(path).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// A client for the admin API; fails with exit code 3 when no admin token can be found.
    pub fn client(&self) -> anyhow::Result<AdminClient> {
        let token = resolve_admin_token(self.admin_token_given()?.as_deref(), &self.data_dir)?;
        AdminClient::new(&self.url, token, self.ca_file.as_deref())
    }
}

fn two_admin_tokens() -> CliError {
    CliError::Usage(format!(
        "give the admin token either by --admin-token ({}) or by --admin-token-file \
         (MESHGUARD_ADMIN_TOKEN_FILE), not both",
        ConfigKey::AdminToken.env()
    ))
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
