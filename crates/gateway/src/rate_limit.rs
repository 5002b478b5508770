//! In-memory rate limits: exact sliding windows, charged all-or-nothing.
//!
//! Each counter (agent + policy, or agent + policy + rule, per kind and window length) keeps the
//! instants and costs of the charges it admitted within the last window, oldest first, and their
//! sum: a rate limit's charges cost 1, a budget's the check's amount. A check is admitted when,
//! after dropping the expired charges, every counter it is charged to has room for its cost under
//! `max`; then all of them record it. This is exact ("at most N admitted checks, or amounts
//! summing to at most the budget, in any rolling window"), which neither a token bucket (bursts
//! of 2N) nor a two-window weighted estimate (up to 1.5N after a burst at a window's end)
//! guarantees. The cost is 16 bytes per admitted charge still in its window. See
//! docs/architecture/rate-limits.md.
//!
//! [`RateLimitStore`] is what the gateway holds: these counters, or the same algorithm in Redis
//! ([`crate::rate_limit_redis`]) when limits must hold across several gateways.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use meshguard_policy::{Admission, LimitCharge, LimitKey, LimitKind, RateLimitOracle, Window};

use crate::rate_limit_redis::{RedisLimitError, RedisLimiter};

/// A monotonic clock in milliseconds, injected so tests drive time without sleeping.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since an arbitrary fixed origin; never goes backwards.
    fn now_millis(&self) -> u64;
}

/// The real monotonic clock.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> SystemClock {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now_millis(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// A clock that moves only when told to: for tests and simulations of rate limits.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    /// A clock at time zero.
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.now.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}

/// One counter: agent id, policy, optional rule, what it counts, window length.
type CounterKey = (String, String, Option<String>, LimitKind, Window);

/// The charges a counter admitted within its window, oldest first, and their sum.
#[derive(Debug, Default)]
struct Ring {
    /// (instant in ms, cost) of every admitted charge with a cost.
    admitted: VecDeque<(u64, u64)>,
    /// The sum of the costs in `admitted`.
    sum: u64,
}

impl Ring {
    /// Drops the charges that left the window.
    fn expire(&mut self, now: u64, window_ms: u64) {
        while let Some(&(t, cost)) = self.admitted.front() {
            if t.saturating_add(window_ms) > now {
                break;
            }
            self.admitted.pop_front();
            self.sum = self.sum.saturating_sub(cost);
        }
    }

    /// Milliseconds until the window has room for `cost` under `max`: the instant the oldest
    /// charges whose expiry frees enough leave it. `None` when `cost` alone is more than `max`.
    fn wait_for(&self, cost: u64, max: u64, now: u64, window_ms: u64) -> Option<u64> {
        if cost > max {
            return None;
        }
        let mut sum = self.sum;
        for &(t, spent) in &self.admitted {
            sum = sum.saturating_sub(spent);
            if sum.saturating_add(cost) <= max {
                return Some(t.saturating_add(window_ms).saturating_sub(now));
            }
        }
        Some(window_ms)
    }
}

/// The counters in this gateway's own memory (no `--redis-url`), shared by all its requests;
/// [`RedisLimiter`] is the same algorithm in Redis.
#[derive(Clone)]
pub struct MemoryLimiter {
    clock: Arc<dyn Clock>,
    counters: Arc<Mutex<Counters>>,
}

impl std::fmt::Debug for MemoryLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryLimiter { .. }")
    }
}

#[derive(Default)]
struct Counters {
    rings: HashMap<CounterKey, Ring>,
    /// Admissions since the last sweep of idle counters.
    since_sweep: u32,
}

/// How many admissions pass between sweeps that drop counters whose window emptied.
const SWEEP_EVERY: u32 = 4096;

