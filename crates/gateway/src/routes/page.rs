//! Paging of the admin listings: the `?limit=&cursor=` they take (each listing's answer type
//! carries the `nextCursor`).

use meshguard_store::PageRequest;
use serde::Deserialize;
use utoipa::IntoParams;

/// `?limit=N&cursor=C`: the page size (default 100, at most 1000) and the `nextCursor` of the
/// previous page. Parsed apart from a listing's filters, so every listing reads them alike.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Rows per page: default 100, at most 1000.
    #[serde(default)]
    limit: Option<u32>,
    /// The `nextCursor` of the previous page (with the same filters).
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
