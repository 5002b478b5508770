//! Approvals: one human decision on one (agent, action, resource, arguments digest).

use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use super::page::{Listing, cut, fetch_size};
use super::{
    Dialect, SqlStore, column, db_error, is_foreign_key_violation, micros, one_row, random_id,
    signed, time_column, time_column_opt, unsigned,
};
use crate::chain::canonical_json;
use crate::{
    ApprovalDecision, ApprovalRecord, ApprovalStatus, ApprovalVerdict, BoundArguments, NewApproval,
    Page, PageRequest, PendingApproval, StoreError,
};

const COLUMNS: &str = "id, agent_id, action, resource, status, timeout_secs, created_at, \
                       expires_at, decided_at, decided_by, reason, used_at, trace_id, \
                       arguments_digest, arguments";

/// The stored digest of a request without arguments: empty rather than NULL, so that the
/// one-pending index (which treats NULLs as distinct) covers such requests too.
const NO_ARGUMENTS: &str = "";

fn digest_of(arguments: Option<&BoundArguments>) -> &str {
    arguments.map_or(NO_ARGUMENTS, |a| a.digest.as_str())
}

fn arguments_column(row: &AnyRow, id: &str) -> Result<Option<BoundArguments>, StoreError> {
    let digest: String = column(row, "arguments_digest")?;
    let text: Option<String> = column(row, "arguments")?;
    if digest == NO_ARGUMENTS {
        return Ok(None);
    }
    let value = text
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| {
            StoreError::Corrupt(format!(
                "approval `{id}` has arguments that are not JSON: {e}"
            ))
        })?
        .ok_or_else(|| {
            StoreError::Corrupt(format!("approval `{id}` has a digest but no arguments"))
        })?;
    Ok(Some(BoundArguments { digest, value }))
}

fn from_row(row: &AnyRow) -> Result<ApprovalRecord, StoreError> {
    let id: String = column(row, "id")?;
    let status: String = column(row, "status")?;
    let status = ApprovalStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("approval `{id}` has status `{status}`")))?;
    Ok(ApprovalRecord {
        agent_id: column(row, "agent_id")?,
        action: column(row, "action")?,
        resource: column(row, "resource")?,
        status,
        timeout_secs: unsigned(row, "timeout_secs")?,
        created_at: time_column(row, "created_at")?,
        expires_at: time_column(row, "expires_at")?,
        decided_at: time_column_opt(row, "decided_at")?,
        decided_by: column(row, "decided_by")?,
        reason: column(row, "reason")?,
        used_at: time_column_opt(row, "used_at")?,
        trace_id: column(row, "trace_id")?,
        arguments: arguments_column(row, &id)?,
        id,
    })
}

fn not_found(id: &str) -> StoreError {
    StoreError::not_found(format!("approval `{id}`"))
}

/// `at` plus a timeout, in stored microseconds.
fn deadline(at: OffsetDateTime, timeout_secs: i64) -> i64 {
    micros(at).saturating_add(timeout_secs.saturating_mul(1_000_000))
}

/// How many times [`create`] tries. A try that neither inserts nor finds a live pending approval
/// lost a race with a decision or an expiry on the same request, which the next try sees; more
/// than one retry means the request's approvals change faster than anyone could answer them.
const CREATE_ATTEMPTS: usize = 4;

/// What [`create`] did: the pending approval, and the stale pending ones it marked expired.
pub(super) struct Created {
    pub(super) pending: PendingApproval,
    pub(super) expired: Vec<String>,
}

/// The pending approval of the request, inserted when there is none. Atomic across processes:
/// the partial unique index `approvals_one_pending` (migrations 0002, 0004) admits one pending row
/// per (agent, action, resource, arguments digest), and an insert that meets it does nothing, so the loser reads the
/// winner's row instead. On PostgreSQL the losing insert waits for the winner's commit.
pub(super) async fn create(store: &SqlStore, approval: NewApproval) -> Result<Created, StoreError> {
    if approval.timeout_secs == 0 {
        return Err(StoreError::invalid(
            "timeoutSeconds",
            "an approval timeout must be at least one second",
        ));
    }
    let timeout = signed("timeoutSeconds", approval.timeout_secs)?;
    let mut expired = Vec::new();
    for _ in 0..CREATE_ATTEMPTS {
        // A pending approval whose time ran out no longer counts, but it holds the one pending
        // slot until something writes its expiry: write it now rather than wait for housekeeping.
        expired.extend(expire_stale(store, &approval).await?);
        let inserted = insert(store, &approval, timeout).await?;
        if let Insert::Done(created) = inserted {
            return Ok(Created {
                pending: PendingApproval::Created(*created),
                expired,
            });
        }
        // The request's own pending approval is answered even at the cap: asking again for
        // what already waits adds nothing.
        if let Some(existing) = pending(store, &approval).await?
            && existing.expires_at > approval.created_at
        {
            return Ok(Created {
                pending: PendingApproval::Existing(existing),
                expired,
            });
        }
        if let Insert::Capped = inserted {
            return Ok(Created {
                pending: PendingApproval::TooMany {
                    max_pending: approval.max_pending,
                },
                expired,
            });
        }
        // The pending approval that blocked the insert was decided or expired since: try again.
    }
    Err(StoreError::conflict(
        format!(
            "approval of `{}` on `{}` for agent `{}`",
            approval.action, approval.resource, approval.agent_id
        ),
        "it kept changing while being created; retry the request",
    ))
}

