//! Group commit for the audit trail: one writer task, one transaction per batch.
//!
//! A request hands its event to the writer and (with `sync` durability) waits for the commit.
//! The writer takes every event that arrived while the previous transaction was committing and
//! appends them all in one `append_audit` call, then answers each waiter. Under load, batches
//! grow by themselves and the cost of a commit is shared; at rest a lone event commits at once.
//! See docs/architecture/group-commit.md.
//!
//! An admin change travels the same queue ([`AuditWriter::commit_admin`]): the writer commits
//! the events queued before it, then the change with its event in one transaction, so this
//! gateway's chain stays in queue order and followers see the event once it is committed.
//!
//! A failed commit raises one `error` alert per streak of failures: the first failure alerts,
//! the next ones do not until a commit has succeeded, so a dead disk does not flood receivers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use meshguard_store::{
    AdminAudit, AdminCommit, AdminMutation, AuditEvent, NewAuditEvent, Store, StoreError,
    chain_event,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::alerts::{AUDIT_NOT_COMMITTED, AlertQueue};
use crate::audit_log::{AuditLog, OpenedLog};
use crate::config::AuditDurability;
use crate::metrics::GatewayMetrics;

/// The most events one transaction carries; more wait for the next one.
pub const MAX_BATCH: usize = 1024;
/// Events that may wait for the writer before appenders are slowed down.
const QUEUE_DEPTH: usize = 16 * 1024;
/// Committed events kept for slow stream followers.
const FOLLOWER_BUFFER: usize = 4096;
/// Logged batches that may wait for the indexer before the writer waits for it.
const INDEX_QUEUE: usize = 64;
/// The most logged events one index transaction carries.
const MAX_INDEX_BATCH: usize = 4 * MAX_BATCH;
/// The longest a reader waits for acknowledged events to be indexed, and an admin change for
/// the index to catch up, before going on without them.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);
/// How long a stopping gateway keeps indexing; what is left is indexed at the next start.
const INDEX_DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// An index batch smaller than this waits [`INDEX_LINGER`] for more.
const INDEX_LINGER_BELOW: usize = 1024;
/// How long a small index batch waits for more.
const INDEX_LINGER: Duration = Duration::from_millis(8);
/// Indexed events between two looks for log segments to delete.
const RELEASE_EVERY: u64 = 4096;

/// An event could not be committed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The store refused or could not be reached.
    #[error("audit commit failed: {0}")]
    Store(String),
    /// The writer has shut down (the gateway is stopping).
    #[error("audit writer stopped")]
    Stopped,
}

enum Message {
    Event {
        event: Box<NewAuditEvent>,
        done: Option<oneshot::Sender<Result<(), AuditError>>>,
    },
    Admin {
        mutation: Box<AdminMutation>,
        audit: AdminAudit,
        done: oneshot::Sender<Result<AdminCommit, StoreError>>,
    },
    Stop(oneshot::Sender<()>),
}

/// The handle requests use to append events; cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditWriter {
    tx: mpsc::Sender<Message>,
    durability: AuditDurability,
    committed: broadcast::Sender<AuditEvent>,
    /// With a write-ahead log: how far the log and the index are.
    progress: Option<Arc<Progress>>,
}

/// How far a logged chain is: on disk (acknowledged) and in the SQL tables (readable).
#[derive(Debug)]
struct Progress {
    durable: AtomicU64,
    indexed: watch::Sender<u64>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Event { event, .. } => write!(f, "Event({})", event.id),
            Message::Admin { mutation, .. } => write!(f, "Admin({mutation:?})"),
            Message::Stop(_) => f.write_str("Stop"),
        }
    }
}

