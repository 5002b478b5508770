//! Starting and stopping a gateway: data dir, store, policies, background tasks, HTTP server,
//! and a graceful shutdown that flushes the audit trail.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use meshguard_policy::parse_policy;
use meshguard_store::{StoreChange, StoreError, StoreLocation};
use time::OffsetDateTime;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use crate::alerts::AlertSettings;
use crate::config::{Config, ConfigKey, Mode, Secret};
use crate::data_dir::{DataDir, DataDirError};
use crate::mcp_host::McpHost;
use crate::policies::PolicyChangeError;
use crate::policy_files::{PolicyDir, PolicyDirError, list_policy_files, spawn_watcher};
use crate::proxy::Upstreams;
use crate::rate_limit::SystemClock;
use crate::rate_limit_redis::{DEFAULT_KEY_PREFIX, RedisLimitError, RedisLimiter};
use crate::routes::app;
use crate::state::{AppState, GatewayOptions, StartError};

/// Why the gateway did not start (or stopped with an error).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory cannot be prepared.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The store cannot be opened.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The gateway state cannot be built.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The policies directory cannot be read.
    #[error("policies directory: {0}")]
    PolicyDir(#[from] PolicyDirError),
    /// Policy files that do not validate (`--validate-only`).
    #[error("{count} policy file(s) do not validate:\n{errors}")]
    InvalidPolicies {
        /// How many.
        count: usize,
        /// One `file:line:col: …` line each.
        errors: String,
    },
    /// A proxy upstream that cannot be used.
    #[error("{0}")]
    Proxy(String),
    /// `--redis-url` is set but Redis does not answer: the gateway refuses to start rather than
    /// count limits per gateway.
    #[error("{0}; global rate limits need it (remove `--redis-url` to keep limits per gateway)")]
    Redis(#[from] RedisLimitError),
    /// The TLS certificate or key cannot be used.
    #[error("{0}")]
    Tls(String),
    /// A hosted MCP server that cannot be used.
    #[error("{0}")]
    Mcp(String),
    /// Traces cannot be exported as `otel.endpoint` says.
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
    /// A configured feature this gateway does not provide.
    #[error("{0}")]
    Unsupported(String),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// Where the store lives for this config: `--database-url` (a URL, or a plain path that the
/// documented `DB_PATH` gives), else `<data-dir>/meshguard.db`.
pub fn store_location(config: &Config) -> Result<StoreLocation, StoreError> {
    match config.database_url.as_ref().map(Secret::expose) {
        None => Ok(StoreLocation::in_data_dir(&config.data_dir)),
        Some(url) if url.contains("://") || url.starts_with("sqlite:") => StoreLocation::parse(url),
        Some(path) => Ok(StoreLocation::Sqlite { path: path.into() }),
    }
}

/// `serve --validate-only`: checks the configuration, the database URL and every policy file
/// (each parses and validates, and no two define the same policy name, which `serve` would
/// refuse) without creating or starting anything. Returns one line per thing checked.
pub fn validate_only(config: &Config) -> Result<Vec<String>, ServeError> {
    let location = store_location(config)?;
    Upstreams::from_config(config.proxy_target.as_ref(), &config.targets)
        .map_err(ServeError::Proxy)?;
    McpHost::new(&config.mcp_servers).map_err(ServeError::Mcp)?;
    if let Some(files) = &config.tls {
        crate::tls::load(files).map_err(|e| ServeError::Tls(e.to_string()))?;
    }
    let mut report = vec![
        format!("listen: {}", config.listen),
        format!("mode: {}", config.mode.as_str()),
        format!("data dir: {}", config.data_dir.display()),
        format!("store: {location}"),
        format!(
            "connections: at most {}; header timeout {:?}, body timeout {:?}, idle timeout {:?}",
            config.server.max_connections,
            config.server.header_timeout,
            config.server.body_timeout,
            config.server.idle_timeout
        ),
    ];
    if let Some(url) = &config.redis_url {
        let client = redis::Client::open(url.expose())
            .map_err(|e| ServeError::Redis(RedisLimitError::Url(e.to_string())))?;
        report.push(format!(
            "rate limits: redis at {} (not contacted)",
            client.get_connection_info().addr()
        ));
    }
    let alerts = AlertSettings::from_config(&config.alerts);
    if alerts.has_receivers() {
        let receivers: Vec<_> = [
            alerts.webhook.as_ref().map(|_| "webhook"),
            alerts.slack.as_ref().map(|_| "slack"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let triggers: Vec<_> = alerts.triggers.iter().map(|t| t.as_str()).collect();
        report.push(format!(
            "alerts: {} on {}",
            receivers.join(", "),
            triggers.join(", ")
        ));
    }
    if let Some(dir) = &config.policies_dir {
        let mut errors = Vec::new();
        let mut count = 0usize;
        let paths = list_policy_files(dir).map_err(|e| {
            ServeError::Unsupported(format!("policies directory {}: {e}", dir.display()))
        })?;
        // Policy name → the first file (in path order) that defines it: `serve` applies the
        // files in the same order and refuses every later file that defines the name again.
        let mut owners: BTreeMap<String, String> = BTreeMap::new();
        for path in paths {
            count += 1;
            let file = path.display().to_string();
            match std::fs::read_to_string(&path) {
                Ok(text) => match parse_policy(&file, &text) {
                    Ok(policy) => match owners.get(policy.name()) {
                        Some(owner) => errors.push(
                            PolicyChangeError::DefinedTwice {
                                name: policy.name().to_owned(),
                                file,
                                owner: owner.clone(),
                            }
                            .to_string(),
                        ),
                        None => {
                            owners.insert(policy.name().to_owned(), file);
                        }
                    },
                    Err(err) => errors.push(err.to_string()),
                },
                Err(err) => errors.push(format!("{file}: {err}")),
            }
        }
        if !errors.is_empty() {
            return Err(ServeError::InvalidPolicies {
                count: errors.len(),
                errors: errors.join("\n"),
            });
        }
        report.push(format!(
            "policies: {count} file(s) in {} valid",
            dir.display()
        ));
    }
    Ok(report)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM: the signal to pass to [`serve`].
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {},
                    _ = term.recv() => {},
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; stopping on Ctrl-C only");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// Runs the gateway on `config.listen` until `shutdown` resolves, then stops accepting requests,
/// lets the ones in flight finish, and commits every queued audit event before returning.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    serve_listener(config, listener, shutdown).await
}

/// [`serve`] on a listener the caller bound (port 0 in tests, socket activation).
pub async fn serve_listener(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    raise_open_file_limit(config.server.max_connections);
    let dir = DataDir::open(&config.data_dir, config.admin_token.as_ref())?;
    let location = store_location(&config)?;
    // A database in the data dir is the gateway's own; elsewhere its mode is the operator's.
    if let StoreLocation::Sqlite { path } = &location
        && path.parent() == Some(dir.path.as_path())
    {
        crate::data_dir::create_private_file(path)?;
    }
    let store = meshguard_store::open(&location).await?;
    // SQLite has made its `-wal` and `-shm` files by now.
    crate::data_dir::tighten(&dir.path)?;
    tracing::info!(store = %location, gateway = %dir.instance_id, "store opened");
    let upstreams = Upstreams::from_config(config.proxy_target.as_ref(), &config.targets)
        .map_err(ServeError::Proxy)?;
    let redis = match &config.redis_url {
        Some(url) => {
            let redis = RedisLimiter::connect(url.expose(), DEFAULT_KEY_PREFIX).await?;
            tracing::info!(redis = %redis.addr(), "rate limits are global: kept in redis");
            Some(redis)
        }
        None => None,
    };
    let options = GatewayOptions {
        mode: config.mode,
        body_limit: config.body_limit,
        audit_durability: config.audit_durability,
        approval_timeout: config.approval_timeout,
        clock: Arc::new(SystemClock::new()),
        upstreams,
        alerts: AlertSettings::from_config(&config.alerts),
        redis,
        quotas: config.quotas,
        mcp: Arc::new(McpHost::new(&config.mcp_servers).map_err(ServeError::Mcp)?),
        console: config.console_enabled,
        audit_log: config.audit_log,
        telemetry: match &config.otel_endpoint {
            Some(endpoint) => {
                let service = config.otel_service_name.clone();
                // The exporter's HTTP client is a blocking one (it runs on the batch processor's
                // thread): made off the async workers.
                let starting = endpoint.clone();
                let telemetry = tokio::task::spawn_blocking(move || {
                    crate::telemetry::Telemetry::start(&starting, service.as_deref())
                })
                .await
                .map_err(|err| std::io::Error::other(err.to_string()))??;
                tracing::info!(endpoint = %endpoint, "exporting traces of the check path (OTLP/HTTP)");
                Some(Arc::new(telemetry))
            }
            None => None,
        },
        ..GatewayOptions::default()
    };
    let (state, background) = AppState::new(Arc::clone(&store), &dir, options).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    if let Some(policies_dir) = &config.policies_dir {
        let loaded =
            PolicyDir::load(&state.policies, &*store, policies_dir, state.alerts.queue()).await?;
        tracing::info!(dir = %policies_dir.display(), "policies directory loaded; watching for changes");
        tasks.push(spawn_watcher(
            Arc::clone(&state.policies),
            loaded,
            stop_rx.clone(),
        ));
    }
    tasks.push(spawn_housekeeping(
        state.clone(),
        config.audit_retention,
        config.audit_archive_dir.clone(),
        stop_rx.clone(),
    ));
    tasks.push(spawn_change_follower(state.clone(), stop_rx.clone()));
    // Stopped only once the audit writer has committed its last event, which it then signs.
    let (checkpoints_stop, checkpoints_stopping) = watch::channel(false);
    let checkpointer = crate::checkpoints::spawn(
        Arc::clone(&store),
        Arc::clone(&state.audit_keys),
        state.instance_id.clone(),
        state.audit.subscribe(),
        config.checkpoints,
        checkpoints_stopping,
    );
    announce(&config, &dir.path);

    let local = listener.local_addr()?;
    // Hosted MCP sessions send their checks to this gateway, over loopback when it listens on
    // every address.
    let reachable = match local.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            std::net::SocketAddr::from(([127, 0, 0, 1], local.port()))
        }
        ip if ip.is_unspecified() => {
            std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, local.port()))
        }
        _ => local,
    };
    state.mcp.set_self_url(format!("http://{reachable}"));
    for name in state.mcp.server_names() {
        tracing::info!(server = name, path = %format!("/mcp/{name}"), "hosting an MCP server");
    }
    tracing::info!(
        addr = %local,
        mode = config.mode.as_str(),
        max_connections = config.server.max_connections,
        "meshguard gateway listening"
    );
    let tls = match &config.tls {
        Some(files) => {
            let (acceptor, cert) =
                crate::tls::acceptor(files.clone()).map_err(|e| ServeError::Tls(e.to_string()))?;
            tasks.push(crate::tls::spawn_reloader(cert, stop_rx.clone()));
            tracing::info!(cert = %files.cert.display(), "serving HTTPS; the certificate reloads on change or SIGHUP");
            Some(acceptor)
        }
        None => None,
    };
    let signalled = state.clone();
    crate::connections::serve_connections(
        listener,
        app(state.clone()),
        config.server,
        tls,
        shutdown,
        // Audit streams never end by themselves; the server waits for every response.
        move || signalled.begin_shutdown(),
    )
    .await;

    tracing::info!("shutting down: flushing the audit trail");
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    // Every connection is done, so no refusal can be counted any more: write the open counts
    // while the audit writer still takes events.
    crate::refusals::flush(&state.refusals, &state.audit).await;
    state.audit.shutdown().await;
    if let Err(err) = background.audit_task.await {
        tracing::error!(error = %err, "audit writer ended abnormally");
    }
    let _ = checkpoints_stop.send(true);
    if let Err(err) = checkpointer.await {
        tracing::error!(error = %err, "audit checkpoints ended abnormally");
    }
    // Alerts last: the audit trail matters more, and the drain is bounded.
    state.alerts.shutdown();
    background.alerts.finish().await;
    if let Some(telemetry) = state.telemetry.clone() {
        // The exporter blocks while it sends the last spans: off the async workers.
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    }
    tracing::info!("gateway stopped");
    Ok(())
}

