//! Our own body extractors, so bad input is answered in MeshGuard's error shape
//! (`{"error": "bad_request", "message": "<field>: …"}`) and an oversized body is a 413 before
//! anything else runs.
//!
//! A JSON body is checked for its shape before it is read into its type: it may nest at most
//! [`MAX_JSON_DEPTH`] levels, and no object in it, at any depth, may repeat a key (a repeated key
//! would let two readers of the same body see different values).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use axum::body::{Body, Bytes};
use axum::extract::{FromRef, FromRequest, Request};
use serde::de::{DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// How deep a JSON body may nest, counting the body itself as level 1 (so a check's `context`
/// object is level 2). Deeper input is refused before it is stored: readers of the audit trail
/// (the CLI, `jq`, other JSON libraries) stop at limits of their own.
pub const MAX_JSON_DEPTH: usize = 32;

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
        if let Some(timeout) = find_source::<crate::connections::BodyTimeout>(&e) {
            return ApiError::RequestTimeout(timeout.to_string());
        }
        ApiError::BadRequest(format!("body: cannot be read: {e}"))
    })
}

fn find_source<'a, E: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut source = Some(error);
    while let Some(err) = source {
        if let Some(found) = err.downcast_ref::<E>() {
            return Some(found);
        }
        source = err.source();
    }
    None
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
    check_shape(bytes)?;
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

/// Refuses a body nested deeper than [`MAX_JSON_DEPTH`] or with a repeated key, naming where.
/// Syntax errors are left to the typed parse, which reports them with the failing field.
fn check_shape(bytes: &[u8]) -> Result<(), ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut walk = Walk::default();
    let walked = Shape {
        depth: 0,
        walk: &mut walk,
    }
    .deserialize(&mut de);
    match (walked, walk.refusal) {
        (Err(_), Some(refusal)) => Err(ApiError::BadRequest(refusal)),
        _ => Ok(()),
    }
}

/// Where the walk is, and the refusal it met (other errors are the typed parse's to report).
/// Keys are borrowed from the body unless they hold escapes: the walk runs on every request.
#[derive(Default)]
struct Walk<'de> {
    path: Vec<Step<'de>>,
    refusal: Option<String>,
}

impl Walk<'_> {
    fn refuse<E: serde::de::Error>(&mut self, message: String) -> E {
        let error = E::custom(&message);
        self.refusal = Some(message);
        error
    }
}

/// One step of a path into a JSON body, shown as `context.a[2]`.
enum Step<'de> {
    Key(Cow<'de, str>),
    Index(usize),
}

/// An object key, borrowed from the body when it holds no escape.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
        }
        de.deserialize_str(KeyVisitor)
    }
}

/// The path as `a.b[0].c`, shortened for the message (keys are user input).
fn show_path(path: &[Step<'_>]) -> String {
    const MAX_SHOWN: usize = 120;
    let mut text = String::new();
    for step in path {
        match step {
            Step::Key(key) => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(key);
            }
            Step::Index(i) => text.push_str(&format!("[{i}]")),
        }
    }
    if text.chars().count() > MAX_SHOWN {
        text = text.chars().take(MAX_SHOWN).collect::<String>() + "…";
    }
    if text.is_empty() {
        "body".to_owned()
    } else {
        text
    }
}

/// Walks a JSON value without building it, tracking depth, path and the keys of each object.
struct Shape<'w, 'de> {
    depth: usize,
    walk: &'w mut Walk<'de>,
}

impl Shape<'_, '_> {
    fn enter<E: serde::de::Error>(&mut self) -> Result<usize, E> {
        let depth = self.depth + 1;
        if depth > MAX_JSON_DEPTH {
            let message = format!(
                "{}: nests deeper than {MAX_JSON_DEPTH} levels",
                show_path(&self.walk.path)
            );
            return Err(self.walk.refuse(message));
        }
        Ok(depth)
    }
}

impl<'de> DeserializeSeed<'de> for Shape<'_, 'de> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Shape<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.enter()?;
        let mut index = 0;
        loop {
            self.walk.path.push(Step::Index(index));
            let next = seq.next_element_seed(Shape {
                depth,
                walk: &mut *self.walk,
            })?;
            self.walk.path.pop();
            if next.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let depth = self.enter()?;
        let mut seen: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let repeated = seen.contains(&key);
            self.walk.path.push(Step::Key(key));
            if repeated {
                let message = format!("{}: duplicate key", show_path(&self.walk.path));
                return Err(self.walk.refuse(message));
            }
            map.next_value_seed(Shape {
                depth,
                walk: &mut *self.walk,
            })?;
            if let Some(Step::Key(key)) = self.walk.path.pop() {
                seen.insert(key);
            }
        }
        Ok(())
    }
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

    #[test]
    fn repeated_keys_are_refused_at_any_depth() {
        assert_eq!(
            message(r#"{"action": "a", "action": "b"}"#),
            "action: duplicate key"
        );
        assert_eq!(
            message(r#"{"action": "a", "context": {"sandbox": false, "sandbox": true}}"#),
            "context.sandbox: duplicate key"
        );
        assert_eq!(
            message(r#"{"action": "a", "context": {"l": [{"k": 1}, {"k": 1, "k": 2}]}}"#),
            "context.l[1].k: duplicate key"
        );
        // Escapes are decoded before keys are compared.
        assert_eq!(
            message(r#"{"action": "a", "context": {"x": 1, "\u0078": 2}}"#),
            "context.x: duplicate key"
        );
        assert!(
            parse_json::<Body>(br#"{"action": "a", "context": {"a": {"k": 1}, "b": {"k": 1}}}"#)
                .is_ok()
        );
    }

    #[test]
    fn nesting_is_capped() {
        let nested = |levels: usize| {
            format!(
                r#"{{"action": "a", "context": {}1{}}}"#,
                r#"{"a":"#.repeat(levels),
                "}".repeat(levels)
            )
        };
        // The body is level 1, so the context may hold MAX_JSON_DEPTH - 1 levels.
        assert!(parse_json::<Body>(nested(MAX_JSON_DEPTH - 1).as_bytes()).is_ok());
        let refused = message(&nested(MAX_JSON_DEPTH));
        assert!(
            refused.starts_with("context.a.a.")
                && refused.ends_with(": nests deeper than 32 levels"),
            "{refused}"
        );
        assert!(message(&nested(200)).ends_with(": nests deeper than 32 levels"));
        // Other errors keep the typed parse's message, which names the field.
        assert_eq!(
            message(r#"{"action": "a", "context": {"n": 1e400}}"#),
            "context.n: number out of range"
        );
        assert!(
            message(&format!(
                r#"{{"action": "a", "context": {{"l": {}{}}}}}"#,
                "[".repeat(40),
                "]".repeat(40)
            ))
            .starts_with("context.l[0][0]")
        );
    }
}