impl AuditWriter {
    /// Starts the writer task.
    /// Starts the writer task. With `log` (a SQLite gateway), batches are made durable in the
    /// write-ahead log and indexed into the store behind it (crate::audit_log); without, each
    /// batch is one store transaction.
    pub fn start(
        store: Arc<dyn Store>,
        metrics: GatewayMetrics,
        gateway: String,
        durability: AuditDurability,
        alerts: AlertQueue,
        log: Option<OpenedLog>,
    ) -> (AuditWriter, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let (committed, _) = broadcast::channel(FOLLOWER_BUFFER);
        let logged = log.map(|opened| {
            let progress = Arc::new(Progress {
                durable: AtomicU64::new(opened.head_seq),
                indexed: watch::Sender::new(opened.head_seq),
            });
            let log = Arc::new(std::sync::Mutex::new(opened.log));
            let (to_index, batches) = mpsc::channel(INDEX_QUEUE);
            let indexer = Indexer {
                store: Arc::clone(&store),
                log: Arc::clone(&log),
                progress: Arc::clone(&progress),
                committed: committed.clone(),
                metrics: metrics.clone(),
                gateway: gateway.clone(),
                alerts: alerts.clone(),
            };
            Logged {
                log,
                seq: opened.head_seq,
                hash: opened.head_hash,
                to_index: Some(to_index),
                indexer: Some(tokio::spawn(indexer.run(batches))),
                progress,
            }
        });
        let progress = logged.as_ref().map(|l| Arc::clone(&l.progress));
        let sink = Sink {
            store,
            metrics,
            gateway,
            committed: committed.clone(),
            alerts,
            failing: false,
            logged,
        };
        let task = tokio::spawn(run(rx, sink));
        (
            AuditWriter {
                tx,
                durability,
                committed,
                progress,
            },
            task,
        )
    }

    /// Waits until every event acknowledged before this call can be read from the store (at
    /// most [`SETTLE_LIMIT`]). Readers of the trail call it first, so that an answer a client
    /// was given always has its event in the query that follows. Without a write-ahead log an
    /// acknowledged event is already in the store, and this returns at once.
    pub async fn settled(&self) {
        let Some(progress) = &self.progress else {
            return;
        };
        let target = progress.durable.load(Ordering::Acquire);
        let mut indexed = progress.indexed.subscribe();
        let caught_up = indexed.wait_for(|seq| *seq >= target);
        if tokio::time::timeout(SETTLE_LIMIT, caught_up).await.is_err() {
            tracing::warn!(
                target_seq = target,
                "the audit index is behind the log: the answer may lack the newest events"
            );
        }
    }

    /// Appends one event. With `sync` durability this returns once the event is committed; with
    /// `async` it returns once the event is queued (a crash may lose queued events).
    pub async fn append(&self, event: NewAuditEvent) -> Result<(), AuditError> {
        match self.durability {
            AuditDurability::Sync => self.append_committed(event).await,
            AuditDurability::Async => self
                .tx
                .send(Message::Event {
                    event: Box::new(event),
                    done: None,
                })
                .await
                .map_err(|_| AuditError::Stopped),
        }
    }

    /// Appends one event and waits for its commit, whatever the durability setting (admin
    /// changes are rare and always durable).
    pub async fn append_committed(&self, event: NewAuditEvent) -> Result<(), AuditError> {
        let (done, committed) = oneshot::channel();
        self.tx
            .send(Message::Event {
                event: Box::new(event),
                done: Some(done),
            })
            .await
            .map_err(|_| AuditError::Stopped)?;
        committed.await.map_err(|_| AuditError::Stopped)?
    }

    /// Makes an admin change and commits its audit event (built by `audit`) in one transaction,
    /// after the events queued before it. A change whose event is not committed is not made.
    pub async fn commit_admin(
        &self,
        mutation: AdminMutation,
        audit: AdminAudit,
    ) -> Result<AdminCommit, StoreError> {
        let stopped = || StoreError::Unavailable(AuditError::Stopped.to_string());
        let (done, committed) = oneshot::channel();
        self.tx
            .send(Message::Admin {
                mutation: Box::new(mutation),
                audit,
                done,
            })
            .await
            .map_err(|_| stopped())?;
        committed.await.map_err(|_| stopped())?
    }

    /// Whether answers leave before their events commit (`audit.durability = "async"`): then an
    /// event a client was told of may not be in the store yet.
    pub fn answers_before_commit(&self) -> bool {
        self.durability == AuditDurability::Async
    }

