//! What the gateway remembers of each agent's allowed checks, for `after` / `notAfter`
//! conditions: the last instant an allowed check matched each history pattern of the policy set,
//! per agent and per session (trace id). In this process's memory, or in Redis with
//! `--redis-url` so that every gateway sees the same past. Nothing is kept when no policy has a
//! history condition.

use std::sync::{Arc, Mutex, PoisonError};

use meshguard_policy::{History, HistoryLog, LastSeen, Pattern};
use time::{Duration, OffsetDateTime};

use crate::rate_limit_redis::{RedisLimitError, RedisLimiter};

/// Records between two sweeps of the in-memory log for instants older than every window.
const SWEEP_EVERY: u32 = 4096;

/// Where the past lives.
#[derive(Debug, Clone)]
pub enum HistoryStore {
    /// This gateway's memory.
    Memory(Arc<Mutex<MemoryHistory>>),
    /// Redis, shared by every gateway.
    Redis(RedisLimiter),
}

/// The in-memory log and its sweep counter.
#[derive(Debug, Default)]
pub struct MemoryHistory {
    log: HistoryLog,
    since_sweep: u32,
}

impl HistoryStore {
    /// A store in this gateway's memory.
    pub fn memory() -> HistoryStore {
        HistoryStore::Memory(Arc::new(Mutex::new(MemoryHistory::default())))
    }

    /// The agent's past for `patterns` (the policy set's history patterns).
    ///
    /// # Errors
    /// Redis could not answer: the check must be refused (fail closed).
    pub async fn view(
        &self,
        agent_id: &str,
        session: Option<&str>,
        patterns: &[(Pattern, Duration)],
    ) -> Result<History, RedisLimitError> {
        if patterns.is_empty() {
            return Ok(History::empty());
        }
        match self {
            HistoryStore::Memory(memory) => {
                let memory = memory.lock().unwrap_or_else(PoisonError::into_inner);
                Ok(memory.log.view(agent_id, session, patterns))
            }
            HistoryStore::Redis(redis) => {
                let texts: Vec<&str> = patterns.iter().map(|(p, _)| p.as_str()).collect();
                let (agent, sessions) = redis.history_view(agent_id, session, &texts).await?;
                let at = |ms: Option<i64>| {
                    ms.and_then(|ms| {
                        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
                    })
                };
                let mut history = History::empty();
                for (i, text) in texts.iter().enumerate() {
                    history.insert(
                        text,
                        LastSeen {
                            agent: at(agent.get(i).copied().flatten()),
                            session: at(sessions.get(i).copied().flatten()),
                        },
                    );
                }
                Ok(history)
            }
        }
    }

    /// Records an allowed check at `at` under the `matched` patterns, kept for `keep` (the
    /// longest window of the set's history conditions).
    ///
    /// # Errors
    /// Redis could not record it: the check must be refused, or a later `notAfter` would miss it.
    pub async fn record(
        &self,
        agent_id: &str,
        session: Option<&str>,
        matched: &[&Pattern],
        at: OffsetDateTime,
        keep: Duration,
    ) -> Result<(), RedisLimitError> {
        if matched.is_empty() {
            return Ok(());
        }
        match self {
            HistoryStore::Memory(memory) => {
                let mut memory = memory.lock().unwrap_or_else(PoisonError::into_inner);
                memory.log.record(agent_id, session, matched, at);
                memory.since_sweep += 1;
                if memory.since_sweep >= SWEEP_EVERY {
                    memory.since_sweep = 0;
                    memory.log.forget_before(at - keep);
                }
                Ok(())
            }
            HistoryStore::Redis(redis) => {
                let texts: Vec<&str> = matched.iter().map(|p| p.as_str()).collect();
                let at_ms = i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
                let keep_ms = i64::try_from(keep.whole_milliseconds()).unwrap_or(i64::MAX);
                redis
                    .history_record(agent_id, session, &texts, at_ms, keep_ms)
                    .await
            }
        }
    }
}