impl MemoryLimiter {
    /// An empty limiter reading `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> MemoryLimiter {
        MemoryLimiter {
            clock,
            counters: Arc::new(Mutex::new(Counters::default())),
        }
    }

    /// The oracle for one decision about `agent_id`: a check charges on admission, the admin
    /// `decide` only looks.
    pub fn oracle<'a>(&'a self, agent_id: &'a str, charging: Charging) -> AgentLimits<'a> {
        AgentLimits {
            limiter: self,
            agent_id,
            charge: charging == Charging::Charge,
        }
    }

    fn admit(&self, agent_id: &str, charges: &[LimitCharge], charge: bool) -> Admission {
        let now = self.clock.now_millis();
        // A poisoned lock only means another request panicked mid-update; every ring stays
        // well-formed (each mutation keeps `sum` equal to what `admitted` holds), so keep serving.
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        let keys: Vec<CounterKey> = charges
            .iter()
            .map(|c| {
                (
                    agent_id.to_owned(),
                    c.key.policy.clone(),
                    c.key.rule.clone(),
                    c.key.kind,
                    c.window,
                )
            })
            .collect();
        for (index, (key, limit)) in keys.iter().zip(charges).enumerate() {
            let window_ms = limit.window.seconds().saturating_mul(1000);
            let empty = Ring::default();
            let ring = match counters.rings.get_mut(key) {
                Some(ring) => {
                    ring.expire(now, window_ms);
                    &*ring
                }
                None => &empty,
            };
            if ring.sum.saturating_add(limit.cost) > limit.max {
                let wait_ms = ring.wait_for(limit.cost, limit.max, now, window_ms);
                return exhausted(index, ring.sum, wait_ms);
            }
        }
        if charge {
            for (key, limit) in keys.into_iter().zip(charges) {
                if limit.cost == 0 {
                    continue;
                }
                let ring = counters.rings.entry(key).or_default();
                ring.admitted.push_back((now, limit.cost));
                ring.sum = ring.sum.saturating_add(limit.cost);
            }
            counters.since_sweep += 1;
            if counters.since_sweep >= SWEEP_EVERY {
                counters.since_sweep = 0;
                counters.rings.retain(|(.., window), ring| {
                    let window_ms = window.seconds().saturating_mul(1000);
                    ring.admitted
                        .back()
                        .is_some_and(|&(t, _)| t.saturating_add(window_ms) > now)
                });
            }
        }
        Admission::Admitted
    }
}

fn exhausted(index: usize, used: u64, wait_ms: Option<u64>) -> Admission {
    Admission::Exhausted {
        charge: index,
        used,
        retry_after_secs: wait_ms.map(|ms| ms.div_ceil(1000).max(1)),
    }
}

/// A per-agent budget of requests no policy counts (`/record`), in this gateway's memory: the
/// same exact sliding window, one counter per agent. Each gateway keeps its own, so behind `n`
/// gateways an agent gets up to `n` times the budget; it bounds load, not a policy.
#[derive(Debug, Clone)]
pub struct AgentBudget {
    counters: MemoryLimiter,
    per_minute: u32,
}

impl AgentBudget {
    /// A budget of `per_minute` requests per agent per rolling minute, read by `clock`.
    pub fn new(clock: Arc<dyn Clock>, per_minute: u32) -> AgentBudget {
        AgentBudget {
            counters: MemoryLimiter::new(clock),
            per_minute,
        }
    }

    /// Charges one request of `agent_id`; when the budget is spent, charges nothing and returns
    /// the seconds until one more fits.
    pub fn charge(&self, agent_id: &str) -> Result<(), u64> {
        let charge = LimitCharge {
            // The counters are this budget's alone: the key only has to be the same each time.
            key: LimitKey::requests("", None),
            max: u64::from(self.per_minute),
            window: Window::Minute,
            cost: 1,
        };
        match self.counters.admit(agent_id, &[charge], true) {
            Admission::Admitted => Ok(()),
            Admission::Exhausted {
                retry_after_secs, ..
            } => Err(retry_after_secs.unwrap_or(60)),
        }
    }

    /// Requests per agent per minute.
    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }
}

/// Whether a decision charges the limits (a check) or only looks (the admin `decide`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charging {
    /// A check: an admitted check is charged to every limit.
    Charge,
    /// A dry run: reports what a check would get, charging nothing.
    Peek,
}