    /// Waits (at most `limit`) until the event `id` is committed; `false` if it was not seen.
    /// The caller has already looked in the store, and looks again after subscribing, so an
    /// event committed in between is not missed.
    pub async fn await_commit<F, Fut>(&self, id: &str, limit: std::time::Duration, found: F) -> bool
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut committed = self.committed.subscribe();
        if found().await {
            return true;
        }
        let wait = async {
            loop {
                match committed.recv().await {
                    Ok(event) if event.event.id == id => return true,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if found().await {
                            return true;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return false,
                }
            }
        };
        tokio::time::timeout(limit, wait).await.unwrap_or(false)
    }

    /// Every event committed from now on, for `GET /admin/audit/stream`. A follower that falls
    /// more than a buffer behind is told how many it missed (and can re-read them by query).
    pub fn subscribe(&self) -> broadcast::Receiver<AuditEvent> {
        self.committed.subscribe()
    }

    /// The sender that feeds [`AuditWriter::subscribe`]'s followers, for events committed
    /// elsewhere (other gateways on the same database, see `audit_peers`).
    pub fn live(&self) -> broadcast::Sender<AuditEvent> {
        self.committed.clone()
    }

    /// Commits everything queued so far, then stops the writer. Appends after this fail.
    pub async fn shutdown(&self) {
        let (done, stopped) = oneshot::channel();
        if self.tx.send(Message::Stop(done)).await.is_ok() {
            // An error means the writer is already gone, which is what we want.
            let _ = stopped.await;
        }
    }
}

/// Where batches go, and what the writer remembers between them.
struct Sink {
    store: Arc<dyn Store>,
    metrics: GatewayMetrics,
    gateway: String,
    committed: broadcast::Sender<AuditEvent>,
    alerts: AlertQueue,
    /// Whether the last commit failed: the alert of a failure streak is raised once.
    failing: bool,
    /// The write-ahead log, when batches go there first.
    logged: Option<Logged>,
}

/// The writer's side of a write-ahead log: the chain's head, which only the writer moves.
struct Logged {
    log: Arc<std::sync::Mutex<AuditLog>>,
    seq: u64,
    hash: String,
    /// `None` once stopping.
    to_index: Option<mpsc::Sender<Vec<AuditEvent>>>,
    indexer: Option<JoinHandle<()>>,
    progress: Arc<Progress>,
}

impl Logged {
    /// Chains `events` after the head and makes them durable in the log; the head moves only
    /// when the log has them.
    async fn append(&mut self, events: &[NewAuditEvent]) -> Result<Vec<AuditEvent>, String> {
        let mut chained = Vec::with_capacity(events.len());
        let (mut seq, mut hash) = (self.seq, self.hash.clone());
        for new in events {
            let event =
                chain_event(new, seq.saturating_add(1), &hash).map_err(|e| e.to_string())?;
            seq = event.seq;
            hash.clone_from(&event.hash);
            chained.push(event);
        }
        let log = Arc::clone(&self.log);
        let chained = tokio::task::spawn_blocking(move || {
            let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
            log.append(&chained).map(|()| chained)
        })
        .await
        .map_err(|e| format!("audit log writer: {e}"))?
        .map_err(|e| e.to_string())?;
        self.seq = seq;
        self.hash = hash;
        self.progress.durable.store(seq, Ordering::Release);
        Ok(chained)
    }

    /// Hands a logged batch to the indexer (waiting while it is [`INDEX_QUEUE`] batches behind).
    async fn index(&self, chained: Vec<AuditEvent>) {
        if let Some(to_index) = &self.to_index {
            // The indexer ends only after the writer: a send cannot fail while it runs.
            let _ = to_index.send(chained).await;
        }
    }

    /// Waits until everything logged is indexed, so that the store's head is the chain's.
    async fn caught_up(&self) -> bool {
        let mut indexed = self.progress.indexed.subscribe();
        let seq = self.seq;
        tokio::time::timeout(SETTLE_LIMIT, indexed.wait_for(|indexed| *indexed >= seq))
            .await
            .is_ok_and(|waited| waited.is_ok())
    }

    /// A change committed in the store directly (an admin change) moved the chain's head.
    fn moved_to(&mut self, event: &AuditEvent) {
        self.seq = event.seq;
        self.hash.clone_from(&event.hash);
        self.progress.durable.store(event.seq, Ordering::Release);
        self.progress.indexed.send_replace(event.seq);
    }

