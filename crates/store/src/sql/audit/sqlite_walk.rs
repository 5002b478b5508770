//! Reads of audit events straight from the SQLite file, for the walks that read every event
//! (full verification, listing and export). sqlx's SQLite driver hands each row from its worker
//! thread to the caller, copying every value on the way: under 50,000 rows/s on the 2-core
//! reference machine, which bound `verify --full` and `audit export` (docs/benchmarks.md, "The
//! trail at scale"). rusqlite reads the rows in place on the calling (blocking) thread; a few
//! read-only connections are kept open between reads.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension as _};

use super::query::Arg;
use super::verify::Page;
use super::{EventColumns, col, from_columns};
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

    /// What a walk of `gateway`'s chain reads once instead of joining it to every row: the
    /// chain's record and the agents, reason templates and outcomes that rows name by number.
    /// Read after the chain's head: every number an event up to that head names is committed
    /// with it. Blocking: run it on a blocking thread.
    pub(super) fn dictionaries(&self, gateway: &str) -> Result<Dictionaries, StoreError> {
        self.with_connection(|connection| {
            let read = |sql: &str, columns: usize| -> Result<Table, StoreError> {
                let mut statement = connection.prepare(sql).map_err(|err| unavailable(&err))?;
                let mut rows = statement.query(()).map_err(|err| unavailable(&err))?;
                let mut entries = Vec::new();
                while let Some(row) = rows.next().map_err(|err| unavailable(&err))? {
                    let ValueRef::Integer(number) =
                        row.get_ref(0).map_err(|err| unavailable(&err))?
                    else {
                        continue;
                    };
                    let values = (1..=columns)
                        .map(|at| row.get_ref(at).map(Owned::from))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|err| unavailable(&err))?;
                    entries.push((number, values));
                }
                entries.sort_by_key(|&(number, _)| number);
                Ok(Table(entries))
            };
            let mut chain = connection
                .prepare("SELECT anchor_seq, anchor_hash FROM audit_chains WHERE gateway = ?1")
                .map_err(|err| unavailable(&err))?;
            // A chain record deleted since the walk began names no rows either: NULL, as the
            // join gave.
            let anchor = chain
                .query_row([gateway], |row| {
                    Ok((Owned::from(row.get_ref(0)?), Owned::from(row.get_ref(1)?)))
                })
                .optional()
                .map_err(|err| unavailable(&err))?
                .unwrap_or((Owned::Null, Owned::Null));
            Ok(Dictionaries {
                gateway: gateway.to_owned(),
                anchor,
                agents: read("SELECT agent, agent_id FROM audit_agents", 1)?,
                reasons: read("SELECT reason, template FROM audit_reasons", 1)?,
                outcomes: read(
                    concat!(
                        "SELECT outcome, ",
                        outcome_fields!(),
                        " FROM audit_outcomes"
                    ),
                    OUTCOME_COLUMNS.len(),
                )?,
            })
        })
    }

    /// The events of `gateway`'s chain with `after < seq <= through`, in order, each hashed
    /// again; a row that does not decode ends the page there. Blocking: run it on a blocking
    /// thread.
    pub(super) fn page(
        &self,
        dictionaries: &Dictionaries,
        after: i64,
        through: i64,
        mut page: Page,
    ) -> Result<Page, StoreError> {
        self.with_connection(|connection| {
            let mut statement = connection
                .prepare_cached(&format!(
                    "SELECT {ROW_COLUMNS} FROM audit_events e WHERE e.chain = {} \
                     AND e.seq >= ?2 AND e.seq <= ?3 ORDER BY e.seq",
                    super::chain_of("?1")
                ))
                .map_err(|err| unavailable(&err))?;
            let mut rows = statement
                .query((&dictionaries.gateway, after, through))
                .map_err(|err| unavailable(&err))?;
            while let Some(row) = rows.next().map_err(|err| unavailable(&err))? {
                if !page.push(&WalkRow { row, dictionaries }) {
                    break;
                }
            }
            Ok(page)
        })
    }
}

