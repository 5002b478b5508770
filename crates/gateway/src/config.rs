//! Gateway configuration: raw layers (file, environment, flags) merged into one validated
//! [`Config`].
//!
//! Precedence is flag > environment > file > default, and it is visible in one place:
//! [`Config::load`]. Parsing is a pure function of the TOML text, an environment map and the
//! flags, so tests never touch the process environment; the binary reads `std::env::vars()` once
//! at its edge and passes the map in.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::mcp_host::HostedServerConfig;

use crate::alerts::Trigger;

/// The default listen address: loopback only, so a fresh gateway is never exposed by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3100";
/// The default request body limit (64 KiB): checks are small, large bodies are an attack or a bug.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
/// The default audit retention (90 days).
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// The default approval timeout (1 hour), used when no matching policy sets `timeoutSeconds`.
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(3600);

/// What one agent may consume beyond its policies' own limits: these bound the work and the
/// rows an agent (or a thief of its token) can cause where no policy counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AgentQuotas {
    /// Most pending approvals one agent may have at once (`agents.max_pending_approvals`); a
    /// check that would create one more is denied with `too_many_pending_approvals`.
    pub max_pending_approvals: u32,
    /// Most `POST /proxy/governance/record` calls per agent per minute
    /// (`agents.records_per_minute`); past it a record answers 429 `rate_limited`.
    pub records_per_minute: u32,
    /// Most refused requests per agent per minute (`agents.refusals_per_minute`): requests whose
    /// token names the agent but is no longer honoured; past it they answer 429 `rate_limited`
    /// instead of 401, telling whoever replays the token to back off.
    pub refusals_per_minute: u32,
}

/// The default quotas: far above what an honest agent needs, low enough that one agent cannot
/// flood the approvers or the trail.
pub const DEFAULT_AGENT_QUOTAS: AgentQuotas = AgentQuotas {
    max_pending_approvals: 20,
    records_per_minute: 600,
    refusals_per_minute: 600,
};

/// The default time a client has to send a whole request head (10 s).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The default time a client has to send a whole request body, counted from its head (30 s).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// The default time a connection may move no byte before it is closed (75 s: longer than the
/// 60 s approval long poll and the 15 s audit-stream keep-alive).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// The default cap on open client connections; beyond it new ones wait in the kernel's backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// The largest connection cap accepted: far above any descriptor limit, and a bound the
/// connection semaphore can hold.
pub const MAX_MAX_CONNECTIONS: usize = 1_000_000;

/// Bounds on what one client connection may hold: a slow or silent client gives up its
/// connection, and the number of connections is capped (see `connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// `server.header_timeout`: time to send a request head, also the longest wait for the next
    /// request on a kept-alive connection.
    pub header_timeout: Duration,
    /// `server.body_timeout`: time to send a whole request body once the head is in.
    pub body_timeout: Duration,
    /// `server.idle_timeout`: a connection on which no byte moved for this long is closed once
    /// its responses are done; one whose client stopped reading a response is closed.
    pub idle_timeout: Duration,
    /// `server.max_connections`: open client connections at most.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// How the gateway applies decisions. Rolling out a policy in `audit` mode shows what it would
/// deny before it denies anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Decisions are enforced: only an allow answers 200.
    Enforce,
    /// Decisions are computed, charged and recorded, but every check answers 200.
    Audit,
    /// Development only: everything is allowed without evaluating policies.
    Bypass,
}

impl Mode {
    /// The lowercase name used on the command line, in config files and in `/health`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
            Mode::Bypass => "bypass",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "enforce" => Ok(Mode::Enforce),
            "audit" => Ok(Mode::Audit),
            "bypass" => Ok(Mode::Bypass),
            other => Err(format!(
                "expected `enforce`, `audit` or `bypass`, got `{other}`"
            )),
        }
    }
}

/// When a response may leave relative to the commit of its audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditDurability {
    /// The response waits until its event is committed (the default: no decision goes unrecorded).
    Sync,
    /// The response is sent as soon as the event is queued; a crash can lose the last events.
    Async,
}

impl std::str::FromStr for AuditDurability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sync" => Ok(AuditDurability::Sync),
            "async" => Ok(AuditDurability::Async),
            other => Err(format!("expected `sync` or `async`, got `{other}`")),
        }
    }
}

/// Every key of the gateway configuration, declared once: its name in the TOML file, the
/// environment variables that set it and the `serve` flag that sets it all come from here, so a
/// misspelt key is a compile error rather than a setting silently ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConfigKey {
    /// `listen`: the address the HTTP server binds.
    Listen,
    /// `mode`: enforce, audit or bypass.
    Mode,
    /// `data_dir`: home of the database, keys and tokens.
    DataDir,
    /// `admin_token`: the admin token, instead of a generated one.
    AdminToken,
    /// `policies_dir`: the directory of policy files.
    PoliciesDir,
    /// `database.url`: where the store lives.
    DatabaseUrl,
    /// `redis.url`: shared rate limits.
    RedisUrl,
    /// `body_limit`: the largest request body.
    BodyLimit,
    /// `server.header_timeout`.
    HeaderTimeout,
    /// `server.body_timeout`.
    BodyTimeout,
    /// `server.idle_timeout`.
    IdleTimeout,
    /// `server.max_connections`.
    MaxConnections,
    /// `audit.durability`.
    AuditDurability,
    /// `audit.retention`.
    AuditRetention,
    /// `approvals.timeout`.
    ApprovalTimeout,
    /// `agents.max_pending_approvals`.
    MaxPendingApprovals,
    /// `agents.records_per_minute`.
    RecordsPerMinute,
    /// `agents.refusals_per_minute`.
    RefusalsPerMinute,
    /// `alerts.webhook_url`.
    AlertWebhookUrl,
    /// `alerts.webhook_secret`.
    AlertWebhookSecret,
    /// `alerts.slack_webhook`.
    AlertSlackWebhook,
    /// `alerts.on`: the triggers that alert.
    AlertOn,
    /// `alerts.queue_size`.
    AlertQueueSize,
    /// `alerts.max_attempts`.
    AlertMaxAttempts,
    /// `alerts.backoff`.
    AlertBackoff,
    /// `alerts.backoff_max`.
    AlertBackoffMax,
    /// `alerts.timeout`.
    AlertTimeout,
    /// `alerts.per_minute`.
    AlertPerMinute,
    /// `proxy.target`: the default upstream.
    ProxyTarget,
    /// `proxy.forward_headers`: the agent headers the default upstream receives.
    ProxyForwardHeaders,
    /// `console.enabled`: serve the web console at `/console`.
    ConsoleEnabled,
    /// `audit.log`: a SQLite gateway's audit events go to the write-ahead log first.
    AuditLog,
    /// `proxy.ca_file`: a CA the default upstream's certificate is verified against.
    ProxyCaFile,
    /// `tls.cert`: the PEM certificate chain `serve` answers TLS with.
    TlsCert,
    /// `tls.key`: its PEM private key.
    TlsKey,
    /// `audit.checkpoint_events`: sign the chain's head after this many events.
    AuditCheckpointEvents,
    /// `audit.checkpoint_interval`: sign the chain's head at least this often while it moves.
    AuditCheckpointInterval,
    /// `audit.archive_dir`: where retention archives what it deletes.
    AuditArchiveDir,
    /// `otel.endpoint`: the OTLP/HTTP collector that receives the check path's traces.
    OtelEndpoint,
    /// `otel.service_name`: the service the check path's spans are filed under.
    OtelServiceName,
}

impl ConfigKey {
    /// Every key, in documentation order.
    pub const ALL: [ConfigKey; 40] = [
        ConfigKey::Listen,
        ConfigKey::Mode,
        ConfigKey::DataDir,
        ConfigKey::AdminToken,
        ConfigKey::PoliciesDir,
        ConfigKey::DatabaseUrl,
        ConfigKey::RedisUrl,
        ConfigKey::BodyLimit,
        ConfigKey::HeaderTimeout,
        ConfigKey::BodyTimeout,
        ConfigKey::IdleTimeout,
        ConfigKey::MaxConnections,
        ConfigKey::AuditDurability,
        ConfigKey::AuditRetention,
        ConfigKey::ApprovalTimeout,
        ConfigKey::MaxPendingApprovals,
        ConfigKey::RecordsPerMinute,
        ConfigKey::RefusalsPerMinute,
        ConfigKey::AlertWebhookUrl,
        ConfigKey::AlertWebhookSecret,
        ConfigKey::AlertSlackWebhook,
        ConfigKey::AlertOn,
        ConfigKey::AlertQueueSize,
        ConfigKey::AlertMaxAttempts,
        ConfigKey::AlertBackoff,
        ConfigKey::AlertBackoffMax,
        ConfigKey::AlertTimeout,
        ConfigKey::AlertPerMinute,
        ConfigKey::ProxyTarget,
        ConfigKey::ProxyForwardHeaders,
        ConfigKey::ConsoleEnabled,
        ConfigKey::AuditLog,
        ConfigKey::ProxyCaFile,
        ConfigKey::TlsCert,
        ConfigKey::TlsKey,
        ConfigKey::AuditCheckpointEvents,
        ConfigKey::AuditCheckpointInterval,
        ConfigKey::AuditArchiveDir,
        ConfigKey::OtelEndpoint,
        ConfigKey::OtelServiceName,
    ];