/// Raises the soft limit on open files to the hard limit: every connection is a descriptor, and
/// the usual soft limit (1024) is below the default connection cap. A failure is logged, not
/// fatal: the cap still holds, and accept errors are retried.
fn raise_open_file_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            // Descriptors beyond connections: the store, log files, upstream and Redis sockets.
            let wanted = u64::try_from(max_connections)
                .unwrap_or(u64::MAX)
                .saturating_add(256);
            if limit < wanted {
                tracing::warn!(
                    open_files = limit,
                    max_connections,
                    "the open-file limit is below the connection cap; raise the hard limit \
                     (ulimit -Hn) or lower {}",
                    ConfigKey::MaxConnections
                );
            } else {
                tracing::debug!(open_files = limit, "open-file limit raised");
            }
        }
        Err(err) => tracing::warn!(error = %err, "cannot raise the open-file limit"),
    }
}

fn announce(config: &Config, data_dir: &Path) {
    match config.mode {
        Mode::Enforce => {}
        Mode::Audit => tracing::warn!(
            "AUDIT MODE: decisions are computed and recorded but NOT enforced; every check answers 200"
        ),
        Mode::Bypass => tracing::warn!(
            "BYPASS MODE: NO POLICY IS EVALUATED, EVERY ACTION IS ALLOWED. For development only; never run this in production"
        ),
    }
    let alerts = AlertSettings::from_config(&config.alerts);
    if alerts.has_receivers() {
        let triggers: Vec<_> = alerts.triggers.iter().map(|t| t.as_str()).collect();
        tracing::info!(
            webhook = alerts.webhook.is_some(),
            slack = alerts.slack.is_some(),
            triggers = %triggers.join(","),
            "alerts enabled"
        );
    }
    tracing::info!(data_dir = %data_dir.display(), "data directory ready");
}

