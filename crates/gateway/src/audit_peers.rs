//! Other gateways' audit events in this gateway's live stream.
//!
//! Gateways that share a database each commit to their own chain, and `GET /admin/audit/stream`
//! is fed by this gateway's writer. While anyone follows the stream, this task reads what the
//! other chains committed since it last looked and hands it to the same followers, so that
//! `audit tail --follow` through any gateway behind a load balancer shows every gateway's events
//! (the others' within about [`POLL_INTERVAL`]). It reads on from the last `seq` seen per chain:
//! a chain commits in `seq` order, so no event that commits late is skipped. With no follower it
//! reads only the chains' heads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use meshguard_store::{AuditEvent, Store};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// How often the other chains are read while the stream has followers.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Events read per query; a chain further ahead is read in several.
const PAGE: u32 = 500;

/// Starts the task; it ends when `stopping` turns true.
pub fn start(
    store: Arc<dyn Store>,
    own_chain: String,
    live: broadcast::Sender<AuditEvent>,
    stopping: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(run(store, own_chain, live, stopping))
}

async fn run(
    store: Arc<dyn Store>,
    own_chain: String,
    live: broadcast::Sender<AuditEvent>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The last `seq` seen per chain. Kept up to date while nobody follows, so that a follower
    // who arrives gets every event committed after it subscribed (at worst also a few from the
    // moments before), never misses one.
    let mut seen: Option<BTreeMap<String, u64>> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopping.changed() => {}
        }
        if *stopping.borrow() {
            return;
        }
        let heads = match store.audit_heads().await {
            Ok(heads) => heads,
            Err(err) => {
                tracing::debug!(error = %err, "cannot read the other gateways' audit chains");
                continue;
            }
        };
        let Some(seen) = seen.as_mut().filter(|_| live.receiver_count() > 0) else {
            seen = Some(heads);
            continue;
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
