//! Keyset paging for every listing: a bounded page size and an opaque cursor.

/// Page size when the caller gives none (a limit of 0).
pub const DEFAULT_PAGE_SIZE: u32 = 100;

/// The largest page a listing returns; a larger limit is read as this.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Which page of a listing to read.
///
/// Listings page by key (a name, a revision number, a creation time and id), never by offset: a
/// row inserted or deleted between two pages neither repeats a row nor skips one that was there
/// before, and a row inserted after the cursor's position shows up on a later page.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PageRequest {
    /// Page size; 0 means [`DEFAULT_PAGE_SIZE`], larger than [`MAX_PAGE_SIZE`] is read as that.
    pub limit: u32,
    /// The `next_cursor` of the previous page of the same listing; `None` for the first page.
    pub cursor: Option<String>,
}

impl PageRequest {
    /// The first page of `limit` rows.
    pub fn first(limit: u32) -> Self {
        Self {
            limit,
            cursor: None,
        }
    }

    /// The page size this request gets, within the bounds.
    pub fn size(&self) -> u32 {
        match self.limit {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        }
    }
}

/// One page of a listing and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The rows, in the listing's order.
    pub items: Vec<T>,
    /// Opaque; `None` when this was the last page.
    pub next_cursor: Option<String>,
}
