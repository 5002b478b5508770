//! Bulk reads of one chain's events straight from the SQLite file, for the walks that read every
//! event (full verification). sqlx's SQLite driver hands each row from its worker thread to the
//! caller, copying every value on the way: under 50,000 rows/s on the 2-core reference machine,
//! which bound `verify --full` (docs/benchmarks.md, "The trail at scale"). rusqlite reads the rows
//! in place on the calling (blocking) thread, and each page is read on a thread of its own.

use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use super::verify::Page;
use super::{COLUMNS, EventColumns, from_columns};
use crate::StoreError;

/// How long a read waits on a writer's lock, as the pooled connections do.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn unavailable(err: &rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("reading the audit trail failed: {err}"))
}

impl EventColumns for rusqlite::Row<'_> {
    fn text(&self, index: usize, name: &'static str) -> Result<Option<&str>, StoreError> {
        match self.get_ref(index).map_err(|err| unavailable(&err))? {
            ValueRef::Null => Ok(None),
            ValueRef::Text(bytes) => std::str::from_utf8(bytes).map(Some).map_err(|err| {
                StoreError::Corrupt(format!("column `{name}` is not valid UTF-8: {err}"))
            }),
            other => Err(StoreError::Corrupt(format!(
                "column `{name}` holds {:?} where text is expected",
                other.data_type()
            ))),
        }
    }

    fn integer(&self, index: usize, name: &'static str) -> Result<Option<i64>, StoreError> {
        match self.get_ref(index).map_err(|err| unavailable(&err))? {
            ValueRef::Null => Ok(None),
            ValueRef::Integer(value) => Ok(Some(value)),
            other => Err(StoreError::Corrupt(format!(
                "column `{name}` holds {:?} where an integer is expected",
                other.data_type()
            ))),
        }
    }
}

/// The events of `gateway`'s chain with `after < seq <= through`, in order, each hashed again;
/// a row that does not decode ends the page there. Blocking: run it on a blocking thread.
pub(crate) fn read_page(
    file: &Path,
    gateway: &str,
    after: i64,
    through: i64,
) -> Result<Page, StoreError> {
    // Opened for writing but asked never to write: a read-only connection cannot always attach
    // to a database in WAL mode (it needs the shared-memory file), and this one only reads.
    let connection = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|err| unavailable(&err))?;
    connection
        .busy_timeout(BUSY_TIMEOUT)
        .and_then(|()| connection.pragma_update(None, "query_only", true))
        .map_err(|err| unavailable(&err))?;
    let mut statement = connection
        .prepare(&format!(
            "SELECT {COLUMNS} FROM audit_events WHERE gateway = ?1 AND seq > ?2 AND seq <= ?3 \
             ORDER BY seq"
        ))
        .map_err(|err| unavailable(&err))?;
    let mut rows = statement
        .query((gateway, after, through))
        .map_err(|err| unavailable(&err))?;
    let mut page = Page::default();
    while let Some(row) = rows.next().map_err(|err| unavailable(&err))? {
        if !page.push(from_columns(row)) {
            break;
        }
    }
    Ok(page)
}
