//! The SQL implementation of [`Store`], one code path for SQLite and PostgreSQL.
//!
//! Queries are written once in the SQL both dialects share (`$1` placeholders, `RETURNING`,
//! `ON CONFLICT`), run through sqlx's `Any` driver; the few places where the dialects differ
//! (write-transaction start, row locks, glob matching) ask [`Dialect`]. Timestamps are stored as
//! integer microseconds since the Unix epoch: exact, sortable, and bucketable by integer division
//! in both dialects.

mod admin;
mod agents;
mod approvals;
mod audit;
pub use audit::chain_event;
mod changes;
mod operators;
pub(crate) mod page;
mod policies;
mod tokens;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{AnyPool, Row};
use time::OffsetDateTime;

use crate::{
    AdminAudit, AdminCommit, AdminMutation, AgentPatch, AgentRecord, AgentStatus, ApprovalDecision,
    ApprovalRecord, ApprovalStatus, AuditCheckpoint, AuditEvent, AuditFilter, AuditPage,
    AuditStats, BoundArguments, NewAgent, NewApproval, NewAuditEvent, NewPolicy, NewToken,
    OperatorRecord, Page, PageRequest, PendingApproval, PolicyRevision, PolicyUpsert,
    RetentionReport, StatsQuery, Store, StoreChange, StoreError, StoreLocation, StoredPolicy,
    TokenRecord, VerifyOptions, VerifyReport,
};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// The small tables that name what audit rows store by number: chains, agents, reason templates
/// and outcomes.
const AUDIT_NUMBERINGS: &str = "audit_chains, audit_agents, audit_reasons, audit_outcomes";

/// Gives PostgreSQL statistics of [`AUDIT_NUMBERINGS`]. Autovacuum analyzes a table once 50
/// rows plus a tenth of it have changed, so tables of a few rows never are; without statistics
/// the planner looks each one up once per event read instead of reading it once per page, and
/// listings, exports and verification ran 1.3–1.4× slower (docs/benchmarks.md, "Outcomes as
/// numbers"). Best effort: a gateway that cannot analyze (not the tables' owner) still starts.
async fn analyze_small_tables(pool: &sqlx::AnyPool) {
    if let Err(err) = sqlx::raw_sql(&format!("ANALYZE {AUDIT_NUMBERINGS}"))
        .execute(pool)
        .await
    {
        tracing::warn!(error = %err, "could not analyze the audit trail's small tables");
    }
}

/// Set on every SQLite connection: enforce foreign keys (purge cascades), wait up to 5 s for
/// another writer instead of failing, flush each commit to disk (an audit event is not
/// acknowledged before it is durable), and keep temporary files — the statement journal of
/// every multi-row audit insert among them — in memory rather than in a file written per batch.
const SQLITE_CONNECTION_PRAGMAS: [&str; 4] = [
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 5000",
    "PRAGMA synchronous = FULL",
    "PRAGMA temp_store = MEMORY",
];

/// How long a caller waits for a pooled connection before the store counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQL dialect in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Starts a transaction that will write. SQLite's `IMMEDIATE` takes the write lock up front,
    /// so a read-then-write transaction (the audit append) cannot be overtaken by another
    /// process between its read and its write.
    fn begin_write(self) -> &'static str {
        match self {
            Self::Sqlite => "BEGIN IMMEDIATE",
            Self::Postgres => "BEGIN",
        }
    }

    /// Suffix of a `SELECT` that reads a row the transaction will update. SQLite needs none: its
    /// write lock is database-wide.
    fn lock_row(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR UPDATE",
        }
    }

    /// `column` compared and sorted byte-wise, as Rust compares strings: SQLite's default
    /// collation already is; PostgreSQL's follows the database's locale unless told `"C"`.
    fn bytewise(self, column: &str) -> String {
        match self {
            Self::Sqlite => column.to_owned(),
            Self::Postgres => format!("{column} COLLATE \"C\""),
        }
    }

    /// The `n`th (1-based) bind parameter of a statement with many of them. SQLite gets
    /// anonymous `?`: sqlx looks up every parameter's name before binding, and SQLite finds a
    /// name by a linear scan, so a 1,408-parameter `$n` insert cost a quadratic 22% of the
    /// gateway's CPU under load. Anonymous parameters have no names to scan.
    pub(crate) fn placeholder(self, n: usize) -> String {
        match self {
            Self::Sqlite => "?".to_owned(),
            Self::Postgres => format!("${n}"),
        }
    }
}

