//! Rate limits and budgets as the engine sees them: it decides *which* limits a check is charged
//! against and how much, and asks an oracle (the gateway's sliding windows) whether they all have
//! room. A rate limit charges 1 per check; a budget charges the check's amount.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

/// The length of a rolling rate-limit window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Window {
    /// A rolling minute (`requestsPerMinute`).
    Minute,
    /// A rolling hour (`requestsPerHour`, a budget's `perHour`).
    Hour,
    /// A rolling day of 24 hours (a budget's `perDay`).
    Day,
}

impl Window {
    /// The window's length, for the oracle's clock arithmetic.
    pub fn seconds(self) -> u64 {
        match self {
            Window::Minute => 60,
            Window::Hour => 3600,
            Window::Day => 86_400,
        }
    }

    /// The unit used in messages ("per minute").
    pub fn unit(self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
        }
    }
}

/// What a counter counts: checks, or the amounts of a budget's field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LimitKind {
    /// A rate limit: every check charges 1.
    Requests,
    /// A budget: every check charges its amount, in millionths ([`AMOUNT_SCALE`]).
    Budget,
}

/// Budget amounts are counted in millionths, so sums of decimal amounts are exact (no `0.1 +
/// 0.2 > 0.3`) up to about 9 × 10¹² whole units.
pub const AMOUNT_SCALE: u64 = 1_000_000;

/// An amount in millionths as a decimal text without trailing zeros (`12.5`, `100`).
pub fn format_amount(millionths: u64) -> String {
    let whole = millionths / AMOUNT_SCALE;
    let fraction = millionths % AMOUNT_SCALE;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// A non-negative finite number as millionths, rounded to the nearest; `None` for a negative,
/// non-finite or too large one.
pub fn amount_of(value: f64) -> Option<u64> {
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    let scaled = (value * AMOUNT_SCALE as f64).round();
    // 2^63: beyond it no sum of amounts is meaningful (and the cast would saturate).
    (scaled < 9.223_372_036_854_776e18).then_some(scaled as u64)
}

/// Which counter a charge goes to. Limits and budgets are kept per agent and policy, and per
/// agent and rule; the gateway prefixes the agent id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitKey {
    /// The policy whose `rateLimits` or `budget` (or whose rule's) this is.
    pub policy: String,
    /// The rule, for a rule's own limit; `None` for the policy-level limit.
    pub rule: Option<String>,
    /// A rate limit or a budget (a policy may have both, on the same windows).
    pub kind: LimitKind,
}

impl LimitKey {
    /// The rate limit of `policy`, or of its `rule`.
    pub fn requests(policy: &str, rule: Option<&str>) -> LimitKey {
        LimitKey {
            policy: policy.to_owned(),
            rule: rule.map(str::to_owned),
            kind: LimitKind::Requests,
        }
    }

    /// The budget of `policy`, or of its `rule`.
    pub fn budget(policy: &str, rule: Option<&str>) -> LimitKey {
        LimitKey {
            kind: LimitKind::Budget,
            ..LimitKey::requests(policy, rule)
        }
    }
}

impl fmt::Display for LimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rule {
            Some(rule) => write!(f, "rule '{rule}' of policy '{}'", self.policy),
            None => write!(f, "policy '{}'", self.policy),
        }
    }
}

/// One limit a check must fit in: the charges admitted in any rolling `window` sum to at most
/// `max`. A rate limit's charges cost 1 each (so `max` is a number of checks); a budget's cost
/// the check's amount, in millionths.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitCharge {
    /// The counter.
    pub key: LimitKey,
    /// The most the window holds.
    pub max: u64,
    /// The window length.
    pub window: Window,
    /// What this check adds.
    pub cost: u64,
}

