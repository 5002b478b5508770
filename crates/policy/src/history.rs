//! History conditions: `conditions.after` and `conditions.notAfter` hold according to what the
//! same agent was allowed to do before ("no e-mail within an hour of reading secrets").
//!
//! The engine keeps no state: the caller passes a [`History`], which says, for each history
//! pattern of the set, when an allowed check of the agent last matched it (and when one of the
//! current session did). The gateway keeps those instants per agent, in memory or in Redis, and
//! records a check under every history pattern it matches once the check is allowed.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;
use time::{Duration, OffsetDateTime};

use crate::pattern::Pattern;

/// Whose past a history condition looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum HistoryScope {
    /// Every allowed check of the agent.
    Agent,
    /// Only the allowed checks of the same session: the same trace id (an MCP session, a task).
    Session,
}

/// `after` / `notAfter`: an allowed check of the agent matched `action` within `within` before
/// this one.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryCondition {
    /// The pattern past checks are matched against (ignoring case, like a deny rule).
    pub(crate) action: Pattern,
    /// How far back.
    pub(crate) within: Duration,
    /// The agent's whole past, or the session's.
    pub(crate) scope: HistoryScope,
    /// The window as written (`1h`).
    pub(crate) within_text: String,
}

impl HistoryCondition {
    /// The pattern past checks are matched against.
    pub fn action(&self) -> &Pattern {
        &self.action
    }

    /// Whether an allowed check matching the pattern happened within the window before `now`.
    pub(crate) fn happened(&self, history: &History, now: OffsetDateTime) -> bool {
        history
            .last(self.action.as_str(), self.scope)
            .is_some_and(|at| at <= now && now - at <= self.within)
    }
}

impl Serialize for HistoryCondition {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("action", &self.action)?;
        map.serialize_entry("within", &self.within_text)?;
        map.serialize_entry("scope", &self.scope)?;
        map.end()
    }
}

/// When an allowed check last matched a history pattern: of the agent, and of the session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LastSeen {
    /// Any check of the agent.
    pub agent: Option<OffsetDateTime>,
    /// A check of the same session.
    pub session: Option<OffsetDateTime>,
}

/// What the caller remembers of one agent's allowed checks, by history pattern (its text). An
/// empty history is an agent with no past: `after` never holds and `notAfter` always does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    seen: BTreeMap<String, LastSeen>,
}

impl History {
    /// No past at all.
    pub const fn empty() -> History {
        History {
            seen: BTreeMap::new(),
        }
    }

    /// Records when checks matching `pattern` were last allowed.
    pub fn insert(&mut self, pattern: &str, seen: LastSeen) {
        self.seen.insert(pattern.to_owned(), seen);
    }

    /// When an allowed check last matched `pattern` in `scope`.
    pub fn last(&self, pattern: &str, scope: HistoryScope) -> Option<OffsetDateTime> {
        let seen = self.seen.get(pattern)?;
        match scope {
            HistoryScope::Agent => seen.agent,
            HistoryScope::Session => seen.session,
        }
    }
}

/// Sessions remembered per agent: older sessions are forgotten first, so `scope: session`
/// conditions of very old sessions read an empty past.
pub const MAX_SESSIONS_PER_AGENT: usize = 256;

/// What one process remembers of agents' allowed checks: the last instant per (agent, history
/// pattern), and per (agent, session, pattern) for the agent's most recent sessions. The gateway
/// keeps one in memory (without Redis) and the offline corpus runner keeps one per suite. The
/// size is bounded by agents × patterns, plus sessions as above.
#[derive(Debug, Clone, Default)]
pub struct HistoryLog {
    agents: HashMap<String, AgentLog>,
}

#[derive(Debug, Clone, Default)]
struct AgentLog {
    patterns: HashMap<String, OffsetDateTime>,
    sessions: VecDeque<(String, HashMap<String, OffsetDateTime>)>,
}

impl HistoryLog {
    /// An empty log.
    pub fn new() -> HistoryLog {
        HistoryLog::default()
    }

    /// The past of `agent` (and of its `session`, if any) for every pattern of `patterns`.
    pub fn view(
        &self,
        agent: &str,
        session: Option<&str>,
        patterns: &[(Pattern, Duration)],
    ) -> History {
        let mut history = History::empty();
        let Some(log) = self.agents.get(agent) else {
            return history;
        };
        let session_log = session.and_then(|s| {
            log.sessions
                .iter()
                .find(|(id, _)| id == s)
                .map(|(_, seen)| seen)
        });
        for (pattern, _) in patterns {
            let text = pattern.as_str();
            history.insert(
                text,
                LastSeen {
                    agent: log.patterns.get(text).copied(),
                    session: session_log.and_then(|seen| seen.get(text).copied()),
                },
            );
        }
        history
    }

    /// Records an allowed check of `agent` at `at` under every pattern it `matched`.
    pub fn record(
        &mut self,
        agent: &str,
        session: Option<&str>,
        matched: &[&Pattern],
        at: OffsetDateTime,
    ) {
        if matched.is_empty() {
            return;
        }
        let log = self.agents.entry(agent.to_owned()).or_default();
        for pattern in matched {
            log.patterns.insert(pattern.as_str().to_owned(), at);
        }
        let Some(session) = session else { return };
        let position = log.sessions.iter().position(|(id, _)| id == session);
        let mut seen = match position.and_then(|i| log.sessions.remove(i)) {
            Some((_, seen)) => seen,
            None => HashMap::new(),
        };
        for pattern in matched {
            seen.insert(pattern.as_str().to_owned(), at);
        }
        log.sessions.push_back((session.to_owned(), seen));
        while log.sessions.len() > MAX_SESSIONS_PER_AGENT {
            log.sessions.pop_front();
        }
    }

    /// Forgets every instant before `cutoff` (older than the longest window in use).
    pub fn forget_before(&mut self, cutoff: OffsetDateTime) {
        self.agents.retain(|_, log| {
            log.patterns.retain(|_, at| *at >= cutoff);
            log.sessions.retain_mut(|(_, seen)| {
                seen.retain(|_, at| *at >= cutoff);
                !seen.is_empty()
            });
            !log.patterns.is_empty()
        });
    }
}

/// No past: what the engine uses when the caller has none to give.
pub static NO_HISTORY: History = History::empty();

/// Reads a window such as `30s`, `15m`, `1h`, `7d`: a whole number and a unit, at most 30 days.
pub(crate) fn parse_window(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "expected a window such as \"30s\", \"15m\", \"1h\" or \"7d\" (at most 30 days), got \"{text}\""
        )
    };
    let split = text.len().saturating_sub(1);
    let (number, unit) = (
        text.get(..split).ok_or_else(bad)?,
        text.get(split..).ok_or_else(bad)?,
    );
    let number: i64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => Some(number),
        "m" => number.checked_mul(60),
        "h" => number.checked_mul(3600),
        "d" => number.checked_mul(86_400),
        _ => None,
    }
    .filter(|s| (1..=30 * 86_400).contains(s))
    .ok_or_else(bad)?;
    Ok(Duration::seconds(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_with_a_clear_error() {
        assert_eq!(parse_window("90s"), Ok(Duration::seconds(90)));
        assert_eq!(parse_window("1h"), Ok(Duration::hours(1)));
        assert_eq!(parse_window("7d"), Ok(Duration::days(7)));
        for bad in ["", "h", "1", "1w", "0m", "31d", "-1h", "1.5h"] {
            assert!(parse_window(bad).unwrap_err().contains("such as"), "{bad}");
        }
    }
}
