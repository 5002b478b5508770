//! The opaque cursors of the keyset listings.
//!
//! A cursor is a one-letter listing tag followed by the key of the last row of a page, hex
//! encoded so that it travels in a URL as is. The tag makes a cursor of one listing useless to
//! another: it is refused rather than read as a key it never was.

use crate::{PageRequest, StoreError};

/// Which listing a cursor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Listing {
    /// Agents, by name.
    Agents,
    /// Policies in force, by name.
    Policies,
    /// A policy's revisions, by number.
    Revisions,
    /// Approvals, newest first by creation time and id.
    Approvals,
}

impl Listing {
    fn tag(self) -> char {
        match self {
            Self::Agents => 'g',
            Self::Policies => 'p',
            Self::Revisions => 'r',
            Self::Approvals => 'a',
        }
    }

    /// The key part of `cursor`, or an `Invalid` naming the `cursor` parameter.
    fn payload(self, cursor: &str) -> Result<&str, StoreError> {
        cursor
            .strip_prefix(self.tag())
            .ok_or_else(|| invalid_cursor(cursor))
    }

    /// The cursor after a row with this name.
    pub(super) fn name_cursor(self, name: &str) -> String {
        format!("{}{}", self.tag(), hex::encode(name))
    }

    /// The name of a cursor made by [`Listing::name_cursor`].
    pub(super) fn name_after(self, cursor: &str) -> Result<String, StoreError> {
        hex::decode(self.payload(cursor)?)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| invalid_cursor(cursor))
    }

    /// The cursor after a row with this number.
    pub(super) fn number_cursor(self, number: u64) -> String {
        format!("{}{number:x}", self.tag())
    }

    /// The number of a cursor made by [`Listing::number_cursor`].
    pub(super) fn number_after(self, cursor: &str) -> Result<i64, StoreError> {
        i64::from_str_radix(self.payload(cursor)?, 16)
            .ok()
            .filter(|number| *number >= 0)
            .ok_or_else(|| invalid_cursor(cursor))
    }

    /// The cursor after a row created at `at` (microseconds) with this id.
    pub(super) fn created_cursor(self, at: i64, id: &str) -> String {
        format!("{}{at:x}.{}", self.tag(), hex::encode(id))
    }

    /// The creation time and id of a cursor made by [`Listing::created_cursor`].
    pub(super) fn created_after(self, cursor: &str) -> Result<(i64, String), StoreError> {
        let (at, id) = self
            .payload(cursor)?
            .split_once('.')
            .ok_or_else(|| invalid_cursor(cursor))?;
        let at = i64::from_str_radix(at, 16)
            .ok()
            .filter(|at| *at >= 0)
            .ok_or_else(|| invalid_cursor(cursor))?;
        let id = hex::decode(id)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| invalid_cursor(cursor))?;
        Ok((at, id))
    }
}

/// The error of a cursor no listing made (or made by another listing).
pub(crate) fn invalid_cursor(cursor: &str) -> StoreError {
    StoreError::invalid(
        "cursor",
        format!("`{cursor}` is not a cursor returned by this listing"),
    )
}

/// How many rows to fetch for `page`: one more than its size, to learn whether more exist.
pub(super) fn fetch_size(page: &PageRequest) -> i64 {
    i64::from(page.size()) + 1
}

/// Cuts the rows fetched for `page` to its size and names the next cursor, made from the
/// page's last row by `cursor_of`; `None` when nothing was cut.
pub(super) fn cut<T>(
    mut rows: Vec<T>,
    page: &PageRequest,
    cursor_of: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let size = page.size() as usize;
    if rows.len() <= size {
        return (rows, None);
    }
    rows.truncate(size);
    let next = rows.last().map(cursor_of);
    (rows, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_other_listings() {
        let name = Listing::Agents.name_cursor("support-bot é");
        assert_eq!(Listing::Agents.name_after(&name).unwrap(), "support-bot é");
        assert!(Listing::Policies.name_after(&name).is_err());

        let number = Listing::Revisions.number_cursor(41);
        assert_eq!(Listing::Revisions.number_after(&number).unwrap(), 41);
        assert!(Listing::Revisions.number_after("r-1").is_err());

        let created = Listing::Approvals.created_cursor(1_700_000_000_000_000, "apr_00ff");
        assert_eq!(
            Listing::Approvals.created_after(&created).unwrap(),
            (1_700_000_000_000_000, "apr_00ff".to_owned())
        );
        for bad in ["", "a", "a12", "a12.zz", "g12.00", "azz.00"] {
            assert!(Listing::Approvals.created_after(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pages_are_cut_to_size_with_a_cursor_only_when_more_exist() {
        let page = PageRequest::first(2);
        assert_eq!(cut(vec![1, 2], &page, i32::to_string), (vec![1, 2], None));
        assert_eq!(
            cut(vec![1, 2, 3], &page, i32::to_string),
            (vec![1, 2], Some("2".to_owned()))
        );
    }
}
