//! Reads of audit events straight from the SQLite file, for the walks that read every event
//! (full verification, listing and export). sqlx's SQLite driver hands each row from its worker
//! thread to the caller, copying every value on the way: under 50,000 rows/s on the 2-core
//! reference machine, which bound `verify --full` and `audit export` (docs/benchmarks.md, "The
//! trail at scale"). rusqlite reads the rows in place on the calling (blocking) thread; a few
//! read-only connections are kept open between reads.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use super::query::Arg;
use super::verify::Page;
use super::{EventColumns, WALK_COLUMNS, WALK_EVENTS, col, from_columns, of_chain};
use crate::{AuditEvent, StoreError};

/// Connections kept open between reads (one per concurrent page of a walk, at most).
const IDLE_CONNECTIONS: usize = 4;

/// The SQLite file and a few connections that only read it.
#[derive(Debug)]
pub(crate) struct SqliteReader {
    file: Arc<Path>,
    idle: Mutex<Vec<Connection>>,
}

impl SqliteReader {
    pub(crate) fn new(file: &Path) -> Self {
        Self {
            file: Arc::from(file),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `read` on an idle connection or a new one, and keeps the connection for the next
    /// read unless the read failed. Blocking: run it on a blocking thread.
    fn with_connection<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let connection = match idle {
            Some(connection) => connection,
            None => open(&self.file)?,
        };
        let result = read(&connection);
        if result.is_ok() {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < IDLE_CONNECTIONS {
                idle.push(connection);
            }
        }
        result
    }

    /// The events `sql` selects (its columns: [`super::COLUMNS`], then `pos`), with their positions;
    /// `$n` placeholders take `args[n - 1]`.
    pub(super) fn events(
        &self,
        sql: &str,
        args: &[Arg],
    ) -> Result<Vec<(AuditEvent, i64)>, StoreError> {
        self.with_connection(|connection| {
            let mut statement = connection
                .prepare_cached(sql)
                .map_err(|err| unavailable(&err))?;
            for (at, arg) in args.iter().enumerate() {
                let name = format!("${}", at + 1);
                let Some(index) = statement
                    .parameter_index(&name)
                    .map_err(|err| unavailable(&err))?
                else {
                    continue;
                };
                match arg {
                    Arg::Text(text) => statement.raw_bind_parameter(index, text),
                    Arg::Int(number) => statement.raw_bind_parameter(index, number),
                    Arg::Bytes(bytes) => statement.raw_bind_parameter(index, bytes),
                }
                .map_err(|err| unavailable(&err))?;
            }
            let mut rows = statement.raw_query();
            let mut events = Vec::new();
            while let Some(row) = rows.next().map_err(|err| unavailable(&err))? {
                let position = row
                    .integer(col::POS, "pos")?
                    .ok_or_else(|| StoreError::Corrupt("an audit event has no pos".to_owned()))?;
                events.push((from_columns(row)?, position));
            }
            Ok(events)
        })
    }

    /// The events of `gateway`'s chain with `after < seq <= through`, in order, each hashed
    /// again; a row that does not decode ends the page there. Blocking: run it on a blocking
    /// thread.
    pub(super) fn page(
        &self,
        gateway: &str,
        after: i64,
        through: i64,
        mut page: Page,
    ) -> Result<Page, StoreError> {
        self.with_connection(|connection| {
            let mut statement = connection
                .prepare_cached(&format!(
                    "SELECT {WALK_COLUMNS} FROM {WALK_EVENTS} WHERE {} AND e.seq >= ?2 \
                     AND e.seq <= ?3 ORDER BY e.seq",
                    of_chain("?1")
                ))
                .map_err(|err| unavailable(&err))?;
            let mut rows = statement
                .query((gateway, after, through))
                .map_err(|err| unavailable(&err))?;
            while let Some(row) = rows.next().map_err(|err| unavailable(&err))? {
                if !page.push(row) {
                    break;
                }
            }
            Ok(page)
        })
    }
}

/// A connection that only reads. Opened for writing but asked never to write: a read-only
/// connection cannot always attach to a database in WAL mode (it needs the shared-memory file).
fn open(file: &Path) -> Result<Connection, StoreError> {
    let connection = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|err| unavailable(&err))?;
    connection
        .busy_timeout(BUSY_TIMEOUT)
        .and_then(|()| connection.pragma_update(None, "query_only", true))
        .map_err(|err| unavailable(&err))?;
    Ok(connection)
}

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

    fn bytes(&self, index: usize, name: &'static str) -> Result<Option<&[u8]>, StoreError> {
        match self.get_ref(index).map_err(|err| unavailable(&err))? {
            ValueRef::Null => Ok(None),
            ValueRef::Blob(bytes) | ValueRef::Text(bytes) => Ok(Some(bytes)),
            other => Err(StoreError::Corrupt(format!(
                "column `{name}` holds {:?} where bytes are expected",
                other.data_type()
            ))),
        }
    }
}
