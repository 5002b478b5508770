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

use serde::Serialize;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

/// Values given on the command line; `None` means "not given", so lower layers apply.
#[derive(Debug, Clone, Default)]
pub struct ConfigFlags {
    /// `--addr`.
    pub listen: Option<String>,
    /// `--mode`.
    pub mode: Option<String>,
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
    #[error("{origin}: unknown key `{key}`")]
    UnknownKey {
        /// Where the key came from.
        origin: String,
        /// The dotted key.
        key: String,
    },
    /// A known key with a value that does not fit.
    #[error("{origin}: `{key}`: {message}")]
    Invalid {
        /// Where the value came from (file name, environment variable, or flag).
        origin: String,
        /// The dotted key.
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
    /// Which events alert: `deny`, `rate_limit`, `approval_required`, `agent_revoked`, `error`.
    pub on: Vec<String>,
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
    /// TLS certificate and key files.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// Where a raw value came from; it names the origin in error messages.
#[derive(Debug, Clone)]
struct Sourced {
    value: toml::Value,
    origin: String,
}

/// Scalar keys: (dotted key, documented environment aliases). `MESHGUARD_A__B` is always read too.
const KEYS: &[(&str, &[&str])] = &[
    ("listen", &[]),
    ("mode", &["MODE"]),
    ("data_dir", &["MESHGUARD_HOME"]),
    ("admin_token", &["ADMIN_TOKEN"]),
    ("policies_dir", &["POLICIES_DIR"]),
    ("database.url", &["DB_PATH"]),
    ("redis.url", &[]),
    ("body_limit", &[]),
    ("server.header_timeout", &[]),
    ("server.body_timeout", &[]),
    ("server.idle_timeout", &[]),
    ("server.max_connections", &[]),
    ("audit.durability", &[]),
    ("audit.retention", &[]),
    ("approvals.timeout", &[]),
    ("agents.max_pending_approvals", &[]),
    ("agents.records_per_minute", &[]),
    ("agents.refusals_per_minute", &[]),
    ("alerts.webhook_url", &["ALERT_WEBHOOK_URL"]),
    ("alerts.webhook_secret", &["ALERT_WEBHOOK_SECRET"]),
    ("alerts.slack_webhook", &["ALERT_SLACK_WEBHOOK"]),
    ("alerts.on", &["ALERT_ON"]),
    ("alerts.queue_size", &[]),
    ("alerts.max_attempts", &[]),
    ("alerts.backoff", &[]),
    ("alerts.backoff_max", &[]),
    ("alerts.timeout", &[]),
    ("alerts.per_minute", &[]),
    ("proxy.target", &["PROXY_TARGET"]),
    ("proxy.forward_headers", &[]),
    ("tls.cert", &[]),
    ("tls.key", &[]),
];

/// The environment variable `MESHGUARD_A__B` for key `a.b`.
fn env_name(key: &str) -> String {
    format!("MESHGUARD_{}", key.to_uppercase().replace('.', "__"))
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
        let mut layered: BTreeMap<String, Sourced> = BTreeMap::new();
        let mut targets = BTreeMap::new();

        // Lowest layer above the defaults: the file.
        if let Some((origin, text)) = file {
            let table: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Syntax {
                        origin: origin.to_owned(),
                        message: e.to_string().trim_end().replace('\n', " "),
                    })?;
            let mut flat = Vec::new();
            flatten("", &toml::Value::Table(table), &mut flat);
            for (key, value) in flat {
                if let Some(rest) = key.strip_prefix("targets.") {
                    collect_target(origin, rest, value, &mut targets)?;
                    continue;
                }
                if !KEYS.iter().any(|(k, _)| *k == key) {
                    return Err(ConfigError::UnknownKey {
                        origin: origin.to_owned(),
                        key,
                    });
                }
                layered.insert(
                    key,
                    Sourced {
                        value,
                        origin: origin.to_owned(),
                    },
                );
            }
        }

        // Environment: the documented alias first, then `MESHGUARD_A__B`, which wins over it.
        for (key, aliases) in KEYS {
            for name in aliases
                .iter()
                .copied()
                .map(str::to_owned)
                .chain([env_name(key)])
            {
                if let Some(value) = env.get(&name) {
                    layered.insert(
                        (*key).to_owned(),
                        Sourced {
                            value: toml::Value::String(value.clone()),
                            origin: format!("environment variable {name}"),
                        },
                    );
                }
            }
        }

        // Flags: the top layer.
        let flag_values: [(&str, Option<String>); 11] = [
            ("listen", flags.listen.clone()),
            ("mode", flags.mode.clone()),
            (
                "data_dir",
                flags.data_dir.as_ref().map(|p| p.display().to_string()),
            ),
            (
                "policies_dir",
                flags.policies_dir.as_ref().map(|p| p.display().to_string()),
            ),
            ("database.url", flags.database_url.clone()),
            ("redis.url", flags.redis_url.clone()),
            ("admin_token", flags.admin_token.clone()),
            ("server.header_timeout", flags.header_timeout.clone()),
            ("server.body_timeout", flags.body_timeout.clone()),
            ("server.idle_timeout", flags.idle_timeout.clone()),
            ("server.max_connections", flags.max_connections.clone()),
        ];
        for (key, value) in flag_values {
            if let Some(value) = value {
                layered.insert(
                    key.to_owned(),
                    Sourced {
                        value: toml::Value::String(value),
                        origin: format!("flag for `{key}`"),
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
        Validator { layered, home }.finish(env, flags, targets)
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
    for (k, v) in table {
        match (k.as_str(), v) {
            ("url", toml::Value::String(s)) => url = Some(s),
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
    layered: BTreeMap<String, Sourced>,
    home: Option<&'a Path>,
}

impl Validator<'_> {
    fn invalid(&self, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            origin: self
                .layered
                .get(key)
                .map_or_else(|| "default".to_owned(), |s| s.origin.clone()),
            key: key.to_owned(),
            message,
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.layered.get(key).map(|s| &s.value) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(toml::Value::Integer(i)) => Ok(Some(i.to_string())),
            Some(other) => {
                Err(self.invalid(key, format!("expected a string, got {}", other.type_str())))
            }
        }
    }

    fn path(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self.string(key)?.map(|s| expand_home(&s, self.home)))
    }

    fn parsed<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) => parse(&s).map(Some).map_err(|m| self.invalid(key, m)),
        }
    }

    fn finish(
        self,
        env: &HashMap<String, String>,
        flags: &ConfigFlags,
        targets: BTreeMap<String, ProxyTarget>,
    ) -> Result<Config, ConfigError> {
        let listen = self.listen(env, flags)?;
        let mode = self.parsed("mode", |s| s.parse())?.unwrap_or(Mode::Enforce);
        let data_dir = match self.path("data_dir")? {
            Some(dir) => dir,
            None => self.home.map(|h| h.join(".meshguard")).ok_or_else(|| {
                self.invalid(
                    "data_dir",
                    "no home directory: set MESHGUARD_HOME or --data-dir".into(),
                )
            })?,
        };
        let database_url = self
            .string("database.url")?
            .filter(|s| !s.is_empty())
            .map(Secret::new);
        let redis_url = self
            .string("redis.url")?
            .filter(|s| !s.is_empty())
            .map(Secret::new);
        let body_limit = self
            .parsed("body_limit", parse_size)?
            .unwrap_or(DEFAULT_BODY_LIMIT);
        if body_limit == 0 {
            return Err(self.invalid("body_limit", "must be at least 1 byte".into()));
        }
        let server = self.server_limits()?;
        let audit_durability = self
            .parsed("audit.durability", |s| match s {
                "sync" => Ok(AuditDurability::Sync),
                "async" => Ok(AuditDurability::Async),
                other => Err(format!("expected `sync` or `async`, got `{other}`")),
            })?
            .unwrap_or(AuditDurability::Sync);
        let audit_retention = self
            .parsed("audit.retention", parse_duration)?
            .unwrap_or(DEFAULT_AUDIT_RETENTION);
        let approval_timeout = self
            .parsed("approvals.timeout", parse_duration)?
            .unwrap_or(DEFAULT_APPROVAL_TIMEOUT);
        if audit_retention < Duration::from_secs(3600) {
            return Err(self.invalid(
                "audit.retention",
                "must be at least 1h: retention deletes every older event".into(),
            ));
        }
        if approval_timeout.is_zero() {
            return Err(self.invalid("approvals.timeout", "must be at least 1s".into()));
        }
        let quotas = AgentQuotas {
            max_pending_approvals: self
                .parsed("agents.max_pending_approvals", positive)?
                .unwrap_or(DEFAULT_AGENT_QUOTAS.max_pending_approvals),
            records_per_minute: self
                .parsed("agents.records_per_minute", positive)?
                .unwrap_or(DEFAULT_AGENT_QUOTAS.records_per_minute),
            refusals_per_minute: self
                .parsed("agents.refusals_per_minute", positive)?
                .unwrap_or(DEFAULT_AGENT_QUOTAS.refusals_per_minute),
        };
        let policies_dir = self.path("policies_dir")?;
        let admin_token = self.string("admin_token")?.filter(|s| !s.is_empty());
        if let Some(token) = &admin_token
            && token.len() < 16
        {
            return Err(self.invalid("admin_token", "must be at least 16 characters long".into()));
        }
        let alerts = Alerts {
            webhook_url: self.string("alerts.webhook_url")?.map(Secret::new),
            webhook_secret: self.string("alerts.webhook_secret")?.map(Secret::new),
            slack_webhook: self.string("alerts.slack_webhook")?.map(Secret::new),
            on: self.alert_triggers()?,
            queue_size: self.parsed("alerts.queue_size", positive)?,
            max_attempts: self.parsed("alerts.max_attempts", positive)?,
            backoff: self.parsed("alerts.backoff", parse_short_duration)?,
            backoff_max: self.parsed("alerts.backoff_max", parse_short_duration)?,
            timeout: self.parsed("alerts.timeout", parse_short_duration)?,
            per_minute: self.parsed("alerts.per_minute", positive)?,
        };
        if alerts.on.is_empty()
            && self.layered.contains_key("alerts.on")
            && (alerts.webhook_url.is_some() || alerts.slack_webhook.is_some())
        {
            return Err(self.invalid(
                "alerts.on",
                "lists no trigger: name at least one, or remove it to alert on every trigger"
                    .into(),
            ));
        }
        if alerts.timeout.is_some_and(|t| t.is_zero()) {
            return Err(self.invalid("alerts.timeout", "must be more than 0ms".into()));
        }
        let tls = match (self.path("tls.cert")?, self.path("tls.key")?) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((cert, key)),
            (Some(_), None) => {
                return Err(self.invalid("tls.key", "required when `tls.cert` is set".into()));
            }
            (None, Some(_)) => {
                return Err(self.invalid("tls.cert", "required when `tls.key` is set".into()));
            }
        };
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
            tls,
        })
    }

    /// `listen`, with the documented `HOST` and `PORT` variables adjusting the file's (or the
    /// default) address when neither a flag nor `MESHGUARD_LISTEN` gives a whole one.
    fn listen(
        &self,
        env: &HashMap<String, String>,
        flags: &ConfigFlags,
    ) -> Result<SocketAddr, ConfigError> {
        let whole_from_top = flags.listen.is_some() || env.contains_key(&env_name("listen"));
        let text = self
            .string("listen")?
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let mut addr: SocketAddr = text
            .parse()
            .map_err(|_| self.invalid("listen", format!("`{text}` is not an IP:port address")))?;
        if !whole_from_top {
            if let Some(host) = env.get("HOST") {
                let ip = host.parse().map_err(|_| ConfigError::Invalid {
                    origin: "environment variable HOST".into(),
                    key: "listen".into(),
                    message: format!("`{host}` is not an IP address"),
                })?;
                addr.set_ip(ip);
            }
            if let Some(port) = env.get("PORT") {
                let port = port.parse().map_err(|_| ConfigError::Invalid {
                    origin: "environment variable PORT".into(),
                    key: "listen".into(),
                    message: format!("`{port}` is not a port number"),
                })?;
                addr.set_port(port);
            }
        }
        Ok(addr)
    }

    /// The default upstream: `proxy.target` and the request headers it receives.
    fn proxy_target(&self) -> Result<Option<ProxyTarget>, ConfigError> {
        let key = "proxy.forward_headers";
        let forward_headers = self
            .layered
            .get(key)
            .map(|s| header_list(&s.value).map_err(|m| self.invalid(key, m)))
            .transpose()?;
        Ok(self
            .string("proxy.target")?
            .filter(|s| !s.is_empty())
            .map(|url| ProxyTarget {
                url,
                headers: BTreeMap::new(),
                forward_headers,
            }))
    }

    fn server_limits(&self) -> Result<ServerLimits, ConfigError> {
        let timeout = |key: &str, default: Duration| -> Result<Duration, ConfigError> {
            let value = self.parsed(key, parse_short_duration)?.unwrap_or(default);
            if value < Duration::from_millis(100) {
                return Err(self.invalid(key, "must be at least 100ms".into()));
            }
            Ok(value)
        };
        Ok(ServerLimits {
            header_timeout: timeout("server.header_timeout", DEFAULT_HEADER_TIMEOUT)?,
            body_timeout: timeout("server.body_timeout", DEFAULT_BODY_TIMEOUT)?,
            idle_timeout: timeout("server.idle_timeout", DEFAULT_IDLE_TIMEOUT)?,
            max_connections: self
                .parsed("server.max_connections", |s| match positive(s) {
                    Ok(n) if n > MAX_MAX_CONNECTIONS => {
                        Err(format!("`{s}` is more than {MAX_MAX_CONNECTIONS}"))
                    }
                    other => other,
                })?
                .unwrap_or(DEFAULT_MAX_CONNECTIONS),
        })
    }

    fn alert_triggers(&self) -> Result<Vec<String>, ConfigError> {
        const KNOWN: [&str; 5] = [
            "deny",
            "rate_limit",
            "approval_required",
            "agent_revoked",
            "error",
        ];
        let key = "alerts.on";
        let items: Vec<String> =
            match self.layered.get(key).map(|s| &s.value) {
                None => return Ok(Vec::new()),
                Some(toml::Value::String(s)) => s
                    .split(',')
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .collect(),
                Some(toml::Value::Array(items)) => items
                    .iter()
                    .map(|v| match v {
                        toml::Value::String(s) => Ok(s.clone()),
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
        for item in &items {
            if !KNOWN.contains(&item.as_str()) {
                return Err(self.invalid(
                    key,
                    format!(
                        "unknown trigger `{item}` (expected one of {})",
                        KNOWN.join(", ")
                    ),
                ));
            }
        }
        Ok(items)
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
    fn flag_beats_env_beats_file() {
        let file =
            "mode = \"audit\"\nlisten = \"127.0.0.1:4000\"\n[audit]\ndurability = \"async\"\n";
        let c = Config::load(
            Some(("gw.toml", file)),
            &env(&[]),
            &ConfigFlags::default(),
            home(),
        )
        .unwrap();
        assert_eq!(c.mode, Mode::Audit);
        assert_eq!(c.audit_durability, AuditDurability::Async);
        assert_eq!(c.listen.port(), 4000);

        let e = env(&[
            ("MESHGUARD_MODE", "bypass"),
            ("MESHGUARD_AUDIT__DURABILITY", "sync"),
        ]);
        let c = Config::load(Some(("gw.toml", file)), &e, &ConfigFlags::default(), home()).unwrap();
        assert_eq!(c.mode, Mode::Bypass);
        assert_eq!(c.audit_durability, AuditDurability::Sync);

        let flags = ConfigFlags {
            mode: Some("enforce".into()),
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
        assert_eq!(c.alerts.on, vec!["deny", "rate_limit"]);

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
        assert_eq!(err.to_string(), "gw.toml: unknown key `mod`");

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
        assert_eq!(c.alerts.on, vec!["deny", "error"]);
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
}
