//! Global rate limits in Redis (`--redis-url`): the in-memory limiter's exact sliding windows,
//! shared by every gateway that points at the same Redis.
//!
//! Each counter is a sorted set whose members are the charges it admitted (one unique member per
//! check, `<id>:<cost>`) scored by the instant, in milliseconds of **Redis's** clock, at which
//! they were admitted, beside a plain key holding the sum of their costs (a rate limit's charges
//! cost 1, a budget's the check's amount in millionths). One Lua script (run with EVALSHA,
//! falling back to EVAL) does the whole check-and-charge atomically for every counter a check is
//! charged to:
//!
//! 1. `now` = the server's `TIME`, so gateways with skewed clocks agree on every window;
//! 2. for each counter: drop the members older than `now - window` and take their costs off the
//!    sum (rebuilt from the members if the sum key is missing); if `sum + cost > max` the check
//!    is refused, and the answer is the (0-based) index of that counter, the milliseconds until
//!    enough of its oldest members leave the window for the cost to fit (-1: never, the cost
//!    alone is over `max`), and the sum;
//! 3. only if every counter had room (and the caller charges): `ZADD` the charge to all of them,
//!    `INCRBY` each sum, and `PEXPIRE` both keys after the window.
//!
//! This is the algorithm of [`crate::rate_limit::MemoryLimiter`] step for step, so a gateway
//! behaves the same with and without Redis. Any Redis error (unreachable, timeout, script
//! error) is returned as [`RedisLimitError`]; the check path answers it with 503 `unavailable`,
//! never with an allow. See docs/architecture/rate-limits.md.

use std::fmt::Write as _;
use std::time::Duration;

use meshguard_policy::{Admission, LimitCharge, LimitKind};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::ConfigKey;

/// What a Redis failure is called in answers, logs and alerts: the rate-limit store, not the
/// store of agents, policies and the audit trail.
pub const RATE_LIMITS_UNAVAILABLE: &str = "rate-limit store (Redis) unavailable";

/// The key prefix when none is configured.
pub const DEFAULT_KEY_PREFIX: &str = "meshguard:rl:";

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long Redis may take to answer one script run.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// An upper bound on one admission, reconnection attempts included: a check never waits longer
/// than this for Redis before it is answered 503.
const ADMIT_DEADLINE: Duration = Duration::from_secs(2);

/// The check-and-charge script. KEYS: for each counter, its sorted set then its sum key. ARGV:
/// `charge` ("1" or "0"), the check's unique id, then `max`, `window_ms`, `cost` and `unit` ("1"
/// when every member costs 1: a rate limit) for each counter in order. Returns `{-1, 0, 0}` when
/// admitted, else `{index, wait_ms, used}` for the first counter without room (index from 0,
/// `wait_ms` -1 when the cost can never fit). Sums stay below 2^53, where Lua's numbers are exact.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local charge = ARGV[1] == '1'
local member = ARGV[2]
local function cost_of(m)
  local c = string.match(m, ':(%d+)$')
  if c then return tonumber(c) end
  return 1
end
local n = #KEYS / 2
for i = 1, n do
  local zkey, skey = KEYS[2 * i - 1], KEYS[2 * i]
  local max = tonumber(ARGV[4 * i - 1])
  local window = tonumber(ARGV[4 * i])
  local cost = tonumber(ARGV[4 * i + 1])
  local unit = ARGV[4 * i + 2] == '1'
  local used = redis.call('GET', skey)
  local expired = redis.call('ZRANGEBYSCORE', zkey, '-inf', now - window)
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', zkey, '-inf', now - window)
  end
  if used then
    used = tonumber(used)
    for _, m in ipairs(expired) do used = used - cost_of(m) end
    if used < 0 then used = 0 end
  else
    used = 0
    for _, m in ipairs(redis.call('ZRANGE', zkey, 0, -1)) do used = used + cost_of(m) end
  end
  if used > 0 then
    redis.call('SET', skey, string.format('%d', used), 'PX', window)
  else
    redis.call('DEL', skey)
  end
  if used + cost > max then
    local wait = -1
    if cost <= max then
      wait = window
      local oldest
      if unit then
        local rank = used + cost - max - 1
        oldest = redis.call('ZRANGE', zkey, rank, rank, 'WITHSCORES')[2]
      else
        local members = redis.call('ZRANGE', zkey, 0, -1, 'WITHSCORES')
        local left = used
        for j = 1, #members, 2 do
          left = left - cost_of(members[j])
          if left + cost <= max then
            oldest = members[j + 1]
            break
          end
        end
      end
      if oldest then
        wait = tonumber(oldest) + window - now
      end
    end
    return {i - 1, wait, used}
  end
