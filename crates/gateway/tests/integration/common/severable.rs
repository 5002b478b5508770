//! A store whose connection can be cut: the real SQLite store behind a switch, so tests can show
//! what the gateway answers while its database is unreachable.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use meshguard_store::*;
use time::OffsetDateTime;

pub struct Severable {
    inner: Arc<dyn Store>,
    down: AtomicBool,
    /// When set, `latest_approval` answers `None`: the read of a gateway that looked just before
    /// another gateway created the request's approval.
    stale_approval_reads: AtomicBool,
    /// When set, the change feed the gateway sees: it never announces anything, so tests show
    /// what a gateway does without the feed.
    silent_feed: Option<tokio::sync::broadcast::Sender<StoreChange>>,
}

impl Severable {
    pub fn new(inner: Arc<dyn Store>) -> Severable {
        Severable {
            inner,
            down: AtomicBool::new(false),
            stale_approval_reads: AtomicBool::new(false),
            silent_feed: None,
        }
    }

    /// Like [`Severable::new`], with a change feed that stays open and silent.
    pub fn with_silent_feed(inner: Arc<dyn Store>) -> Severable {
        Severable {
            silent_feed: Some(tokio::sync::broadcast::channel(1).0),
            ..Severable::new(inner)
        }
    }

    pub fn cut(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn stale_approval_reads(&self, stale: bool) {
        self.stale_approval_reads.store(stale, Ordering::SeqCst);
    }

    fn up(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("connection refused".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Store for Severable {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.up()?;
        self.inner.ping().await
    }

    fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<StoreChange> {
        match &self.silent_feed {
            Some(feed) => feed.subscribe(),
            None => self.inner.subscribe_changes(),
        }
    }

    async fn create_agent(&self, agent: NewAgent) -> Result<AgentRecord, StoreError> {
        self.up()?;
        self.inner.create_agent(agent).await
    }

    async fn get_agent(&self, id_or_name: &str) -> Result<AgentRecord, StoreError> {
        self.up()?;
        self.inner.get_agent(id_or_name).await
    }

    async fn get_operator(&self, name: &str) -> Result<OperatorRecord, StoreError> {
        self.up()?;
        self.inner.get_operator(name).await
    }

    async fn list_operators(&self) -> Result<Vec<OperatorRecord>, StoreError> {
        self.up()?;
        self.inner.list_operators().await
    }

    async fn list_agents(&self, page: &PageRequest) -> Result<Page<AgentRecord>, StoreError> {
        self.up()?;
        self.inner.list_agents(page).await
    }

    async fn update_agent(
        &self,
        id_or_name: &str,
        patch: AgentPatch,
    ) -> Result<AgentRecord, StoreError> {
        self.up()?;
        self.inner.update_agent(id_or_name, patch).await
    }

    async fn set_agent_status(
        &self,
        id_or_name: &str,
        status: AgentStatus,
    ) -> Result<AgentRecord, StoreError> {
        self.up()?;
        self.inner.set_agent_status(id_or_name, status).await
    }

    async fn purge_agent(&self, id_or_name: &str) -> Result<AgentRecord, StoreError> {
        self.up()?;
        self.inner.purge_agent(id_or_name).await
    }

    async fn insert_token(&self, token: NewToken) -> Result<TokenRecord, StoreError> {
        self.up()?;
        self.inner.insert_token(token).await
    }

    async fn active_token(
        &self,
        jti: &str,
        now: OffsetDateTime,
    ) -> Result<Option<TokenRecord>, StoreError> {
        self.up()?;
        self.inner.active_token(jti, now).await
    }

    async fn list_tokens(&self, agent_id: &str) -> Result<Vec<TokenRecord>, StoreError> {
        self.up()?;
        self.inner.list_tokens(agent_id).await
    }

    async fn revoke_tokens(
        &self,
        agent_id: &str,
        keep_jti: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        self.up()?;
        self.inner.revoke_tokens(agent_id, keep_jti, at).await
    }

    async fn upsert_policy(&self, policy: NewPolicy) -> Result<PolicyUpsert, StoreError> {
        self.up()?;
        self.inner.upsert_policy(policy).await
    }

    async fn list_policies(&self, page: &PageRequest) -> Result<Page<StoredPolicy>, StoreError> {
        self.up()?;
        self.inner.list_policies(page).await
    }

    async fn get_policy(&self, name: &str) -> Result<StoredPolicy, StoreError> {
        self.up()?;
        self.inner.get_policy(name).await
    }

    async fn delete_policy(&self, name: &str) -> Result<StoredPolicy, StoreError> {
        self.up()?;
        self.inner.delete_policy(name).await
    }

    async fn policy_revisions(
        &self,
        name: &str,
        page: &PageRequest,
    ) -> Result<Page<PolicyRevision>, StoreError> {
        self.up()?;
        self.inner.policy_revisions(name, page).await
    }

    async fn create_approval(&self, approval: NewApproval) -> Result<PendingApproval, StoreError> {
        self.up()?;
        self.inner.create_approval(approval).await
    }

    async fn get_approval(&self, id: &str) -> Result<ApprovalRecord, StoreError> {
        self.up()?;
        self.inner.get_approval(id).await
    }

    async fn latest_approval(
        &self,
        agent_id: &str,
        action: &str,
        resource: &str,
        arguments: Option<&BoundArguments>,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        self.up()?;
        if self.stale_approval_reads.load(Ordering::SeqCst) {
            return Ok(None);
        }
        self.inner
            .latest_approval(agent_id, action, resource, arguments)
            .await
    }

    async fn list_approvals(
        &self,
        status: Option<ApprovalStatus>,
        page: &PageRequest,
    ) -> Result<Page<ApprovalRecord>, StoreError> {
        self.up()?;
        self.inner.list_approvals(status, page).await
    }

    async fn decide_approval(
        &self,
        id: &str,
        decision: ApprovalDecision,
    ) -> Result<ApprovalRecord, StoreError> {
        self.up()?;
        self.inner.decide_approval(id, decision).await
    }

    async fn apply_admin(
        &self,
        mutation: AdminMutation,
        audit: AdminAudit,
    ) -> Result<AdminCommit, StoreError> {
        self.up()?;
        self.inner.apply_admin(mutation, audit).await
    }

    async fn mark_approval_used(
        &self,
        id: &str,
        at: OffsetDateTime,
    ) -> Result<ApprovalRecord, StoreError> {
        self.up()?;
        self.inner.mark_approval_used(id, at).await
    }

    async fn expire_approvals(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.up()?;
        self.inner.expire_approvals(now).await
    }

    async fn append_audit(&self, batch: &[NewAuditEvent]) -> Result<Vec<AuditEvent>, StoreError> {
        self.up()?;
        self.inner.append_audit(batch).await
    }

    async fn append_chained(&self, events: &[AuditEvent], sync: bool) -> Result<(), StoreError> {
        self.up()?;
        self.inner.append_chained(events, sync).await
    }

    async fn audit_head(&self, gateway: &str) -> Result<(u64, String), StoreError> {
        self.up()?;
        self.inner.audit_head(gateway).await
    }

    async fn query_audit(&self, filter: &AuditFilter) -> Result<AuditPage, StoreError> {
        self.up()?;
        self.inner.query_audit(filter).await
    }

    async fn audit_event(&self, id: &str) -> Result<AuditEvent, StoreError> {
        self.up()?;
        self.inner.audit_event(id).await
    }

    async fn audit_stats(&self, query: &StatsQuery) -> Result<AuditStats, StoreError> {
        self.up()?;
        self.inner.audit_stats(query).await
    }

    async fn audit_heads(&self) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        self.up()?;
        self.inner.audit_heads().await
    }

    async fn audit_chain_after(
        &self,
        gateway: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<meshguard_store::AuditEvent>, StoreError> {
        self.up()?;
        self.inner.audit_chain_after(gateway, after, limit).await
    }

    async fn verify_audit(
        &self,
        options: &meshguard_store::VerifyOptions,
    ) -> Result<VerifyReport, StoreError> {
        self.up()?;
        self.inner.verify_audit(options).await
    }

    async fn add_audit_checkpoint(
        &self,
        checkpoint: &meshguard_store::AuditCheckpoint,
    ) -> Result<(), StoreError> {
        self.up()?;
        self.inner.add_audit_checkpoint(checkpoint).await
    }

    async fn latest_audit_checkpoint(
        &self,
        gateway: &str,
    ) -> Result<Option<meshguard_store::AuditCheckpoint>, StoreError> {
        self.up()?;
        self.inner.latest_audit_checkpoint(gateway).await
    }

    async fn audit_checkpoints(
        &self,
        gateway: &str,
        after: u64,
        through: u64,
    ) -> Result<Vec<meshguard_store::AuditCheckpoint>, StoreError> {
        self.up()?;
        self.inner.audit_checkpoints(gateway, after, through).await
    }

    async fn apply_retention(
        &self,
        cutoff: OffsetDateTime,
        archive: Option<&std::path::Path>,
    ) -> Result<RetentionReport, StoreError> {
        self.up()?;
        self.inner.apply_retention(cutoff, archive).await
    }
}