    /// The dotted name in the TOML file (`[server] body_timeout` is `server.body_timeout`).
    pub fn file_key(self) -> &'static str {
        match self {
            ConfigKey::Listen => "listen",
            ConfigKey::Mode => "mode",
            ConfigKey::DataDir => "data_dir",
            ConfigKey::AdminToken => "admin_token",
            ConfigKey::PoliciesDir => "policies_dir",
            ConfigKey::DatabaseUrl => "database.url",
            ConfigKey::RedisUrl => "redis.url",
            ConfigKey::BodyLimit => "body_limit",
            ConfigKey::HeaderTimeout => "server.header_timeout",
            ConfigKey::BodyTimeout => "server.body_timeout",
            ConfigKey::IdleTimeout => "server.idle_timeout",
            ConfigKey::MaxConnections => "server.max_connections",
            ConfigKey::AuditDurability => "audit.durability",
            ConfigKey::AuditRetention => "audit.retention",
            ConfigKey::ApprovalTimeout => "approvals.timeout",
            ConfigKey::MaxPendingApprovals => "agents.max_pending_approvals",
            ConfigKey::RecordsPerMinute => "agents.records_per_minute",
            ConfigKey::RefusalsPerMinute => "agents.refusals_per_minute",
            ConfigKey::AlertWebhookUrl => "alerts.webhook_url",
            ConfigKey::AlertWebhookSecret => "alerts.webhook_secret",
            ConfigKey::AlertSlackWebhook => "alerts.slack_webhook",
            ConfigKey::AlertOn => "alerts.on",
            ConfigKey::AlertQueueSize => "alerts.queue_size",
            ConfigKey::AlertMaxAttempts => "alerts.max_attempts",
            ConfigKey::AlertBackoff => "alerts.backoff",
            ConfigKey::AlertBackoffMax => "alerts.backoff_max",
            ConfigKey::AlertTimeout => "alerts.timeout",
            ConfigKey::AlertPerMinute => "alerts.per_minute",
            ConfigKey::ProxyTarget => "proxy.target",
            ConfigKey::ProxyForwardHeaders => "proxy.forward_headers",
            ConfigKey::ConsoleEnabled => "console.enabled",
            ConfigKey::AuditLog => "audit.log",
            ConfigKey::ProxyCaFile => "proxy.ca_file",
            ConfigKey::TlsCert => "tls.cert",
            ConfigKey::TlsKey => "tls.key",
            ConfigKey::AuditCheckpointEvents => "audit.checkpoint_events",
            ConfigKey::AuditCheckpointInterval => "audit.checkpoint_interval",
            ConfigKey::AuditArchiveDir => "audit.archive_dir",
            ConfigKey::OtelEndpoint => "otel.endpoint",
            ConfigKey::OtelServiceName => "otel.service_name",
        }
    }

    /// The key of a dotted file name, if MeshGuard knows it.
    pub fn from_file_key(name: &str) -> Option<ConfigKey> {
        ConfigKey::ALL.into_iter().find(|k| k.file_key() == name)
    }

    /// The known key a misspelt `name` most likely meant: at most two single-character edits
    /// away, so a suggestion is offered only when it is close.
    pub fn nearest(name: &str) -> Option<ConfigKey> {
        ConfigKey::ALL
            .into_iter()
            .map(|k| (edit_distance(name, k.file_key()), k))
            .filter(|(d, _)| *d <= 2)
            .min_by_key(|(d, _)| *d)
            .map(|(_, k)| k)
    }

    /// The environment variable every key is read from: `MESHGUARD_A__B` for `a.b`.
    pub fn env(self) -> String {
        format!(
            "MESHGUARD_{}",
            self.file_key().to_uppercase().replace('.', "__")
        )
    }

    /// The environment variable that sets this key in `env`, and its value: [`ConfigKey::env`]
    /// wins over the older aliases. The one place that decides between the names, for `serve`
    /// and for the admin commands that need the same key (the data dir, the admin token).
    pub fn env_value(self, env: &HashMap<String, String>) -> Option<(String, &str)> {
        std::iter::once(self.env())
            .chain(self.env_aliases().iter().map(|a| (*a).to_owned()))
            .find_map(|name| env.get(&name).map(|value| (name, value.as_str())))
    }

    /// Older, documented environment names; [`ConfigKey::env`] wins over them.
    pub fn env_aliases(self) -> &'static [&'static str] {
        match self {
            ConfigKey::Mode => &["MODE"],
            ConfigKey::DataDir => &["MESHGUARD_HOME"],
            ConfigKey::AdminToken => &["ADMIN_TOKEN"],
            ConfigKey::PoliciesDir => &["POLICIES_DIR"],
            ConfigKey::DatabaseUrl => &["DB_PATH"],
            ConfigKey::AlertWebhookUrl => &["ALERT_WEBHOOK_URL"],
            ConfigKey::AlertWebhookSecret => &["ALERT_WEBHOOK_SECRET"],
            ConfigKey::AlertSlackWebhook => &["ALERT_SLACK_WEBHOOK"],
            ConfigKey::AlertOn => &["ALERT_ON"],
            ConfigKey::ProxyTarget => &["PROXY_TARGET"],
            // OpenTelemetry's own variable, which every OTel-instrumented service reads.
            ConfigKey::OtelEndpoint => &["OTEL_EXPORTER_OTLP_ENDPOINT"],
            ConfigKey::OtelServiceName => &["OTEL_SERVICE_NAME"],
            _ => &[],
        }
    }

    /// The `meshguard serve` flag that sets the key, without its leading `--`.
    pub fn flag(self) -> Option<&'static str> {
        match self {
            ConfigKey::Listen => Some("addr"),
            ConfigKey::Mode => Some("mode"),
            ConfigKey::DataDir => Some("data-dir"),
            ConfigKey::AdminToken => Some("admin-token"),
            ConfigKey::PoliciesDir => Some("policies"),
            ConfigKey::DatabaseUrl => Some("database-url"),
            ConfigKey::RedisUrl => Some("redis-url"),
            ConfigKey::HeaderTimeout => Some("header-timeout"),
            ConfigKey::BodyTimeout => Some("body-timeout"),
            ConfigKey::IdleTimeout => Some("idle-timeout"),
            ConfigKey::MaxConnections => Some("max-connections"),
            ConfigKey::TlsCert => Some("tls-cert"),
            ConfigKey::TlsKey => Some("tls-key"),
            _ => None,
        }
    }

    /// The value given on the command line for this key, if any.
    fn flag_value(self, flags: &ConfigFlags) -> Option<String> {
        match self {
            ConfigKey::Listen => flags.listen.clone(),
            ConfigKey::Mode => flags.mode.map(|m| m.as_str().to_owned()),
            ConfigKey::DataDir => flags.data_dir.as_ref().map(|p| p.display().to_string()),
            ConfigKey::AdminToken => flags.admin_token.clone(),
            ConfigKey::PoliciesDir => flags.policies_dir.as_ref().map(|p| p.display().to_string()),
            ConfigKey::DatabaseUrl => flags.database_url.clone(),
            ConfigKey::RedisUrl => flags.redis_url.clone(),
            ConfigKey::HeaderTimeout => flags.header_timeout.clone(),
            ConfigKey::BodyTimeout => flags.body_timeout.clone(),
            ConfigKey::IdleTimeout => flags.idle_timeout.clone(),
            ConfigKey::MaxConnections => flags.max_connections.clone(),
            ConfigKey::TlsCert => flags.tls_cert.as_ref().map(|p| p.display().to_string()),
            ConfigKey::TlsKey => flags.tls_key.as_ref().map(|p| p.display().to_string()),
            _ => None,
        }
    }
}

impl std::fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.file_key())
    }
}