    /// Lets the indexer finish what is logged (at most [`INDEX_DRAIN_LIMIT`]; what is left is
    /// indexed at the next start).
    async fn finish(&mut self) {
        self.to_index = None;
        if let Some(mut indexer) = self.indexer.take()
            && tokio::time::timeout(INDEX_DRAIN_LIMIT, &mut indexer)
                .await
                .is_err()
        {
            tracing::warn!(
                "the audit index did not catch up before the stop: the log keeps the rest for the next start"
            );
            indexer.abort();
        }
    }
}

/// Inserts logged batches into the store, in order, retrying until the store takes them: an
/// acknowledged event is never dropped, only indexed late.
struct Indexer {
    store: Arc<dyn Store>,
    log: Arc<std::sync::Mutex<AuditLog>>,
    progress: Arc<Progress>,
    committed: broadcast::Sender<AuditEvent>,
    metrics: GatewayMetrics,
    gateway: String,
    alerts: AlertQueue,
}

impl Indexer {
    async fn run(self, mut batches: mpsc::Receiver<Vec<AuditEvent>>) {
        let mut released = *self.progress.indexed.borrow();
        while let Some(mut batch) = batches.recv().await {
            if batch.len() < INDEX_LINGER_BELOW {
                // A busy log sends small batches often: gathering them for a moment makes
                // fewer, larger index transactions (the log already holds the events).
                tokio::time::sleep(INDEX_LINGER).await;
            }
            while batch.len() < MAX_INDEX_BATCH {
                match batches.try_recv() {
                    Ok(more) => batch.extend(more),
                    Err(_) => break,
                }
            }
            let Some(last) = batch.last().map(|event| event.seq) else {
                continue;
            };
            // Commits need not reach the disk (the log holds the events) until the log is
            // about to forget them: the commit before a release is synced, and with it every
            // earlier one.
            let release = last.saturating_sub(released) >= RELEASE_EVERY;
            self.index(&batch, release).await;
            self.progress.indexed.send_replace(last);
            for event in batch {
                // No follower listening is the normal case, not an error.
                let _ = self.committed.send(event);
            }
            if release {
                released = last;
                let log = Arc::clone(&self.log);
                let _ = tokio::task::spawn_blocking(move || {
                    log.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .release(last);
                })
                .await;
            }
        }
    }

