//! Console sessions: kept in this gateway's memory (a restart signs everybody out), named by a
//! random id in an `HttpOnly`, `SameSite=Strict` cookie, each with its own CSRF token, ending after
//! [`SESSION_LIFETIME`] or [`IDLE_LIFETIME`] without a request. Failed sign-ins are counted so that
//! guessing the admin token is throttled.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use rand::RngCore as _;

/// The session cookie.
pub const SESSION_COOKIE: &str = "mg_console";
/// The sign-in form's CSRF cookie (double submit: there is no session yet).
pub const LOGIN_COOKIE: &str = "mg_login";
/// The longest a session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// The longest a session lasts without a request.
pub const IDLE_LIFETIME: Duration = Duration::from_secs(3600);
/// Failed sign-ins allowed per rolling minute, per gateway.
const FAILED_PER_MINUTE: usize = 10;

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Reads, and decides approvals.
    Approver,
    /// Everything.
    Admin,
}

impl Role {
    /// The role a stored name stands for (`None` for anything else).
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "viewer" => Some(Role::Viewer),
            "approver" => Some(Role::Approver),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The name shown in the console.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }

    /// Whether the role decides approvals.
    pub fn may_decide(self) -> bool {
        matches!(self, Role::Approver | Role::Admin)
    }
}

/// One signed-in operator.
#[derive(Debug, Clone)]
pub struct Session {
    /// The cookie's value.
    pub id: String,
    /// Who signed in.
    pub operator: String,
    /// What they may do.
    pub role: Role,
    /// The token every form of this session carries.
    pub csrf: String,
    opened: Instant,
    used: Instant,
}

/// Every open console session of this gateway, and the recent failed sign-ins.
#[derive(Debug, Default)]
pub struct ConsoleSessions {
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<VecDeque<Instant>>,
    /// The last chain verification run from the console: when, whether intact, events checked.
    verified: Mutex<Option<(time::OffsetDateTime, bool, u64)>>,
}

/// 32 random bytes as hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

impl ConsoleSessions {
    /// Opens a session for `operator`.
    pub fn open(&self, operator: &str, role: Role) -> Session {
        let now = Instant::now();
        let session = Session {
            id: random_token(),
            operator: operator.to_owned(),
            role,
            csrf: random_token(),
            opened: now,
            used: now,
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.retain(|_, s| alive(s, now));
        sessions.insert(session.id.clone(), session.clone());
        session
    }

    /// The live session `id`, its idle clock restarted.
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let session = sessions.get_mut(id)?;
        if !alive(session, now) {
            sessions.remove(id);
            return None;
        }
        session.used = now;
        Some(session.clone())
    }

    /// Ends session `id`.
    pub fn close(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// Remembers a chain verification for the overview.
    pub fn verified(&self, ok: bool, events: u64) {
        *self.verified.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((time::OffsetDateTime::now_utc(), ok, events));
    }

    /// The last chain verification run from the console, if any.
    pub fn last_verification(&self) -> Option<(time::OffsetDateTime, bool, u64)> {
        *self.verified.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends every session of `operator` (deleted).
    pub fn close_operator(&self, operator: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, s| s.operator != operator);
    }

    /// Whether a sign-in may be tried now; else the seconds until one may.
    pub fn may_try(&self) -> Result<(), u64> {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        while failures
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            failures.pop_front();
        }
        if failures.len() < FAILED_PER_MINUTE {
            return Ok(());
        }
        let oldest = failures.front().copied().unwrap_or(now);
        let wait = Duration::from_secs(60).saturating_sub(now.duration_since(oldest));
        Err(wait.as_secs().max(1))
    }

    /// Counts a failed sign-in.
    pub fn failed(&self) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(Instant::now());
    }
}

fn alive(session: &Session, now: Instant) -> bool {
    now.duration_since(session.opened) < SESSION_LIFETIME
        && now.duration_since(session.used) < IDLE_LIFETIME
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::COOKIE,
            "mg_console_x=1; mg_console=abc; other=2".parse().unwrap(),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&headers, LOGIN_COOKIE), None);
    }

    #[test]
    fn sessions_open_close_and_failures_throttle() {
        let sessions = ConsoleSessions::default();
        let opened = sessions.open("admin", Role::Admin);
        assert_eq!(sessions.get(&opened.id).unwrap().operator, "admin");
        assert_ne!(opened.csrf, opened.id);
        sessions.close(&opened.id);
        assert!(sessions.get(&opened.id).is_none());
        for _ in 0..FAILED_PER_MINUTE {
            assert!(sessions.may_try().is_ok());
            sessions.failed();
        }
        assert!(sessions.may_try().is_err());
    }
}
