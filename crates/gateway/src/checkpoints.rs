//! Signing the gateway's audit chain: every `audit.checkpoint_events` events, or every
//! `audit.checkpoint_interval` while the chain moves, the gateway signs `(gateway, seq, hash)` of
//! its head with its Ed25519 key (meshguard_store::checkpoint).
//!
//! The head signed is the one the gateway's own audit writer committed, taken from its stream of
//! committed events, never read back from the database: a gateway must not sign what someone
//! else wrote into its tables.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use meshguard_store::{AuditCheckpoint, AuditEvent, CheckpointKeys, Store};
use time::OffsetDateTime;
use tokio::sync::{broadcast, watch};

/// Where the public keys of earlier signing keys are kept, so that checkpoints they signed still
/// verify after a key rotation (docs/operations.md).
pub const RETIRED_KEYS_DIR: &str = "audit-keys";

/// How often the chain's head is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Sign after this many new events.
    pub every_events: u64,
    /// Sign at least this often while the chain moves.
    pub every: Duration,
}

impl Default for CheckpointPolicy {
    /// 10,000 events or one minute: a routine verification walks at most that much beyond the
    /// last one, and a busy gateway adds one small row per 10,000 events.
    fn default() -> Self {
        Self {
            every_events: 10_000,
            every: Duration::from_secs(60),
        }
    }
}

/// The key that signs this gateway's checkpoints and the keys whose checkpoints it accepts.
#[derive(Clone)]
pub struct AuditKeys {
    signing: SigningKey,
    /// The current public key and every retired one.
    pub accepted: CheckpointKeys,
}

impl std::fmt::Debug for AuditKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKeys")
            .field("accepted", &self.accepted.ids())
            .finish_non_exhaustive()
    }
}

impl AuditKeys {
    /// Signs with `signing`; accepts it and the public keys (`*.pem`) in `<data_dir>/audit-keys/`.
    /// A file there that is not a public key is skipped with a warning: it must not stop the
    /// gateway, and a checkpoint it would have verified is reported as unverifiable.
    pub fn load(signing: SigningKey, data_dir: &Path) -> Self {
        let mut accepted = CheckpointKeys::default();
        accepted.add(signing.verifying_key());
        let dir = data_dir.join(RETIRED_KEYS_DIR);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().and_then(|e| e.to_str()) != Some("pem") {
                    continue;
                }
                match std::fs::read_to_string(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|pem| accepted.add_pem(&pem))
                {
                    Ok(id) => {
                        tracing::debug!(key = %id, path = %path.display(), "retired audit key loaded")
                    }
                    Err(err) => {
                        tracing::warn!(path = %path.display(), error = %err, "not a public key; ignored")
                    }
                }
            }
        }
        Self { signing, accepted }
    }

    /// A checkpoint over `(gateway, seq, hash)`, signed now.
    pub fn sign(&self, gateway: &str, seq: u64, hash: &str) -> AuditCheckpoint {
        AuditCheckpoint::sign(&self.signing, gateway, seq, hash, OffsetDateTime::now_utc())
    }
}

/// Signs `gateway`'s head as `policy` says until `stop`, then once more if it moved: `stop` is
/// meant to come once the audit writer has committed its last event.
pub fn spawn(
    store: Arc<dyn Store>,
    keys: Arc<AuditKeys>,
    gateway: String,
    committed: broadcast::Receiver<AuditEvent>,
    policy: CheckpointPolicy,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(store, keys, gateway, committed, policy, stop))
}

async fn run(
    store: Arc<dyn Store>,
    keys: Arc<AuditKeys>,
    gateway: String,
    mut committed: broadcast::Receiver<AuditEvent>,
    policy: CheckpointPolicy,
    mut stop: watch::Receiver<bool>,
) {
    let mut signed = match store.latest_audit_checkpoint(&gateway).await {
        Ok(latest) => latest.map_or(0, |checkpoint| checkpoint.seq),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the last audit checkpoint; signing from the next event");
            0
        }
    };
    let mut signed_at = Instant::now();
    let mut head: Option<(u64, String)> = None;
    let mut ticker = tokio::time::interval(policy.every.min(Duration::from_secs(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = tokio::select! {
            event = committed.recv() => match event {
                Ok(event) if event.event.gateway == gateway => {
                    let seq = event.seq;
                    head = Some((seq, event.hash));
                    seq >= signed.saturating_add(policy.every_events)
                }
                // Another gateway's event (a shared store), or events missed while lagging: the
                // next one of ours brings the head up to date.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => false,
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = ticker.tick() => signed_at.elapsed() >= policy.every,
            _ = stop.changed() => break,
        };
        if due
            && let Some((seq, hash)) = &head
            && *seq > signed
            && sign(&*store, &keys, &gateway, *seq, hash).await
        {
            signed = *seq;
            signed_at = Instant::now();
        }
    }
    // Stopping (after the audit writer finished): its last events are still in the channel.
    loop {
        match committed.try_recv() {
            Ok(event) if event.event.gateway == gateway => head = Some((event.seq, event.hash)),
            Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => break,
        }
    }
    if let Some((seq, hash)) = &head
        && *seq > signed
    {
        sign(&*store, &keys, &gateway, *seq, hash).await;
    }
}

/// Signs and stores one checkpoint; false (logged) when the store refused it.
async fn sign(store: &dyn Store, keys: &AuditKeys, gateway: &str, seq: u64, hash: &str) -> bool {
    match store
        .add_audit_checkpoint(&keys.sign(gateway, seq, hash))
        .await
    {
        Ok(()) => {
            tracing::debug!(seq, "audit checkpoint signed");
            true
        }
        Err(meshguard_store::StoreError::Conflict { .. }) => true,
        Err(err) => {
            tracing::warn!(error = %err, seq, "audit checkpoint not stored; will retry");
            false
        }
    }
}