    /// Indexes one batch (on disk at once with `sync`), retrying with a growing pause while the
    /// store refuses it.
    async fn index(&self, batch: &[AuditEvent], sync: bool) {
        let gateway = self.gateway.as_str();
        let mut pause = Duration::from_millis(50);
        let mut alerted = false;
        loop {
            let started = Instant::now();
            match self.store.append_chained(batch, sync).await {
                Ok(()) => {
                    self.metrics
                        .audit_index_seconds
                        .with_label_values(&[gateway])
                        .observe(started.elapsed().as_secs_f64());
                    return;
                }
                Err(err) => {
                    self.metrics
                        .audit_index_failures
                        .with_label_values(&[gateway])
                        .inc();
                    tracing::error!(error = %err, events = batch.len(), "logged audit events not indexed yet; retrying");
                    if !alerted {
                        alerted = true;
                        self.alerts.failure(
                            AUDIT_NOT_COMMITTED,
                            "audit.index",
                            None,
                            format!(
                                "{} logged audit event(s) not indexed: {err}; they are safe in the audit log and retried",
                                batch.len()
                            ),
                        );
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

async fn run(mut rx: mpsc::Receiver<Message>, mut sink: Sink) {
    let mut stop: Option<oneshot::Sender<()>> = None;
    let mut events = Vec::new();
    let mut waiters = Vec::new();
    while stop.is_none() {
        let Some(first) = rx.recv().await else {
            break;
        };
        let mut next = Some(first);
        // Everything that queued up while the previous batch was committing joins this batch.
        while let Some(message) = next.take() {
            match message {
                Message::Event { event, done } => {
                    events.push(*event);
                    waiters.push(done);
                }
                Message::Admin {
                    mutation,
                    audit,
                    done,
                } => {
                    // The events queued before the change go first, so the chain keeps queue order.
                    sink.commit(&mut events, &mut waiters).await;
                    sink.admin(*mutation, audit, done).await;
                }
                Message::Stop(done) => stop = Some(done),
            }
            if events.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        sink.commit(&mut events, &mut waiters).await;
    }
    // Stopping: commit whatever was queued before the stop request, then refuse the rest.
    rx.close();
    while let Ok(message) = rx.try_recv() {
        match message {
            Message::Event { event, done } => {
                events.push(*event);
                waiters.push(done);
                if events.len() >= MAX_BATCH {
                    sink.commit(&mut events, &mut waiters).await;
                }
            }
            Message::Admin {
                mutation,
                audit,
                done,
            } => {
                sink.commit(&mut events, &mut waiters).await;
                sink.admin(*mutation, audit, done).await;
            }
            Message::Stop(done) => {
                let _ = done.send(());
            }
        }
    }
    sink.commit(&mut events, &mut waiters).await;
    if let Some(logged) = &mut sink.logged {
        logged.finish().await;
    }
    if let Some(done) = stop {
        let _ = done.send(());
    }
}

impl Sink {
    /// Commits one admin change with its event and hands the event to followers.
    async fn admin(
        &mut self,
        mutation: AdminMutation,
        audit: AdminAudit,
        done: oneshot::Sender<Result<AdminCommit, StoreError>>,
    ) {
        // The change's event joins the chain in the store: everything logged before it must
        // be there first.
        if let Some(logged) = &self.logged
            && !logged.caught_up().await
        {
            let _ = done.send(Err(StoreError::Unavailable(
                "the audit index is behind its log; the change was not made, try again".into(),
            )));
            return;
        }
        let result = self.store.apply_admin(mutation, audit).await;
        if let Ok(AdminCommit {
            event: Some(event), ..
        }) = &result
        {
            if let Some(logged) = &mut self.logged {
                logged.moved_to(event);
            }
            // No follower listening is the normal case, not an error.
            let _ = self.committed.send(event.clone());
        }
        // A caller that went away (client disconnected) no longer needs the answer.
        let _ = done.send(result);
    }

    async fn commit(
        &mut self,
        events: &mut Vec<NewAuditEvent>,
        waiters: &mut Vec<Option<oneshot::Sender<Result<(), AuditError>>>>,
    ) {
        if events.is_empty() {
            return;
        }
        let (metrics, gateway) = (&self.metrics, self.gateway.as_str());
        let started = Instant::now();
        let outcome = match &mut self.logged {
            Some(logged) => logged.append(events).await.map(Some),
            None => match self.store.append_audit(events).await {
                Ok(appended) => {
                    for event in appended {
                        // No follower listening is the normal case, not an error.
                        let _ = self.committed.send(event);
                    }
                    Ok(None)
                }
                Err(err) => Err(err.to_string()),
            },
        };
        metrics
            .audit_commit_seconds
            .with_label_values(&[gateway])
            .observe(started.elapsed().as_secs_f64());
        #[expect(
            clippy::cast_precision_loss,
            reason = "a batch holds at most MAX_BATCH events"
        )]
        metrics
            .audit_batch_size
            .with_label_values(&[gateway])
            .observe(events.len() as f64);
        let result = match &outcome {
            Ok(_) => {
                self.failing = false;
                Ok(())
            }
            Err(err) => {
                metrics.audit_failures.with_label_values(&[gateway]).inc();
                tracing::error!(error = %err, events = events.len(), "audit batch not committed");
                if !self.failing {
                    self.failing = true;
                    self.alerts.failure(
                        AUDIT_NOT_COMMITTED,
                        "audit.commit",
                        None,
                        format!("{} audit event(s) not committed: {err}", events.len()),
                    );
                }
                Err(AuditError::Store(err.clone()))
            }
        };
        for waiter in waiters.drain(..).flatten() {
            // A waiter that went away (client disconnected) no longer needs the answer.
            let _ = waiter.send(result.clone());
        }
        events.clear();
        if let (Ok(Some(chained)), Some(logged)) = (outcome, &self.logged) {
            logged.index(chained).await;
        }
    }
}
