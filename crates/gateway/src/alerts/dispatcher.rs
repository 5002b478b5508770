//! The queue between the check path and the receivers, the per-trigger rate limit, and the
//! bounded drain at shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::receivers::{Receiver, deliver};
use super::{Alert, AlertSettings, Trigger};
use crate::metrics::GatewayMetrics;

/// The check path's handle on alerting: cheap to ask whether a trigger is wanted, and never
/// waiting to hand an alert over.
pub struct AlertDispatcher {
    settings: Arc<AlertSettings>,
    queue: AlertQueue,
    receivers: Vec<Receiver>,
    client: reqwest::Client,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for AlertDispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertDispatcher")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The sending end of the alert queue, for background work that raises alerts (the policy
/// directory watcher, the audit writer) without holding the whole dispatcher: cheap to clone,
/// and never waiting. The default handle alerts nothing.
#[derive(Clone, Default)]
pub struct AlertQueue {
    /// `None` when no receiver is configured: nothing is ever built or queued.
    inner: Option<Arc<QueueEnd>>,
}

struct QueueEnd {
    queue: mpsc::Sender<Alert>,
    settings: Arc<AlertSettings>,
    metrics: GatewayMetrics,
    /// This gateway's instance id, stamped on the alerts built here.
    gateway: String,
}

impl std::fmt::Debug for AlertQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertQueue")
            .field("enabled", &self.inner.is_some())
            .finish_non_exhaustive()
    }
}

impl AlertQueue {
    /// Whether an alert of this trigger would be sent; callers ask before building one.
    pub fn wants(&self, trigger: Trigger) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|end| end.settings.triggers.contains(&trigger))
    }

    /// Hands an alert over without waiting: when the queue is full the alert is dropped and
    /// counted, because neither a decision nor background work is delayed for an alert.
    pub fn emit(&self, alert: Alert) {
        let Some(end) = &self.inner else { return };
        if !end.settings.triggers.contains(&alert.event) {
            return;
        }
        let trigger = alert.event;
        if end.queue.try_send(alert).is_err() {
            end.metrics
                .alerts_dropped
                .with_label_values(&[trigger.as_str()])
                .inc();
        }
    }

    /// Raises an `error` alert about a failure outside any check (see [`Alert::failure`]).
    pub fn failure(
        &self,
        code: &'static str,
        action: &str,
        resource: Option<&str>,
        reason: String,
    ) {
        let Some(end) = &self.inner else { return };
        if !self.wants(Trigger::Error) {
            return;
        }
        self.emit(Alert::failure(code, action, resource, reason, &end.gateway));
    }
}

/// The background delivery task; [`AlertTasks::finish`] waits for it within the drain bound.
#[derive(Debug)]
pub struct AlertTasks {
    task: Option<JoinHandle<()>>,
    drain_timeout: Duration,
}

impl AlertTasks {
    /// Waits until the queued alerts are delivered (or given up), at most the drain timeout;
    /// what is still pending then is abandoned with a warning, so shutdown never hangs on a
    /// receiver.
    pub async fn finish(self) {
        let Some(mut task) = self.task else { return };
        match tokio::time::timeout(self.drain_timeout, &mut task).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::error!(error = %err, "alert dispatcher ended abnormally"),
            Err(_) => {
                task.abort();
                tracing::warn!(
                    timeout_ms = self.drain_timeout.as_millis(),
                    "alerts still pending at shutdown were abandoned"
                );
            }
        }
    }
}

/// The outcome of a test alert at one receiver (`POST /admin/alerts/test`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryReport {
    /// `webhook` or `slack`.
    pub receiver: &'static str,
    /// Whether the receiver answered 2xx.
    pub delivered: bool,
    /// Why not.
    pub error: Option<String>,
}

impl AlertDispatcher {
    /// Starts the dispatcher; without receivers no task runs and nothing is queued.
    pub fn start(
        settings: AlertSettings,
        metrics: GatewayMetrics,
        gateway: String,
    ) -> (AlertDispatcher, AlertTasks) {
        // reqwest is built without a bundled crypto provider; ring is the one the workspace
        // ships. Installing twice is harmless (the first one stays).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        let mut receivers = Vec::new();
        if let Some(hook) = &settings.webhook {
            receivers.push(Receiver::Webhook(hook.clone()));
        }
        if let Some(slack) = &settings.slack {
            receivers.push(Receiver::Slack(slack.clone()));
        }
        let settings = Arc::new(settings);
        let (stop, stop_rx) = watch::channel(false);
        let drain_timeout = settings.drain_timeout;
        if receivers.is_empty() {
            let dispatcher = AlertDispatcher {
                settings,
                queue: AlertQueue::default(),
                receivers,
                client,
                stop,
            };
            let tasks = AlertTasks {
                task: None,
                drain_timeout,
            };
            return (dispatcher, tasks);
        }
        let (queue, queued) = mpsc::channel(settings.queue_capacity.max(1));
        let task = tokio::spawn(dispatch(
            queued,
            stop_rx,
            receivers.clone(),
            client.clone(),
            Arc::clone(&settings),
            metrics.clone(),
        ));
        let queue = AlertQueue {
            inner: Some(Arc::new(QueueEnd {
                queue,
                settings: Arc::clone(&settings),
                metrics,
                gateway,
            })),
        };
        let dispatcher = AlertDispatcher {
            settings,
            queue,
            receivers,
            client,
            stop,
        };
        let tasks = AlertTasks {
            task: Some(task),
            drain_timeout,
        };
        (dispatcher, tasks)
    }

