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

use std::sync::Arc;
use std::time::Instant;

use meshguard_store::{
    AdminAudit, AdminCommit, AdminMutation, AuditEvent, NewAuditEvent, Store, StoreError,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::alerts::{AUDIT_NOT_COMMITTED, AlertQueue};
use crate::config::AuditDurability;
use crate::metrics::GatewayMetrics;

/// The most events one transaction carries; more wait for the next one.
pub const MAX_BATCH: usize = 1024;
/// Events that may wait for the writer before appenders are slowed down.
const QUEUE_DEPTH: usize = 16 * 1024;
/// Committed events kept for slow stream followers.
const FOLLOWER_BUFFER: usize = 4096;

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
    pub fn start(
        store: Arc<dyn Store>,
        metrics: GatewayMetrics,
        gateway: String,
        durability: AuditDurability,
        alerts: AlertQueue,
    ) -> (AuditWriter, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let (committed, _) = broadcast::channel(FOLLOWER_BUFFER);
        let sink = Sink {
            store,
            metrics,
            gateway,
            committed: committed.clone(),
            alerts,
            failing: false,
        };
        let task = tokio::spawn(run(rx, sink));
        (
            AuditWriter {
                tx,
                durability,
                committed,
            },
            task,
        )
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
        let result = self.store.apply_admin(mutation, audit).await;
        if let Ok(AdminCommit {
            event: Some(event), ..
        }) = &result
        {
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
        let outcome = self.store.append_audit(events).await;
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
        let result = match outcome {
            Ok(appended) => {
                self.failing = false;
                for event in appended {
                    // No follower listening is the normal case, not an error.
                    let _ = self.committed.send(event);
                }
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
                Err(AuditError::Store(err.to_string()))
            }
        };
        for waiter in waiters.drain(..).flatten() {
            // A waiter that went away (client disconnected) no longer needs the answer.
            let _ = waiter.send(result.clone());
        }
        events.clear();
    }
}