end
if charge then
  for i = 1, n do
    local zkey, skey = KEYS[2 * i - 1], KEYS[2 * i]
    local window = tonumber(ARGV[4 * i])
    local cost = tonumber(ARGV[4 * i + 1])
    if cost > 0 then
      redis.call('ZADD', zkey, now, member .. ':' .. ARGV[4 * i + 1])
      redis.call('INCRBY', skey, ARGV[4 * i + 1])
      redis.call('PEXPIRE', zkey, window)
      redis.call('PEXPIRE', skey, window)
    end
  end
end
return {-1, 0, 0}
";

/// Redis could not answer; the check is refused (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum RedisLimitError {
    /// The URL does not parse.
    #[error("{key}: {0}", key = ConfigKey::RedisUrl.file_key())]
    Url(String),
    /// Redis refused or failed the command.
    #[error("redis at {addr}: {cause}")]
    Redis {
        /// Host and port (never the password).
        addr: String,
        /// The client's error.
        cause: String,
    },
    /// Redis took longer than the admission deadline.
    #[error("redis at {addr}: no answer within {}s", ADMIT_DEADLINE.as_secs())]
    Timeout {
        /// Host and port.
        addr: String,
    },
    /// The script answered something else than `{index, wait_ms}` (a bug).
    #[error("redis at {addr}: unexpected script answer {answer:?}")]
    Answer {
        /// Host and port.
        addr: String,
        /// What came back.
        answer: Vec<i64>,
    },
}

/// One sorted-set counter as the script sees it: for tests, any window length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisCounter {
    /// The full key of the sorted set, prefix included (the sum's key is this plus `:sum`).
    pub key: String,
    /// The most the window holds.
    pub max: u64,
    /// The window length in milliseconds.
    pub window_ms: u64,
    /// What this check adds.
    pub cost: u64,
    /// Every charge costs 1 (a rate limit): the wait is found by rank, not by a walk.
    pub unit: bool,
}

impl RedisCounter {
    /// A rate-limit counter: each check costs 1.
    pub fn requests(key: String, max: u64, window_ms: u64) -> RedisCounter {
        RedisCounter {
            key,
            max,
            window_ms,
            cost: 1,
            unit: true,
        }
    }
}

/// The rate limits of every gateway on one Redis. Cheap to clone (one multiplexed connection
/// that reconnects by itself).
#[derive(Clone)]
pub struct RedisLimiter {
    connection: ConnectionManager,
    script: redis::Script,
    prefix: String,
    addr: String,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("addr", &self.addr)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// Connects to `url` and pings it: a gateway configured for global limits refuses to start
    /// without them rather than counting locally.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisLimiter, RedisLimitError> {
        let client = redis::Client::open(url).map_err(|e| RedisLimitError::Url(e.to_string()))?;
        let addr = client.get_connection_info().addr().to_string();
        let failed = |cause: redis::RedisError| RedisLimitError::Redis {
            addr: addr.clone(),
            cause: cause.to_string(),
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let connect = ConnectionManager::new_with_config(client, config);
        let connection = tokio::time::timeout(ADMIT_DEADLINE, connect)
            .await
            .map_err(|_| RedisLimitError::Timeout { addr: addr.clone() })?
            .map_err(failed)?;
        let limiter = RedisLimiter {
            connection,
            script: redis::Script::new(SCRIPT),
            prefix: prefix.to_owned(),
            addr,
        };
        limiter.ping().await?;
        Ok(limiter)
    }

    /// Where the limits live (host and port, never the password).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `PING`, within the admission deadline.
    pub async fn ping(&self) -> Result<(), RedisLimitError> {
        let mut connection = self.connection.clone();
        let ping = redis::cmd("PING");
        self.bounded(ping.query_async::<String>(&mut connection))
            .await
            .map(|_| ())
    }

    /// The key of one counter: `<prefix>{<agent>}:<policy>[:rule:<rule>][:budget]:<minute|hour|day>`. Each
    /// part is escaped (`%`, `:`, `{`, `}`), so no two counters share a key; the agent is the
    /// hash tag, so all of one check's keys live on one Redis Cluster slot.
    pub fn key(&self, agent_id: &str, charge: &LimitCharge) -> String {
        let mut key = format!(
            "{}{{{}}}:{}",
            self.prefix,
            escape(agent_id),
            escape(&charge.key.policy)
        );
        if let Some(rule) = &charge.key.rule {
            let _ = write!(key, ":rule:{}", escape(rule));
        }
        if charge.key.kind == LimitKind::Budget {
            key.push_str(":budget");
        }
        key.push(':');
        key.push_str(charge.window.unit());
        key
    }

    /// All-or-nothing admission of one check by `agent_id`; `charge: false` only looks.
    pub async fn admit(
        &self,
        agent_id: &str,
        charges: &[LimitCharge],
        charge: bool,
    ) -> Result<Admission, RedisLimitError> {
        let counters: Vec<RedisCounter> = charges
            .iter()
            .map(|c| RedisCounter {
                key: self.key(agent_id, c),
                max: c.max,
                window_ms: c.window.seconds().saturating_mul(1000),
                cost: c.cost,
                unit: c.key.kind == LimitKind::Requests,
            })
            .collect();
        self.admit_counters(&counters, charge).await
    }