/// [`Store`] over a pool of SQLite or PostgreSQL connections.
pub(crate) struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
    /// Reads of audit events that bypass sqlx, on SQLite (`audit::sqlite_walk`).
    sqlite_reader: Option<std::sync::Arc<audit::SqliteReader>>,
    /// One audit append at a time in this process: the group-commit writer is the only caller
    /// in practice, and queuing here is cheaper than SQLite busy-waiting on its write lock.
    append_lock: tokio::sync::Mutex<()>,
    /// Numbers of agents, reason templates and outcomes appends have already read.
    audit_numbers: audit::KnownNumbers,
    changes: tokio::sync::broadcast::Sender<StoreChange>,
    /// Forwards PostgreSQL notifications into `changes`; stopped when the store is dropped.
    listener: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for SqlStore {
    fn drop(&mut self) {
        if let Some(listener) = &self.listener {
            listener.abort();
        }
    }
}

impl SqlStore {
    pub(crate) async fn open(location: &StoreLocation) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let (pool, dialect) = match location {
            StoreLocation::Sqlite { path } => {
                if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|err| {
                        StoreError::Unavailable(format!(
                            "cannot create the data directory `{}`: {err}",
                            dir.display()
                        ))
                    })?;
                }
                let url = sqlite_url(path)?;
                // No ping before each acquire: a SQLite connection is a file handle that cannot
                // drop the way a network connection does, and the ping is one more hand-off to
                // sqlx's worker thread on every audit batch and every read.
                let pool = AnyPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .test_before_acquire(false)
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            for pragma in SQLITE_CONNECTION_PRAGMAS {
                                sqlx::query(pragma).execute(&mut *conn).await?;
                            }
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await
                    .map_err(|err| unavailable(location, &err))?;
                // WAL is a property of the file: set once, it holds for every connection.
                sqlx::raw_sql("PRAGMA journal_mode = WAL;")
                    .execute(&pool)
                    .await
                    .map_err(|err| unavailable(location, &err))?;
                (pool, Dialect::Sqlite)
            }
            StoreLocation::Postgres { url } => {
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect(url)
                    .await
                    .map_err(|err| unavailable(location, &err))?;
                (pool, Dialect::Postgres)
            }
        };
        let migrator = match dialect {
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
            Dialect::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&pool).await.map_err(migration_error)?;
        if dialect == Dialect::Postgres {
            analyze_small_tables(&pool).await;
        }
        let (changes, _) = tokio::sync::broadcast::channel(changes::CAPACITY);
        let listener = match location {
            StoreLocation::Sqlite { .. } => None,
            StoreLocation::Postgres { url } => {
                let listener = changes::listen(url).await?;
                Some(tokio::spawn(changes::forward(
                    url.clone(),
                    listener,
                    changes.clone(),
                )))
            }
        };
        tracing::debug!(store = %location, "store opened and migrated");
        let sqlite_reader = match location {
            StoreLocation::Sqlite { path } => {
                Some(std::sync::Arc::new(audit::SqliteReader::new(path)))
            }
            StoreLocation::Postgres { .. } => None,
        };
        Ok(Self {
            pool,
            dialect,
            sqlite_reader,
            append_lock: tokio::sync::Mutex::new(()),
            audit_numbers: audit::KnownNumbers::default(),
            changes,
            listener,
        })
    }

    /// A pooled connection for a one-statement write (its own implicit transaction).
    async fn connection(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, StoreError> {
        self.pool.acquire().await.map_err(db_error)
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        self.pool
            .begin_with(self.dialect.begin_write())
            .await
            .map_err(db_error)
    }
}

/// `sqlite://` URL of a file, created if missing. `%`, `?` and `#` are escaped so that any
/// UTF-8 path works.
fn sqlite_url(path: &std::path::Path) -> Result<String, StoreError> {
    let text = path.to_str().ok_or_else(|| {
        StoreError::invalid(
            "data_dir",
            format!("`{}` is not valid UTF-8", path.display()),
        )
    })?;
    let escaped = text
        .replace('%', "%25")
        .replace('?', "%3F")
        .replace('#', "%23");
    Ok(format!("sqlite://{escaped}?mode=rwc"))
}