/// Marks the request's pending approvals that ran out by `created_at` as expired; returns their ids.
async fn expire_stale(store: &SqlStore, approval: &NewApproval) -> Result<Vec<String>, StoreError> {
    sqlx::query_scalar(
        "UPDATE approvals SET status = 'expired' \
         WHERE agent_id = $1 AND action = $2 AND resource = $3 AND arguments_digest = $5 \
         AND status = 'pending' AND expires_at <= $4 RETURNING id",
    )
    .bind(&approval.agent_id)
    .bind(&approval.action)
    .bind(&approval.resource)
    .bind(micros(approval.created_at))
    .bind(digest_of(approval.arguments.as_ref()))
    .fetch_all(&store.pool)
    .await
    .map_err(db_error)
}

/// What [`insert`] did.
enum Insert {
    /// The new pending approval.
    Done(Box<ApprovalRecord>),
    /// The request already has a pending approval.
    Blocked,
    /// The agent has `max_pending` live pending approvals already.
    Capped,
}

/// Inserts a pending approval unless the request already has one or the agent is at its cap.
///
/// The count and the insert run in one transaction that first locks the agent's row (on
/// SQLite the write lock covers the database), so two gateways creating approvals for the same
/// agent take turns and together never pass the cap.
async fn insert(
    store: &SqlStore,
    approval: &NewApproval,
    timeout: i64,
) -> Result<Insert, StoreError> {
    let agent_missing = || StoreError::not_found(format!("agent `{}`", approval.agent_id));
    let mut tx = store.begin_write().await?;
    let lock = format!(
        "SELECT id FROM agents WHERE id = $1{}",
        store.dialect.lock_row()
    );
    let agent: Option<String> = sqlx::query_scalar(&lock)
        .bind(&approval.agent_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
    if agent.is_none() {
        return Err(agent_missing());
    }
    let live_pending: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM approvals \
         WHERE agent_id = $1 AND status = 'pending' AND expires_at > $2",
    )
    .bind(&approval.agent_id)
    .bind(micros(approval.created_at))
    .fetch_one(&mut *tx)
    .await
    .map_err(db_error)?;
    if live_pending >= i64::from(approval.max_pending) {
        tx.rollback().await.map_err(db_error)?;
        return Ok(Insert::Capped);
    }
    // The conflict target names the partial index, predicate included, as PostgreSQL requires;
    // SQLite accepts the same clause.
    let sql = format!(
        "INSERT INTO approvals ({COLUMNS}) \
         VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, NULL, NULL, NULL, NULL, $8, $9, $10) \
         ON CONFLICT (agent_id, action, resource, arguments_digest) WHERE status = 'pending' \
         DO NOTHING \
         RETURNING {COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(random_id("apr_"))
        .bind(&approval.agent_id)
        .bind(&approval.action)
        .bind(&approval.resource)
        .bind(timeout)
        .bind(micros(approval.created_at))
        .bind(deadline(approval.created_at, timeout))
        .bind(&approval.trace_id)
        .bind(digest_of(approval.arguments.as_ref()))
        .bind(
            approval
                .arguments
                .as_ref()
                .map(|a| canonical_json(&a.value)),
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(|err| {
            if is_foreign_key_violation(&err) {
                agent_missing()
            } else {
                db_error(err)
            }
        })?;
    let inserted = row.as_ref().map(from_row).transpose()?;
    tx.commit().await.map_err(db_error)?;
    Ok(inserted.map_or(Insert::Blocked, |record| Insert::Done(Box::new(record))))
}

/// The request's pending approval, if any (the unique index allows one).
async fn pending(
    store: &SqlStore,
    approval: &NewApproval,
) -> Result<Option<ApprovalRecord>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM approvals \
         WHERE agent_id = $1 AND action = $2 AND resource = $3 AND arguments_digest = $4 \
         AND status = 'pending'"
    );
    let row = sqlx::query(&sql)
        .bind(&approval.agent_id)
        .bind(&approval.action)
        .bind(&approval.resource)
        .bind(digest_of(approval.arguments.as_ref()))
        .fetch_optional(&store.pool)
        .await
        .map_err(db_error)?;
    row.as_ref().map(from_row).transpose()
}

pub(super) async fn get(store: &SqlStore, id: &str) -> Result<ApprovalRecord, StoreError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM approvals WHERE id = $1"))
        .bind(id)
        .fetch_optional(&store.pool)
        .await
        .map_err(db_error)?;
    one_row(row, from_row, || not_found(id))
}

