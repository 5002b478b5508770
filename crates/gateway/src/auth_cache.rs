//! In-memory copies of the two store reads every agent request needs (its token id, its agent),
//! so that a check does no store read before its audit append.
//!
//! A copy never outlives a change this gateway makes: every admin change goes through
//! `routes::admin_event::apply`, which clears the cache after the change's transaction and before
//! the answer. Changes made by other gateways arrive on the store's
//! change feed and evict the agent they name; a lagged feed or a resync clears everything, and a
//! closed feed turns the cache off (every request reads the store again). Each entry also lives
//! at most [`ENTRY_TTL`], so even a silent feed cannot keep a copy longer than that. Unknown or
//! revoked token ids are never cached, so a token issued elsewhere works on its first request.
//!
//! Hand-written rather than `moka`: a fill must be dropped when an invalidation happened while
//! its store read was in flight (see [`FillTicket`]), which needs the generation check and the
//! insert under one lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use meshguard_policy::AgentProfile;
use meshguard_store::{AgentRecord, StoreChange, TokenRecord};
use time::OffsetDateTime;
use tokio::sync::broadcast;

use crate::rate_limit::Clock;

/// How long an entry is trusted at most, whatever the change feed says (on the gateway's clock).
pub const ENTRY_TTL: Duration = Duration::from_secs(1);

/// Entries per map; when full, stale entries are dropped and, if that frees nothing, new
/// entries are not kept (the request still reads the store).
pub const MAX_ENTRIES: usize = 16_384;

#[derive(Debug)]
struct CachedToken {
    agent_id: String,
    expires_at: Option<OffsetDateTime>,
    /// Milliseconds on the gateway's clock.
    cached_at: u64,
}

#[derive(Debug)]
struct CachedAgent {
    record: AgentRecord,
    profile: AgentProfile,
    cached_at: u64,
}

#[derive(Debug, Default)]
struct Entries {
    /// Bumped by every invalidation; a fill whose ticket is older is dropped.
    generation: u64,
    tokens: HashMap<String, CachedToken>,
    agents: HashMap<String, CachedAgent>,
}

/// Taken before a request's store reads; a fill with it is kept only if nothing was invalidated
/// since, so a read that raced with a revoke cannot put the old state back.
#[derive(Debug, Clone, Copy)]
pub struct FillTicket(u64);

/// The token-id and agent cache of one gateway.
pub struct AuthCache {
    entries: RwLock<Entries>,
    clock: Arc<dyn Clock>,
    /// False once the change feed closed: the cache can no longer learn of other gateways'
    /// changes, so it stays off (fail closed to the store).
    disabled: AtomicBool,
}

impl std::fmt::Debug for AuthCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthCache")
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

fn make_room<V>(map: &mut HashMap<String, V>, fresh: impl Fn(&V) -> bool) -> bool {
    if map.len() >= MAX_ENTRIES {
        map.retain(|_, v| fresh(v));
    }
    map.len() < MAX_ENTRIES
}

impl AuthCache {
    /// A cache on `clock` that follows `changes` (the store's change feed) in a background task.
    pub fn start(
        changes: broadcast::Receiver<StoreChange>,
        clock: Arc<dyn Clock>,
    ) -> Arc<AuthCache> {
        let cache = Arc::new(AuthCache::new(clock));
        tokio::spawn(follow(Arc::downgrade(&cache), changes));
        cache
    }

    fn new(clock: Arc<dyn Clock>) -> AuthCache {
        AuthCache {
            entries: RwLock::default(),
            clock,
            disabled: AtomicBool::new(false),
        }
    }

    fn fresh(&self, cached_at: u64) -> bool {
        let ttl = u64::try_from(ENTRY_TTL.as_millis()).unwrap_or(u64::MAX);
        self.clock.now_millis().saturating_sub(cached_at) < ttl
    }

    fn live(&self) -> bool {
        !self.disabled.load(Ordering::Acquire)
    }

    /// The ticket for fills of the request starting now; `None` when the cache is off.
    pub fn ticket(&self) -> Option<FillTicket> {
        let entries = self.entries.read().ok()?;
        self.live().then_some(FillTicket(entries.generation))
    }

    /// The agent id of an active token id, if cached and not expired at `now`.
    pub fn token_owner(&self, jti: &str, now: OffsetDateTime) -> Option<String> {
        if !self.live() {
            return None;
        }
        let entries = self.entries.read().ok()?;
        let token = entries.tokens.get(jti)?;
        let unexpired = token.expires_at.is_none_or(|at| at > now);
        (self.fresh(token.cached_at) && unexpired).then(|| token.agent_id.clone())
    }

    /// The stored agent and its profile, if cached.
    pub fn agent(&self, id: &str) -> Option<(AgentRecord, AgentProfile)> {
        if !self.live() {
            return None;
        }
        let entries = self.entries.read().ok()?;
        let agent = entries.agents.get(id)?;
        self.fresh(agent.cached_at)
            .then(|| (agent.record.clone(), agent.profile.clone()))
    }

    /// Keeps an active token read under `ticket`.
    pub fn put_token(&self, ticket: FillTicket, token: &TokenRecord) {
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        if entries.generation != ticket.0
            || !make_room(&mut entries.tokens, |t| self.fresh(t.cached_at))
        {
            return;
        }
        entries.tokens.insert(
            token.jti.clone(),
            CachedToken {
                agent_id: token.agent_id.clone(),
                expires_at: token.expires_at,
                cached_at: self.clock.now_millis(),
            },
        );
    }