fn unavailable(location: &StoreLocation, err: &sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("cannot open {location}: {err}"))
}

fn migration_error(err: MigrateError) -> StoreError {
    match err {
        MigrateError::VersionMissing(version) => StoreError::Corrupt(format!(
            "the database has migration {version}, which this MeshGuard does not know: it was \
             written by a newer version"
        )),
        MigrateError::VersionMismatch(version) => StoreError::Corrupt(format!(
            "migration {version} applied to the database differs from this MeshGuard's"
        )),
        other => StoreError::Unavailable(format!("schema migration failed: {other}")),
    }
}

/// Maps a database error that the caller did not expect to handle.
pub(crate) fn db_error(err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(err.to_string()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

pub(crate) fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

/// Reads a column, mapping a type mismatch to `Corrupt`.
pub(crate) fn column<'r, T>(row: &'r AnyRow, name: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(name).map_err(db_error)
}

/// Reads a non-negative integer column (seq, revision, counts).
pub(crate) fn unsigned(row: &AnyRow, name: &str) -> Result<u64, StoreError> {
    let value: i64 = column(row, name)?;
    u64::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("column `{name}` holds negative {value}")))
}

/// Reads a nullable non-negative integer column.
pub(crate) fn unsigned_opt(row: &AnyRow, name: &str) -> Result<Option<u64>, StoreError> {
    let value: Option<i64> = column(row, name)?;
    value
        .map(|v| {
            u64::try_from(v)
                .map_err(|_| StoreError::Corrupt(format!("column `{name}` holds negative {v}")))
        })
        .transpose()
}

/// Binds a `u64` the caller gave (databases store signed 64-bit integers).
pub(crate) fn signed(field: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::invalid(field, format!("{value} is too large")))
}