/// Rebuilds the policy set when the store announces a policy change made elsewhere (another
/// gateway on the same PostgreSQL database) or when announcements may have been missed.
fn spawn_change_follower(
    state: AppState,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let mut changes = state.store.subscribe_changes();
    tokio::spawn(async move {
        loop {
            let change = tokio::select! {
                change = changes.recv() => change,
                _ = stop.changed() => break,
            };
            let reload = match &change {
                Ok(StoreChange::Policy { .. } | StoreChange::Resync)
                | Err(RecvError::Lagged(_)) => true,
                Ok(
                    StoreChange::Agent { .. }
                    | StoreChange::Tokens { .. }
                    | StoreChange::Approval { .. },
                ) => false,
                Err(RecvError::Closed) => break,
            };
            end_mcp_sessions_of_stopped_agents(&state, &change).await;
            if reload && let Err(err) = state.policies.reload().await {
                tracing::error!(error = %err, "policies not reloaded; the previous set stays in force");
            }
        }
    })
}

/// Ends the hosted MCP sessions of an agent that can no longer act (revoked, purged) or whose
/// tokens were revoked: the session's checks would fail anyway, and no method of such an agent
/// may reach a server.
async fn end_mcp_sessions_of_stopped_agents(
    state: &AppState,
    change: &Result<StoreChange, RecvError>,
) {
    let agents = match change {
        Ok(StoreChange::Tokens { agent_id }) => {
            state.mcp.end_sessions_of(agent_id);
            return;
        }
        Ok(StoreChange::Agent { id }) => vec![id.clone()],
        Ok(StoreChange::Resync) | Err(RecvError::Lagged(_)) => state.mcp.agents_with_sessions(),
        _ => return,
    };
    for agent in agents {
        if !state.mcp.agents_with_sessions().contains(&agent) {
            continue;
        }
        let active = match state.store.get_agent(&agent).await {
            Ok(record) => record.status == meshguard_store::AgentStatus::Active,
            Err(StoreError::NotFound { .. }) => false,
            // The store cannot say: the sessions' own checks fail closed meanwhile.
            Err(_) => true,
        };
        if !active {
            state.mcp.end_sessions_of(&agent);
        }
    }
}

/// Hourly audit retention and minutely approval expiry.
fn spawn_housekeeping(
    state: AppState,
    retention: Duration,
    archive: Option<std::path::PathBuf>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(60));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut minutes = 0u32;
        loop {
            tokio::select! {
                _ = ticker.tick() => {},
                _ = stop.changed() => break,
            }
            let now = OffsetDateTime::now_utc();
            if let Err(err) = state.store.expire_approvals(now).await {
                tracing::warn!(error = %err, "approval expiry failed; will retry");
            }
            let cutoff = i64::try_from(retention.as_secs())
                .ok()
                .and_then(|secs| now.checked_sub(time::Duration::seconds(secs)));
            if let (0, Some(cutoff)) = (minutes % 60, cutoff) {
                match state
                    .store
                    .apply_retention(cutoff, archive.as_deref())
                    .await
                {
                    Ok(report) if report.deleted > 0 => {
                        tracing::info!(
                            deleted = report.deleted,
                            archived = report.archived.len(),
                            "audit retention applied"
                        );
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = %err, "audit retention failed; will retry"),
                }
            }
            minutes = minutes.wrapping_add(1);
        }
    })
}
