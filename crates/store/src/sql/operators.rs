//! Operators: create, look up by name, list, delete.

use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use super::{SqlStore, column, db_error, is_unique_violation, micros, one_row, time_column};
use crate::{NewOperator, OperatorRecord, StoreError};

const COLUMNS: &str = "name, role, password_hash, created_at";

fn from_row(row: &AnyRow) -> Result<OperatorRecord, StoreError> {
    Ok(OperatorRecord {
        name: column(row, "name")?,
        role: column(row, "role")?,
        password_hash: column(row, "password_hash")?,
        created_at: time_column(row, "created_at")?,
    })
}

fn not_found(name: &str) -> StoreError {
    StoreError::not_found(format!("operator `{name}`"))
}

pub(super) async fn create(
    conn: &mut AnyConnection,
    operator: NewOperator,
) -> Result<OperatorRecord, StoreError> {
    operator.validate()?;
    let sql =
        format!("INSERT INTO operators ({COLUMNS}) VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}");
    let row = sqlx::query(&sql)
        .bind(&operator.name)
        .bind(&operator.role)
        .bind(&operator.password_hash)
        .bind(micros(OffsetDateTime::now_utc()))
        .fetch_one(&mut *conn)
        .await
        .map_err(|err| {
            if is_unique_violation(&err) {
                StoreError::conflict(format!("operator `{}`", operator.name), "the name is taken")
            } else {
                db_error(err)
            }
        })?;
    from_row(&row)
}

pub(super) async fn get(store: &SqlStore, name: &str) -> Result<OperatorRecord, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM operators WHERE name = $1");
    let row = sqlx::query(&sql)
        .bind(name)
        .fetch_optional(&store.pool)
        .await
        .map_err(db_error)?;
    one_row(row, from_row, || not_found(name))
}

pub(super) async fn list(store: &SqlStore) -> Result<Vec<OperatorRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM operators ORDER BY name");
    let rows = sqlx::query(&sql)
        .fetch_all(&store.pool)
        .await
        .map_err(db_error)?;
    rows.iter().map(from_row).collect()
}

pub(super) async fn delete(
    conn: &mut AnyConnection,
    name: &str,
) -> Result<OperatorRecord, StoreError> {
    let sql = format!("DELETE FROM operators WHERE name = $1 RETURNING {COLUMNS}");
    let row = sqlx::query(&sql)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    one_row(row, from_row, || not_found(name))
}
