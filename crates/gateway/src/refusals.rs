//! Refusals of validly signed tokens the store no longer honours (a revoked agent, a revoked,
//! unknown or foreign token id), counted per agent and written as one audit event per agent per
//! minute with the count, instead of one event per request (SPEC 6).
//!
//! Such a token can be replayed at any rate by whoever holds it; one row per request would let
//! it grow the trail without bound. The operator still learns that the token is being used, by
//! whom it was issued to, how often and since when. A tally is written when its minute is over
//! (the [`run`] task looks every second), and every open tally when the gateway stops; a crash
//! loses at most the last minute of counts, never a decision (a refusal decides nothing).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use meshguard_policy::Effect;
use meshguard_store::{AuditAgent, AuditKind, EventCode, NewAuditEvent};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::audit_writer::AuditWriter;
use crate::rate_limit::Clock;

/// How long a tally counts before it is written.
pub const TALLY_WINDOW: Duration = Duration::from_secs(60);

/// Agents with an open tally at most; past it every open tally is written at once, so memory
/// stays bounded whatever the traffic.
pub const MAX_OPEN_TALLIES: usize = 16_384;

/// How often the background task looks for tallies whose minute is over.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// One refused request, as the tally remembers the first of its minute.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The agent the token names.
    pub agent: AuditAgent,
    /// Why it was refused.
    pub reason: String,
    /// The action the request named, if any.
    pub action: Option<String>,
    /// The resource the request named, if any.
    pub resource: Option<String>,
    /// The request's trace id.
    pub trace_id: String,
}

#[derive(Debug)]
struct Tally {
    first: Refusal,
    since: OffsetDateTime,
    /// Milliseconds on the gateway's clock when the tally opened.
    opened_at: u64,
    count: u64,
}

/// The open tallies of one gateway, by agent id.
pub struct RefusalTally {
    clock: Arc<dyn Clock>,
    gateway: String,
    open: Mutex<HashMap<String, Tally>>,
}

impl std::fmt::Debug for RefusalTally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefusalTally")
            .field("gateway", &self.gateway)
            .finish_non_exhaustive()
    }
}

impl RefusalTally {
    /// Empty tallies of `gateway` (its audit chain), timed by `clock`.
    pub fn new(clock: Arc<dyn Clock>, gateway: String) -> RefusalTally {
        RefusalTally {
            clock,
            gateway,
            open: Mutex::default(),
        }
    }

    /// Counts one refusal; returns the events of tallies that are due now (this agent's, if its
    /// minute is over, or every one when too many are open).
    pub fn count(&self, refusal: Refusal) -> Vec<NewAuditEvent> {
        let now = self.clock.now_millis();
        // A poisoned lock only means a panic elsewhere mid-insert; the map stays well-formed.
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let mut due = Vec::new();
        if let Some(tally) = open.get(&refusal.agent.id)
            && self.is_due(tally, now)
            && let Some(tally) = open.remove(&refusal.agent.id)
        {
            due.push(self.event(tally));
        }
        if !open.contains_key(&refusal.agent.id) && open.len() >= MAX_OPEN_TALLIES {
            due.extend(open.drain().map(|(_, tally)| self.event(tally)));
        }
        open.entry(refusal.agent.id.clone())
            .or_insert_with(|| Tally {
                first: refusal,
                since: OffsetDateTime::now_utc(),
                opened_at: now,
                count: 0,
            })
            .count += 1;
        due
    }

    /// The events of every tally whose minute is over (every tally when `all`), which are then
    /// forgotten.
    pub fn take_due(&self, all: bool) -> Vec<NewAuditEvent> {
        let now = self.clock.now_millis();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let due: Vec<String> = open
            .iter()
            .filter(|(_, tally)| all || self.is_due(tally, now))
            .map(|(agent, _)| agent.clone())
            .collect();
        due.iter()
            .filter_map(|agent| open.remove(agent))
            .map(|tally| self.event(tally))
            .collect()
    }

    fn is_due(&self, tally: &Tally, now: u64) -> bool {
        let window = u64::try_from(TALLY_WINDOW.as_millis()).unwrap_or(u64::MAX);
        now.saturating_sub(tally.opened_at) >= window
    }

    /// The audit event of a tally: the first refusal of its minute, with the count and the time
    /// of the first refusal in `context`.
    fn event(&self, tally: Tally) -> NewAuditEvent {
        let mut context = Map::new();
        context.insert("count".into(), Value::from(tally.count));
        context.insert(
            "since".into(),
            Value::String(
                tally
                    .since
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
            ),
        );
        let first = tally.first;
        NewAuditEvent {
            agent: Some(first.agent),
            resource: first.resource,
            decision: Some(Effect::Deny),
            code: Some(EventCode::Unauthorized),
            reason: Some(first.reason),
            trace_id: Some(first.trace_id),
            context,
            ..NewAuditEvent::new(
                AuditKind::Check,
                first.action.unwrap_or_default(),
                &self.gateway,
            )
        }
    }
}

/// Appends `events`; a failure is logged (a refusal decided nothing, and the 401s were answered).
pub async fn write(audit: &AuditWriter, events: Vec<NewAuditEvent>) {
    for event in events {
        if let Err(err) = audit.append(event).await {
            tracing::error!(error = %err, "refusal count could not be audited");
        }
    }
}

/// Writes the tallies whose minute is over, every second, until the gateway begins to stop.
/// The open tallies are written by the shutdown itself ([`flush`]), once no request can add to
/// them and before the audit writer stops, so none is lost to a race with either.
pub async fn run(
    tally: Arc<RefusalTally>,
    audit: AuditWriter,
    mut stopping: watch::Receiver<bool>,
) {
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = sweep.tick() => write(&audit, tally.take_due(false)).await,
            changed = stopping.changed() => {
                if changed.is_err() || *stopping.borrow() {
                    return;
                }
            }
        }
    }
}

/// Writes every open tally now: the last step of a shutdown before the audit writer stops.
pub async fn flush(tally: &RefusalTally, audit: &AuditWriter) {
    write(audit, tally.take_due(true)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::ManualClock;

    fn refusal(agent: &str) -> Refusal {
        Refusal {
            agent: AuditAgent {
                id: agent.into(),
                name: "dev".into(),
            },
            reason: "token revoked or unknown".into(),
            action: Some("read:x".into()),
            resource: None,
            trace_id: "t".into(),
        }
    }

    #[test]
    fn one_event_per_agent_per_minute_with_the_count() {
        let clock = Arc::new(ManualClock::new());
        let tally = RefusalTally::new(clock.clone(), "gw".into());
        for _ in 0..5 {
            assert!(tally.count(refusal("agent_a")).is_empty());
        }
        assert!(tally.count(refusal("agent_b")).is_empty());
        assert!(tally.take_due(false).is_empty(), "the minute is not over");
        clock.advance(TALLY_WINDOW);
        // The next refusal of `agent_a` closes its minute and opens the next.
        let closed = tally.count(refusal("agent_a"));
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].context["count"], 5);
        let due = tally.take_due(false);
        assert_eq!(due.len(), 1);
        assert_eq!(
            due[0].agent.as_ref().map(|a| a.id.as_str()),
            Some("agent_b")
        );
        let rest = tally.take_due(true);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].context["count"], 1);
    }
}
