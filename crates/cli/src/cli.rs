//! The command tree. Every flag and its environment fallback is declared here, so `--help` and
//! docs/cli.md are generated from one place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The gateway URL used when neither `--url` nor an environment variable names one.
pub const DEFAULT_URL: &str = "http://localhost:3100";

/// `meshguard`: run the gateway, or administer a running one over its admin API.
#[derive(Debug, Parser)]
#[command(name = "meshguard", version, about, propagate_version = true)]
pub struct Cli {
    /// Options shared by every command.
    #[command(flatten)]
    pub global: GlobalOptions,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the gateway is and how to prove we may administer it.
#[derive(Debug, Clone, Args)]
pub struct GlobalOptions {
    /// Gateway URL [env: MESHGUARD_URL, else MESHGUARD_GATEWAY_URL] [default: http://localhost:3100]
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// Admin token [env: MESHGUARD_ADMIN_TOKEN] [default: the contents of
    /// <data-dir>/admin.token]. Given as a flag it is visible to every local user in `ps` and kept
    /// in shell history: prefer --admin-token-file or the environment variable
    // No clap `env`: the variable is a configuration key's, read by `Context` and by `serve`'s
    // environment layer, so that it stays below a flag and is named as itself in errors.
    #[arg(long, global = true, value_name = "TOKEN")]
    pub admin_token: Option<String>,
    /// File holding the admin token (a trailing newline is ignored); keeps the token out of `ps`
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "MESHGUARD_ADMIN_TOKEN_FILE",
        hide_env_values = true
    )]
    pub admin_token_file: Option<PathBuf>,
    /// Data directory of the gateway (keys, admin token, SQLite database) [env:
    /// MESHGUARD_DATA_DIR, else MESHGUARD_HOME] [default: ~/.meshguard]
    // No clap `env`, as for `--admin-token`.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// PEM file of the CA (or self-signed certificate) that signed an https:// gateway's
    /// certificate, trusted besides the system's roots
    #[arg(long, global = true, value_name = "FILE", env = "MESHGUARD_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Create, inspect, revoke and restore agents and their tokens.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Apply, inspect, validate and test policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Read, follow, summarise, verify and export the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// List pending approvals and approve or deny them.
    #[command(subcommand)]
    Approval(ApprovalCommand),
    /// Check the gateway's alert receivers.
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// Create, list and delete the web console's operators.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Govern an MCP server: every tool call is checked by the gateway first.
    #[command(subcommand)]
    Mcp(McpCommand),
    /// Print a completion script for a shell (e.g. `meshguard completions bash >
    /// /etc/bash_completion.d/meshguard`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (`meshguard.1` and one per command) into a directory, or print
    /// `meshguard.1` without one.
    Man {
        /// Where to write the pages (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print the OpenAPI 3.1 document of the gateway's HTTP API (what `GET /openapi.json`
    /// serves), without a gateway: `meshguard openapi > docs/openapi.json`.
    Openapi,
    /// Check this machine's MeshGuard setup (data dir permissions, keys, store, Redis, policy
    /// files, alert receivers, the gateway and its clock) and say what to fix.
    Doctor(DoctorArgs),
}

/// `meshguard doctor [--config FILE] [--database-url URL] [--redis-url URL] [--policies DIR]`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The gateway's config file, read as `serve` reads it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The store the gateway uses [default: SQLite in the data dir].
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Redis for global rate limits, if the gateway uses it.
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// The gateway's policy directory.
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
}

/// `meshguard mcp …`.
#[derive(Debug, Subcommand)]
pub enum McpCommand {
    /// Start an MCP server (stdio) as a child and relay its JSON-RPC, checking every
    /// `tools/call`, `resources/read` and `prompts/get` with the agent token in MESHGUARD_TOKEN.
    /// An MCP client launches this instead of the server.
    Run(McpRunArgs),
    /// Start an MCP server (stdio), list its tools, and show for an agent which of them the
    /// policies allow, deny or send for approval (admin; asks `POST /admin/decide` per tool).
    Tools(McpToolsArgs),
}

/// `meshguard mcp tools S --agent A [--config FILE] -- COMMAND ARGS…`.
#[derive(Debug, Args)]
pub struct McpToolsArgs {
    /// The server's name in actions, as `mcp run --server` gives it.
    #[arg(value_name = "S")]
    pub server: String,
    /// The agent (name or id) whose policies decide.
    #[arg(long, value_name = "AGENT")]
    pub agent: String,
    /// TOML file mapping tools to actions and resources, as for `mcp run`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The server's command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<std::ffi::OsString>,
}