/// The oracle's answer for a whole set of charges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Admission {
    /// Every charge had room and all were charged.
    Admitted,
    /// At least one charge had no room; none were charged.
    Exhausted {
        /// Index into the charges of the (first) exhausted limit.
        charge: usize,
        /// What that limit's window holds now (checks, or millionths of a budget).
        used: u64,
        /// Whole seconds until the window has room for this charge; `None` when it never will
        /// (a budget's amount above the budget itself).
        retry_after_secs: Option<u64>,
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

/// An oracle for offline runs: exact sliding windows on a clock the caller sets. Checks asked at
/// the same instant are a burst (a limit of N admits exactly N, a budget exactly its sum); moving
/// the clock forward lets the windows roll. Corpus runs set it to each case's `now`.
#[derive(Debug, Clone, Default)]
pub struct BurstCounter {
    /// Seconds since the Unix epoch, with millisecond precision, of "now".
    now_ms: i64,
    admitted: HashMap<(LimitKey, Window), VecDeque<(i64, u64)>>,
}

impl BurstCounter {
    /// A counter with every limit empty, at the epoch.
    pub fn new() -> BurstCounter {
        BurstCounter::default()
    }

    /// Moves the clock to `at` (a clock moved backwards keeps what it counted).
    pub fn set_time(&mut self, at: time::OffsetDateTime) {
        let ms = at.unix_timestamp_nanos() / 1_000_000;
        self.now_ms = i64::try_from(ms).unwrap_or(i64::MAX);
    }

    /// What was charged to `key` in the `window` ending now (checks, or millionths of a budget).
    pub fn used(&self, key: &LimitKey, window: Window) -> u64 {
        self.entries(key, window).map(|(_, cost)| cost).sum()
    }

    /// The charges of one counter still inside its window, oldest first.
    fn entries(&self, key: &LimitKey, window: Window) -> impl Iterator<Item = (i64, u64)> + '_ {
        let window_ms = window_ms(window);
        let now = self.now_ms;
        self.admitted
            .get(&(key.clone(), window))
            .into_iter()
            .flatten()
            .copied()
            .filter(move |&(t, _)| t.saturating_add(window_ms) > now)
    }
}

fn window_ms(window: Window) -> i64 {
    i64::try_from(window.seconds())
        .unwrap_or(i64::MAX)
        .saturating_mul(1000)
}

impl RateLimitOracle for BurstCounter {
    fn admit(&mut self, charges: &[LimitCharge]) -> Admission {
        for (index, charge) in charges.iter().enumerate() {
            let used = self.used(&charge.key, charge.window);
            if used.saturating_add(charge.cost) <= charge.max {
                continue;
            }
            // Room comes when enough of the oldest charges leave the window.
            let window_ms = window_ms(charge.window);
            let mut left = used;
            let mut wait_ms = None;
            if charge.cost <= charge.max {
                for (t, cost) in self.entries(&charge.key, charge.window) {
                    left = left.saturating_sub(cost);
                    if left.saturating_add(charge.cost) <= charge.max {
                        wait_ms = Some(t.saturating_add(window_ms).saturating_sub(self.now_ms));
                        break;
                    }
                }
            }
            return Admission::Exhausted {
                charge: index,
                used,
                retry_after_secs: wait_ms
                    .map(|ms| u64::try_from(ms).unwrap_or(0).div_ceil(1000).max(1))
                    .or((charge.cost <= charge.max).then_some(charge.window.seconds())),
            };
        }
        for charge in charges.iter().filter(|c| c.cost > 0) {
            let now = self.now_ms;
            let window_ms = window_ms(charge.window);
            let entries = self
                .admitted
                .entry((charge.key.clone(), charge.window))
                .or_default();
            while entries
                .front()
                .is_some_and(|&(t, _)| t.saturating_add(window_ms) <= now)
            {
                entries.pop_front();
            }
            entries.push_back((now, charge.cost));
        }
        Admission::Admitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact_millionths_and_print_without_trailing_zeros() {
        assert_eq!(amount_of(0.1), Some(100_000));
        assert_eq!(
            amount_of(0.1).zip(amount_of(0.2)).map(|(a, b)| a + b),
            amount_of(0.3)
        );
        assert_eq!(amount_of(-0.5), None);
        assert_eq!(amount_of(f64::NAN), None);
        assert_eq!(amount_of(1e300), None);
        assert_eq!(format_amount(12_500_000), "12.5");
        assert_eq!(format_amount(100 * AMOUNT_SCALE), "100");
        assert_eq!(format_amount(1), "0.000001");
    }
}
