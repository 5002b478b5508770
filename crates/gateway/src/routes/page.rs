//! Paging of the admin listings: the `?limit=&cursor=` they take and the `nextCursor` they
//! answer with.

use meshguard_store::PageRequest;
use serde::Deserialize;
use serde_json::{Map, Value};

/// `?limit=N&cursor=C`: the page size (default 100, at most 1000) and the `nextCursor` of the
/// previous page. Parsed apart from a listing's filters, so every listing reads them alike.
#[derive(Debug, Default, Deserialize)]
pub struct PageParams {
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    cursor: Option<String>,
}

impl PageParams {
    /// The store's page request; an empty `cursor` asks for the first page.
    pub fn request(&self) -> PageRequest {
        PageRequest {
            limit: self.limit.unwrap_or(0),
            cursor: self.cursor.clone().filter(|cursor| !cursor.is_empty()),
        }
    }
}

/// The answer of a listing: its rows under `key`, and `nextCursor`, null on the last page.
pub fn listing(key: &str, rows: Value, next_cursor: Option<String>) -> Value {
    let mut body = Map::new();
    body.insert(key.to_owned(), rows);
    body.insert(
        "nextCursor".to_owned(),
        next_cursor.map_or(Value::Null, Value::String),
    );
    Value::Object(body)
}