/// The columns of `audit_events` a walk reads, in [`COLUMNS`](super::COLUMNS) order where the
/// row has them, then the numbers [`Dictionaries`] resolve.
const ROW_COLUMNS: &str = "e.id, e.seq, e.ts, e.kind, e.agent_name, e.action, e.resource, \
    e.decision, e.code, e.reason, e.policy, e.rule, e.trace_id, e.approval_id, e.status, \
    e.result, e.context, e.latency_us, e.prev_hash, e.hash, e.shadow_decision, e.shadow_code, \
    e.shadow_policy, e.shadow_rule, e.agent, e.reason_ref, e.outcome";
/// Where [`ROW_COLUMNS`] puts the row's own columns, by their index in `COLUMNS` (`None`: not
/// in the row).
const ROW_INDEX: [Option<usize>; col::ANCHOR_HASH + 1] = [
    Some(0),  // id
    None,     // gateway
    Some(1),  // seq
    Some(2),  // ts
    Some(3),  // kind
    None,     // agent_id
    Some(4),  // agent_name
    Some(5),  // action
    Some(6),  // resource
    Some(7),  // decision
    Some(8),  // code
    Some(9),  // reason
    Some(10), // policy
    Some(11), // rule
    Some(12), // trace_id
    Some(13), // approval_id
    Some(14), // status
    Some(15), // result
    Some(16), // context
    Some(17), // latency_us
    Some(18), // prev_hash
    Some(19), // hash
    Some(20), // shadow_decision
    Some(21), // shadow_code
    Some(22), // shadow_policy
    Some(23), // shadow_rule
    None,     // template
    None,     // anchor_seq
    None,     // anchor_hash
];
const AGENT_NUMBER: usize = 24;
const REASON_NUMBER: usize = 25;
const OUTCOME_NUMBER: usize = 26;
/// The `COLUMNS` index of each value of an outcome's entry (`outcome_fields!` order).
const OUTCOME_COLUMNS: [usize; 9] = [
    col::KIND,
    col::DECISION,
    col::CODE,
    col::POLICY,
    col::RULE,
    col::SHADOW_DECISION,
    col::SHADOW_CODE,
    col::SHADOW_POLICY,
    col::SHADOW_RULE,
];

/// A value read once and kept: what a join would have given every row. Not rusqlite's own
/// `Value`, whose conversion from a row's value panics on text that is not UTF-8; a hand edit
/// may store such text, and reading it must report it, not crash.
#[derive(Debug, Clone)]
enum Owned {
    Null,
    Integer(i64),
    Real(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl From<ValueRef<'_>> for Owned {
    fn from(value: ValueRef<'_>) -> Self {
        match value {
            ValueRef::Null => Self::Null,
            ValueRef::Integer(number) => Self::Integer(number),
            ValueRef::Real(number) => Self::Real(number),
            ValueRef::Text(bytes) => Self::Text(bytes.to_vec()),
            ValueRef::Blob(bytes) => Self::Blob(bytes.to_vec()),
        }
    }
}

impl Owned {
    fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Self::Null => ValueRef::Null,
            Self::Integer(number) => ValueRef::Integer(*number),
            Self::Real(number) => ValueRef::Real(*number),
            Self::Text(bytes) => ValueRef::Text(bytes),
            Self::Blob(bytes) => ValueRef::Blob(bytes),
        }
    }
}

/// The small tables of the trail, read once per walk (see [`SqliteReader::dictionaries`]).
#[derive(Debug)]
pub(super) struct Dictionaries {
    gateway: String,
    /// The chain's `anchor_seq` and `anchor_hash`.
    anchor: (Owned, Owned),
    agents: Table,
    reasons: Table,
    outcomes: Table,
}

/// A small table's rows by number, sorted (looked up per event: a binary search over a few
/// entries costs less than hashing).
#[derive(Debug)]
struct Table(Vec<(i64, Vec<Owned>)>);

impl Table {
    /// The `at`th value of the row numbered `number`; NULL when there is none.
    fn value(&self, number: i64, at: usize) -> ValueRef<'_> {
        self.0
            .binary_search_by_key(&number, |&(number, _)| number)
            .ok()
            .and_then(|found| self.0.get(found))
            .and_then(|(_, values)| values.get(at))
            .map_or(ValueRef::Null, Owned::as_ref)
    }
}

