//! Other gateways' audit events in this gateway's live stream.
//!
//! Gateways that share a database each commit to their own chain, and `GET /admin/audit/stream`
//! is fed by this gateway's writer. While anyone follows the stream, this task reads what the
//! other chains committed since it last looked and hands it to the same followers, so that
//! `audit tail --follow` through any gateway behind a load balancer shows every gateway's events
//! (the others' within about [`POLL_INTERVAL`]). It reads on from the last `seq` seen per chain:
//! a chain commits in `seq` order, so no event that commits late is skipped. With no follower it
//! reads nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use meshguard_store::{AuditEvent, Store};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// How often the other chains are read while the stream has followers.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Events read per query; a chain further ahead is read in several.
const PAGE: u32 = 500;

/// Where reading starts when the stream gains followers after having none: the chain heads the
/// first of them read just before subscribing. A follower thus gets every other gateway's event
/// committed after it subscribed (at worst a few from the moment before), and an idle gateway
/// does no reads for this at all.
#[derive(Debug, Default)]
pub struct FollowFrom(Mutex<Option<BTreeMap<String, u64>>>);

impl FollowFrom {
    /// Called by a new follower after it subscribed, with the heads it read before: the earliest
    /// `seq` per chain wins while the task has not started reading.
    pub fn register(&self, heads: BTreeMap<String, u64>) {
        let mut from = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match from.as_mut() {
            None => *from = Some(heads),
            Some(earliest) => {
                for (chain, seq) in heads {
                    let kept = earliest.entry(chain).or_insert(seq);
                    *kept = (*kept).min(seq);
                }
            }
        }
    }

    fn take(&self) -> Option<BTreeMap<String, u64>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// Starts the task; it ends when `stopping` turns true.
pub fn start(
    store: Arc<dyn Store>,
    own_chain: String,
    live: broadcast::Sender<AuditEvent>,
    follow_from: Arc<FollowFrom>,
    stopping: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(run(store, own_chain, live, follow_from, stopping))
}

async fn run(
    store: Arc<dyn Store>,
    own_chain: String,
    live: broadcast::Sender<AuditEvent>,
    follow_from: Arc<FollowFrom>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The last `seq` handed on per chain; `None` while nobody follows.
    let mut seen: Option<BTreeMap<String, u64>> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopping.changed() => {}
        }
        if *stopping.borrow() {
            return;
        }
        if live.receiver_count() == 0 {
            seen = None;
            // A follower that left before reading started leaves no start point behind.
            follow_from.take();
            continue;
        }
        if seen.is_none() {
            // `None` until the follower has registered the heads it read.
            seen = follow_from.take();
        }
        let Some(seen) = seen.as_mut() else {
            continue;
        };
        let heads = match store.audit_heads().await {
            Ok(heads) => heads,
            Err(err) => {
                tracing::debug!(error = %err, "cannot read the other gateways' audit chains");
                continue;
            }
        };
        for (chain, head) in heads {
            if chain == own_chain {
                continue;
            }
            // A chain that appeared since: a gateway that joined, every event of it is new.
            let from = seen.get(&chain).copied().unwrap_or(0);
            let last = forward(&*store, &chain, from, head, &live).await;
            seen.insert(chain, last);
        }
    }
}

/// Hands on the events of `chain` after `from` up to `head`; returns the last `seq` handed on.
async fn forward(
    store: &dyn Store,
    chain: &str,
    from: u64,
    head: u64,
    live: &broadcast::Sender<AuditEvent>,
) -> u64 {
    let mut last = from;
    while last < head {
        match store.audit_chain_after(chain, last, PAGE).await {
            Ok(events) if events.is_empty() => break,
            Ok(events) => {
                for event in events {
                    last = event.seq;
                    // No follower left is not an error: the next tick resets.
                    let _ = live.send(event);
                }
            }
            Err(err) => {
                tracing::debug!(error = %err, chain, "cannot read another gateway's audit events");
                break;
            }
        }
    }
    last
}
