//! Our own body extractors, so bad input is answered in MeshGuard's error shape
//! (`{"error": "bad_request", "message": "<field>: …"}`) and an oversized body is a 413 before
//! anything else runs.

use axum::body::{Body, Bytes};
use axum::extract::{FromRef, FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The largest body a route accepts; part of the application state.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A JSON body deserialized into `T`, with the failing field named in the error.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

/// A raw body read up to the limit (YAML policies, for instance).
#[derive(Debug)]
pub struct LimitedBody(pub Bytes);

/// Reads the body, refusing anything over `limit` bytes without reading past it.
pub async fn read_limited(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        // `to_bytes` reports an exceeded limit through the error's source chain.
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if err.is::<http_body_util::LengthLimitError>() {
                return ApiError::PayloadTooLarge { limit };
            }
            source = err.source();
        }
        ApiError::BadRequest(format!("body: cannot be read: {e}"))
    })
}

fn declared_length(req: &Request) -> Option<usize> {
    req.headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

impl<S> FromRequest<S> for LimitedBody
where
    S: Send + Sync,
    BodyLimit: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let BodyLimit(limit) = BodyLimit::from_ref(state);
        if declared_length(&req).is_some_and(|n| n > limit) {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        read_limited(req.into_body(), limit).await.map(LimitedBody)
    }
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    BodyLimit: FromRef<S>,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let LimitedBody(bytes) = LimitedBody::from_request(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Query parameters deserialized into `T`; a bad parameter is a 400 in our error shape.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|e| {
                let text = e.body_text();
                let detail = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                ApiError::BadRequest(format!("query: {detail}"))
            })
    }
}

/// Deserializes `bytes`, naming the field that failed: `action: invalid type: integer `5`,
/// expected a string`. An empty body reads as `{}` so that all-optional bodies may be omitted.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = strip_position(&inner.to_string());
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            return ApiError::BadRequest(format!("{}: required", join(&path, field)));
        }
        if path == "." {
            if inner.is_syntax() || inner.is_eof() {
                return ApiError::BadRequest(format!("body: not valid JSON: {message}"));
            }
            // serde names the Rust type here ("expected struct …"); say what the user must send.
            return ApiError::BadRequest("body: expected a JSON object".to_owned());
        }
        ApiError::BadRequest(format!("{path}: {message}"))
    })?;
    de.end()
        .map_err(|e| ApiError::BadRequest(format!("body: not valid JSON: {e}")))?;
    Ok(value)
}

fn join(path: &str, field: &str) -> String {
    if path == "." {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// serde_json appends "at line 1 column 12"; the field path already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at)
            if message
                .get(at..)
                .is_some_and(|tail| tail.contains(" column ")) =>
        {
            message.get(..at).unwrap_or(message).to_owned()
        }
        _ => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[expect(dead_code, reason = "the fields exist to be deserialized, not read")]
    struct Body {
        action: String,
        #[serde(default)]
        context: serde_json::Map<String, serde_json::Value>,
    }

    fn message(text: &str) -> String {
        match parse_json::<Body>(text.as_bytes()) {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            message(r#"{"action": 5}"#),
            "action: invalid type: integer `5`, expected a string"
        );
        assert_eq!(message(r#"{"resource": "x"}"#), "action: required");
        assert_eq!(
            message(r#"{"action": "a", "context": []}"#),
            "context: invalid type: sequence, expected a map"
        );
        assert!(message("not json").starts_with("body: not valid JSON: "));
        assert!(message(r#"{"action": "a"} trailing"#).starts_with("body: not valid JSON"));
        assert_eq!(message("5"), "body: expected a JSON object");
    }
}