/// A row of [`ROW_COLUMNS`] read as a row of `COLUMNS`: the row's own values, and for the
/// numbers it names the dictionaries' (NULL for a number they lack, as the left join gives).
struct WalkRow<'r, 's> {
    row: &'r rusqlite::Row<'s>,
    dictionaries: &'r Dictionaries,
}

impl WalkRow<'_, '_> {
    fn own(&self, at: usize) -> Result<ValueRef<'_>, StoreError> {
        self.row.get_ref(at).map_err(|err| unavailable(&err))
    }

    /// The `at`th value of the entry of `table` that the row's column `number` names.
    fn entry<'a>(
        &'a self,
        table: &'a Table,
        number: usize,
        at: usize,
    ) -> Result<ValueRef<'a>, StoreError> {
        Ok(match self.own(number)? {
            ValueRef::Integer(number) => table.value(number, at),
            _ => ValueRef::Null,
        })
    }

    fn value(&self, index: usize) -> Result<ValueRef<'_>, StoreError> {
        let dictionaries = self.dictionaries;
        if let Some(&Some(at)) = ROW_INDEX.get(index) {
            let value = self.own(at)?;
            if let (ValueRef::Null, Some(field)) = (
                value,
                OUTCOME_COLUMNS.iter().position(|&column| column == index),
            ) {
                return self.entry(&dictionaries.outcomes, OUTCOME_NUMBER, field);
            }
            return Ok(value);
        }
        match index {
            col::GATEWAY => Ok(ValueRef::Text(dictionaries.gateway.as_bytes())),
            col::AGENT_ID => self.entry(&dictionaries.agents, AGENT_NUMBER, 0),
            col::REASON_TEMPLATE => self.entry(&dictionaries.reasons, REASON_NUMBER, 0),
            col::ANCHOR_SEQ => Ok(dictionaries.anchor.0.as_ref()),
            col::ANCHOR_HASH => Ok(dictionaries.anchor.1.as_ref()),
            _ => Err(StoreError::Corrupt(format!("no audit column {index}"))),
        }
    }
}

impl EventColumns for WalkRow<'_, '_> {
    fn text(&self, index: usize, name: &'static str) -> Result<Option<&str>, StoreError> {
        text_of(self.value(index)?, name)
    }

    fn integer(&self, index: usize, name: &'static str) -> Result<Option<i64>, StoreError> {
        integer_of(self.value(index)?, name)
    }

    fn bytes(&self, index: usize, name: &'static str) -> Result<Option<&[u8]>, StoreError> {
        bytes_of(self.value(index)?, name)
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
        text_of(self.get_ref(index).map_err(|err| unavailable(&err))?, name)
    }

    fn integer(&self, index: usize, name: &'static str) -> Result<Option<i64>, StoreError> {
        integer_of(self.get_ref(index).map_err(|err| unavailable(&err))?, name)
    }

    fn bytes(&self, index: usize, name: &'static str) -> Result<Option<&[u8]>, StoreError> {
        bytes_of(self.get_ref(index).map_err(|err| unavailable(&err))?, name)
    }
}

/// A value as text; what is neither text nor NULL is corrupt.
fn text_of<'v>(value: ValueRef<'v>, name: &'static str) -> Result<Option<&'v str>, StoreError> {
    match value {
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

/// A value as an integer; what is neither an integer nor NULL is corrupt.
fn integer_of(value: ValueRef<'_>, name: &'static str) -> Result<Option<i64>, StoreError> {
    match value {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(number) => Ok(Some(number)),
        other => Err(StoreError::Corrupt(format!(
            "column `{name}` holds {:?} where an integer is expected",
            other.data_type()
        ))),
    }
}

/// A value as bytes (text too: see [`EventColumns::bytes`]).
fn bytes_of<'v>(value: ValueRef<'v>, name: &'static str) -> Result<Option<&'v [u8]>, StoreError> {
    match value {
        ValueRef::Null => Ok(None),
        ValueRef::Blob(bytes) | ValueRef::Text(bytes) => Ok(Some(bytes)),
        other => Err(StoreError::Corrupt(format!(
            "column `{name}` holds {:?} where bytes are expected",
            other.data_type()
        ))),
    }
}
