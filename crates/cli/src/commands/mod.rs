//! One module per command group; each turns parsed arguments into admin API calls and output.

pub mod agent;
pub mod alerts;
pub mod approval;
pub mod audit;
pub mod audit_view;
pub mod corpus;
pub mod permissions;
pub mod policy;
pub mod policy_test;
pub mod serve;

use std::path::PathBuf;

use crate::cli::{DEFAULT_URL, GlobalOptions};
use crate::client::{AdminClient, resolve_admin_token};
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
            out: Output::detect(global.json),
        }
    }

    /// `--admin-token` / `MESHGUARD_ADMIN_TOKEN` as given, for `serve`'s configuration layers.
    pub fn admin_token_flag(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    /// A client for the admin API; fails with exit code 3 when no admin token can be found.
    pub fn client(&self) -> anyhow::Result<AdminClient> {
        let token = resolve_admin_token(self.admin_token.as_deref(), &self.data_dir)?;
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