/// `meshguard mcp run --server S [--config FILE] -- COMMAND ARGS…`.
#[derive(Debug, Args)]
pub struct McpRunArgs {
    /// The server's name in actions: a call of tool T is checked as `mcp:S/T`.
    #[arg(long, value_name = "S")]
    pub server: String,
    /// TOML file mapping tools to actions and resources (docs/integrations/mcp.md).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Keep in `tools/list` the tools the policies deny outright.
    #[arg(long)]
    pub show_denied: bool,
    /// The longest JSON-RPC message accepted from either side.
    #[arg(long, value_name = "BYTES", default_value_t = meshguard_mcp::relay::DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// How long a call that needs approval waits for a human before the model is told to ask
    /// again (0: answer at once).
    #[arg(long, value_name = "SECONDS", default_value_t = meshguard_mcp::relay::DEFAULT_APPROVAL_WAIT.as_secs())]
    pub approval_wait: u64,
    /// The server's command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<std::ffi::OsString>,
}

/// `meshguard alerts …`.
#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Send a test alert through every configured receiver and report each outcome.
    Test {
        /// The trigger the test alert imitates.
        #[arg(long, value_enum, default_value_t = TriggerArg::Deny)]
        trigger: TriggerArg,
    },
}

/// An alert trigger (SPEC 8).
#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum TriggerArg {
    /// A denied check.
    Deny,
    /// A rate-limited check.
    RateLimit,
    /// A check waiting for a human.
    ApprovalRequired,
    /// A revoked agent.
    AgentRevoked,
    /// A check the gateway could not decide.
    Error,
}

impl TriggerArg {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerArg::Deny => "deny",
            TriggerArg::RateLimit => "rate_limit",
            TriggerArg::ApprovalRequired => "approval_required",
            TriggerArg::AgentRevoked => "agent_revoked",
            TriggerArg::Error => "error",
        }
    }
}

/// Enforcement mode of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Deny what the policies deny.
    Enforce,
    /// Decide, charge and record everything, but allow every request.
    Audit,
    /// Allow everything without deciding (development only).
    Bypass,
}

/// `meshguard serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:3100]
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<String>,
    /// Enforcement mode [default: enforce]
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Directory of policy files, loaded at start and reloaded on change
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// Gateway configuration file (TOML)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Store URL (`sqlite://…` or `postgres://…`) [default: SQLite in the data dir]
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Redis URL for rate limits shared between gateways
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Time a client has to send a whole request head, also the longest wait for the next
    /// request on a kept-alive connection (`500ms`, `10s`) [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub header_timeout: Option<String>,
    /// Time a client has to send a whole request body once its head is in [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub body_timeout: Option<String>,
    /// A connection on which no byte moved for this long is closed once its responses are done
    /// [default: 75s]
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Open client connections at most; more wait in the kernel's backlog [default: 4096]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<String>,
    /// Serve HTTPS with this PEM certificate chain (reloaded when it changes, or on SIGHUP)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Check the configuration and exit without starting.
    #[arg(long)]
    pub validate_only: bool,
}

/// `meshguard agent …`.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Create an agent and print its token (shown only once).
    Create(AgentCreateArgs),
    /// List agents.
    List,
    /// Show one agent.
    Show(AgentRef),
    /// Issue a new token for an agent.
    Token {
        /// Agent name or id.
        agent: String,
        /// Revoke every older token of the agent.
        #[arg(long)]
        rotate: bool,
    },
    /// Revoke an agent: its next request is answered 401.
    Revoke(AgentRef),
    /// Restore a revoked agent.
    Restore(AgentRef),
    /// Delete an agent and its tokens for good (its audit events stay).
    Delete(AgentRef),
}

/// An agent named by name or id.
#[derive(Debug, Args)]
pub struct AgentRef {
    /// Agent name or id.
    pub agent: String,
}

/// `meshguard agent create`.
#[derive(Debug, Args)]
pub struct AgentCreateArgs {
    /// Unique agent name (`[a-z0-9][a-z0-9._-]{0,63}`).
    #[arg(value_parser = parse_agent_name)]
    pub name: String,
    /// Trust tier: unverified (alias untrusted), verified, trusted or privileged.
    #[arg(long, default_value = "verified", value_name = "TIER",
          value_parser = ["unverified", "untrusted", "verified", "trusted", "privileged"])]
    pub trust: String,
    /// Comma-separated tags.
    #[arg(long, value_delimiter = ',', value_name = "TAGS")]
    pub tags: Vec<String>,
    /// Free-text description.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// Lifetime of the token, e.g. `30d`, `12h` (default: no expiry).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: Option<std::time::Duration>,
}