pub(super) async fn latest(
    store: &SqlStore,
    agent_id: &str,
    action: &str,
    resource: &str,
    arguments: Option<&BoundArguments>,
) -> Result<Option<ApprovalRecord>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM approvals WHERE agent_id = $1 AND action = $2 AND resource = $3 \
         AND arguments_digest = $4 ORDER BY created_at DESC, id DESC LIMIT 1"
    );
    let row = sqlx::query(&sql)
        .bind(agent_id)
        .bind(action)
        .bind(resource)
        .bind(digest_of(arguments))
        .fetch_optional(&store.pool)
        .await
        .map_err(db_error)?;
    row.as_ref().map(from_row).transpose()
}

pub(super) async fn list(
    store: &SqlStore,
    status: Option<ApprovalStatus>,
    page: &PageRequest,
) -> Result<Page<ApprovalRecord>, StoreError> {
    let (at, id) = match page.cursor.as_deref() {
        Some(cursor) => {
            let (at, id) = Listing::Approvals.created_after(cursor)?;
            (Some(at), Some(id))
        }
        None => (None, None),
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM approvals WHERE ($1 IS NULL OR status = $1) \
         AND ($2 IS NULL OR created_at < $2 OR (created_at = $2 AND id < $3)) \
         ORDER BY created_at DESC, id DESC LIMIT $4"
    );
    let rows = sqlx::query(&sql)
        .bind(status.map(ApprovalStatus::as_str))
        .bind(at)
        .bind(id)
        .bind(fetch_size(page))
        .fetch_all(&store.pool)
        .await
        .map_err(db_error)?;
    let approvals = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    let (items, next_cursor) = cut(approvals, page, |last| {
        Listing::Approvals.created_cursor(micros(last.created_at), &last.id)
    });
    Ok(Page { items, next_cursor })
}

/// What [`decide`] did inside the caller's transaction.
pub(super) enum Decided {
    /// The decision is recorded.
    Recorded(Box<ApprovalRecord>),
    /// The approval's time ran out before the decision: it is now marked expired (commit that),
    /// and the decision is refused.
    Expired,
}

/// Records a decision inside the caller's write transaction.
pub(super) async fn record_verdict(
    tx: &mut AnyConnection,
    dialect: Dialect,
    id: &str,
    decision: &ApprovalDecision,
) -> Result<Decided, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM approvals WHERE id = $1{}",
        dialect.lock_row()
    );
    let current = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .as_ref()
        .map(from_row)
        .transpose()?
        .ok_or_else(|| not_found(id))?;
    if current.status != ApprovalStatus::Pending {
        return Err(StoreError::conflict(
            format!("approval `{id}`"),
            format!("it is already {}", current.status.as_str()),
        ));
    }
    if current.expires_at <= decision.decided_at {
        sqlx::query("UPDATE approvals SET status = 'expired' WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        return Ok(Decided::Expired);
    }
    let status = match decision.verdict {
        ApprovalVerdict::Approve => ApprovalStatus::Approved,
        ApprovalVerdict::Deny => ApprovalStatus::Denied,
    };
    let timeout = signed("timeoutSeconds", current.timeout_secs)?;
    let sql = format!(
        "UPDATE approvals SET status = $2, decided_at = $3, decided_by = $4, reason = $5, \
         expires_at = $6 WHERE id = $1 RETURNING {COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(id)
        .bind(status.as_str())
        .bind(micros(decision.decided_at))
        .bind(&decision.decided_by)
        .bind(&decision.reason)
        .bind(deadline(decision.decided_at, timeout))
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
    Ok(Decided::Recorded(Box::new(from_row(&row)?)))
}

/// The refusal of a decision that came after the approval expired.
pub(super) fn expired_before_decided(id: &str) -> StoreError {
    StoreError::conflict(
        format!("approval `{id}`"),
        "it expired before it was decided",
    )
}

pub(super) async fn mark_used(
    store: &SqlStore,
    id: &str,
    at: OffsetDateTime,
) -> Result<ApprovalRecord, StoreError> {
    // One conditional UPDATE: of two requests racing for the same approval only one matches.
    let sql = format!(
        "UPDATE approvals SET status = 'used', used_at = $2 \
         WHERE id = $1 AND status = 'approved' AND expires_at > $2 RETURNING {COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(id)
        .bind(micros(at))
        .fetch_optional(&store.pool)
        .await
        .map_err(db_error)?;
    if let Some(row) = row {
        return from_row(&row);
    }
    let current = get(store, id).await?;
    let reason = if current.status == ApprovalStatus::Approved {
        "its approval ran out".to_owned()
    } else {
        format!("it is {}, not approved", current.status.as_str())
    };
    Err(StoreError::conflict(format!("approval `{id}`"), reason))
}

/// Returns the ids of the approvals that expired.
pub(super) async fn expire(
    store: &SqlStore,
    now: OffsetDateTime,
) -> Result<Vec<String>, StoreError> {
    sqlx::query_scalar(
        "UPDATE approvals SET status = 'expired' \
         WHERE status IN ('pending', 'approved') AND expires_at <= $1 RETURNING id",
    )
    .bind(micros(now))
    .fetch_all(&store.pool)
    .await
    .map_err(db_error)
}
