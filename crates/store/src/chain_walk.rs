//! Walking one chain event by event: the checks `audit verify` makes, shared by the store's
//! verification and the offline verification of an exported file, so both judge a trail alike.
//!
//! Recomputing hashes is the costly part and needs no order, so callers do it for many events at
//! once on every core (pages of the store, chunks of a file); linking (`seq` gap-free,
//! `prev_hash` equal to the previous `hash`) and checkpoints are then checked in order by
//! [`ChainWalk::push_link`].

use std::collections::BTreeMap;

use crate::checkpoint::{AuditCheckpoint, CheckpointKeys};
use crate::{ChainBreak, ChainReport};

/// One chain being verified from a trusted starting point (the genesis, a retention anchor, a
/// verified checkpoint, or the first event of a file).
pub struct ChainWalk<'k> {
    keys: &'k CheckpointKeys,
    report: ChainReport,
    first_link: String,
    last_seq: u64,
    prev_hash: String,
    pending: BTreeMap<u64, AuditCheckpoint>,
}

impl<'k> ChainWalk<'k> {
    /// A walk of `gateway`'s chain from the event after `seq`, whose `prev_hash` must be `hash`;
    /// `first_link` says in words what that starting point is, for the break report.
    pub fn new(
        gateway: &str,
        seq: u64,
        hash: &str,
        first_link: impl Into<String>,
        keys: &'k CheckpointKeys,
    ) -> Self {
        Self {
            keys,
            report: ChainReport {
                gateway: gateway.to_owned(),
                anchor_seq: seq,
                head_seq: seq,
                from_seq: seq,
                events: 0,
                checkpoints: 0,
                signed_seq: None,
                broken: None,
            },
            first_link: first_link.into(),
            last_seq: seq,
            prev_hash: hash.to_owned(),
            pending: BTreeMap::new(),
        }
    }

    /// The report being built (its `anchor_seq` and `head_seq` are the caller's to set).
    pub fn report_mut(&mut self) -> &mut ChainReport {
        &mut self.report
    }

    /// The last `seq` verified and its hash.
    pub fn last(&self) -> (u64, &str) {
        (self.last_seq, &self.prev_hash)
    }

    /// True once a break was found: the walk stops there.
    pub fn is_broken(&self) -> bool {
        self.report.broken.is_some()
    }

    /// Records that the chain breaks at `seq`, unless an earlier break was found.
    pub fn break_at(&mut self, seq: u64, reason: impl Into<String>) {
        if self.report.broken.is_none() {
            self.report.broken = Some(ChainBreak {
                gateway: self.report.gateway.clone(),
                seq,
                reason: reason.into(),
            });
        }
    }

    /// Marks the starting point itself as covered by a verified signature.
    pub fn start_signed(&mut self) {
        self.report.signed_seq = Some(self.last_seq);
    }

    /// A checkpoint to check when the walk reaches its `seq` (ignored at or before the start).
    pub fn expect(&mut self, checkpoint: AuditCheckpoint) {
        if checkpoint.seq > self.last_seq {
            self.pending.insert(checkpoint.seq, checkpoint);
        }
    }

    /// A checkpoint met after its event (as in an export): checked against the last event
    /// walked, or kept for later when it signs one further on.
    pub fn signed(&mut self, checkpoint: AuditCheckpoint) {
        if self.is_broken() {
            return;
        }
        if checkpoint.seq > self.last_seq {
            self.pending.insert(checkpoint.seq, checkpoint);
            return;
        }
        let seq = checkpoint.seq;
        if seq < self.last_seq || seq == self.report.from_seq {
            self.break_at(
                seq,
                format!(
                    "the checkpoint for seq {seq} is out of place (it follows seq {}): a \
                     checkpoint comes right after the event it signs",
                    self.last_seq
                ),
            );
            return;
        }
        if let Err(reason) = checkpoint.check_signature(self.keys) {
            self.break_at(seq, reason);
        } else if checkpoint.hash != self.prev_hash {
            self.break_at(
                seq,
                format!(
                    "the checkpoint at seq {seq} signed hash {} but the event's hash is {}: the \
                     event was replaced",
                    checkpoint.hash, self.prev_hash
                ),
            );
        } else {
            self.report.checkpoints += 1;
            self.report.signed_seq = Some(seq);
        }
    }

    /// Checks the next event, known by its place in the chain; `content_matches` says whether
    /// its stored hash is the hash of its content. Returns false once the chain is broken.
    pub fn push_link(
        &mut self,
        seq: u64,
        prev_hash: &str,
        hash: &str,
        content_matches: bool,
    ) -> bool {
        if self.is_broken() {
            return false;
        }
        let expected = self.last_seq + 1;
        if seq != expected {
            self.break_at(
                expected,
                format!(
                    "seq {expected} is missing (the next stored event is seq {})",
                    seq
                ),
            );
            return false;
        }
        if prev_hash != self.prev_hash {
            let reason = if expected == self.report.from_seq + 1 {
                self.first_link.clone()
            } else {
                format!(
                    "prev_hash does not match the hash of seq {}: the chain was relinked",
                    expected - 1
                )
            };
            self.break_at(expected, reason);
            return false;
        }
        self.report.events += 1;
        if !content_matches {
            self.break_at(
                expected,
                "the stored hash does not match the event's content: the event was altered",
            );
            return false;
        }
        if let Some(checkpoint) = self.pending.remove(&expected) {
            if let Err(reason) = checkpoint.check_signature(self.keys) {
                self.break_at(expected, reason);
                return false;
            }
            if checkpoint.hash != hash {
                self.break_at(
                    expected,
                    format!(
                        "the checkpoint at seq {expected} signed hash {} but the event's hash is \
                         {}: the event was replaced",
                        checkpoint.hash, hash
                    ),
                );
                return false;
            }
            self.report.checkpoints += 1;
            self.report.signed_seq = Some(expected);
        }
        self.last_seq = expected;
        self.prev_hash.clear();
        self.prev_hash.push_str(hash);
        self.report.head_seq = expected;
        true
    }

    /// The report; checkpoints past the last event are left unchecked (their events were not
    /// walked: appended since, or not in the file).
    pub fn finish(self) -> ChainReport {
        self.report
    }
}
