//! MeshGuard's governing MCP proxy: an MCP client launches `meshguard mcp run --server S -- CMD`
//! instead of the server `CMD`, and every `tools/call`, `resources/read` and `prompts/get` is
//! checked by the gateway (`POST /proxy/governance/check`) before the server sees it, then its
//! outcome recorded under the same trace id (docs/integrations/mcp.md, SPEC "MCP tool calls").
//!
//! The parts; all but the relay know nothing of how messages travel, so that another transport
//! can reuse them:
//! - [`config`]: the operator's mapping file, typed and validated at start;
//! - [`naming`]: how a call becomes a check (action, resource, context);
//! - [`gateway`]: check, record and preview over HTTP, where every failure is a refusal;
//! - [`relay`]: the stdio relay and the intercept;
//! - [`http_upstream`]: a streamable-HTTP server as the relay's server side;
//! - [`inventory`]: the tools a server offers, for `meshguard mcp tools`.
//!
//! **Raw JSON-RPC, typed where MeshGuard speaks.** The relay forwards each message as the bytes
//! that arrived and parses only what it governs, with the official SDK's (`rmcp`) types for the
//! request params it reads and the `CallToolResult` it answers with. It does not run an `rmcp`
//! client and server back to back: those would re-encode every message and answer or drop what
//! they do not know, while a proxy must pass unknown methods, notifications, progress,
//! cancellation and the server's own requests (sampling, elicitation) through untouched.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use meshguard_mcp::{McpConfig, ProxyOptions, run_stdio};
//! let options = ProxyOptions {
//!     server: "fs".into(),
//!     config: McpConfig::default(),
//!     gateway_url: "http://localhost:3100".into(),
//!     token: std::env::var("MESHGUARD_TOKEN").ok(),
//!     show_denied: false,
//!     max_message_bytes: meshguard_mcp::relay::DEFAULT_MAX_MESSAGE_BYTES,
//!     approval_wait: meshguard_mcp::relay::DEFAULT_APPROVAL_WAIT,
//!     ca_file: None,
//! };
//! let command = vec!["npx".into(), "@modelcontextprotocol/server-filesystem".into(), "/srv/ws".into()];
//! let exit = run_stdio(options, &command).await?;
//! # Ok(()) }
//! ```

pub mod config;
pub mod gateway;
pub mod http_upstream;
pub mod inventory;
pub mod naming;
pub mod relay;

use std::ffi::OsString;
use std::process::{ExitStatus, Stdio};

pub use config::{ConfigError, McpConfig};
pub use gateway::{ClientError, GatewayClient};
pub use relay::{Governor, RelayEnd};

use crate::naming::Naming;

/// Everything `meshguard mcp run` was given.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// The server's name in actions (`mcp:S/T`).
    pub server: String,
    /// The mapping config.
    pub config: McpConfig,
    /// The gateway's base URL.
    pub gateway_url: String,
    /// The agent token (`MESHGUARD_TOKEN`).
    pub token: Option<String>,
    /// Keep denied tools in `tools/list`.
    pub show_denied: bool,
    /// The longest message accepted from either side.
    pub max_message_bytes: usize,
    /// How long a call that needs approval waits for a human.
    pub approval_wait: std::time::Duration,
    /// A PEM CA to trust for an https:// gateway, besides the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
}

/// Why the proxy could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The server name cannot be part of an action.
    #[error(
        "--server `{0}`: a server name is 1 to 64 of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit"
    )]
    BadServerName(String),
    /// No command to start.
    #[error("no server command: give it after `--`, e.g. `meshguard mcp run --server fs -- npx …`")]
    NoCommand,
    /// The gateway client could not be set up.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The server could not be started or waited for.
    #[error("cannot run the server `{command}`: {source}")]
    Server {
        /// The program.
        command: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The working directory cannot be read (relative paths resolve against it).
    #[error("cannot read the current directory: {0}")]
    Cwd(std::io::Error),
}

/// Starts `command` as the server and relays our stdin/stdout to it until either side ends;
/// returns the server's exit status (the server is killed when the client went away and it did
/// not exit by itself).
pub async fn run_stdio(
    options: ProxyOptions,
    command: &[OsString],
) -> Result<ExitStatus, ProxyError> {
    if !config::is_server_name(&options.server) {
        return Err(ProxyError::BadServerName(options.server));
    }
    let (program, args) = command.split_first().ok_or(ProxyError::NoCommand)?;
    let mut gateway = GatewayClient::new(&options.gateway_url, options.token)?;
    if let Some(ca) = &options.ca_file {
        gateway = gateway.trusting(ca)?;
    }
    let cwd = std::env::current_dir().map_err(ProxyError::Cwd)?;
    let naming = Naming::new(&options.server, options.config.server(&options.server), cwd);
    let server_error = |source| ProxyError::Server {
        command: program.to_string_lossy().into_owned(),
        source,
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(server_error)?;
    let (Some(server_in), Some(server_out)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(server_error(std::io::Error::other("no pipe to the server")));
    };
    let governor = Governor {
        naming,
        gateway,
        show_denied: options.show_denied,
        max_message_bytes: options.max_message_bytes,
        approval_wait: options.approval_wait,
    };
    let (client_in, client_out) = client_pipes();
    let end = governor
        .relay(client_in, client_out, server_in, server_out)
        .await;
    if end == RelayEnd::ClientClosed {
        // Ignored: the child may have exited between the grace period and the kill.
        let _ = child.start_kill();
    }
    child.wait().await.map_err(server_error)
}

/// Our stdin and stdout. When they are pipes (as an MCP client launches its servers), they are
/// read and written in non-blocking mode by the runtime itself: `tokio::io::stdin()` and
/// `stdout()` hand each read and write to a blocking thread, two thread hand-offs per message
/// that show in every tool call's latency. Anything else (a terminal, a file) falls back to them.
fn client_pipes() -> (
    Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
) {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd as _;
        use tokio::net::unix::pipe;
        let stdin = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .and_then(pipe::Receiver::from_owned_fd);
        let stdout = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .and_then(pipe::Sender::from_owned_fd);
        if let (Ok(stdin), Ok(stdout)) = (stdin, stdout) {
            return (Box::new(stdin), Box::new(stdout));
        }
    }
    (Box::new(tokio::io::stdin()), Box::new(tokio::io::stdout()))
}