/// Values given on the command line; `None` means "not given", so lower layers apply.
#[derive(Debug, Clone, Default)]
pub struct ConfigFlags {
    /// `--addr`.
    pub listen: Option<String>,
    /// `--mode`.
    pub mode: Option<Mode>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--policies`.
    pub policies_dir: Option<PathBuf>,
    /// `--database-url`.
    pub database_url: Option<String>,
    /// `--redis-url`.
    pub redis_url: Option<String>,
    /// `--admin-token`, or the contents of `--admin-token-file`.
    pub admin_token: Option<String>,
    /// `--header-timeout`.
    pub header_timeout: Option<String>,
    /// `--body-timeout`.
    pub body_timeout: Option<String>,
    /// `--idle-timeout`.
    pub idle_timeout: Option<String>,
    /// `--max-connections`.
    pub max_connections: Option<String>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
}

/// A configuration that failed to load: which key (or file position) and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file does not parse.
    #[error("{origin}: {message}")]
    Syntax {
        /// The file name.
        origin: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key that MeshGuard does not know (a typo would otherwise be silently ignored).
    #[error("{origin}: unknown key `{key}`{}", .nearest.map(|k| format!("; did you mean `{k}`?")).unwrap_or_default())]
    UnknownKey {
        /// Where the key came from.
        origin: String,
        /// The dotted key.
        key: String,
        /// The known key one or two edits away, if there is one.
        nearest: Option<ConfigKey>,
    },
    /// A known key with a value that does not fit.
    #[error("{origin}: `{key}`: {message}")]
    Invalid {
        /// Where the value came from (file name, environment variable, or flag).
        origin: String,
        /// The dotted key (a `targets.NAME…` key has no [`ConfigKey`]).
        key: String,
        /// What was wrong.
        message: String,
    },
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The secret itself, for comparing or sending; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(\"***\")")
    }
}

/// An upstream of the reverse proxy: the default `[proxy] target = …, forward_headers = […]`, or
/// a named `[targets.NAME] url = …, headers = {…}, forward_headers = […]`.
#[derive(Debug, Clone)]
pub struct ProxyTarget {
    /// Upstream base URL.
    pub url: String,
    /// Headers injected into forwarded requests (after `${ENV}` expansion).
    pub headers: BTreeMap<String, Secret>,
    /// The agent's request headers forwarded to this upstream; `None` is the default list
    /// ([`crate::proxy::DEFAULT_FORWARD_HEADERS`]).
    pub forward_headers: Option<Vec<String>>,
    /// A PEM CA an `https://` upstream's certificate is verified against, besides the system's
    /// roots.
    pub ca_file: Option<PathBuf>,
}

/// Alerting settings (webhook and Slack); triggers are named events such as `deny`.
#[derive(Debug, Clone, Default)]
pub struct Alerts {
    /// Generic webhook URL (URLs often embed a token: never logged).
    pub webhook_url: Option<Secret>,
    /// HMAC secret for `X-MeshGuard-Signature`.
    pub webhook_secret: Option<Secret>,
    /// Slack incoming webhook URL (the URL is the credential).
    pub slack_webhook: Option<Secret>,
    /// Which events alert; empty means every trigger.
    pub on: Vec<Trigger>,
    /// `alerts.queue_size`: alerts waiting for delivery before new ones are dropped.
    pub queue_size: Option<usize>,
    /// `alerts.max_attempts`: delivery attempts per alert and receiver.
    pub max_attempts: Option<u32>,
    /// `alerts.backoff`: the wait before the first retry (doubled after each failure).
    pub backoff: Option<Duration>,
    /// `alerts.backoff_max`: the longest wait between retries.
    pub backoff_max: Option<Duration>,
    /// `alerts.timeout`: how long one delivery request may take.
    pub timeout: Option<Duration>,
    /// `alerts.per_minute`: alerts per trigger per minute before the rest are suppressed.
    pub per_minute: Option<u32>,
}

/// The validated gateway configuration. Every field has its final value: nothing downstream reads
/// the environment again.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Enforce, audit or bypass.
    pub mode: Mode,
    /// Home of the database, the signing key, the admin token and the instance id.
    pub data_dir: PathBuf,
    /// Storage location: `sqlite://PATH`, a plain path, or `postgres://…` (may hold a password,
    /// hence [`Secret`]); `None` means `<data_dir>/meshguard.db`.
    pub database_url: Option<Secret>,
    /// Redis URL for global rate limits (may hold a password).
    pub redis_url: Option<Secret>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Timeouts and the connection cap at the edge.
    pub server: ServerLimits,
    /// Whether responses wait for their audit event to commit.
    pub audit_durability: AuditDurability,
    /// How long audit events are kept.
    pub audit_retention: Duration,
    /// Approval timeout when no policy sets one.
    pub approval_timeout: Duration,
    /// Per-agent caps on pending approvals and records.
    pub quotas: AgentQuotas,
    /// Directory whose `*.yaml` policies are loaded at start and reloaded on change.
    pub policies_dir: Option<PathBuf>,
    /// The admin token, when configured instead of generated in `<data_dir>/admin.token`.
    pub admin_token: Option<Secret>,
    /// Default reverse-proxy upstream (`proxy.target`, `proxy.forward_headers`).
    pub proxy_target: Option<ProxyTarget>,
    /// Named reverse-proxy upstreams.
    pub targets: BTreeMap<String, ProxyTarget>,
    /// Alerting.
    pub alerts: Alerts,
    /// MCP servers the gateway starts per session and serves at `/mcp/S` (`[mcp.servers.S]`).
    pub mcp_servers: BTreeMap<String, HostedServerConfig>,
    /// Whether `/console` is served.
    pub console_enabled: bool,
    /// Whether a SQLite gateway writes audit events to the write-ahead log first (`audit.log`).
    pub audit_log: bool,
    /// The certificate and key `serve` answers TLS with; `None`: plain HTTP.
    pub tls: Option<crate::tls::TlsFiles>,
    /// How often the audit chain's head is signed.
    pub checkpoints: crate::checkpoints::CheckpointPolicy,
    /// Where retention writes what it deletes (gzip'd JSON lines); `None`: it only deletes.
    pub audit_archive_dir: Option<PathBuf>,
    /// Where the check path's traces go (OTLP over HTTP); `None`: traces are off.
    pub otel_endpoint: Option<String>,
    /// The service name of those traces; `None`: `meshguard`.
    pub otel_service_name: Option<String>,
}

/// Where a raw value came from; it names the origin in error messages.
#[derive(Debug, Clone)]
struct Sourced {
    value: toml::Value,
    origin: String,
}

impl Config {
    /// Merges the layers: `file` is `(origin, TOML text)`, `env` the process environment, `home`
    /// the user's home directory (for the default data dir and `~` expansion).
    pub fn load(
        file: Option<(&str, &str)>,
        env: &HashMap<String, String>,
        flags: &ConfigFlags,
        home: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let mut layered: BTreeMap<ConfigKey, Sourced> = BTreeMap::new();
        let mut targets = BTreeMap::new();
        let mut mcp_servers = BTreeMap::new();

        // Lowest layer above the defaults: the file.
        if let Some((origin, text)) = file {
            let mut table: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Syntax {
                        origin: origin.to_owned(),
                        message: e.to_string().trim_end().replace('\n', " "),
                    })?;
            if let Some(mcp) = table.remove("mcp") {
                mcp_servers = hosted_mcp_servers(origin, mcp)?;
                expand_mcp_headers(origin, &mut mcp_servers, env)?;
            }
            let mut flat = Vec::new();
            flatten("", &toml::Value::Table(table), &mut flat);
            for (key, value) in flat {
                if let Some(rest) = key.strip_prefix("targets.") {
                    collect_target(origin, rest, value, &mut targets)?;
                    continue;
                }
                let Some(key) = ConfigKey::from_file_key(&key) else {
                    return Err(ConfigError::UnknownKey {
                        origin: origin.to_owned(),
                        nearest: ConfigKey::nearest(&key),
                        key,
                    });
                };
                layered.insert(
                    key,
                    Sourced {
                        value,
                        origin: origin.to_owned(),
                    },
                );
            }
        }

        // Environment: `MESHGUARD_A__B`, else a documented alias.
        for key in ConfigKey::ALL {
            if let Some((name, value)) = key.env_value(env) {
                layered.insert(
                    key,
                    Sourced {
                        value: toml::Value::String(value.to_owned()),
                        origin: format!("environment variable {name}"),
                    },
                );
            }
        }

        // Flags: the top layer.
        for key in ConfigKey::ALL {
            if let (Some(flag), Some(value)) = (key.flag(), key.flag_value(flags)) {
                layered.insert(
                    key,
                    Sourced {
                        value: toml::Value::String(value),
                        origin: format!("flag --{flag}"),
                    },
                );
            }
        }

        for (name, target) in &mut targets {
            for (header, value) in &mut target.headers {
                let expanded =
                    expand_env(value.expose(), env).map_err(|message| ConfigError::Invalid {
                        origin: file.map_or_else(|| "config".to_owned(), |(o, _)| o.to_owned()),
                        key: format!("targets.{name}.headers.{header}"),
                        message,
                    })?;
                *value = Secret::new(expanded);
            }
        }
        let mut config = Validator { layered, home }.finish(env, flags, targets)?;
        config.mcp_servers = mcp_servers;
        Ok(config)
    }
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, toml::Value)>) {
    match value {
        toml::Value::Table(table) if !prefix.starts_with("targets.") || prefix.is_empty() => {
            for (k, v) in table {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => out.push((prefix.to_owned(), other.clone())),
    }
}

/// The number of single-character insertions, deletions and substitutions from `a` to `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let delete = previous.get(j + 1).copied().unwrap_or(0) + 1;
            let insert = current.get(j).copied().unwrap_or(0) + 1;
            current.push(substitute.min(delete).min(insert));
        }
        previous = current;
    }
    previous.last().copied().unwrap_or(0)
}