/// Where the counters a gateway charges live: its own memory, or Redis shared by every gateway
/// (`--redis-url`). The check path talks to this, never to one backend directly.
#[derive(Debug, Clone)]
pub enum RateLimitStore {
    /// Exact sliding windows in this process.
    Memory(MemoryLimiter),
    /// The same windows in Redis, global across gateways.
    Redis(RedisLimiter),
}

impl RateLimitStore {
    /// Runs `decide` (the engine's pure `decide` or `explain`) with an oracle for `agent_id`.
    ///
    /// The engine asks its oracle synchronously, and Redis is asynchronous, so with Redis the
    /// decision runs once with an oracle that records the charges it is asked for and admits;
    /// if there were charges, one script run admits (or refuses) them all atomically; if Redis
    /// says a limit is exhausted, the decision runs again with an oracle that answers exactly
    /// that. The engine is pure (about a microsecond per run), so both runs see the same charges
    /// in the same order and the index of the exhausted limit means the same in both.
    ///
    /// # Errors
    /// Redis could not answer: the caller must refuse the check (fail closed).
    pub async fn decide_with_limits<T>(
        &self,
        agent_id: &str,
        charging: Charging,
        mut decide: impl FnMut(&mut dyn RateLimitOracle) -> T,
    ) -> Result<T, RedisLimitError> {
        let redis = match self {
            RateLimitStore::Memory(memory) => {
                return Ok(decide(&mut memory.oracle(agent_id, charging)));
            }
            RateLimitStore::Redis(redis) => redis,
        };
        let mut recorder = Recorder::default();
        let first = decide(&mut recorder);
        let Some(charges) = recorder.charges else {
            return Ok(first);
        };
        match redis
            .admit(agent_id, &charges, charging == Charging::Charge)
            .await?
        {
            Admission::Admitted => Ok(first),
            exhausted @ Admission::Exhausted { .. } => Ok(decide(&mut Answer(exhausted))),
        }
    }

    /// Whether the counters can be reached (always, in memory).
    pub async fn ping(&self) -> Result<(), RedisLimitError> {
        match self {
            RateLimitStore::Memory(_) => Ok(()),
            RateLimitStore::Redis(redis) => redis.ping().await,
        }
    }

    /// `memory` or `redis`, for `/health`.
    pub fn backend(&self) -> &'static str {
        match self {
            RateLimitStore::Memory(_) => "memory",
            RateLimitStore::Redis(_) => "redis",
        }
    }
}

/// Records what the engine asks and admits: the first run of a decision over Redis.
#[derive(Default)]
struct Recorder {
    charges: Option<Vec<LimitCharge>>,
}

impl RateLimitOracle for Recorder {
    fn admit(&mut self, charges: &[LimitCharge]) -> Admission {
        self.charges = Some(charges.to_vec());
        Admission::Admitted
    }
}

/// Answers what Redis answered: the second run of a decision whose limit is exhausted.
struct Answer(Admission);

impl RateLimitOracle for Answer {
    fn admit(&mut self, _charges: &[LimitCharge]) -> Admission {
        self.0
    }
}

/// The [`RateLimitOracle`] the policy engine talks to during one decision.
pub struct AgentLimits<'a> {
    limiter: &'a MemoryLimiter,
    agent_id: &'a str,
    charge: bool,
}

