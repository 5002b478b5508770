//! Agents: create, look up by id or name, update, revoke/restore, purge.
//!
//! A key is an id or a name, never both ([`AgentKey`]): a lookup searches one column only, so
//! an agent named like another agent's id (possible before names were checked for the id
//! prefix) can never be found in its place.

use std::collections::BTreeSet;

use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use super::page::{Listing, cut, fetch_size};
use super::{
    Dialect, SqlStore, column, db_error, is_unique_violation, micros, one_row, random_id,
    time_column,
};
use crate::records::agent::{canonical_trust, validate_tags};
use crate::{
    AGENT_ID_PREFIX, AgentKey, AgentPatch, AgentRecord, AgentStatus, NewAgent, Page, PageRequest,
    StoreError, validate_agent_name,
};

const COLUMNS: &str = "id, name, trust, tags, status, description, created_at, updated_at";

fn from_row(row: &AnyRow) -> Result<AgentRecord, StoreError> {
    let id: String = column(row, "id")?;
    let tags: String = column(row, "tags")?;
    let tags: BTreeSet<String> = serde_json::from_str(&tags)
        .map_err(|err| StoreError::Corrupt(format!("tags of agent `{id}`: {err}")))?;
    let status: String = column(row, "status")?;
    let status = AgentStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("agent `{id}` has status `{status}`")))?;
    Ok(AgentRecord {
        name: column(row, "name")?,
        trust: column(row, "trust")?,
        tags,
        status,
        description: column(row, "description")?,
        created_at: time_column(row, "created_at")?,
        updated_at: time_column(row, "updated_at")?,
        id,
    })
}

fn tags_json(tags: &BTreeSet<String>) -> String {
    // A set of strings always serialises; the fallback is never taken.
    serde_json::to_string(tags).unwrap_or_else(|_| "[]".to_owned())
}

fn not_found(id_or_name: &str) -> StoreError {
    StoreError::not_found(format!("agent `{id_or_name}`"))
}

/// The `WHERE` condition that finds the agent a key names, on bind parameter `$1`.
fn key_condition(id_or_name: &str) -> &'static str {
    match AgentKey::of(id_or_name) {
        AgentKey::Id(_) => "id = $1",
        AgentKey::Name(_) => "name = $1",
    }
}

pub(super) async fn create(
    conn: &mut AnyConnection,
    agent: NewAgent,
) -> Result<AgentRecord, StoreError> {
    validate_agent_name("name", &agent.name)?;
    let trust = canonical_trust(&agent.trust)?;
    validate_tags(&agent.tags)?;
    let now = micros(OffsetDateTime::now_utc());
    let sql = format!(
        "INSERT INTO agents ({COLUMNS}) VALUES ($1, $2, $3, $4, 'active', $5, $6, $6) \
         RETURNING {COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(random_id(AGENT_ID_PREFIX))
        .bind(&agent.name)
        .bind(trust)
        .bind(tags_json(&agent.tags))
        .bind(&agent.description)
        .bind(now)
        .fetch_one(&mut *conn)
        .await
        .map_err(|err| {
            if is_unique_violation(&err) {
                StoreError::conflict(format!("agent `{}`", agent.name), "the name is taken")
            } else {
                db_error(err)
            }
        })?;
    from_row(&row)
}

pub(super) async fn get(store: &SqlStore, id_or_name: &str) -> Result<AgentRecord, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM agents WHERE {}",
        key_condition(id_or_name)
    );
    let row = sqlx::query(&sql)
        .bind(id_or_name)
        .fetch_optional(&store.pool)
        .await
        .map_err(db_error)?;
    one_row(row, from_row, || not_found(id_or_name))
}

/// Looks an agent up inside the caller's write transaction, holding its row until commit.
pub(super) async fn get_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    id_or_name: &str,
) -> Result<AgentRecord, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM agents WHERE {}{}",
        key_condition(id_or_name),
        dialect.lock_row()
    );
    let row = sqlx::query(&sql)
        .bind(id_or_name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    one_row(row, from_row, || not_found(id_or_name))
}

pub(super) async fn list(
    store: &SqlStore,
    page: &PageRequest,
) -> Result<Page<AgentRecord>, StoreError> {
    let after = page
        .cursor
        .as_deref()
        .map(|cursor| Listing::Agents.name_after(cursor))
        .transpose()?;
    let name = store.dialect.bytewise("name");
    let sql = format!(
        "SELECT {COLUMNS} FROM agents WHERE ($1 IS NULL OR {name} > $1) ORDER BY {name} LIMIT $2"
    );
    let rows = sqlx::query(&sql)
        .bind(after)
        .bind(fetch_size(page))
        .fetch_all(&store.pool)
        .await
        .map_err(db_error)?;
    let agents = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    let (items, next_cursor) = cut(agents, page, |last| Listing::Agents.name_cursor(&last.name));
    Ok(Page { items, next_cursor })
}

pub(super) async fn update(
    conn: &mut AnyConnection,
    id_or_name: &str,
    patch: AgentPatch,
) -> Result<AgentRecord, StoreError> {
    let trust = patch.trust.as_deref().map(canonical_trust).transpose()?;
    if let Some(tags) = &patch.tags {
        validate_tags(tags)?;
    }
    // Unset fields keep their value through COALESCE; the description needs a flag because
    // clearing it (NULL) is a legitimate change.
    let (set_description, description) = match patch.description {
        Some(description) => (1_i64, description),
        None => (0_i64, None),
    };
    let sql = format!(
        "UPDATE agents SET trust = COALESCE($2, trust), tags = COALESCE($3, tags), \
         description = CASE WHEN $4 = 1 THEN $5 ELSE description END, updated_at = $6 \
         WHERE {} RETURNING {COLUMNS}",
        key_condition(id_or_name)
    );
    let row = sqlx::query(&sql)
        .bind(id_or_name)
        .bind(trust)
        .bind(patch.tags.as_ref().map(tags_json))
        .bind(set_description)
        .bind(description)
        .bind(micros(OffsetDateTime::now_utc()))
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    one_row(row, from_row, || not_found(id_or_name))
}

pub(super) async fn set_status(
    conn: &mut AnyConnection,
    id_or_name: &str,
    status: AgentStatus,
) -> Result<AgentRecord, StoreError> {
    let sql = format!(
        "UPDATE agents SET status = $2, updated_at = $3 WHERE {} RETURNING {COLUMNS}",
        key_condition(id_or_name)
    );
    let row = sqlx::query(&sql)
        .bind(id_or_name)
        .bind(status.as_str())
        .bind(micros(OffsetDateTime::now_utc()))
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    one_row(row, from_row, || not_found(id_or_name))
}

pub(super) async fn purge(
    conn: &mut AnyConnection,
    id_or_name: &str,
) -> Result<AgentRecord, StoreError> {
    // Tokens and approvals go with the agent (ON DELETE CASCADE); audit events keep the id and
    // name they were written with.
    let sql = format!(
        "DELETE FROM agents WHERE {} RETURNING {COLUMNS}",
        key_condition(id_or_name)
    );
    let row = sqlx::query(&sql)
        .bind(id_or_name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    one_row(row, from_row, || not_found(id_or_name))
}