    /// Keeps an agent read under `ticket`.
    pub fn put_agent(&self, ticket: FillTicket, record: &AgentRecord, profile: &AgentProfile) {
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        if entries.generation != ticket.0
            || !make_room(&mut entries.agents, |a| self.fresh(a.cached_at))
        {
            return;
        }
        entries.agents.insert(
            record.id.clone(),
            CachedAgent {
                record: record.clone(),
                profile: profile.clone(),
                cached_at: self.clock.now_millis(),
            },
        );
    }

    /// Forgets an agent and every token id of it (a change by another gateway).
    pub fn forget_agent(&self, agent_id: &str) {
        match self.entries.write() {
            Ok(mut entries) => {
                entries.generation = entries.generation.wrapping_add(1);
                entries.agents.remove(agent_id);
                entries.tokens.retain(|_, t| t.agent_id != agent_id);
            }
            Err(_) => self.disable(),
        }
    }

    /// Forgets everything; the admin handlers call it after every agent or token write.
    pub fn clear(&self) {
        match self.entries.write() {
            Ok(mut entries) => {
                entries.generation = entries.generation.wrapping_add(1);
                entries.agents.clear();
                entries.tokens.clear();
            }
            Err(_) => self.disable(),
        }
    }

    /// Turns the cache off for good.
    fn disable(&self) {
        self.disabled.store(true, Ordering::Release);
        tracing::warn!("auth cache off: every agent request reads the store");
    }
}

async fn follow(cache: Weak<AuthCache>, mut changes: broadcast::Receiver<StoreChange>) {
    loop {
        let change = changes.recv().await;
        let Some(cache) = cache.upgrade() else {
            return;
        };
        match change {
            Ok(StoreChange::Agent { id } | StoreChange::Tokens { agent_id: id }) => {
                cache.forget_agent(&id);
            }
            Ok(StoreChange::Policy { .. } | StoreChange::Approval { .. }) => {}
            Ok(StoreChange::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => cache.clear(),
            Err(broadcast::error::RecvError::Closed) => {
                cache.clear();
                cache.disable();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshguard_policy::TrustTier;
    use meshguard_store::AgentStatus;

    use crate::rate_limit::ManualClock;

    fn cache() -> (AuthCache, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new());
        (AuthCache::new(clock.clone()), clock)
    }

    fn token(jti: &str, agent: &str, expires_at: Option<OffsetDateTime>) -> TokenRecord {
        TokenRecord {
            jti: jti.into(),
            agent_id: agent.into(),
            issued_at: OffsetDateTime::now_utc(),
            expires_at,
            revoked_at: None,
        }
    }

    #[test]
    fn a_fill_that_raced_with_an_invalidation_is_dropped() {
        let (cache, _) = cache();
        let ticket = cache.ticket().unwrap();
        cache.clear();
        cache.put_token(ticket, &token("j1", "agent_a", None));
        assert_eq!(cache.token_owner("j1", OffsetDateTime::now_utc()), None);
        let ticket = cache.ticket().unwrap();
        cache.put_token(ticket, &token("j1", "agent_a", None));
        assert_eq!(
            cache
                .token_owner("j1", OffsetDateTime::now_utc())
                .as_deref(),
            Some("agent_a")
        );
    }

    #[test]
    fn an_expired_token_is_not_served() {
        let (cache, _) = cache();
        let now = OffsetDateTime::now_utc();
        let ticket = cache.ticket().unwrap();
        cache.put_token(
            ticket,
            &token("j1", "agent_a", Some(now + time::Duration::seconds(1))),
        );
        assert!(cache.token_owner("j1", now).is_some());
        assert!(
            cache
                .token_owner("j1", now + time::Duration::seconds(1))
                .is_none()
        );
    }

    #[test]
    fn forgetting_an_agent_forgets_its_tokens_only() {
        let (cache, _) = cache();
        let ticket = cache.ticket().unwrap();
        cache.put_token(ticket, &token("j1", "agent_a", None));
        cache.put_token(ticket, &token("j2", "agent_b", None));
        let record = AgentRecord {
            id: "agent_a".into(),
            name: "a".into(),
            trust: "verified".into(),
            tags: Default::default(),
            description: None,
            status: AgentStatus::Active,
            created_at: OffsetDateTime::now_utc(),
            updated_at: OffsetDateTime::now_utc(),
        };
        let profile = AgentProfile {
            id: "agent_a".into(),
            name: "a".into(),
            trust: TrustTier::Verified,
            tags: Default::default(),
        };
        cache.put_agent(ticket, &record, &profile);
        cache.forget_agent("agent_a");
        let now = OffsetDateTime::now_utc();
        assert!(cache.token_owner("j1", now).is_none());
        assert!(cache.agent("agent_a").is_none());
        assert_eq!(cache.token_owner("j2", now).as_deref(), Some("agent_b"));
    }

    #[test]
    fn entries_go_stale_after_the_ttl() {
        let (cache, clock) = cache();
        let ticket = cache.ticket().unwrap();
        cache.put_token(ticket, &token("j1", "agent_a", None));
        clock.advance(ENTRY_TTL - Duration::from_millis(1));
        assert!(cache.token_owner("j1", OffsetDateTime::now_utc()).is_some());
        clock.advance(Duration::from_millis(1));
        assert!(cache.token_owner("j1", OffsetDateTime::now_utc()).is_none());
    }
}
