//! The `Store` trait: everything MeshGuard persists, behind one object-safe interface.

use std::collections::BTreeMap;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::{
    AdminAudit, AdminCommit, AdminMutation, AgentPatch, AgentRecord, AgentStatus, ApprovalDecision,
    ApprovalRecord, ApprovalStatus, AuditCheckpoint, AuditEvent, AuditFilter, AuditPage,
    AuditStats, BoundArguments, NewAgent, NewApproval, NewAuditEvent, NewPolicy, NewToken,
    OperatorRecord, Page, PageRequest, PendingApproval, PolicyRevision, PolicyUpsert,
    RetentionReport, StatsQuery, StoreChange, StoreError, StoredPolicy, TokenRecord, VerifyOptions,
    VerifyReport,
};

/// Everything MeshGuard persists. The gateway holds it as `Arc<dyn Store>`; [`crate::open`]
/// picks the backend (SQLite or PostgreSQL) from a [`crate::StoreLocation`].
///
/// Ids. The store assigns agent ids (`agent_` + 20 lowercase hex digits, 80 random bits) and
/// approval ids (`apr_` + 20 hex digits, likewise). Token ids (`jti`) and audit event ids come
/// from the caller and are stored as given (the gateway uses `tok_` + 32 hex digits and
/// UUIDv7); a chain is ordered by `seq`, never by id.
///
/// Agents are named by id or name wherever `agent` appears (`id_or_name`): a key starting with
/// `agent_` is looked up as an id only, anything else as a name only ([`crate::AgentKey`]), so a
/// key never names two agents. [`Store::create_agent`] refuses new names with that prefix; an
/// agent stored under such a name before the check can still be found, by its id only. The
/// `agent_id` parameters elsewhere take the id, never a name.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`, for `/health` and logs.
    fn backend(&self) -> &'static str;

    /// Round trip to the database, for `/health`; fails when the store is unreachable.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Changes to agents, tokens, policies and approvals, as they commit. On PostgreSQL these
    /// are the changes of every gateway sharing the database (LISTEN/NOTIFY, typically within
    /// milliseconds); on SQLite, the changes made through this store. A receiver that lags
    /// gets `RecvError::Lagged` and should reload as for [`StoreChange::Resync`].
    fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<StoreChange>;

    // ----- agents -----

    /// Creates an active agent under a fresh random id; a taken name is a `Conflict`, a name
    /// starting with `agent_` is `Invalid`.
    async fn create_agent(&self, agent: NewAgent) -> Result<AgentRecord, StoreError>;

    /// Looks an agent up by id or name.
    async fn get_agent(&self, id_or_name: &str) -> Result<AgentRecord, StoreError>;

    /// One page of the agents, ordered by name (byte-wise).
    async fn list_agents(&self, page: &PageRequest) -> Result<Page<AgentRecord>, StoreError>;

    /// A console operator by name (created and deleted through [`Store::apply_admin`]).
    async fn get_operator(&self, name: &str) -> Result<OperatorRecord, StoreError>;

    /// Every console operator, by name.
    async fn list_operators(&self) -> Result<Vec<OperatorRecord>, StoreError>;

    /// Changes trust, tags or description.
    async fn update_agent(
        &self,
        id_or_name: &str,
        patch: AgentPatch,
    ) -> Result<AgentRecord, StoreError>;

    /// Revokes or restores an agent.
    async fn set_agent_status(
        &self,
        id_or_name: &str,
        status: AgentStatus,
    ) -> Result<AgentRecord, StoreError>;

    /// Deletes an agent with its tokens and approvals; its audit events stay. Returns what was
    /// deleted.
    async fn purge_agent(&self, id_or_name: &str) -> Result<AgentRecord, StoreError>;

    // ----- tokens -----

    /// Remembers an issued token id (chosen by the caller); the agent must exist.
    async fn insert_token(&self, token: NewToken) -> Result<TokenRecord, StoreError>;

    /// The token with this id if it is honoured at `now` (not revoked, not expired).
    async fn active_token(
        &self,
        jti: &str,
        now: OffsetDateTime,
    ) -> Result<Option<TokenRecord>, StoreError>;

    /// Every token id of an agent, newest first.
    async fn list_tokens(&self, agent_id: &str) -> Result<Vec<TokenRecord>, StoreError>;

    /// Revokes every unrevoked token of an agent except `keep_jti` (`token --rotate` keeps the
    /// new one). Returns how many were revoked.
    async fn revoke_tokens(
        &self,
        agent_id: &str,
        keep_jti: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError>;

    // ----- policies -----

    /// Stores a policy by name; a new revision only when the source text differs from the
    /// current one.
    async fn upsert_policy(&self, policy: NewPolicy) -> Result<PolicyUpsert, StoreError>;

    /// One page of the policies in force (their current revisions), ordered by name
    /// (byte-wise); [`crate::all_policies`] reads them all.
    async fn list_policies(&self, page: &PageRequest) -> Result<Page<StoredPolicy>, StoreError>;

    /// The current revision of one policy.
    async fn get_policy(&self, name: &str) -> Result<StoredPolicy, StoreError>;

    /// Removes a policy from force; its revisions stay, and re-applying it continues their
    /// numbering. Returns what was deleted.
    async fn delete_policy(&self, name: &str) -> Result<StoredPolicy, StoreError>;

    /// One page of the stored revisions of a policy, oldest first; `NotFound` when the policy
    /// has none.
    async fn policy_revisions(
        &self,
        name: &str,
        page: &PageRequest,
    ) -> Result<Page<PolicyRevision>, StoreError>;

    // ----- approvals -----

    /// The pending approval of (agent, action, resource, arguments), created when there is none;
    /// the agent must exist.
    ///
    /// At most one approval of a request is pending at any time, however many callers ask at
    /// once, in this process or in other gateways sharing the database: each gets the same
    /// approval, exactly one of them as [`PendingApproval::Created`], the others as
    /// [`PendingApproval::Existing`] (unchanged: their timeout and trace id are not used). A
    /// pending approval whose time ran out by `approval.created_at` is marked expired first and
    /// does not count. When none is pending and the agent already has `approval.max_pending`
    /// live pending approvals, none is created ([`PendingApproval::TooMany`]); the count and the
    /// insert are one transaction that holds the agent's row, so gateways sharing the database
    /// cannot together overshoot the cap. A `Conflict` only when the request's pending approvals keep being decided
    /// or expired while this call tries (it gives up after a few tries).
    async fn create_approval(&self, approval: NewApproval) -> Result<PendingApproval, StoreError>;

    /// One approval by the id the store gave it (`apr_…`).
    async fn get_approval(&self, id: &str) -> Result<ApprovalRecord, StoreError>;

    /// The most recent approval for (agent, normalised action, normalised resource, arguments),
    /// whatever its status: the gateway applies the approval table to it. Requests with other
    /// arguments, or without any when these have some, are other requests.
    async fn latest_approval(
        &self,
        agent_id: &str,
        action: &str,
        resource: &str,
        arguments: Option<&BoundArguments>,
    ) -> Result<Option<ApprovalRecord>, StoreError>;

    /// One page of the approvals with this stored status (all when `None`), newest first (by
    /// creation time, then id).
    async fn list_approvals(
        &self,
        status: Option<ApprovalStatus>,
        page: &PageRequest,
    ) -> Result<Page<ApprovalRecord>, StoreError>;

    /// Records a human's decision on a pending approval; deciding twice, or after it expired,
    /// is a `Conflict`. The decision holds for the approval's timeout from now on.
    async fn decide_approval(
        &self,
        id: &str,
        decision: ApprovalDecision,
    ) -> Result<ApprovalRecord, StoreError>;

    /// Consumes an approved approval (single use). Only one caller can succeed: the others get
    /// a `Conflict`, so an approval never lets two requests through.
    async fn mark_approval_used(
        &self,
        id: &str,
        at: OffsetDateTime,
    ) -> Result<ApprovalRecord, StoreError>;

    /// Marks pending and approved approvals whose time ran out as expired; returns how many.
    async fn expire_approvals(&self, now: OffsetDateTime) -> Result<u64, StoreError>;

    // ----- admin changes -----

    /// Makes an operator's change and appends its audit event (built by `audit` from what the
    /// change did) in one transaction: a change whose event cannot be committed is rolled back
    /// and answered `Unavailable`, whatever refused the event. The event joins the chain of its
    /// `gateway` like an [`Store::append_audit`] batch. A change that changes nothing (an
    /// unchanged policy body) writes no event. The gateway's admin API makes every change
    /// through this method; the single-purpose methods above serve policy files and tools.
    async fn apply_admin(
        &self,
        mutation: AdminMutation,
        audit: AdminAudit,
    ) -> Result<AdminCommit, StoreError>;

    // ----- audit -----

    /// Appends events in one transaction, each joining the chain of its `gateway`: assigns the
    /// next gap-free `seq`, links `prev_hash` and computes `hash`. Each event keeps the id it
    /// came with: an empty id is `Invalid`, and an id already stored (or repeated in the batch)
    /// is a `Conflict`; no other shape is checked. All or nothing; returns the events as
    /// committed, in the order given.
    async fn append_audit(&self, batch: &[NewAuditEvent]) -> Result<Vec<AuditEvent>, StoreError>;

    /// Appends events already chained by [`chain_event`](crate::chain_event) (a write-ahead log
    /// being indexed), in one transaction: each must continue its chain's head, else nothing is
    /// written and the answer is a `Conflict`. Without `sync` the commit may not be on disk yet
    /// (the log is); a later commit with `sync` makes it and every earlier one durable.
    async fn append_chained(&self, events: &[AuditEvent], sync: bool) -> Result<(), StoreError>;

    /// The newest `seq` and `hash` of `gateway`'s chain (0 and 64 zeros before its first event).
    async fn audit_head(&self, gateway: &str) -> Result<(u64, String), StoreError>;

    /// One page of events matching a filter.
    async fn query_audit(&self, filter: &AuditFilter) -> Result<AuditPage, StoreError>;

    /// One committed event by the id it was appended with; `NotFound` when there is none (or
    /// retention deleted it).
    async fn audit_event(&self, id: &str) -> Result<AuditEvent, StoreError>;

    /// Counts of checks (kind `check`) in a period.
    async fn audit_stats(&self, query: &StatsQuery) -> Result<AuditStats, StoreError>;

    /// The `seq` of each chain's newest event (0 before its first), by gateway instance id.
    async fn audit_heads(&self) -> Result<BTreeMap<String, u64>, StoreError>;

    /// Up to `limit` events of `gateway`'s chain with `seq` above `after`, oldest first: how a
    /// gateway follows what the others sharing its database commit (a chain commits in `seq`
    /// order, so reading on from the last `seq` seen never skips an event).
    async fn audit_chain_after(
        &self,
        gateway: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError>;

    /// Walks every chain from its anchor (`options.full`) or from its newest checkpoint an
    /// earlier verification walked through, recomputing every hash and checking every
    /// checkpoint met against `options.keys`; names the first broken `seq` of each chain. A
    /// chain that verifies marks its checkpoints as walked through.
    async fn verify_audit(&self, options: &VerifyOptions) -> Result<VerifyReport, StoreError>;

    /// Stores a signed checkpoint (`Conflict` when its `(gateway, seq)` has one already).
    async fn add_audit_checkpoint(&self, checkpoint: &AuditCheckpoint) -> Result<(), StoreError>;

    /// `gateway`'s newest checkpoint, if any.
    async fn latest_audit_checkpoint(
        &self,
        gateway: &str,
    ) -> Result<Option<AuditCheckpoint>, StoreError>;

    /// `gateway`'s checkpoints with `after < seq <= through`, oldest first.
    async fn audit_checkpoints(
        &self,
        gateway: &str,
        after: u64,
        through: u64,
    ) -> Result<Vec<AuditCheckpoint>, StoreError>;

    /// Deletes events older than `cutoff`, keeping each chain verifiable: a chain loses only a
    /// prefix, and its last deleted `seq` and `hash` become its anchor. With `archive`, each batch
    /// is first written there as gzip'd JSON lines in the export's form (events and their
    /// checkpoints, `<gateway>-<first seq>-<last seq>.jsonl.gz`) and made durable: nothing is
    /// deleted that is not archived.
    async fn apply_retention(
        &self,
        cutoff: OffsetDateTime,
        archive: Option<&std::path::Path>,
    ) -> Result<RetentionReport, StoreError>;
}

/// Every agent, ordered by name, however many pages that takes: what a lint over all agents
/// needs.
pub async fn all_agents(store: &dyn Store) -> Result<Vec<AgentRecord>, StoreError> {
    every_page(|page| async move { store.list_agents(&page).await }).await
}

/// Every policy in force, ordered by name, however many pages that takes: what a gateway loads
/// into its engine.
pub async fn all_policies(store: &dyn Store) -> Result<Vec<StoredPolicy>, StoreError> {
    every_page(|page| async move { store.list_policies(&page).await }).await
}

/// Reads a listing page after page, the largest pages allowed, until its last.
async fn every_page<T, F, Fut>(mut list: F) -> Result<Vec<T>, StoreError>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = Result<Page<T>, StoreError>>,
{
    let mut request = PageRequest::first(crate::MAX_PAGE_SIZE);
    let mut items = Vec::new();
    loop {
        let page = list(request.clone()).await?;
        items.extend(page.items);
        match page.next_cursor {
            Some(cursor) => request.cursor = Some(cursor),
            None => return Ok(items),
        }
    }
}