/// `meshguard policy …`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate locally, then apply a policy file or every `*.yaml` of a directory.
    Apply {
        /// Policy file or directory.
        path: PathBuf,
    },
    /// List the gateway's policies.
    List,
    /// Show one policy's source.
    Show {
        /// Policy name.
        name: String,
    },
    /// Delete a policy.
    Delete {
        /// Policy name.
        name: String,
    },
    /// Check policy files offline: errors and lint warnings.
    Validate {
        /// Policy files (or directories of `*.yaml`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Agents file (YAML or JSON, e.g. the output of `meshguard --json agent list`).
        #[arg(long, value_name = "FILE")]
        agents: Option<PathBuf>,
        /// Refuse (exit 1) when a policy's default deny is overridden by another policy's allow.
        #[arg(long)]
        strict: bool,
    },
    /// Show an agent's effective permissions across every policy.
    Allowed {
        /// Agent name or id.
        agent: String,
    },
    /// Ask the gateway what it would decide, or run a test file.
    Test(PolicyTestArgs),
    /// Decide the audited checks of a period again with candidate policies (in place of the live
    /// ones of the same names) and show what would change.
    Replay {
        /// Candidate policy files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Start of the period: an RFC 3339 time or an age such as `7d`.
        #[arg(long, value_name = "TIME", default_value = "7d")]
        since: String,
        /// End of the period [default: now].
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Only this agent's checks (name or id).
        #[arg(long, value_name = "A")]
        agent: Option<String>,
        /// Exit 1 when any check would change (for CI pipelines that review policy changes).
        #[arg(long)]
        fail_on_change: bool,
    },
}

/// `meshguard policy test`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["agent", "file"])))]
pub struct PolicyTestArgs {
    /// Agent name or id.
    #[arg(requires = "action")]
    pub agent: Option<String>,
    /// Action, e.g. `browse:web`.
    pub action: Option<String>,
    /// Resource [default: *]
    #[arg(long, value_name = "R")]
    pub resource: Option<String>,
    /// Context entry `k=v`; `v` is read as JSON when it parses, else as a string.
    #[arg(long, value_name = "K=V", value_parser = parse_context_entry)]
    pub context: Vec<(String, serde_json::Value)>,
    /// Decide as if asked at this time (RFC 3339, e.g. `2026-03-02T10:00:00Z`): what schedules
    /// see [default: the gateway's clock]
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Print every rule considered and why it matched or not.
    #[arg(long)]
    pub verbose: bool,
    /// Run a test file: `tests:` against the gateway, or `suites:` (the conformance corpus) offline.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["agent", "action", "resource", "context", "at"])]
    pub file: Option<PathBuf>,
}

/// Decision filter for the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DecisionArg {
    /// Allowed requests.
    Allow,
    /// Denied requests.
    Deny,
    /// Requests waiting for a human.
    RequireApproval,
}

impl DecisionArg {
    /// The wire name the admin API filters on.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionArg::Allow => "allow",
            DecisionArg::Deny => "deny",
            DecisionArg::RequireApproval => "require_approval",
        }
    }
}

/// `meshguard audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Show the latest audit events, and with `--follow` keep printing new ones.
    Tail(AuditTailArgs),
    /// Summarise checks over a period.
    Stats {
        /// Agent name or id.
        #[arg(long)]
        agent: Option<String>,
        /// Period in hours.
        #[arg(long, default_value_t = 24, value_name = "HOURS")]
        period: u32,
        /// Add per-hour buckets.
        #[arg(long, value_enum)]
        breakdown: Option<Breakdown>,
    },
    /// Show every event of one trace.
    Trace {
        /// Trace id (as sent in `X-Trace-ID`).
        trace_id: String,
        /// Show at most N events (the first N, oldest first); by default every event.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
        /// Go on from where a `--limit` stopped (the cursor it printed).
        #[arg(long, value_name = "CURSOR")]
        cursor: Option<String>,
    },
    /// Verify the audit trail: every hash chain and the signed checkpoints on it. Routinely from
    /// the newest checkpoint an earlier verification walked through; `--full` from the start;
    /// `--file` an exported trail, offline, with the gateway's public key.
    Verify {
        /// Walk every chain from its anchor, not from its last verified checkpoint.
        #[arg(long, conflicts_with = "file")]
        full: bool,
        /// Verify this export (`meshguard audit export > FILE`) or retention archive (`.gz`)
        /// without a gateway; repeat it to verify several files in order as one trail.
        #[arg(long, value_name = "EXPORT.jsonl", requires = "key")]
        file: Vec<std::path::PathBuf>,
        /// A public key (the gateway's `signing-key.pub.pem`) whose checkpoints are accepted;
        /// repeat it for keys retired by a rotation.
        #[arg(long, value_name = "KEY.pub.pem", requires = "file")]
        key: Vec<std::path::PathBuf>,
    },
    /// Stream events as JSON lines to stdout.
    Export {
        /// Start: RFC 3339 time, or an age such as `24h`.
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// End: RFC 3339 time, or an age such as `1h`.
        #[arg(long, value_name = "T")]
        until: Option<String>,
    },
}

