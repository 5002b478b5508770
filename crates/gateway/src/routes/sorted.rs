//! [`SortedJson`]: a typed answer written with its object keys sorted, as the answers that used
//! to be built as `serde_json::Value` maps have always been written.

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::ApiError;

/// Answers `T` as JSON with every object's keys in sorted order, at every depth. The answers of
/// `/`, `/health`, preview, AuthZEN and most of the admin API were built as `serde_json::Value`
/// (whose maps sort their keys) before they were typed for the OpenAPI document; written through
/// a `Value` they keep the exact bytes they always had, whatever order `T` declares its fields in.
#[derive(Debug)]
pub(crate) struct SortedJson<T>(pub(crate) T);

impl<T: Serialize> IntoResponse for SortedJson<T> {
    fn into_response(self) -> Response {
        match serde_json::to_value(&self.0) {
            Ok(value) => Json(value).into_response(),
            Err(e) => ApiError::Internal(format!("answer not serialisable: {e}")).into_response(),
        }
    }
}
