//! Everything a request handler needs, shared behind one `Arc`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::FromRef;
use meshguard_store::Store;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::alerts::{AlertDispatcher, AlertSettings, AlertTasks};
use crate::audit_peers;
use crate::audit_writer::AuditWriter;
use crate::auth_cache::AuthCache;
use crate::config::{AgentQuotas, AuditDurability, Mode, Secret};
use crate::data_dir::DataDir;
use crate::extract::BodyLimit;
use crate::history::HistoryStore;
use crate::mcp_host::McpHost;
use crate::metrics::GatewayMetrics;
use crate::policies::{PolicyChangeError, PolicyRegistry};
use crate::proxy::Upstreams;
use crate::rate_limit::{AgentBudget, Clock, MemoryLimiter, RateLimitStore, SystemClock};
use crate::rate_limit_redis::RedisLimiter;
use crate::refusals::{self, RefusalTally};
use crate::routes::console::ConsoleSessions;
use crate::token::TokenKeys;

/// The wall clock a decision is made at: the system's, or the one a test sets.
pub type WallClock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// Settings of one gateway that tests choose freely (no config file, no environment).
#[derive(Clone)]
pub struct GatewayOptions {
    /// Enforce, audit or bypass.
    pub mode: Mode,
    /// Largest accepted body.
    pub body_limit: usize,
    /// Whether responses wait for their audit event.
    pub audit_durability: AuditDurability,
    /// Approval timeout when no policy sets one.
    pub approval_timeout: Duration,
    /// The rate limiter's clock.
    pub clock: Arc<dyn Clock>,
    /// The time of day policies read (`schedule` conditions).
    pub wall_clock: WallClock,
    /// Reverse-proxy upstreams (none by default).
    pub upstreams: Upstreams,
    /// Alert receivers and triggers (none by default).
    pub alerts: AlertSettings,
    /// Global rate limits in Redis; `None` (the default) keeps them in memory, read by `clock`.
    pub redis: Option<RedisLimiter>,
    /// Per-agent caps on pending approvals and records.
    pub quotas: AgentQuotas,
    /// MCP servers served at `/mcp/S` (none by default).
    pub mcp: Arc<McpHost>,
    /// Whether the web console is served at `/console`.
    pub console: bool,
    /// Whether a SQLite gateway makes its audit events durable in a write-ahead log
    /// (crate::audit_log) before indexing them: the default. Off, each batch is committed to
    /// the store directly, as on PostgreSQL; a second gateway embedded over the same data
    /// directory (the log is one process's) runs so.
    pub audit_log: bool,
    /// Where the check path's traces are exported (none by default: traces are off).
    pub telemetry: Option<Arc<crate::telemetry::Telemetry>>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            mode: Mode::Enforce,
            body_limit: crate::config::DEFAULT_BODY_LIMIT,
            audit_durability: AuditDurability::Sync,
            approval_timeout: crate::config::DEFAULT_APPROVAL_TIMEOUT,
            clock: Arc::new(SystemClock::new()),
            wall_clock: Arc::new(OffsetDateTime::now_utc),
            upstreams: Upstreams::default(),
            alerts: AlertSettings::default(),
            redis: None,
            quotas: crate::config::DEFAULT_AGENT_QUOTAS,
            mcp: Arc::new(McpHost::default()),
            console: true,
            audit_log: true,
            telemetry: None,
        }
    }
}

impl std::fmt::Debug for GatewayOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayOptions")
            .field("mode", &self.mode)
            .field("body_limit", &self.body_limit)
            .field("audit_durability", &self.audit_durability)
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

/// The shared state of one gateway.
pub struct Gateway {
    /// Agents, tokens, policies, approvals, audit.
    pub store: Arc<dyn Store>,
    /// Policies in force.
    pub policies: Arc<PolicyRegistry>,
    /// Signing keys for agent tokens.
    pub keys: TokenKeys,
    /// The key that signs audit checkpoints, and the keys whose checkpoints verify.
    pub audit_keys: Arc<crate::checkpoints::AuditKeys>,
    /// Token ids and agents of recent requests, cleared by every admin change.
    pub auth_cache: Arc<AuthCache>,
    /// The admin secret.
    pub admin_token: Secret,
    /// This gateway's instance id (its audit chain).
    pub instance_id: String,
    /// Enforce, audit or bypass.
    pub mode: Mode,
    /// Rate-limit counters: in memory, or in Redis shared by every gateway.
    pub limiter: RateLimitStore,
    /// The audit group-commit writer.
    pub audit: AuditWriter,
    /// Where a new live-stream follower's view of the other gateways' chains starts.
    pub audit_follow_from: Arc<audit_peers::FollowFrom>,
    /// Prometheus metrics.
    pub metrics: GatewayMetrics,
    /// Largest accepted body.
    pub body_limit: usize,
    /// Approval timeout when no policy sets one.
    pub approval_timeout: Duration,
    /// When the gateway started, for `/health`.
    pub started: Instant,
    /// Turns true when shutdown begins, so that endless responses (audit streams) end and the
    /// server can finish its in-flight requests.
    pub stopping: watch::Sender<bool>,
    /// Where proxied requests go.
    pub upstreams: Upstreams,
    /// Hands alerts to their receivers without delaying decisions.
    pub alerts: AlertDispatcher,
    /// Per-agent caps on pending approvals and records.
    pub quotas: AgentQuotas,
    /// Each agent's `/record` calls of the last minute.
    pub record_budget: AgentBudget,
    /// Each agent's refused requests (token no longer honoured) of the last minute.
    pub refusal_budget: AgentBudget,
    /// Refusals of honoured-no-more tokens, written as one event per agent per minute.
    pub refusals: Arc<RefusalTally>,
    /// The time of day policies read.
    pub wall_clock: WallClock,
    /// Each agent's past allowed checks, for `after` / `notAfter` conditions.
    pub history: HistoryStore,
    /// The MCP servers this gateway hosts, and their sessions.
    pub mcp: Arc<McpHost>,
    /// Whether `/console` is served.
    pub console_enabled: bool,
    /// The web console's signed-in operators.
    pub console: Arc<ConsoleSessions>,
    /// The tracer of the check path's spans, when traces are on.
    pub telemetry: Option<Arc<crate::telemetry::Telemetry>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("instance_id", &self.instance_id)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// The axum state: a cheap handle on the [`Gateway`].
#[derive(Clone, Debug)]
pub struct AppState(pub Arc<Gateway>);

impl std::ops::Deref for AppState {
    type Target = Gateway;
    fn deref(&self) -> &Gateway {
        &self.0
    }
}

impl AppState {
    /// Ends the audit streams; called when the shutdown signal arrives.
    pub fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
        // MCP sessions hold response streams open; ending them ends those streams.
        self.mcp.end_all();
    }
}