/// `meshguard audit tail`.
#[derive(Debug, Args)]
pub struct AuditTailArgs {
    /// Number of events to show.
    #[arg(short = 'n', long = "lines", default_value_t = 20, value_name = "N")]
    pub lines: u32,
    /// Keep printing new events as they are written.
    #[arg(short, long)]
    pub follow: bool,
    /// Only events of this agent (name or id).
    #[arg(long)]
    pub agent: Option<String>,
    /// Only events with this decision.
    #[arg(long, value_enum)]
    pub decision: Option<DecisionArg>,
    /// Only events whose action matches this pattern (`*` and `?` wildcards).
    #[arg(long, value_name = "PATTERN")]
    pub action: Option<String>,
}

/// `meshguard operator …`.
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Create an operator who signs in to the console with a name and a password.
    Create {
        /// The sign-in name (a-z, 0-9, `.`, `_`, `-`).
        name: String,
        /// What the operator may do: read (`viewer`), also decide approvals (`approver`), or
        /// everything (`admin`).
        #[arg(long, value_enum)]
        role: OperatorRoleArg,
        /// Read the password (at least 12 characters) from the first line of standard input,
        /// e.g. from a password manager; it never appears on the command line.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the operators.
    List,
    /// Delete an operator: it can no longer sign in, and its sessions end.
    Delete {
        /// The operator's name.
        name: String,
    },
}

/// An operator's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OperatorRoleArg {
    /// Reads everything.
    Viewer,
    /// Reads, and decides approvals.
    Approver,
    /// Everything.
    Admin,
}

impl OperatorRoleArg {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorRoleArg::Viewer => "viewer",
            OperatorRoleArg::Approver => "approver",
            OperatorRoleArg::Admin => "admin",
        }
    }
}

/// `meshguard approval …`.
#[derive(Debug, Subcommand)]
pub enum ApprovalCommand {
    /// List approvals, newest first.
    List {
        /// Which approvals to show.
        #[arg(long, value_enum, default_value_t = ApprovalStatusArg::Pending)]
        status: ApprovalStatusArg,
    },
    /// Let the agent's next matching request go ahead, once.
    Approve(ApprovalDecisionArgs),
    /// Refuse the agent's matching requests until the approval's timeout runs out.
    Deny {
        /// The decision and who takes it.
        #[command(flatten)]
        decision: ApprovalDecisionArgs,
        /// Why, shown to the agent and kept in the audit trail.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
}

/// The approval an operator decides on, and who the operator is.
#[derive(Debug, Args)]
pub struct ApprovalDecisionArgs {
    /// Approval id (`apr_…`), as `approval list` shows it.
    pub id: String,
    /// Who decides, recorded as `decidedBy` and in the audit trail [default: $USER@hostname]
    #[arg(long, value_name = "NAME")]
    pub by: Option<String>,
}

/// Status filter for `approval list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApprovalStatusArg {
    /// Waiting for a human.
    Pending,
    /// Approved and not yet used.
    Approved,
    /// Refused by a human.
    Denied,
    /// Nobody decided in time, or approved and never used in time.
    Expired,
    /// Approved and used by the agent's request.
    Used,
    /// Every approval.
    All,
}

impl ApprovalStatusArg {
    /// The wire name the admin API filters on.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatusArg::Pending => "pending",
            ApprovalStatusArg::Approved => "approved",
            ApprovalStatusArg::Denied => "denied",
            ApprovalStatusArg::Expired => "expired",
            ApprovalStatusArg::Used => "used",
            ApprovalStatusArg::All => "all",
        }
    }
}

/// Extra breakdowns for `audit stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Breakdown {
    /// One bucket per hour.
    Hourly,
}

