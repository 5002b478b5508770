//! Policies: upsert by name with revisions, list, get, delete.

use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use super::page::{Listing, cut, fetch_size};
use super::{Dialect, SqlStore, column, db_error, micros, one_row, time_column, unsigned};
use crate::{
    NewPolicy, Page, PageRequest, PolicyOrigin, PolicyRevision, PolicyUpsert, StoreError,
    StoredPolicy, validate_name,
};

const COLUMNS: &str = "name, revision, version, origin, source, created_at, updated_at";
const REVISION_COLUMNS: &str = "name, revision, version, origin, source, created_at";

fn from_row(row: &AnyRow) -> Result<StoredPolicy, StoreError> {
    Ok(StoredPolicy {
        name: column(row, "name")?,
        revision: unsigned(row, "revision")?,
        version: column(row, "version")?,
        origin: PolicyOrigin::from_stored(column(row, "origin")?),
        source: column(row, "source")?,
        created_at: time_column(row, "created_at")?,
        updated_at: time_column(row, "updated_at")?,
    })
}

fn revision_from_row(row: &AnyRow) -> Result<PolicyRevision, StoreError> {
    Ok(PolicyRevision {
        name: column(row, "name")?,
        revision: unsigned(row, "revision")?,
        version: column(row, "version")?,
        origin: PolicyOrigin::from_stored(column(row, "origin")?),
        source: column(row, "source")?,
        created_at: time_column(row, "created_at")?,
    })
}

fn not_found(name: &str) -> StoreError {
    StoreError::not_found(format!("policy `{name}`"))
}

/// Stores a policy inside the caller's write transaction.
pub(super) async fn upsert(
    tx: &mut AnyConnection,
    dialect: Dialect,
    policy: NewPolicy,
) -> Result<PolicyUpsert, StoreError> {
    validate_name("name", &policy.name)?;
    let now = micros(OffsetDateTime::now_utc());
    let current_sql = format!(
        "SELECT {COLUMNS} FROM policies WHERE name = $1{}",
        dialect.lock_row()
    );
    let current = sqlx::query(&current_sql)
        .bind(&policy.name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .as_ref()
        .map(from_row)
        .transpose()?;

    if let Some(current) = &current
        && current.source == policy.source
    {
        // Same body: no new revision. The origin may still move (a file taking over a
        // policy first applied through the API, or the reverse).
        let sql = format!(
            "UPDATE policies SET origin = $2, updated_at = CASE WHEN origin = $2 \
             THEN updated_at ELSE $3 END WHERE name = $1 RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(&policy.name)
            .bind(policy.origin.as_str())
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        let stored = from_row(&row)?;
        return Ok(PolicyUpsert {
            revision: stored.revision,
            policy: stored,
            changed: false,
        });
    }

    // Numbering continues over deletions: revisions outlive the policy.
    let last: Option<i64> =
        sqlx::query_scalar("SELECT MAX(revision) FROM policy_revisions WHERE name = $1")
            .bind(&policy.name)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
    let revision = last.unwrap_or(0).saturating_add(1);
    sqlx::query(&format!(
        "INSERT INTO policy_revisions ({REVISION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
    ))
    .bind(&policy.name)
    .bind(revision)
    .bind(&policy.version)
    .bind(policy.origin.as_str())
    .bind(&policy.source)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(db_error)?;
    let sql = format!(
        "INSERT INTO policies ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $6) \
         ON CONFLICT (name) DO UPDATE SET revision = excluded.revision, \
         version = excluded.version, origin = excluded.origin, source = excluded.source, \
         updated_at = excluded.updated_at \
         RETURNING {COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(&policy.name)
        .bind(revision)
        .bind(&policy.version)
        .bind(policy.origin.as_str())
        .bind(&policy.source)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
    let stored = from_row(&row)?;
    Ok(PolicyUpsert {
        revision: stored.revision,
        policy: stored,
        changed: true,
    })
}

pub(super) async fn list(
    store: &SqlStore,
    page: &PageRequest,
) -> Result<Page<StoredPolicy>, StoreError> {
    let after = page
        .cursor
        .as_deref()
        .map(|cursor| Listing::Policies.name_after(cursor))
        .transpose()?;
    let name = store.dialect.bytewise("name");
    let sql = format!(
        "SELECT {COLUMNS} FROM policies WHERE ($1 IS NULL OR {name} > $1) ORDER BY {name} \
         LIMIT $2"
    );
    let rows = sqlx::query(&sql)
        .bind(after)
        .bind(fetch_size(page))
        .fetch_all(&store.pool)
        .await
        .map_err(db_error)?;
    let policies = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    let (items, next_cursor) = cut(policies, page, |last| {
        Listing::Policies.name_cursor(&last.name)
    });
    Ok(Page { items, next_cursor })
}

pub(super) async fn get(store: &SqlStore, name: &str) -> Result<StoredPolicy, StoreError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM policies WHERE name = $1"))
        .bind(name)
        .fetch_optional(&store.pool)
        .await
        .map_err(db_error)?;
    one_row(row, from_row, || not_found(name))
}

pub(super) async fn delete(
    conn: &mut AnyConnection,
    name: &str,
) -> Result<StoredPolicy, StoreError> {
    let row = sqlx::query(&format!(
        "DELETE FROM policies WHERE name = $1 RETURNING {COLUMNS}"
    ))
    .bind(name)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;
    one_row(row, from_row, || not_found(name))
}

pub(super) async fn revisions(
    store: &SqlStore,
    name: &str,
    page: &PageRequest,
) -> Result<Page<PolicyRevision>, StoreError> {
    let after = page
        .cursor
        .as_deref()
        .map(|cursor| Listing::Revisions.number_after(cursor))
        .transpose()?;
    let rows = sqlx::query(&format!(
        "SELECT {REVISION_COLUMNS} FROM policy_revisions WHERE name = $1 \
         AND revision > $2 ORDER BY revision LIMIT $3"
    ))
    .bind(name)
    .bind(after.unwrap_or(0))
    .bind(fetch_size(page))
    .fetch_all(&store.pool)
    .await
    .map_err(db_error)?;
    // Revisions are never deleted, so only a first page can show that there are none.
    if rows.is_empty() && after.is_none() {
        return Err(not_found(name));
    }
    let revisions = rows
        .iter()
        .map(revision_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let (items, next_cursor) = cut(revisions, page, |last| {
        Listing::Revisions.number_cursor(last.revision)
    });
    Ok(Page { items, next_cursor })
}
