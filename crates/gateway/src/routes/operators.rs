//! `/admin/operators`: the named operators of the web console (`meshguard operator create NAME
//! --role admin|approver|viewer`). Passwords are hashed with argon2id (OWASP's parameters) before
//! they reach the store; no answer, log or audit event ever holds a password or its hash.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use meshguard_store::{AdminMutation, AdminOutcome, NewOperator, OperatorRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::admin_event::{AdminChange, ChangedBy, apply, unexpected};
use super::sorted::SortedJson;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;
use crate::openapi::BodyRefusals;
use crate::state::AppState;

/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// argon2id with OWASP's first recommended parameters (19 MiB, 2 passes, 1 lane).
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The PHC string of `password`, on a blocking thread (it takes tens of milliseconds).
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        hasher()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| ApiError::Internal(format!("password hashing failed: {e}")))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
}

/// Whether `password` is the operator's, on a blocking thread.
pub async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                hasher()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// `POST /admin/operators`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// The sign-in name (agent-name syntax).
    name: String,
    /// `admin`, `approver` or `viewer`.
    role: String,
    /// At least 12 characters; kept only as an argon2id hash.
    password: String,
}

/// The console's operators.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperatorList {
    /// Every operator, by name (never a password).
    operators: Vec<OperatorRecord>,
}

fn change(action: &str, operator: &OperatorRecord, verb: &str) -> AdminChange {
    let mut context = Map::new();
    context.insert("operator".into(), Value::String(operator.name.clone()));
    context.insert("role".into(), Value::String(operator.role.clone()));
    AdminChange {
        action: action.to_owned(),
        agent: None,
        resource: operator.name.clone(),
        reason: format!(
            "console operator `{}` ({}) {verb}",
            operator.name, operator.role
        ),
        context,
        by: ChangedBy::Operator,
    }
}

/// `POST /admin/operators {"name", "role", "password"}` → 201 the operator (never the password).
#[utoipa::path(
    post,
    path = "/operators",
    operation_id = "create_operator",
    summary = "Create a console operator",
    request_body = CreateBody,
    responses(
        (status = 201, body = OperatorRecord, description = "The operator (never the password)."),
        (status = 409, body = ErrorBody, description = "`conflict`: the name is taken."),
        BodyRefusals,
    )
)]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<OperatorRecord>), ApiError> {
    if body.password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ApiError::BadRequest(format!(
            "password: at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    let operator = NewOperator {
        name: body.name,
        role: body.role,
        password_hash: String::new(),
    };
    // Checked before the (slow) hash, so a bad name or role answers at once.
    NewOperator {
        password_hash: "x".into(),
        ..operator.clone()
    }
    .validate()?;
    let operator = NewOperator {
        password_hash: hash_password(body.password).await?,
        ..operator
    };
    let outcome = apply(
        &state,
        &headers,
        AdminMutation::CreateOperator(operator),
        |outcome| match outcome {
            AdminOutcome::Operator(created) => Some(change("operator.create", created, "created")),
            _ => None,
        },
    )
    .await?;
    let AdminOutcome::Operator(created) = outcome else {
        return Err(unexpected(&outcome));
    };
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /admin/operators` → `{"operators": [{"name", "role", "createdAt"}]}`.
#[utoipa::path(
    get,
    path = "/operators",
    operation_id = "list_operators",
    summary = "List console operators",
    responses((status = 200, body = OperatorList, description = "Every operator."))
)]
pub async fn list(State(state): State<AppState>) -> Result<SortedJson<OperatorList>, ApiError> {
    let operators = state.store.list_operators().await?;
    Ok(SortedJson(OperatorList { operators }))
}

/// `DELETE /admin/operators/{name}`: the operator can no longer sign in (open sessions end at
/// their next request).
#[utoipa::path(
    delete,
    path = "/operators/{name}",
    operation_id = "delete_operator",
    summary = "Delete a console operator",
    params(("name" = String, Path, description = "The operator's name.")),
    responses(
        (status = 200, body = OperatorRecord, description = "The operator as it was."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such operator."),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<OperatorRecord>, ApiError> {
    let outcome = apply(
        &state,
        &headers,
        AdminMutation::DeleteOperator { name: name.clone() },
        |outcome| match outcome {
            AdminOutcome::Operator(deleted) => Some(change("operator.delete", deleted, "deleted")),
            _ => None,
        },
    )
    .await?;
    let AdminOutcome::Operator(deleted) = outcome else {
        return Err(unexpected(&outcome));
    };
    state.console.close_operator(&name);
    Ok(Json(deleted))
}
