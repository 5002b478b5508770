//! Token ids: remember on issue, look up on every request, revoke on rotation.

use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use super::{
    SqlStore, column, db_error, is_foreign_key_violation, micros, time_column, time_column_opt,
};
use crate::{NewToken, StoreError, TokenRecord};

const COLUMNS: &str = "jti, agent_id, issued_at, expires_at, revoked_at";

fn from_row(row: &AnyRow) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        jti: column(row, "jti")?,
        agent_id: column(row, "agent_id")?,
        issued_at: time_column(row, "issued_at")?,
        expires_at: time_column_opt(row, "expires_at")?,
        revoked_at: time_column_opt(row, "revoked_at")?,
    })
}

pub(super) async fn insert(
    conn: &mut AnyConnection,
    token: NewToken,
) -> Result<TokenRecord, StoreError> {
    if token.jti.is_empty() {
        return Err(StoreError::invalid("jti", "a token id cannot be empty"));
    }
    let sql =
        format!("INSERT INTO tokens ({COLUMNS}) VALUES ($1, $2, $3, $4, NULL) RETURNING {COLUMNS}");
    let row = sqlx::query(&sql)
        .bind(&token.jti)
        .bind(&token.agent_id)
        .bind(micros(token.issued_at))
        .bind(token.expires_at.map(micros))
        .fetch_one(&mut *conn)
        .await
        .map_err(|err| {
            if is_foreign_key_violation(&err) {
                StoreError::not_found(format!("agent `{}`", token.agent_id))
            } else if super::is_unique_violation(&err) {
                StoreError::conflict(format!("token `{}`", token.jti), "the token id is taken")
            } else {
                db_error(err)
            }
        })?;
    from_row(&row)
}

pub(super) async fn active(
    store: &SqlStore,
    jti: &str,
    now: OffsetDateTime,
) -> Result<Option<TokenRecord>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM tokens WHERE jti = $1 AND revoked_at IS NULL \
         AND (expires_at IS NULL OR expires_at > $2)"
    );
    let row = sqlx::query(&sql)
        .bind(jti)
        .bind(micros(now))
        .fetch_optional(&store.pool)
        .await
        .map_err(db_error)?;
    row.as_ref().map(from_row).transpose()
}

pub(super) async fn list(store: &SqlStore, agent_id: &str) -> Result<Vec<TokenRecord>, StoreError> {
    let sql =
        format!("SELECT {COLUMNS} FROM tokens WHERE agent_id = $1 ORDER BY issued_at DESC, jti");
    let rows = sqlx::query(&sql)
        .bind(agent_id)
        .fetch_all(&store.pool)
        .await
        .map_err(db_error)?;
    rows.iter().map(from_row).collect()
}

pub(super) async fn revoke_all(
    conn: &mut AnyConnection,
    agent_id: &str,
    keep_jti: Option<&str>,
    at: OffsetDateTime,
) -> Result<u64, StoreError> {
    let result = sqlx::query(
        "UPDATE tokens SET revoked_at = $3 WHERE agent_id = $1 AND revoked_at IS NULL \
         AND ($2 IS NULL OR jti <> $2)",
    )
    .bind(agent_id)
    .bind(keep_jti)
    .bind(micros(at))
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(result.rows_affected())
}