/// Microseconds since the Unix epoch, the stored form of every timestamp.
pub(crate) fn micros(ts: OffsetDateTime) -> i64 {
    i64::try_from(ts.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

/// Reads a timestamp column.
pub(crate) fn time_column(row: &AnyRow, name: &str) -> Result<OffsetDateTime, StoreError> {
    from_micros(column(row, name)?)
}

/// Reads a nullable timestamp column.
pub(crate) fn time_column_opt(
    row: &AnyRow,
    name: &str,
) -> Result<Option<OffsetDateTime>, StoreError> {
    let value: Option<i64> = column(row, name)?;
    value.map(from_micros).transpose()
}

/// The record of a statement that targets one row, or `missing()` when it matched none.
pub(crate) fn one_row<T>(
    row: Option<AnyRow>,
    from_row: impl Fn(&AnyRow) -> Result<T, StoreError>,
    missing: impl FnOnce() -> StoreError,
) -> Result<T, StoreError> {
    row.as_ref().map_or_else(|| Err(missing()), from_row)
}

pub(crate) fn from_micros(us: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .map_err(|_| StoreError::Corrupt(format!("timestamp {us} is out of range")))
}

/// `prefix` + 20 hex digits (80 random bits) taken from the random bytes of a UUIDv4.
pub(crate) fn random_id(prefix: &str) -> String {
    let uuid = uuid::Uuid::new_v4();
    let bytes = uuid.as_bytes();
    // Bytes 6 and 8 carry the UUID version and variant; 0..6 and 9..13 are all random.
    let random = [bytes.get(0..6), bytes.get(9..13)];
    let mut id = String::from(prefix);
    for part in random.into_iter().flatten() {
        id.push_str(&hex::encode(part));
    }
    id
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db_error)
    }

    fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<StoreChange> {
        self.changes.subscribe()
    }

    async fn create_agent(&self, agent: NewAgent) -> Result<AgentRecord, StoreError> {
        let created = agents::create(&mut *self.connection().await?, agent).await?;
        self.announce(StoreChange::Agent {
            id: created.id.clone(),
        })
        .await;
        Ok(created)
    }

    async fn get_agent(&self, id_or_name: &str) -> Result<AgentRecord, StoreError> {
        agents::get(self, id_or_name).await
    }

    async fn list_agents(&self, page: &PageRequest) -> Result<Page<AgentRecord>, StoreError> {
        agents::list(self, page).await
    }

    async fn get_operator(&self, name: &str) -> Result<OperatorRecord, StoreError> {
        operators::get(self, name).await
    }

    async fn list_operators(&self) -> Result<Vec<OperatorRecord>, StoreError> {
        operators::list(self).await
    }

    async fn update_agent(
        &self,
        id_or_name: &str,
        patch: AgentPatch,
    ) -> Result<AgentRecord, StoreError> {
        let updated = agents::update(&mut *self.connection().await?, id_or_name, patch).await?;
        self.announce(StoreChange::Agent {
            id: updated.id.clone(),
        })
        .await;
        Ok(updated)
    }

    async fn set_agent_status(
        &self,
        id_or_name: &str,
        status: AgentStatus,
    ) -> Result<AgentRecord, StoreError> {
        let changed =
            agents::set_status(&mut *self.connection().await?, id_or_name, status).await?;
        self.announce(StoreChange::Agent {
            id: changed.id.clone(),
        })
        .await;
        Ok(changed)
    }

    async fn purge_agent(&self, id_or_name: &str) -> Result<AgentRecord, StoreError> {
        let purged = agents::purge(&mut *self.connection().await?, id_or_name).await?;
        self.announce(StoreChange::Agent {
            id: purged.id.clone(),
        })
        .await;
        Ok(purged)
    }

    async fn insert_token(&self, token: NewToken) -> Result<TokenRecord, StoreError> {
        tokens::insert(&mut *self.connection().await?, token).await
    }

    async fn active_token(
        &self,
        jti: &str,
        now: OffsetDateTime,
    ) -> Result<Option<TokenRecord>, StoreError> {
        tokens::active(self, jti, now).await
    }

    async fn list_tokens(&self, agent_id: &str) -> Result<Vec<TokenRecord>, StoreError> {
        tokens::list(self, agent_id).await
    }

    async fn revoke_tokens(
        &self,
        agent_id: &str,
        keep_jti: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let revoked =
            tokens::revoke_all(&mut *self.connection().await?, agent_id, keep_jti, at).await?;
        if revoked > 0 {
            self.announce(StoreChange::Tokens {
                agent_id: agent_id.to_owned(),
            })
            .await;
        }
        Ok(revoked)
    }

    async fn upsert_policy(&self, policy: NewPolicy) -> Result<PolicyUpsert, StoreError> {
        let mut tx = self.begin_write().await?;
        let upsert = policies::upsert(&mut tx, self.dialect, policy).await?;
        tx.commit().await.map_err(db_error)?;
        if upsert.changed {
            self.announce(StoreChange::Policy {
                name: upsert.policy.name.clone(),
            })
            .await;
        }
        Ok(upsert)
    }

    async fn list_policies(&self, page: &PageRequest) -> Result<Page<StoredPolicy>, StoreError> {
        policies::list(self, page).await
    }

    async fn get_policy(&self, name: &str) -> Result<StoredPolicy, StoreError> {
        policies::get(self, name).await
    }

    async fn delete_policy(&self, name: &str) -> Result<StoredPolicy, StoreError> {
        let deleted = policies::delete(&mut *self.connection().await?, name).await?;
        self.announce(StoreChange::Policy {
            name: deleted.name.clone(),
        })
        .await;
        Ok(deleted)
    }

    async fn policy_revisions(
        &self,
        name: &str,
        page: &PageRequest,
    ) -> Result<Page<PolicyRevision>, StoreError> {
        policies::revisions(self, name, page).await
    }

    async fn create_approval(&self, approval: NewApproval) -> Result<PendingApproval, StoreError> {
        let approvals::Created { pending, expired } = approvals::create(self, approval).await?;
        let created = match &pending {
            PendingApproval::Created(record) => Some(record.id.clone()),
            PendingApproval::Existing(_) | PendingApproval::TooMany { .. } => None,
        };
        self.announce_all(
            expired
                .into_iter()
                .chain(created)
                .map(|id| StoreChange::Approval { id }),
        )
        .await;
        Ok(pending)
    }

    async fn get_approval(&self, id: &str) -> Result<ApprovalRecord, StoreError> {
        approvals::get(self, id).await
    }

    async fn latest_approval(
        &self,
        agent_id: &str,
        action: &str,
        resource: &str,
        arguments: Option<&BoundArguments>,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        approvals::latest(self, agent_id, action, resource, arguments).await
    }

    async fn list_approvals(
        &self,
        status: Option<ApprovalStatus>,
        page: &PageRequest,
    ) -> Result<Page<ApprovalRecord>, StoreError> {
        approvals::list(self, status, page).await
    }

    async fn decide_approval(
        &self,
        id: &str,
        decision: ApprovalDecision,
    ) -> Result<ApprovalRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        let decided = approvals::record_verdict(&mut tx, self.dialect, id, &decision).await;
        let decided = match decided? {
            approvals::Decided::Recorded(record) => *record,
            approvals::Decided::Expired => {
                tx.commit().await.map_err(db_error)?;
                return Err(approvals::expired_before_decided(id));
            }
        };
        tx.commit().await.map_err(db_error)?;
        self.announce(StoreChange::Approval {
            id: decided.id.clone(),
        })
        .await;
        Ok(decided)
    }

    async fn mark_approval_used(
        &self,
        id: &str,
        at: OffsetDateTime,
    ) -> Result<ApprovalRecord, StoreError> {
        let used = approvals::mark_used(self, id, at).await?;
        self.announce(StoreChange::Approval {
            id: used.id.clone(),
        })
        .await;
        Ok(used)
    }

    async fn expire_approvals(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let expired = approvals::expire(self, now).await?;
        let count = expired.len() as u64;
        self.announce_all(expired.into_iter().map(|id| StoreChange::Approval { id }))
            .await;
        Ok(count)
    }

    async fn apply_admin(
        &self,
        mutation: AdminMutation,
        audit: AdminAudit,
    ) -> Result<AdminCommit, StoreError> {
        let (commit, changes) = admin::apply(self, mutation, audit).await?;
        self.announce_all(changes).await;
        Ok(commit)
    }

    async fn append_audit(&self, batch: &[NewAuditEvent]) -> Result<Vec<AuditEvent>, StoreError> {
        audit::append(self, batch).await
    }

    async fn append_chained(&self, events: &[AuditEvent], sync: bool) -> Result<(), StoreError> {
        audit::append_chained(self, events, sync).await
    }

    async fn audit_head(&self, gateway: &str) -> Result<(u64, String), StoreError> {
        audit::head(self, gateway).await
    }

    async fn query_audit(&self, filter: &AuditFilter) -> Result<AuditPage, StoreError> {
        audit::query(self, filter).await
    }

    async fn audit_event(&self, id: &str) -> Result<AuditEvent, StoreError> {
        audit::event(self, id).await
    }

    async fn audit_stats(&self, query: &StatsQuery) -> Result<AuditStats, StoreError> {
        audit::stats(self, query).await
    }

    async fn verify_audit(&self, options: &VerifyOptions) -> Result<VerifyReport, StoreError> {
        audit::verify(self, options).await
    }

    async fn add_audit_checkpoint(&self, checkpoint: &AuditCheckpoint) -> Result<(), StoreError> {
        audit::add_checkpoint(self, checkpoint).await
    }

    async fn latest_audit_checkpoint(
        &self,
        gateway: &str,
    ) -> Result<Option<AuditCheckpoint>, StoreError> {
        audit::latest_checkpoint(self, gateway, 0, false).await
    }

    async fn audit_checkpoints(
        &self,
        gateway: &str,
        after: u64,
        through: u64,
    ) -> Result<Vec<AuditCheckpoint>, StoreError> {
        audit::checkpoints(self, gateway, after, through).await
    }

    async fn audit_heads(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        audit::heads(self).await
    }

    async fn audit_chain_after(
        &self,
        gateway: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        audit::chain_after(self, gateway, after, limit).await
    }

    async fn apply_retention(
        &self,
        cutoff: OffsetDateTime,
        archive: Option<&std::path::Path>,
    ) -> Result<RetentionReport, StoreError> {
        audit::retain(self, cutoff, archive).await
    }
}