/// Checks the agent-name syntax before anything is sent.
fn parse_agent_name(text: &str) -> Result<String, String> {
    if meshguard_policy::is_valid_name(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{text}` is not a valid agent name: 1 to 64 characters of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit"
        ))
    }
}

/// Parses `30d`, `12h`, `90m` (and humantime's longer forms).
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration such as `30d` or `12h`: {e}"))
}

/// Parses `k=v`, reading `v` as JSON when it parses and as a string otherwise.
fn parse_context_entry(text: &str) -> Result<(String, serde_json::Value), String> {
    let (key, raw) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not of the form key=value"))?;
    if key.is_empty() {
        return Err(format!("`{text}` has an empty key"));
    }
    let value =
        serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.to_owned()));
    Ok((key.to_owned(), value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use serde_json::json;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn context_values_are_json_when_they_parse() {
        assert_eq!(
            parse_context_entry("sandbox=true").unwrap(),
            ("sandbox".into(), json!(true))
        );
        assert_eq!(parse_context_entry("n=3").unwrap(), ("n".into(), json!(3)));
        assert_eq!(
            parse_context_entry("q=\"x\"").unwrap(),
            ("q".into(), json!("x"))
        );
        assert_eq!(
            parse_context_entry("env=staging").unwrap(),
            ("env".into(), json!("staging"))
        );
        assert_eq!(
            parse_context_entry("url=a=b").unwrap(),
            ("url".into(), json!("a=b"))
        );
        assert!(parse_context_entry("novalue").is_err());
        assert!(parse_context_entry("=x").is_err());
    }

    #[test]
    fn ttl_accepts_days() {
        assert_eq!(parse_duration("30d").unwrap().as_secs(), 30 * 86_400);
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn policy_test_needs_an_agent_and_action_or_a_file() {
        assert!(Cli::try_parse_from(["meshguard", "policy", "test"]).is_err());
        assert!(Cli::try_parse_from(["meshguard", "policy", "test", "a"]).is_err());
        assert!(Cli::try_parse_from(["meshguard", "policy", "test", "a", "read:x"]).is_ok());
        assert!(Cli::try_parse_from(["meshguard", "policy", "test", "--file", "t.yaml"]).is_ok());
        assert!(
            Cli::try_parse_from(["meshguard", "policy", "test", "a", "b", "--file", "t.yaml"])
                .is_err()
        );
    }

    /// The `serve` flags and the gateway's table of configuration keys agree both ways: every
    /// key's flag exists, and every `serve` flag but `--config` and `--validate-only` sets a key.
    #[test]
    fn serve_flags_are_the_config_keys_flags() {
        use meshguard_gateway::ConfigKey;
        let mut cli = Cli::command();
        cli.build();
        let serve = cli.find_subcommand("serve").unwrap();
        let longs: Vec<&str> = serve.get_arguments().filter_map(|a| a.get_long()).collect();
        for key in ConfigKey::ALL {
            if let Some(flag) = key.flag() {
                assert!(longs.contains(&flag), "`serve` has no --{flag} for `{key}`");
            }
        }
        let own: Vec<&str> = serve
            .get_arguments()
            .filter(|a| !a.is_global_set())
            .filter_map(|a| a.get_long())
            .filter(|l| !["config", "validate-only", "help", "version"].contains(l))
            .collect();
        for long in own {
            assert!(
                ConfigKey::ALL.iter().any(|k| k.flag() == Some(long)),
                "`serve --{long}` sets no configuration key"
            );
        }
    }

    /// A global flag that sets a configuration key names the key's environment variables in its
    /// help, and does not read them through clap: a variable that clap read would reach `serve`
    /// as the flag, outranking the variables that should win over it.
    #[test]
    fn global_flags_of_config_keys_name_their_variables() {
        use meshguard_gateway::ConfigKey;
        let cli = Cli::command();
        for key in [ConfigKey::DataDir, ConfigKey::AdminToken] {
            let flag = key.flag().unwrap();
            let arg = cli
                .get_arguments()
                .find(|a| a.get_long() == Some(flag))
                .unwrap_or_else(|| panic!("no global --{flag}"));
            assert_eq!(arg.get_env(), None, "--{flag}");
            let help = arg.get_help().unwrap().to_string();
            for name in
                std::iter::once(key.env()).chain(key.env_aliases().iter().map(|a| (*a).to_owned()))
            {
                if name.starts_with("MESHGUARD_") {
                    assert!(
                        help.contains(&name),
                        "--{flag} does not name {name}: {help}"
                    );
                }
            }
        }
    }
}