    /// [`RedisLimiter::admit`] on explicit counters (any key, any window length).
    pub async fn admit_counters(
        &self,
        counters: &[RedisCounter],
        charge: bool,
    ) -> Result<Admission, RedisLimitError> {
        if counters.is_empty() {
            return Ok(Admission::Admitted);
        }
        let mut invocation = self.script.prepare_invoke();
        invocation
            .arg(if charge { "1" } else { "0" })
            .arg(uuid::Uuid::new_v4().to_string());
        for counter in counters {
            invocation
                .key(&counter.key)
                .key(format!("{}:sum", counter.key))
                .arg(counter.max)
                .arg(counter.window_ms)
                .arg(counter.cost)
                .arg(if counter.unit { "1" } else { "0" });
        }
        let mut connection = self.connection.clone();
        let answer: Vec<i64> = self
            .bounded(invocation.invoke_async(&mut connection))
            .await?;
        match answer.as_slice() {
            [-1, _, _] => Ok(Admission::Admitted),
            &[index, wait_ms, used] if index >= 0 => Ok(Admission::Exhausted {
                charge: usize::try_from(index).unwrap_or(usize::MAX),
                used: u64::try_from(used).unwrap_or(0),
                // -1: the cost alone is over the maximum, so no wait makes room.
                retry_after_secs: u64::try_from(wait_ms)
                    .ok()
                    .map(|ms| ms.div_ceil(1000).max(1)),
            }),
            _ => Err(RedisLimitError::Answer {
                addr: self.addr.clone(),
                answer,
            }),
        }
    }

    /// The key of an agent's history hash: `<prefix>{<agent>}:history`, or the session's
    /// `…:history:session:<trace>`; one hash tag per agent, like the limits.
    fn history_key(&self, agent_id: &str, session: Option<&str>) -> String {
        let mut key = format!("{}{{{}}}:history", self.prefix, escape(agent_id));
        if let Some(session) = session {
            let _ = write!(key, ":session:{}", escape(session));
        }
        key
    }

    /// When an allowed check of the agent (and of its session) last matched each pattern, in
    /// milliseconds since the Unix epoch, read in one round trip.
    pub async fn history_view(
        &self,
        agent_id: &str,
        session: Option<&str>,
        patterns: &[&str],
    ) -> Result<(Vec<Option<i64>>, Vec<Option<i64>>), RedisLimitError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET")
            .arg(self.history_key(agent_id, None))
            .arg(patterns);
        if let Some(session) = session {
            pipe.cmd("HMGET")
                .arg(self.history_key(agent_id, Some(session)))
                .arg(patterns);
        }
        let mut connection = self.connection.clone();
        let mut answers: Vec<Vec<Option<i64>>> =
            self.bounded(pipe.query_async(&mut connection)).await?;
        let session_seen = if session.is_some() {
            answers.pop().unwrap_or_default()
        } else {
            vec![None; patterns.len()]
        };
        let agent_seen = answers.pop().unwrap_or_default();
        Ok((agent_seen, session_seen))
    }

    /// Records an allowed check at `at_ms` under `patterns`; both hashes expire `keep_ms` after
    /// their last write, the longest window any history condition uses.
    pub async fn history_record(
        &self,
        agent_id: &str,
        session: Option<&str>,
        patterns: &[&str],
        at_ms: i64,
        keep_ms: i64,
    ) -> Result<(), RedisLimitError> {
        let mut pipe = redis::pipe();
        let keys = std::iter::once(self.history_key(agent_id, None))
            .chain(session.map(|s| self.history_key(agent_id, Some(s))));
        for key in keys {
            let fields: Vec<(&str, i64)> = patterns.iter().map(|p| (*p, at_ms)).collect();
            pipe.cmd("HSET").arg(&key).arg(fields).ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(keep_ms).ignore();
        }
        let mut connection = self.connection.clone();
        self.bounded(pipe.query_async::<()>(&mut connection)).await
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisLimitError> {
        match tokio::time::timeout(ADMIT_DEADLINE, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(cause)) => Err(RedisLimitError::Redis {
                addr: self.addr.clone(),
                cause: cause.to_string(),
            }),
            Err(_) => Err(RedisLimitError::Timeout {
                addr: self.addr.clone(),
            }),
        }
    }
}

/// Escapes the characters that structure a key.
fn escape(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for c in part.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn key_parts_are_escaped() {
        assert_eq!(escape("a:b{c}%"), "a%3Ab%7Bc%7D%25");
        assert_eq!(escape("plain-name"), "plain-name");
    }
}