/// Replaces every `${NAME}` with the environment variable `NAME`; a missing one is an error, so
/// an upstream never receives a literal `${TOKEN}` as its credential.
fn expand_env(text: &str, env: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let (before, after) = rest.split_at(start);
        out.push_str(before);
        let after = after.get(2..).unwrap_or_default();
        let end = after
            .find('}')
            .ok_or_else(|| "unclosed `${` in header value".to_owned())?;
        let (name, tail) = after.split_at(end);
        let value = env
            .get(name)
            .ok_or_else(|| format!("environment variable `{name}` is not set"))?;
        out.push_str(value);
        rest = tail.get(1..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(out)
}

/// `[mcp.servers.S]` tables: each a stdio server the gateway starts per MCP session, served at
/// `/mcp/S`. A mistyped or unknown key is an error naming it, like every other key.
fn hosted_mcp_servers(
    origin: &str,
    value: toml::Value,
) -> Result<BTreeMap<String, HostedServerConfig>, ConfigError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct McpTable {
        #[serde(default)]
        servers: BTreeMap<String, HostedServerConfig>,
    }
    let table: McpTable = serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        ConfigError::Invalid {
            origin: origin.to_owned(),
            key: if path == "." {
                "mcp".to_owned()
            } else {
                format!("mcp.{path}")
            },
            message: err.into_inner().to_string(),
        }
    })?;
    for (name, server) in &table.servers {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            origin: origin.to_owned(),
            key: format!("mcp.servers.{name}{key}"),
            message: message.to_owned(),
        };
        if !meshguard_mcp::config::is_server_name(name) {
            return Err(invalid(
                "",
                "a server name is 1 to 64 of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit",
            ));
        }
        match (&server.url, server.command.is_empty()) {
            (Some(_), false) => {
                return Err(invalid(
                    "",
                    "give `command` (a server the gateway starts) or `url` (a streamable-HTTP server), not both",
                ));
            }
            (None, _) if !server.headers.is_empty() => {
                return Err(invalid(
                    ".headers",
                    "headers are sent to a `url` server only",
                ));
            }
            _ => {}
        }
        if server.url.is_none() && server.command.first().is_none_or(String::is_empty) {
            return Err(invalid(
                ".command",
                "the server's program and its arguments, e.g. [\"npx\", \"@modelcontextprotocol/server-filesystem\", \"/srv/ws\"]",
            ));
        }
        if server.idle_timeout_seconds == Some(0) {
            return Err(invalid(".idle_timeout_seconds", "must be at least 1"));
        }
    }
    Ok(table.servers)
}

/// `${ENV}` in the headers of hosted MCP servers, as in proxy targets' headers.
fn expand_mcp_headers(
    origin: &str,
    servers: &mut BTreeMap<String, HostedServerConfig>,
    env: &HashMap<String, String>,
) -> Result<(), ConfigError> {
    for (name, server) in servers {
        for (header, value) in &mut server.headers {
            *value = expand_env(value, env).map_err(|message| ConfigError::Invalid {
                origin: origin.to_owned(),
                key: format!("mcp.servers.{name}.headers.{header}"),
                message,
            })?;
        }
    }
    Ok(())
}

fn collect_target(
    origin: &str,
    name: &str,
    value: toml::Value,
    targets: &mut BTreeMap<String, ProxyTarget>,
) -> Result<(), ConfigError> {
    let key = format!("targets.{name}");
    let invalid = |message: String| ConfigError::Invalid {
        origin: origin.to_owned(),
        key: key.clone(),
        message,
    };
    let toml::Value::Table(table) = value else {
        return Err(invalid("expected a table with `url`".into()));
    };
    let mut url = None;
    let mut headers = BTreeMap::new();
    let mut forward_headers = None;
    let mut ca_file = None;
    for (k, v) in table {
        match (k.as_str(), v) {
            ("url", toml::Value::String(s)) => url = Some(s),
            ("ca_file", toml::Value::String(s)) => ca_file = Some(PathBuf::from(s)),
            ("forward_headers", value) => {
                forward_headers = Some(
                    header_list(&value).map_err(|m| invalid(format!("forward_headers: {m}")))?,
                );
            }
            ("headers", toml::Value::Table(h)) => {
                for (hk, hv) in h {
                    let toml::Value::String(hv) = hv else {
                        return Err(invalid(format!("headers.{hk}: expected a string")));
                    };
                    headers.insert(hk, Secret::new(hv));
                }
            }
            (other, _) => return Err(invalid(format!("unknown or mistyped key `{other}`"))),
        }
    }
    let url = url.ok_or_else(|| invalid("`url` is required".into()))?;
    targets.insert(
        name.to_owned(),
        ProxyTarget {
            url,
            headers,
            forward_headers,
            ca_file,
        },
    );
    Ok(())
}

/// A list of header names: a TOML array of strings, or one comma-separated string (the
/// environment's form).
fn header_list(value: &toml::Value) -> Result<Vec<String>, String> {
    match value {
        toml::Value::String(s) => Ok(s
            .split(',')
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect()),
        toml::Value::Array(items) => items
            .iter()
            .map(|v| match v {
                toml::Value::String(s) => Ok(s.trim().to_owned()),
                other => Err(format!("expected header names, got {}", other.type_str())),
            })
            .collect(),
        other => Err(format!(
            "expected a list of header names, got {}",
            other.type_str()
        )),
    }
}

struct Validator<'a> {
    layered: BTreeMap<ConfigKey, Sourced>,
    home: Option<&'a Path>,
}