impl FromRef<AppState> for BodyLimit {
    fn from_ref(state: &AppState) -> BodyLimit {
        BodyLimit(state.body_limit)
    }
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The metrics registry refused a metric (a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Stored policies do not load.
    #[error("stored policies do not load: {0}")]
    Policies(#[from] PolicyChangeError),
    /// The audit log cannot be opened or brought in step with the store.
    #[error("audit log: {0}")]
    AuditLog(#[from] crate::audit_log::RecoveryError),
}

/// Background tasks that must finish before the process exits.
#[derive(Debug)]
pub struct Background {
    /// The audit writer task; it ends after [`AuditWriter::shutdown`].
    pub audit_task: JoinHandle<()>,
    /// The alert delivery task; it drains after [`AlertDispatcher::shutdown`].
    pub alerts: AlertTasks,
}

impl AppState {
    /// Builds the state of a gateway over `store`, with the keys and ids of `dir`, and loads the
    /// stored policies. The audit writer starts here.
    pub async fn new(
        store: Arc<dyn Store>,
        dir: &DataDir,
        options: GatewayOptions,
    ) -> Result<(AppState, Background), StartError> {
        let metrics = GatewayMetrics::new()?;
        // Subscribed before the first request can fill it, so no change is missed.
        let auth_cache = AuthCache::start(store.subscribe_changes(), Arc::clone(&options.clock));
        let policies = Arc::new(PolicyRegistry::load(Arc::clone(&store)).await?);
        // Alerts first: the audit writer raises one when a batch cannot be committed.
        let (alerts, alert_tasks) =
            AlertDispatcher::start(options.alerts, metrics.clone(), dir.instance_id.clone());
        // A SQLite gateway makes its events durable in a write-ahead log and indexes them
        // behind it (crate::audit_log); gateways sharing PostgreSQL commit to it directly.
        let log = if options.audit_log && store.backend() == "sqlite" {
            Some(crate::audit_log::open(&*store, &dir.path, &dir.instance_id).await?)
        } else {
            None
        };
        let (audit, audit_task) = AuditWriter::start(
            Arc::clone(&store),
            metrics.clone(),
            dir.instance_id.clone(),
            options.audit_durability,
            alerts.queue(),
            log,
        );
        let stopping = watch::channel(false).0;
        let refusals = Arc::new(RefusalTally::new(
            Arc::clone(&options.clock),
            dir.instance_id.clone(),
        ));
        tokio::spawn(refusals::run(
            Arc::clone(&refusals),
            audit.clone(),
            stopping.subscribe(),
        ));
        let record_budget = AgentBudget::new(
            Arc::clone(&options.clock),
            options.quotas.records_per_minute,
        );
        let refusal_budget = AgentBudget::new(
            Arc::clone(&options.clock),
            options.quotas.refusals_per_minute,
        );
        let audit_follow_from = Arc::new(audit_peers::FollowFrom::default());
        audit_peers::start(
            Arc::clone(&store),
            dir.instance_id.clone(),
            audit.live(),
            Arc::clone(&audit_follow_from),
            stopping.subscribe(),
        );
        let gateway = Gateway {
            store,
            policies,
            keys: dir.keys.clone(),
            audit_keys: Arc::clone(&dir.audit_keys),
            auth_cache,
            admin_token: dir.admin_token.clone(),
            instance_id: dir.instance_id.clone(),
            mode: options.mode,
            mcp: Arc::clone(&options.mcp),
            console_enabled: options.console,
            console: Arc::new(ConsoleSessions::default()),
            telemetry: options.telemetry.clone(),
            history: match &options.redis {
                Some(redis) => HistoryStore::Redis(redis.clone()),
                None => HistoryStore::memory(),
            },
            limiter: match options.redis {
                Some(redis) => RateLimitStore::Redis(redis),
                None => RateLimitStore::Memory(MemoryLimiter::new(options.clock)),
            },
            audit,
            audit_follow_from,
            metrics,
            body_limit: options.body_limit,
            approval_timeout: options.approval_timeout,
            started: Instant::now(),
            stopping,
            upstreams: options.upstreams,
            alerts,
            quotas: options.quotas,
            record_budget,
            refusal_budget,
            refusals,
            wall_clock: options.wall_clock,
        };
        Ok((
            AppState(Arc::new(gateway)),
            Background {
                audit_task,
                alerts: alert_tasks,
            },
        ))
    }
}
