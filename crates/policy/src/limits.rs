//! Rate limits as the engine sees them: it decides *which* limits a check is charged against,
//! and asks an oracle (the gateway's sliding windows) whether they all have room.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The length of a rolling rate-limit window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    /// A rolling minute (`requestsPerMinute`).
    Minute,
    /// A rolling hour (`requestsPerHour`).
    Hour,
}

impl Window {
    /// The window's length, for the oracle's clock arithmetic.
    pub fn seconds(self) -> u64 {
        match self {
            Window::Minute => 60,
            Window::Hour => 3600,
        }
    }

    /// The unit used in messages ("per minute").
    pub fn unit(self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Hour => "hour",
        }
    }
}

/// Which counter a charge goes to. Limits are kept per agent and policy, and per agent and
/// rule; the gateway prefixes the agent id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LimitKey {
    /// The policy whose `rateLimits` (or whose rule's `rateLimit`) this is.
    pub policy: String,
    /// The rule, for a rule's own limit; `None` for the policy-level limit.
    pub rule: Option<String>,
}

impl fmt::Display for LimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rule {
            Some(rule) => write!(f, "rule '{rule}' of policy '{}'", self.policy),
            None => write!(f, "policy '{}'", self.policy),
        }
    }
}

/// One limit a check must fit in: at most `max` admitted checks per rolling `window`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LimitCharge {
    /// The counter.
    pub key: LimitKey,
    /// The most checks admitted in any window.
    pub max: u32,
    /// The window length.
    pub window: Window,
}

/// The oracle's answer for a whole set of charges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Admission {
    /// Every charge had room and all were charged.
    Admitted,
    /// At least one charge had no room; none were charged.
    Exhausted {
        /// Index into the charges of the (first) exhausted limit.
        charge: usize,
        /// Whole seconds until one more check would be admitted.
        retry_after_secs: u64,
    },
}

/// Implemented by the gateway (in-memory or Redis sliding windows); the engine itself has no
/// clock, so it only says which limits apply.
pub trait RateLimitOracle {
    /// All-or-nothing: admit only if every charge has room, then charge all of them.
    fn admit(&mut self, charges: &[LimitCharge]) -> Admission;
}

/// An oracle that always admits: offline `policy test`, the admin `decide`, tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unlimited;

impl RateLimitOracle for Unlimited {
    fn admit(&mut self, _charges: &[LimitCharge]) -> Admission {
        Admission::Admitted
    }
}

/// An oracle without a clock: every check happens at the same instant, so a limit of N admits
/// exactly N checks. Offline corpus runs use it to show what a burst would get.
#[derive(Debug, Clone, Default)]
pub struct BurstCounter {
    used: HashMap<(LimitKey, Window), u32>,
}

impl BurstCounter {
    /// A counter with every limit empty.
    pub fn new() -> BurstCounter {
        BurstCounter::default()
    }

    /// How many checks were charged to `key` in `window` so far.
    pub fn used(&self, key: &LimitKey, window: Window) -> u32 {
        self.used.get(&(key.clone(), window)).copied().unwrap_or(0)
    }
}

impl RateLimitOracle for BurstCounter {
    fn admit(&mut self, charges: &[LimitCharge]) -> Admission {
        for (index, charge) in charges.iter().enumerate() {
            if self.used(&charge.key, charge.window) >= charge.max {
                return Admission::Exhausted {
                    charge: index,
                    retry_after_secs: charge.window.seconds(),
                };
            }
        }
        for charge in charges {
            let count = self
                .used
                .entry((charge.key.clone(), charge.window))
                .or_insert(0);
            *count = count.saturating_add(1);
        }
        Admission::Admitted
    }
}