impl Validator<'_> {
    fn invalid(&self, key: ConfigKey, message: String) -> ConfigError {
        ConfigError::Invalid {
            origin: self
                .layered
                .get(&key)
                .map_or_else(|| "default".to_owned(), |s| s.origin.clone()),
            key: key.file_key().to_owned(),
            message,
        }
    }

    fn string(&self, key: ConfigKey) -> Result<Option<String>, ConfigError> {
        match self.layered.get(&key).map(|s| &s.value) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(toml::Value::Integer(i)) => Ok(Some(i.to_string())),
            Some(toml::Value::Boolean(b)) => Ok(Some(b.to_string())),
            Some(other) => {
                Err(self.invalid(key, format!("expected a string, got {}", other.type_str())))
            }
        }
    }

    fn path(&self, key: ConfigKey) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self.string(key)?.map(|s| expand_home(&s, self.home)))
    }

    fn parsed<T>(
        &self,
        key: ConfigKey,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) => parse(&s).map(Some).map_err(|m| self.invalid(key, m)),
        }
    }

    /// `parsed`, or `default` when no layer sets the key.
    fn parsed_or<T>(
        &self,
        key: ConfigKey,
        parse: impl Fn(&str) -> Result<T, String>,
        default: T,
    ) -> Result<T, ConfigError> {
        Ok(self.parsed(key, parse)?.unwrap_or(default))
    }

    /// A secret: absent when unset or set to the empty string (so an environment can unset what
    /// a file sets).
    fn secret(&self, key: ConfigKey) -> Result<Option<Secret>, ConfigError> {
        Ok(self.string(key)?.filter(|s| !s.is_empty()).map(Secret::new))
    }

    fn finish(
        self,
        env: &HashMap<String, String>,
        flags: &ConfigFlags,
        targets: BTreeMap<String, ProxyTarget>,
    ) -> Result<Config, ConfigError> {
        let listen = self.listen(env, flags)?;
        let mode = self.parsed_or(ConfigKey::Mode, str::parse, Mode::Enforce)?;
        let data_dir = match self.path(ConfigKey::DataDir)? {
            Some(dir) => dir,
            None => self.home.map(|h| h.join(".meshguard")).ok_or_else(|| {
                let key = ConfigKey::DataDir;
                self.invalid(
                    key,
                    format!(
                        "no home directory: set {} or --{}",
                        key.env(),
                        key.flag().unwrap_or_default()
                    ),
                )
            })?,
        };
        let database_url = self.secret(ConfigKey::DatabaseUrl)?;
        let redis_url = self.secret(ConfigKey::RedisUrl)?;
        let body_limit = self.parsed_or(ConfigKey::BodyLimit, parse_size, DEFAULT_BODY_LIMIT)?;
        if body_limit == 0 {
            return Err(self.invalid(ConfigKey::BodyLimit, "must be at least 1 byte".into()));
        }
        let server = self.server_limits()?;
        let audit_durability = self.parsed_or(
            ConfigKey::AuditDurability,
            str::parse,
            AuditDurability::Sync,
        )?;
        let audit_retention = self.parsed_or(
            ConfigKey::AuditRetention,
            parse_duration,
            DEFAULT_AUDIT_RETENTION,
        )?;
        let approval_timeout = self.parsed_or(
            ConfigKey::ApprovalTimeout,
            parse_duration,
            DEFAULT_APPROVAL_TIMEOUT,
        )?;
        if audit_retention < Duration::from_secs(3600) {
            return Err(self.invalid(
                ConfigKey::AuditRetention,
                "must be at least 1h: retention deletes every older event".into(),
            ));
        }
        if approval_timeout.is_zero() {
            return Err(self.invalid(ConfigKey::ApprovalTimeout, "must be at least 1s".into()));
        }
        let quotas = AgentQuotas {
            max_pending_approvals: self.parsed_or(
                ConfigKey::MaxPendingApprovals,
                positive,
                DEFAULT_AGENT_QUOTAS.max_pending_approvals,
            )?,
            records_per_minute: self.parsed_or(
                ConfigKey::RecordsPerMinute,
                positive,
                DEFAULT_AGENT_QUOTAS.records_per_minute,
            )?,
            refusals_per_minute: self.parsed_or(
                ConfigKey::RefusalsPerMinute,
                positive,
                DEFAULT_AGENT_QUOTAS.refusals_per_minute,
            )?,
        };
        let policies_dir = self.path(ConfigKey::PoliciesDir)?;
        let admin_token = self
            .string(ConfigKey::AdminToken)?
            .filter(|s| !s.is_empty());
        if let Some(token) = &admin_token
            && token.len() < 16
        {
            return Err(self.invalid(
                ConfigKey::AdminToken,
                "must be at least 16 characters long".into(),
            ));
        }
        let alerts = Alerts {
            webhook_url: self.string(ConfigKey::AlertWebhookUrl)?.map(Secret::new),
            webhook_secret: self.string(ConfigKey::AlertWebhookSecret)?.map(Secret::new),
            slack_webhook: self.string(ConfigKey::AlertSlackWebhook)?.map(Secret::new),
            on: self.alert_triggers()?,
            queue_size: self.parsed(ConfigKey::AlertQueueSize, positive)?,
            max_attempts: self.parsed(ConfigKey::AlertMaxAttempts, positive)?,
            backoff: self.parsed(ConfigKey::AlertBackoff, parse_short_duration)?,
            backoff_max: self.parsed(ConfigKey::AlertBackoffMax, parse_short_duration)?,
            timeout: self.parsed(ConfigKey::AlertTimeout, parse_short_duration)?,
            per_minute: self.parsed(ConfigKey::AlertPerMinute, positive)?,
        };
        if alerts.on.is_empty()
            && self.layered.contains_key(&ConfigKey::AlertOn)
            && (alerts.webhook_url.is_some() || alerts.slack_webhook.is_some())
        {
            return Err(self.invalid(
                ConfigKey::AlertOn,
                "lists no trigger: name at least one, or remove it to alert on every trigger"
                    .into(),
            ));
        }
        if alerts.timeout.is_some_and(|t| t.is_zero()) {
            return Err(self.invalid(ConfigKey::AlertTimeout, "must be more than 0ms".into()));
        }
        Ok(Config {
            listen,
            mode,
            data_dir,
            database_url,
            redis_url,
            body_limit,
            server,
            audit_durability,
            audit_retention,
            approval_timeout,
            quotas,
            policies_dir,
            admin_token: admin_token.map(Secret::new),
            proxy_target: self.proxy_target()?,
            targets,
            alerts,
            mcp_servers: BTreeMap::new(),
            tls: self.tls_files()?,
            audit_log: self.parsed_or(ConfigKey::AuditLog, boolean, true)?,
            checkpoints: crate::checkpoints::CheckpointPolicy {
                every_events: self.parsed_or(
                    ConfigKey::AuditCheckpointEvents,
                    positive,
                    crate::checkpoints::CheckpointPolicy::default().every_events,
                )?,
                every: self.parsed_or(
                    ConfigKey::AuditCheckpointInterval,
                    |text: &str| match parse_duration(text)? {
                        d if d.is_zero() => Err("must be at least 1s".to_owned()),
                        d => Ok(d),
                    },
                    crate::checkpoints::CheckpointPolicy::default().every,
                )?,
            },
            console_enabled: self.parsed_or(ConfigKey::ConsoleEnabled, boolean, true)?,
            audit_archive_dir: self.path(ConfigKey::AuditArchiveDir)?,
            otel_endpoint: self.otel_endpoint()?,
            // Empty is unset here too, as OpenTelemetry reads `OTEL_SERVICE_NAME`.
            otel_service_name: self
                .string(ConfigKey::OtelServiceName)?
                .map(|name| name.trim().to_owned())
                .filter(|name| !name.is_empty()),
        })
    }

    /// `otel.endpoint`: an http(s) URL; empty is unset, as OpenTelemetry reads its variables.
    fn otel_endpoint(&self) -> Result<Option<String>, ConfigError> {
        let key = ConfigKey::OtelEndpoint;
        match self.string(key)?.map(|text| text.trim().to_owned()) {
            None => Ok(None),
            Some(text) if text.is_empty() => Ok(None),
            Some(text) if text.starts_with("http://") || text.starts_with("https://") => {
                Ok(Some(text))
            }
            Some(text) => Err(self.invalid(
                key,
                format!(
                    "`{text}` is not an http:// or https:// URL (the OTLP/HTTP endpoint, e.g. \
                     http://localhost:4318)"
                ),
            )),
        }
    }

    /// `tls.cert` and `tls.key`: both, or neither.
    fn tls_files(&self) -> Result<Option<crate::tls::TlsFiles>, ConfigError> {
        match (
            self.path(ConfigKey::TlsCert)?,
            self.path(ConfigKey::TlsKey)?,
        ) {
            (Some(cert), Some(key)) => Ok(Some(crate::tls::TlsFiles { cert, key })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(self.invalid(
                ConfigKey::TlsKey,
                "missing: `tls.cert` is set, so give its private key too".into(),
            )),
            (None, Some(_)) => Err(self.invalid(
                ConfigKey::TlsCert,
                "missing: `tls.key` is set, so give its certificate too".into(),
            )),
        }
    }

    /// `listen`, with the documented `HOST` and `PORT` variables adjusting the file's (or the
    /// default) address when neither a flag nor `MESHGUARD_LISTEN` gives a whole one.
    fn listen(
        &self,
        env: &HashMap<String, String>,
        flags: &ConfigFlags,
    ) -> Result<SocketAddr, ConfigError> {
        let whole_from_top = flags.listen.is_some() || env.contains_key(&ConfigKey::Listen.env());
        let text = self
            .string(ConfigKey::Listen)?
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let mut addr: SocketAddr = text.parse().map_err(|_| {
            self.invalid(
                ConfigKey::Listen,
                format!("`{text}` is not an IP:port address"),
            )
        })?;
        if !whole_from_top {
            if let Some(host) = env.get("HOST") {
                let ip = host.parse().map_err(|_| ConfigError::Invalid {
                    origin: "environment variable HOST".into(),
                    key: ConfigKey::Listen.file_key().to_owned(),
                    message: format!("`{host}` is not an IP address"),
                })?;
                addr.set_ip(ip);
            }
            if let Some(port) = env.get("PORT") {
                let port = port.parse().map_err(|_| ConfigError::Invalid {
                    origin: "environment variable PORT".into(),
                    key: ConfigKey::Listen.file_key().to_owned(),
                    message: format!("`{port}` is not a port number"),
                })?;
                addr.set_port(port);
            }
        }
        Ok(addr)
    }

    /// The default upstream: `proxy.target` and the request headers it receives.
    fn proxy_target(&self) -> Result<Option<ProxyTarget>, ConfigError> {
        let key = ConfigKey::ProxyForwardHeaders;
        let forward_headers = self
            .layered
            .get(&key)
            .map(|s| header_list(&s.value).map_err(|m| self.invalid(key, m)))
            .transpose()?;
        let ca_file = self.path(ConfigKey::ProxyCaFile)?;
        Ok(self
            .string(ConfigKey::ProxyTarget)?
            .filter(|s| !s.is_empty())
            .map(|url| ProxyTarget {
                url,
                headers: BTreeMap::new(),
                forward_headers,
                ca_file,
            }))
    }

    fn server_limits(&self) -> Result<ServerLimits, ConfigError> {
        let timeout = |key: ConfigKey, default: Duration| -> Result<Duration, ConfigError> {
            let value = self.parsed(key, parse_short_duration)?.unwrap_or(default);
            if value < Duration::from_millis(100) {
                return Err(self.invalid(key, "must be at least 100ms".into()));
            }
            Ok(value)
        };
        Ok(ServerLimits {
            header_timeout: timeout(ConfigKey::HeaderTimeout, DEFAULT_HEADER_TIMEOUT)?,
            body_timeout: timeout(ConfigKey::BodyTimeout, DEFAULT_BODY_TIMEOUT)?,
            idle_timeout: timeout(ConfigKey::IdleTimeout, DEFAULT_IDLE_TIMEOUT)?,
            max_connections: self
                .parsed(ConfigKey::MaxConnections, |s| match positive(s) {
                    Ok(n) if n > MAX_MAX_CONNECTIONS => {
                        Err(format!("`{s}` is more than {MAX_MAX_CONNECTIONS}"))
                    }
                    other => other,
                })?
                .unwrap_or(DEFAULT_MAX_CONNECTIONS),
        })
    }

    /// `alerts.on`: a TOML array of trigger names, or one comma-separated string (the
    /// environment's form). A name that is no trigger is an error naming it and where it came
    /// from, never dropped: a typo would otherwise silence the alerts it meant to raise.
    fn alert_triggers(&self) -> Result<Vec<Trigger>, ConfigError> {
        let key = ConfigKey::AlertOn;
        let names: Vec<String> =
            match self.layered.get(&key).map(|s| &s.value) {
                None => return Ok(Vec::new()),
                Some(toml::Value::String(s)) => s
                    .split(',')
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .collect(),
                Some(toml::Value::Array(items)) => items
                    .iter()
                    .map(|v| match v {
                        toml::Value::String(s) => Ok(s.trim().to_owned()),
                        other => Err(self
                            .invalid(key, format!("expected strings, got {}", other.type_str()))),
                    })
                    .collect::<Result<_, _>>()?,
                Some(other) => {
                    return Err(self.invalid(
                        key,
                        format!("expected a list of strings, got {}", other.type_str()),
                    ));
                }
            };
        names
            .iter()
            .map(|name| name.parse().map_err(|m| self.invalid(key, m)))
            .collect()
    }
}