    /// Whether an alert of this trigger would be sent; the check path asks before building one.
    pub fn wants(&self, trigger: Trigger) -> bool {
        self.queue.wants(trigger)
    }

    /// The configured receivers (`webhook`, `slack`), for the console's health panel.
    pub fn receivers(&self) -> Vec<&'static str> {
        [
            self.settings.webhook.as_ref().map(|_| "webhook"),
            self.settings.slack.as_ref().map(|_| "slack"),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Hands an alert over without waiting: when the queue is full the alert is dropped and
    /// counted, because a decision is never delayed for an alert.
    pub fn emit(&self, alert: Alert) {
        self.queue.emit(alert);
    }

    /// A handle on the queue for background work that raises alerts.
    pub fn queue(&self) -> AlertQueue {
        self.queue.clone()
    }

    /// Begins the shutdown: no more alerts are accepted, the queued ones are delivered.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// Sends `alert` once to every receiver, at the same time, and says what each answered;
    /// no retries, so an operator gets the verdict within one request timeout.
    pub async fn test(&self, alert: Alert) -> Vec<DeliveryReport> {
        let once = AlertSettings {
            max_attempts: 1,
            ..(*self.settings).clone()
        };
        let deliveries = self.receivers.iter().map(|receiver| {
            let once = &once;
            let alert = &alert;
            async move {
                let outcome = deliver(&self.client, receiver, alert, once).await;
                DeliveryReport {
                    receiver: receiver.name(),
                    delivered: outcome.is_ok(),
                    error: outcome.err(),
                }
            }
        });
        futures::future::join_all(deliveries).await
    }
}

/// Alerts per trigger in the current one-minute window.
struct TriggerBudget {
    per_minute: u32,
    windows: HashMap<Trigger, (Instant, u32)>,
}

impl TriggerBudget {
    fn admit(&mut self, trigger: Trigger, now: Instant) -> bool {
        let window = self.windows.entry(trigger).or_insert((now, 0));
        if now.duration_since(window.0) >= Duration::from_secs(60) {
            *window = (now, 0);
        }
        if window.1 >= self.per_minute {
            return false;
        }
        window.1 += 1;
        true
    }
}

/// Takes alerts off the queue, applies the rate limit and fans each out to one queue per
/// receiver; ends when shutdown begins and the queue is empty, after the receivers drained.
async fn dispatch(
    mut queued: mpsc::Receiver<Alert>,
    mut stop: watch::Receiver<bool>,
    receivers: Vec<Receiver>,
    client: reqwest::Client,
    settings: Arc<AlertSettings>,
    metrics: GatewayMetrics,
) {
    let mut outlets = Vec::new();
    let mut workers = JoinSet::new();
    for receiver in receivers {
        let (outlet, inlet) = mpsc::channel(settings.queue_capacity.max(1));
        outlets.push(outlet);
        workers.spawn(deliver_all(
            receiver,
            inlet,
            client.clone(),
            Arc::clone(&settings),
            metrics.clone(),
        ));
    }
    let mut budget = TriggerBudget {
        per_minute: settings.per_minute,
        windows: HashMap::new(),
    };
    let mut closing = false;
    loop {
        let alert = tokio::select! {
            alert = queued.recv() => alert,
            // A dropped dispatcher (its gateway is gone) closes the queue as a shutdown does.
            _ = stop.changed(), if !closing => {
                closing = true;
                queued.close();
                continue;
            }
        };
        let Some(alert) = alert else { break };
        let trigger = alert.event.as_str();
        if !budget.admit(alert.event, Instant::now()) {
            metrics
                .alerts_suppressed
                .with_label_values(&[trigger])
                .inc();
            continue;
        }
        for outlet in &outlets {
            // A receiver whose queue is full is backed up (slow or down): drop for it alone,
            // so the others still hear.
            if outlet.try_send(alert.clone()).is_err() {
                metrics.alerts_dropped.with_label_values(&[trigger]).inc();
            }
        }
    }
    drop(outlets);
    while workers.join_next().await.is_some() {}
}

/// Delivers one receiver's alerts, a few at a time, so one hanging request does not hold the
/// others back.
async fn deliver_all(
    receiver: Receiver,
    mut inlet: mpsc::Receiver<Alert>,
    client: reqwest::Client,
    settings: Arc<AlertSettings>,
    metrics: GatewayMetrics,
) {
    let slots = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let mut in_flight = JoinSet::new();
    while let Some(alert) = inlet.recv().await {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        while in_flight.try_join_next().is_some() {}
        let (receiver, client, settings, metrics) = (
            receiver.clone(),
            client.clone(),
            Arc::clone(&settings),
            metrics.clone(),
        );
        in_flight.spawn(async move {
            let _slot = slot;
            let name = receiver.name();
            match deliver(&client, &receiver, &alert, &settings).await {
                Ok(_) => metrics.alerts_sent.with_label_values(&[name]).inc(),
                Err(error) => {
                    metrics.alerts_failed.with_label_values(&[name]).inc();
                    tracing::warn!(receiver = name, trigger = alert.event.as_str(), %error, "alert not delivered");
                }
            }
        });
    }
    while in_flight.join_next().await.is_some() {}
}