impl RateLimitOracle for AgentLimits<'_> {
    fn admit(&mut self, charges: &[LimitCharge]) -> Admission {
        self.limiter.admit(self.agent_id, charges, self.charge)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use meshguard_policy::LimitKey;

    use super::*;

    fn charge(policy: &str, rule: Option<&str>, max: u64, window: Window) -> LimitCharge {
        LimitCharge {
            key: LimitKey::requests(policy, rule),
            max,
            window,
            cost: 1,
        }
    }

    /// A budget charge of `cost` whole units against `max`.
    fn spend(policy: &str, max: u64, window: Window, cost: u64) -> LimitCharge {
        LimitCharge {
            key: LimitKey::budget(policy, None),
            max: max * meshguard_policy::AMOUNT_SCALE,
            window,
            cost: cost * meshguard_policy::AMOUNT_SCALE,
        }
    }

    fn setup() -> (Arc<ManualClock>, MemoryLimiter) {
        let clock = Arc::new(ManualClock::new());
        (clock.clone(), MemoryLimiter::new(clock))
    }

    #[test]
    fn admits_n_then_denies_with_retry_after_until_the_oldest_expires() {
        let (clock, limiter) = setup();
        let limits = [charge("p", None, 3, Window::Minute)];
        for _ in 0..3 {
            assert_eq!(
                limiter.oracle("a", Charging::Charge).admit(&limits),
                Admission::Admitted
            );
            clock.advance(Duration::from_secs(10));
        }
        // Checks at 0 s, 10 s, 20 s; now 30 s: the first expires at 60 s.
        assert_eq!(
            limiter.oracle("a", Charging::Charge).admit(&limits),
            Admission::Exhausted {
                charge: 0,
                used: 3,
                retry_after_secs: Some(30)
            }
        );
        clock.advance(Duration::from_millis(29_500));
        assert_eq!(
            limiter.oracle("a", Charging::Charge).admit(&limits),
            Admission::Exhausted {
                charge: 0,
                used: 3,
                retry_after_secs: Some(1)
            }
        );
        clock.advance(Duration::from_millis(500));
        assert_eq!(
            limiter.oracle("a", Charging::Charge).admit(&limits),
            Admission::Admitted
        );
        // The window slides: the 10 s check expires at 70 s, not at a fixed boundary.
        assert!(matches!(
            limiter.oracle("a", Charging::Charge).admit(&limits),
            Admission::Exhausted {
                retry_after_secs: Some(10),
                ..
            }
        ));
    }

    #[test]
    fn never_more_than_n_in_any_rolling_window() {
        let (clock, limiter) = setup();
        let limits = [charge("p", None, 10, Window::Minute)];
        let mut admitted_at = Vec::new();
        // One attempt every 700 ms for ten minutes, bursts included.
        for step in 0..900u64 {
            if limiter.oracle("a", Charging::Charge).admit(&limits) == Admission::Admitted {
                admitted_at.push(step * 700);
            }
            clock.advance(Duration::from_millis(700));
        }
        for (i, &t) in admitted_at.iter().enumerate() {
            let in_window = admitted_at[i..]
                .iter()
                .take_while(|&&u| u < t + 60_000)
                .count();
            assert!(
                in_window <= 10,
                "{in_window} admitted in the minute from {t} ms"
            );
        }
        // And the limit is used, not starved: about 10 per minute over ten minutes.
        assert!(admitted_at.len() >= 100, "{}", admitted_at.len());
    }

    #[test]
    fn all_or_nothing_charges_none_when_one_is_exhausted() {
        let (_clock, limiter) = setup();
        let policy = charge("p", None, 5, Window::Minute);
        let rule = charge("p", Some("r"), 1, Window::Minute);
        assert_eq!(
            limiter
                .oracle("a", Charging::Charge)
                .admit(&[policy.clone(), rule.clone()]),
            Admission::Admitted
        );
        for _ in 0..3 {
            assert!(matches!(
                limiter
                    .oracle("a", Charging::Charge)
                    .admit(&[policy.clone(), rule.clone()]),
                Admission::Exhausted { charge: 1, .. }
            ));
        }
        // The rejected checks charged nothing on the policy counter: 4 more fit.
        for _ in 0..4 {
            assert_eq!(
                limiter
                    .oracle("a", Charging::Charge)
                    .admit(std::slice::from_ref(&policy)),
                Admission::Admitted
            );
        }
        assert!(matches!(
            limiter
                .oracle("a", Charging::Charge)
                .admit(std::slice::from_ref(&policy)),
            Admission::Exhausted { charge: 0, .. }
        ));
    }

    #[test]
    fn counters_are_per_agent_and_peeking_charges_nothing() {
        let (_clock, limiter) = setup();
        let limits = [charge("p", None, 1, Window::Hour)];
        for _ in 0..5 {
            assert_eq!(
                limiter.oracle("a", Charging::Peek).admit(&limits),
                Admission::Admitted
            );
        }
        assert_eq!(
            limiter.oracle("a", Charging::Charge).admit(&limits),
            Admission::Admitted
        );
        assert!(matches!(
            limiter.oracle("a", Charging::Peek).admit(&limits),
            Admission::Exhausted {
                retry_after_secs: Some(3600),
                ..
            }
        ));
        assert_eq!(
            limiter.oracle("b", Charging::Charge).admit(&limits),
            Admission::Admitted
        );
    }

    #[test]
    fn an_agent_budget_is_per_agent_and_slides() {
        let clock = Arc::new(ManualClock::new());
        let budget = AgentBudget::new(clock.clone(), 2);
        assert_eq!(budget.charge("a"), Ok(()));
        clock.advance(Duration::from_secs(20));
        assert_eq!(budget.charge("a"), Ok(()));
        assert_eq!(budget.charge("a"), Err(40));
        assert_eq!(budget.charge("b"), Ok(()));
        clock.advance(Duration::from_secs(40));
        assert_eq!(budget.charge("a"), Ok(()));
    }

    #[test]
    fn a_budget_holds_the_sum_of_amounts_and_makes_room_as_they_leave_the_window() {
        let (clock, limiter) = setup();
        let oracle = |cost| [spend("pay", 100, Window::Hour, cost)];
        let admit = |cost| limiter.oracle("a", Charging::Charge).admit(&oracle(cost));
        assert_eq!(admit(60), Admission::Admitted);
        clock.advance(Duration::from_secs(600));
        assert_eq!(admit(30), Admission::Admitted);
        // 90 used, 10 left: 20 does not fit until the 60 leaves, 50 min from now.
        assert_eq!(
            admit(20),
            Admission::Exhausted {
                charge: 0,
                used: 90 * meshguard_policy::AMOUNT_SCALE,
                retry_after_secs: Some(3000)
            }
        );
        assert_eq!(admit(10), Admission::Admitted);
        // More than the whole budget never fits.
        assert!(matches!(
            admit(101),
            Admission::Exhausted {
                retry_after_secs: None,
                ..
            }
        ));
        clock.advance(Duration::from_secs(3000));
        assert_eq!(admit(60), Admission::Admitted);
        // A zero amount always fits and is not kept.
        assert_eq!(admit(0), Admission::Admitted);
    }

    #[test]
    fn a_budget_and_a_rate_limit_are_charged_together_or_not_at_all() {
        let (_clock, limiter) = setup();
        let both = |cost| {
            [
                charge("pay", None, 2, Window::Minute),
                spend("pay", 100, Window::Day, cost),
            ]
        };
        let admit = |cost| limiter.oracle("a", Charging::Charge).admit(&both(cost));
        // Over budget: the rate limit is not charged either.
        assert!(matches!(admit(150), Admission::Exhausted { charge: 1, .. }));
        assert_eq!(admit(40), Admission::Admitted);
        assert_eq!(admit(40), Admission::Admitted);
        // Out of requests: the budget is not charged, so 20 are still left.
        assert!(matches!(admit(10), Admission::Exhausted { charge: 0, .. }));
        assert!(matches!(
            limiter
                .oracle("a", Charging::Peek)
                .admit(&[spend("pay", 100, Window::Day, 20)]),
            Admission::Admitted
        ));
        assert!(matches!(
            limiter
                .oracle("a", Charging::Peek)
                .admit(&[spend("pay", 100, Window::Day, 21)]),
            Admission::Exhausted { .. }
        ));
    }

    #[test]
    fn a_zero_limit_admits_nothing() {
        let (_clock, limiter) = setup();
        assert!(matches!(
            limiter
                .oracle("a", Charging::Charge)
                .admit(&[charge("p", None, 0, Window::Minute)]),
            Admission::Exhausted { .. }
        ));
    }
}