fn expand_home(s: &str, home: Option<&Path>) -> PathBuf {
    match (s.strip_prefix("~/"), home) {
        (Some(rest), Some(home)) => home.join(rest),
        _ if s == "~" => home.map_or_else(|| PathBuf::from(s), Path::to_path_buf),
        _ => PathBuf::from(s),
    }
}

/// `90d`, `1h`, `30m`, `45s`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |at| s.split_at(at));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (examples: `90d`, `1h`, `30m`, `45s`)"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "`{s}` has an unknown unit (use `s`, `m`, `h` or `d`)"
            ));
        }
    };
    n.checked_mul(factor)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// A whole number of at least 1 (queue sizes, attempts, rates).
fn positive<T: std::str::FromStr + PartialOrd + From<u8>>(s: &str) -> Result<T, String> {
    match s.trim().parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        _ => Err(format!("`{s}` is not a whole number of at least 1")),
    }
}

/// [`parse_duration`], plus milliseconds (`500ms`) for retry delays and timeouts.
pub fn parse_short_duration(s: &str) -> Result<Duration, String> {
    match s.trim().strip_suffix("ms") {
        Some(ms) => ms
            .parse()
            .map(Duration::from_millis)
            .map_err(|_| format!("`{s}` is not a duration (examples: `500ms`, `5s`, `1m`)")),
        None => parse_duration(s),
    }
}

/// `64KiB`, `1MiB`, `65536` (bytes); `KB`/`MB` are read as their binary counterparts.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (digits, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |at| s.split_at(at));
    let n: usize = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size (examples: `64KiB`, `1MiB`, `65536`)"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return Err(format!("`{s}` has an unknown unit (use `KiB` or `MiB`)")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// `true` or `false`, as a boolean key's value.
fn boolean(text: &str) -> Result<bool, String> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("expected `true` or `false`, got `{other}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn home() -> Option<&'static Path> {
        Some(Path::new("/home/ops"))
    }

    #[test]
    fn defaults_without_any_layer() {
        let c = Config::load(None, &env(&[]), &ConfigFlags::default(), home()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:3100");
        assert_eq!(c.mode, Mode::Enforce);
        assert_eq!(c.data_dir, PathBuf::from("/home/ops/.meshguard"));
        assert_eq!(c.body_limit, 64 * 1024);
        assert_eq!(c.audit_durability, AuditDurability::Sync);
        assert_eq!(c.audit_retention, Duration::from_secs(90 * 86_400));
        assert!(c.audit_log);
        assert_eq!(c.approval_timeout, Duration::from_secs(3600));
        assert_eq!(c.server, ServerLimits::default());
    }

    #[test]
    fn server_limits_from_file_env_and_flags() {
        let file = "[server]\nheader_timeout = \"5s\"\nmax_connections = 100\n";
        let e = env(&[("MESHGUARD_SERVER__BODY_TIMEOUT", "1m")]);
        let flags = ConfigFlags {
            idle_timeout: Some("500ms".into()),
            max_connections: Some("200".into()),
            ..ConfigFlags::default()
        };
        let c = Config::load(Some(("gw.toml", file)), &e, &flags, home()).unwrap();
        assert_eq!(
            c.server,
            ServerLimits {
                header_timeout: Duration::from_secs(5),
                body_timeout: Duration::from_secs(60),
                idle_timeout: Duration::from_millis(500),
                max_connections: 200,
            }
        );
        let err = Config::load(
            Some(("gw.toml", "[server]\nheader_timeout = \"0s\"\n")),
            &env(&[]),
            &ConfigFlags::default(),
            home(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "gw.toml: `server.header_timeout`: must be at least 100ms"
        );
        let err = Config::load(
            None,
            &env(&[("MESHGUARD_SERVER__MAX_CONNECTIONS", "0")]),
            &ConfigFlags::default(),
            home(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("at least 1"), "{err}");
        let err = Config::load(
            None,
            &env(&[("MESHGUARD_SERVER__MAX_CONNECTIONS", "99999999999")]),
            &ConfigFlags::default(),
            home(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("more than 1000000"), "{err}");
    }

    #[test]
    fn otel_keys_from_file_and_opentelemetrys_own_variables() {
        let load = |file: &str, pairs: &[(&str, &str)]| {
            Config::load(
                Some(("gw.toml", file)),
                &env(pairs),
                &ConfigFlags::default(),
                home(),
            )
            .unwrap()
        };
        let off = load("", &[]);
        assert_eq!((off.otel_endpoint, off.otel_service_name), (None, None));
        let file = "[otel]\nendpoint = \"http://collector:4318\"\nservice_name = \"gw-a\"\n";
        let c = load(file, &[]);
        assert_eq!(c.otel_endpoint.as_deref(), Some("http://collector:4318"));
        assert_eq!(c.otel_service_name.as_deref(), Some("gw-a"));
        let c = load(
            file,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otel.example:4318"),
                ("OTEL_SERVICE_NAME", "gw-b"),
            ],
        );
        assert_eq!(
            c.otel_endpoint.as_deref(),
            Some("https://otel.example:4318")
        );
        assert_eq!(c.otel_service_name.as_deref(), Some("gw-b"));
        let c = load(
            file,
            &[
                ("OTEL_SERVICE_NAME", "gw-b"),
                ("MESHGUARD_OTEL__SERVICE_NAME", "gw-c"),
            ],
        );
        assert_eq!(c.otel_service_name.as_deref(), Some("gw-c"));
        // Empty is unset, as OpenTelemetry reads its variables.
        let c = load(
            "",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
                ("OTEL_SERVICE_NAME", " "),
            ],
        );
        assert_eq!((c.otel_endpoint, c.otel_service_name), (None, None));
    }

    #[test]
    fn flag_beats_env_beats_file() {
        let file = "mode = \"audit\"\nlisten = \"127.0.0.1:4000\"\n[audit]\ndurability = \"async\"\nlog = false\n";
        let c = Config::load(
            Some(("gw.toml", file)),
            &env(&[]),
            &ConfigFlags::default(),
            home(),
        )
        .unwrap();
        assert_eq!(c.mode, Mode::Audit);
        assert_eq!(c.audit_durability, AuditDurability::Async);
        assert!(
            !c.audit_log,
            "audit.log = false turns the write-ahead log off"
        );
        assert_eq!(c.listen.port(), 4000);

        let e = env(&[
            ("MESHGUARD_MODE", "bypass"),
            ("MESHGUARD_AUDIT__DURABILITY", "sync"),
        ]);
        let c = Config::load(Some(("gw.toml", file)), &e, &ConfigFlags::default(), home()).unwrap();
        assert_eq!(c.mode, Mode::Bypass);
        assert_eq!(c.audit_durability, AuditDurability::Sync);

        let flags = ConfigFlags {
            mode: Some(Mode::Enforce),
            ..ConfigFlags::default()
        };
        let c = Config::load(Some(("gw.toml", file)), &e, &flags, home()).unwrap();
        assert_eq!(c.mode, Mode::Enforce);
    }

    #[test]
    fn documented_aliases_are_read_and_meshguard_names_win() {
        let e = env(&[
            ("PORT", "8080"),
            ("HOST", "0.0.0.0"),
            ("MODE", "audit"),
            ("POLICIES_DIR", "/etc/mg/policies"),
            ("DB_PATH", "/var/lib/mg.db"),
            ("MESHGUARD_HOME", "/srv/mg"),
            ("ADMIN_TOKEN", "0123456789abcdef0123"),
            ("ALERT_ON", "deny, rate_limit"),
        ]);
        let c = Config::load(None, &e, &ConfigFlags::default(), home()).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.mode, Mode::Audit);
        assert_eq!(c.policies_dir, Some(PathBuf::from("/etc/mg/policies")));
        assert_eq!(
            c.database_url.as_ref().map(Secret::expose),
            Some("/var/lib/mg.db")
        );
        assert_eq!(c.data_dir, PathBuf::from("/srv/mg"));
        assert_eq!(
            c.admin_token.as_ref().map(Secret::expose),
            Some("0123456789abcdef0123")
        );
        assert_eq!(c.alerts.on, vec![Trigger::Deny, Trigger::RateLimit]);

        let e = env(&[("MODE", "audit"), ("MESHGUARD_MODE", "enforce")]);
        let c = Config::load(None, &e, &ConfigFlags::default(), home()).unwrap();
        assert_eq!(c.mode, Mode::Enforce);
    }

    #[test]
    fn a_whole_listen_address_ignores_host_and_port() {
        let e = env(&[("PORT", "8080")]);
        let flags = ConfigFlags {
            listen: Some("127.0.0.1:9000".into()),
            ..ConfigFlags::default()
        };
        let c = Config::load(None, &e, &flags, home()).unwrap();
        assert_eq!(c.listen.port(), 9000);
    }

    #[test]
    fn errors_name_the_key_and_origin() {
        let err = Config::load(
            Some(("gw.toml", "mod = \"audit\"")),
            &env(&[]),
            &ConfigFlags::default(),
            home(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "gw.toml: unknown key `mod`; did you mean `mode`?"
        );
        let err = Config::load(
            Some(("gw.toml", "[server]\nbody_timout = \"5s\"\n")),
            &env(&[]),
            &ConfigFlags::default(),
            home(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "gw.toml: unknown key `server.body_timout`; did you mean `server.body_timeout`?"
        );
        let err = Config::load(
            Some(("gw.toml", "[cache]\nsize = 3\n")),
            &env(&[]),
            &ConfigFlags::default(),
            home(),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "gw.toml: unknown key `cache.size`");

        let err = Config::load(
            None,
            &env(&[("MESHGUARD_MODE", "loud")]),
            &ConfigFlags::default(),
            home(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable MESHGUARD_MODE: `mode`: expected `enforce`, `audit` or `bypass`, got `loud`"
        );

        let err = Config::load(
            Some(("gw.toml", "[audit]\nretention = \"9 weeks\"")),
            &env(&[]),
            &ConfigFlags::default(),
            home(),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("gw.toml: `audit.retention`:"),
            "{err}"
        );

        let err = Config::load(
            Some(("gw.toml", "[audit]\nretention = \"0d\"")),
            &env(&[]),
            &ConfigFlags::default(),
            home(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("at least 1h"), "{err}");

        let err = Config::load(
            Some(("gw.toml", "listen = [")),
            &env(&[]),
            &ConfigFlags::default(),
            home(),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("gw.toml: "), "{err}");
    }

    #[test]
    fn sizes_durations_and_targets() {
        let file = "body_limit = \"1MiB\"\n[audit]\nretention = \"30d\"\n[approvals]\ntimeout = 600\n[targets.github]\nurl = \"https://api.github.com\"\nheaders = { Authorization = \"Bearer ${GH}\" }\n";
        let c = Config::load(
            Some(("gw.toml", file)),
            &env(&[("GH", "gh-secret")]),
            &ConfigFlags::default(),
            home(),
        )
        .unwrap();
        assert_eq!(
            c.targets["github"].headers["Authorization"].expose(),
            "Bearer gh-secret"
        );
        let err = Config::load(
            Some(("gw.toml", file)),
            &env(&[]),
            &ConfigFlags::default(),
            home(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "gw.toml: `targets.github.headers.Authorization`: environment variable `GH` is not set"
        );
        assert_eq!(c.body_limit, 1024 * 1024);
        assert_eq!(c.audit_retention, Duration::from_secs(30 * 86_400));
        assert_eq!(c.approval_timeout, Duration::from_secs(600));
        assert_eq!(
            c.targets.get("github").map(|t| t.url.as_str()),
            Some("https://api.github.com")
        );
    }

    #[test]
    fn forwarded_header_lists_for_the_default_and_named_targets() {
        let file = "[proxy]\ntarget = \"http://127.0.0.1:8\"\nforward_headers = [\"Accept\", \"X-Custom\"]\n[targets.gh]\nurl = \"http://127.0.0.1:9\"\nforward_headers = [\"accept\"]\n[targets.plain]\nurl = \"http://127.0.0.1:7\"\n";
        let load = |e: &[(&str, &str)]| {
            Config::load(
                Some(("gw.toml", file)),
                &env(e),
                &ConfigFlags::default(),
                home(),
            )
        };
        let c = load(&[]).unwrap();
        let default = c.proxy_target.unwrap();
        assert_eq!(default.url, "http://127.0.0.1:8");
        assert_eq!(
            default.forward_headers,
            Some(vec!["Accept".to_owned(), "X-Custom".to_owned()])
        );
        assert_eq!(
            c.targets["gh"].forward_headers,
            Some(vec!["accept".to_owned()])
        );
        assert_eq!(c.targets["plain"].forward_headers, None);
        // The environment gives a comma-separated list, and wins over the file.
        let c = load(&[("MESHGUARD_PROXY__FORWARD_HEADERS", "accept, x-request-id")]).unwrap();
        assert_eq!(
            c.proxy_target.unwrap().forward_headers,
            Some(vec!["accept".to_owned(), "x-request-id".to_owned()])
        );
        let bad = "[targets.gh]\nurl = \"http://127.0.0.1:9\"\nforward_headers = [1]\n";
        let err = Config::load(
            Some(("gw.toml", bad)),
            &env(&[]),
            &ConfigFlags::default(),
            home(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "gw.toml: `targets.gh`: forward_headers: expected header names, got integer"
        );
    }

    #[test]
    fn agent_quotas_from_file_and_environment() {
        let defaults = Config::load(None, &env(&[]), &ConfigFlags::default(), home()).unwrap();
        assert_eq!(defaults.quotas, DEFAULT_AGENT_QUOTAS);
        let file = "[agents]\nmax_pending_approvals = 5\nrecords_per_minute = 60\nrefusals_per_minute = 30\n";
        let c = Config::load(
            Some(("gw.toml", file)),
            &env(&[("MESHGUARD_AGENTS__RECORDS_PER_MINUTE", "120")]),
            &ConfigFlags::default(),
            home(),
        )
        .unwrap();
        assert_eq!(c.quotas.max_pending_approvals, 5);
        assert_eq!(c.quotas.records_per_minute, 120);
        assert_eq!(c.quotas.refusals_per_minute, 30);
        let err = Config::load(
            Some(("gw.toml", "[agents]\nmax_pending_approvals = 0\n")),
            &env(&[]),
            &ConfigFlags::default(),
            home(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("agents.max_pending_approvals"),
            "{err}"
        );
    }

    #[test]
    fn alert_keys_from_file_and_environment() {
        let file = "[alerts]\nwebhook_url = \"http://127.0.0.1:9/hook\"\non = [\"deny\", \"error\"]\nbackoff = \"250ms\"\nmax_attempts = 3\nper_minute = 10\n";
        let e = env(&[
            ("ALERT_WEBHOOK_SECRET", "hmac-key"),
            ("MESHGUARD_ALERTS__TIMEOUT", "2s"),
            ("MESHGUARD_ALERTS__QUEUE_SIZE", "64"),
        ]);
        let c = Config::load(Some(("gw.toml", file)), &e, &ConfigFlags::default(), home()).unwrap();
        assert_eq!(c.alerts.on, vec![Trigger::Deny, Trigger::Error]);
        assert_eq!(
            c.alerts.webhook_url.as_ref().map(Secret::expose),
            Some("http://127.0.0.1:9/hook")
        );
        assert_eq!(
            c.alerts.webhook_secret.as_ref().map(Secret::expose),
            Some("hmac-key")
        );
        assert_eq!(c.alerts.backoff, Some(Duration::from_millis(250)));
        assert_eq!(c.alerts.timeout, Some(Duration::from_secs(2)));
        assert_eq!(c.alerts.max_attempts, Some(3));
        assert_eq!(c.alerts.per_minute, Some(10));
        assert_eq!(c.alerts.queue_size, Some(64));

        let err = Config::load(
            None,
            &env(&[("ALERT_ON", "deny,denied")]),
            &ConfigFlags::default(),
            home(),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "environment variable ALERT_ON: `alerts.on`: unknown trigger `denied`"
            ),
            "{err}"
        );
        let err = Config::load(
            Some(("gw.toml", "[alerts]\nmax_attempts = 0\n")),
            &env(&[]),
            &ConfigFlags::default(),
            home(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "gw.toml: `alerts.max_attempts`: `0` is not a whole number of at least 1"
        );
    }

    #[test]
    fn secrets_do_not_leak_into_debug() {
        let e = env(&[
            ("MESHGUARD_ADMIN_TOKEN", "super-secret-admin-token"),
            (
                "MESHGUARD_DATABASE__URL",
                "postgres://mg:super-secret-pw@db/mg",
            ),
            (
                "ALERT_SLACK_WEBHOOK",
                "https://hooks.slack.com/services/super-secret",
            ),
            ("ALERT_WEBHOOK_SECRET", "super-secret-hmac"),
        ]);
        let c = Config::load(None, &e, &ConfigFlags::default(), home()).unwrap();
        assert!(!format!("{c:?}").contains("super-secret"));
    }

    #[test]
    fn a_bad_alert_trigger_names_the_value_where_it_came_from_and_the_choices() {
        let load = |file: Option<(&str, &str)>, e: &[(&str, &str)]| {
            Config::load(file, &env(e), &ConfigFlags::default(), home())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            load(
                Some(("gw.toml", "[alerts]\non = [\"deny\", \"revoked\"]\n")),
                &[]
            ),
            "gw.toml: `alerts.on`: unknown trigger `revoked` (expected one of deny, rate_limit, \
             approval_required, agent_revoked, error)"
        );
        assert_eq!(
            load(None, &[("MESHGUARD_ALERTS__ON", "deny, Deny")]),
            "environment variable MESHGUARD_ALERTS__ON: `alerts.on`: unknown trigger `Deny` \
             (expected one of deny, rate_limit, approval_required, agent_revoked, error)"
        );
        let c = Config::load(
            Some(("gw.toml", "[alerts]\non = [\"deny\"]\n")),
            &env(&[("ALERT_ON", "agent_revoked,error")]),
            &ConfigFlags::default(),
            home(),
        )
        .unwrap();
        assert_eq!(c.alerts.on, vec![Trigger::AgentRevoked, Trigger::Error]);
    }

    #[test]
    fn hosted_mcp_servers_are_read_and_their_mistakes_named() {
        let file = r#"
[mcp.servers.fs]
command = ["npx", "@modelcontextprotocol/server-filesystem", "/srv/ws"]
approval_wait_seconds = 30

[mcp.servers.fs.tools]
write_file = { action = "write:workspace", resource = "path", root = "/srv/ws" }
"#;
        let config = Config::load(
            Some(("gw.toml", file)),
            &env(&[]),
            &ConfigFlags::default(),
            home(),
        )
        .unwrap();
        let remote = Config::load(
            Some((
                "gw.toml",
                "[mcp.servers.remote]\nurl = \"https://mcp.example\"\nheaders = { Authorization = \"Bearer ${UPSTREAM_TOKEN}\" }\n",
            )),
            &env(&[("UPSTREAM_TOKEN", "s3cret")]),
            &ConfigFlags::default(),
            home(),
        )
        .unwrap();
        let server = &remote.mcp_servers["remote"];
        assert_eq!(server.headers["Authorization"], "Bearer s3cret");
        assert!(!format!("{server:?}").contains("s3cret"));
        let fs = &config.mcp_servers["fs"];
        assert_eq!(fs.command[0], "npx");
        assert_eq!(fs.approval_wait_seconds, Some(30));
        assert_eq!(
            fs.tools["write_file"].action.as_deref(),
            Some("write:workspace")
        );

        for (file, expected) in [
            (
                "[mcp.servers.fs]\ncommand = [\"x\"]\ncomand = 1\n",
                "gw.toml: `mcp.servers.fs.comand`: unknown field `comand`",
            ),
            (
                "[mcp.servers.fs]\nresource = \"path\"\n",
                "gw.toml: `mcp.servers.fs.command`: the server's program",
            ),
            (
                "[mcp.servers.fs]\ncommand = [\"x\"]\nurl = \"http://u\"\n",
                "gw.toml: `mcp.servers.fs`: give `command` (a server the gateway starts) or `url`",
            ),
            (
                "[mcp.servers.fs]\ncommand = [\"x\"]\nheaders = { a = \"b\" }\n",
                "gw.toml: `mcp.servers.fs.headers`: headers are sent to a `url` server only",
            ),
            (
                "[mcp.servers.fs]\nurl = \"http://u\"\nheaders = { a = \"${NOPE}\" }\n",
                "gw.toml: `mcp.servers.fs.headers.a`:",
            ),
            (
                "[mcp.servers.fs]\ncommand = []\n",
                "gw.toml: `mcp.servers.fs.command`: the server's program and its arguments",
            ),
            (
                "[mcp.servers.Bad]\ncommand = [\"x\"]\n",
                "gw.toml: `mcp.servers.Bad`: a server name is 1 to 64",
            ),
            (
                "[mcp.servers.fs]\ncommand = [\"x\"]\nidle_timeout_seconds = 0\n",
                "gw.toml: `mcp.servers.fs.idle_timeout_seconds`: must be at least 1",
            ),
            (
                "[mcp.sever.fs]\n",
                "gw.toml: `mcp.sever`: unknown field `sever`",
            ),
        ] {
            let err = Config::load(
                Some(("gw.toml", file)),
                &env(&[]),
                &ConfigFlags::default(),
                home(),
            )
            .unwrap_err()
            .to_string();
            assert!(err.starts_with(expected), "{file}: {err}");
        }
    }

    #[test]
    fn tls_keys_come_in_pairs_and_unknown_tls_keys_are_refused() {
        let load = |file: &str| {
            Config::load(
                Some(("gw.toml", file)),
                &env(&[]),
                &ConfigFlags::default(),
                home(),
            )
        };
        let both = load("[tls]\ncert = \"/etc/gw.crt\"\nkey = \"/etc/gw.key\"\n").unwrap();
        assert_eq!(
            both.tls,
            Some(crate::tls::TlsFiles {
                cert: "/etc/gw.crt".into(),
                key: "/etc/gw.key".into()
            })
        );
        assert_eq!(load("").unwrap().tls, None);
        let err = load("[tls]\ncert = \"/etc/gw.crt\"\n").unwrap_err();
        assert!(err.to_string().contains("`tls.key`: missing"), "{err}");
        let err = load("[tls]\ncertificate = \"x\"\n").unwrap_err();
        assert!(
            err.to_string().contains("unknown key `tls.certificate`"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_flag_is_named_as_typed() {
        let flags = ConfigFlags {
            body_timeout: Some("soon".into()),
            ..ConfigFlags::default()
        };
        let err = Config::load(None, &env(&[]), &flags, home()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("flag --body-timeout: `server.body_timeout`: `soon` is not"),
            "{err}"
        );
    }

    /// Every key and every environment name of [`ConfigKey`] has its row in the operations
    /// guide's table, with its flag, so the guide cannot drift from what the gateway reads.
    #[test]
    fn the_operations_guide_lists_every_key_its_variables_and_flag() {
        let guide = include_str!("../../../docs/operations.md");
        let section = guide
            .split("\n## ")
            .find(|s| s.starts_with("Configuration\n"))
            .expect("docs/operations.md has a Configuration section");
        let rows: Vec<&str> = section.lines().filter(|l| l.starts_with("| `")).collect();
        for key in ConfigKey::ALL {
            let head = format!("| `{}` |", key.file_key());
            let row = rows
                .iter()
                .find(|r| r.starts_with(&head))
                .unwrap_or_else(|| panic!("docs/operations.md has no row for `{key}`"));
            let cells: Vec<&str> = row.split(" | ").collect();
            let flag = key.flag().map(|f| format!("`--{f}`")).unwrap_or_default();
            assert_eq!(cells[1].trim(), flag, "flag of `{key}`");
            for name in key
                .env_aliases()
                .iter()
                .copied()
                .map(str::to_owned)
                .chain([key.env()])
            {
                assert!(
                    cells[2].contains(&format!("`{name}`")),
                    "`{name}` of `{key}`"
                );
            }
        }
        for row in rows {
            let name = row.split('`').nth(1).unwrap_or_default();
            if name.starts_with("targets.") {
                continue;
            }
            assert!(
                ConfigKey::from_file_key(name).is_some(),
                "docs/operations.md documents `{name}`, which the gateway does not read"
            );
        }
    }
}
