//! The audit trail: append (hash chain), query, stats, verify, retention.

/// Joins a row of `audit_events e` to its outcome (`o`, see [`outcomes`]).
macro_rules! outcome_join {
    () => {
        "LEFT JOIN audit_outcomes o ON o.outcome = e.outcome"
    };
}

/// The nine columns of `audit_outcomes` an outcome number stands for, in the order of
/// [`outcomes::Outcome`]'s fields (and of the migration that fills them).
macro_rules! outcome_fields {
    () => {
        "kind, decision, code, policy, rule, shadow_decision, shadow_code, shadow_policy, \
         shadow_rule"
    };
}

/// An outcome column of a row of `audit_events e` joined with [`outcome_join`]: the row's own
/// value when it stores one (what a hand edit writes wins, so that verification sees it), else
/// its outcome's.
macro_rules! outcome_column {
    ($name:literal) => {
        concat!("COALESCE(e.", $name, ", o.", $name, ")")
    };
}

mod append;
mod checkpoint;
mod follow;
mod outcomes;
mod query;
mod reasons;
mod retention;
mod rollup;
mod sqlite_walk;
pub(super) use sqlite_walk::SqliteReader;
mod stats;
mod stored_id;
mod verify;

pub use append::chain_event;
pub(super) use append::{KnownNumbers, append, append_chained, append_in, head};
pub(super) use checkpoint::{
    add as add_checkpoint, latest as latest_checkpoint, range as checkpoints,
};
pub(super) use follow::{chain_after, heads};
pub(super) use query::{event, query};
pub(super) use retention::retain;
pub(super) use stats::stats;
pub(super) use verify::verify;

use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{db_error, from_micros};
use meshguard_policy::{Code, Effect};

use crate::chain::{ChainedFields, ContextFields, chained_digest, event_hash};
use crate::{
    AuditAgent, AuditEvent, AuditKind, EventCode, NewAuditEvent, ShadowVerdict, StoreError,
};

/// An event's columns with `prev_hash` written as `$prev` (see [`COLUMNS`]).
macro_rules! event_columns {
    ($prev:literal) => {
        concat!(
            "e.id, c.gateway, e.seq, e.ts, ",
            outcome_column!("kind"),
            ", a.agent_id, e.agent_name, e.action, e.resource, ",
            outcome_column!("decision"),
            ", ",
            outcome_column!("code"),
            ", e.reason, ",
            outcome_column!("policy"),
            ", ",
            outcome_column!("rule"),
            ", e.trace_id, e.approval_id, e.status, e.result, e.context, e.latency_us, ",
            $prev,
            ", e.hash, ",
            outcome_column!("shadow_decision"),
            ", ",
            outcome_column!("shadow_code"),
            ", ",
            outcome_column!("shadow_policy"),
            ", ",
            outcome_column!("shadow_rule"),
            ", r.template, c.anchor_seq, c.anchor_hash"
        )
    };
}

/// An event's columns, read from [`EVENTS`]: the row (`e`), its chain's record (`c`), its
/// agent's id (`a`), its reason's template (`r`, see [`reasons`]), its outcome (`o`, see
/// [`outcomes`]) and the hash of the event before it (`p`). A row stores no `prev_hash` when it
/// is that hash (MeshGuard writes none): it is read from the row before, or from the chain's
/// anchor for the first row after it.
const COLUMNS: &str = event_columns!("COALESCE(e.prev_hash, p.hash)");

/// [`COLUMNS`] for walks that read a chain in order ([`WALK_EVENTS`]): the row's own
/// `prev_hash` only, the walk knows the hash before.
const WALK_COLUMNS: &str = event_columns!("e.prev_hash");

/// Where [`COLUMNS`] are read from. A row names its chain and its agent by number (the
/// gateway's instance id is stored once, in `audit_chains`, the agent's id in `audit_agents`);
/// the left join keeps a row whose chain record is gone (its gateway then reads as NULL, and
/// decoding says so).
const EVENTS: &str = concat!(
    "audit_events e LEFT JOIN audit_chains c ON c.chain = e.chain \
     LEFT JOIN audit_agents a ON a.agent = e.agent \
     LEFT JOIN audit_reasons r ON r.reason = e.reason_ref ",
    outcome_join!(),
    " LEFT JOIN audit_events p ON e.prev_hash IS NULL AND p.chain = e.chain \
     AND p.seq = e.seq - 1"
);

/// Where [`COLUMNS`] of one chain are read from, with [`of_chain`] in the condition: the
/// chain's record is looked up once, then its rows through `(chain, seq)` (with [`EVENTS`],
/// once per row).
const CHAIN_EVENTS: &str = concat!(
    "audit_chains c JOIN audit_events e ON e.chain = c.chain \
     LEFT JOIN audit_agents a ON a.agent = e.agent \
     LEFT JOIN audit_reasons r ON r.reason = e.reason_ref ",
    outcome_join!(),
    " LEFT JOIN audit_events p ON e.prev_hash IS NULL \
     AND p.chain = e.chain AND p.seq = e.seq - 1"
);

/// Where [`WALK_COLUMNS`] of one chain are read from, with [`of_chain`] in the condition.
const WALK_EVENTS: &str = concat!(
    "audit_chains c JOIN audit_events e ON e.chain = c.chain \
     LEFT JOIN audit_agents a ON a.agent = e.agent \
     LEFT JOIN audit_reasons r ON r.reason = e.reason_ref ",
    outcome_join!()
);

/// The condition selecting [`CHAIN_EVENTS`] of the gateway bound at `param`. It names the
/// chain number twice: as the record's (so SQLite reads that record first, and once) and as a
/// value of its own (so PostgreSQL reads `(chain, seq)` in order instead of sorting each page).
fn of_chain(param: &str) -> String {
    format!("c.gateway = {param} AND e.chain = {}", chain_of(param))
}

/// The chain number of the gateway bound at placeholder `param`, for conditions on
/// `audit_events` (which stores the number, not the gateway).
fn chain_of(param: &str) -> String {
    format!("(SELECT chain FROM audit_chains WHERE gateway = {param})")
}

/// The columns of an audit event row (in [`COLUMNS`] order), however the driver hands them over:
/// sqlx's `AnyRow` for every query, or rusqlite's row where SQLite is walked in bulk (see
/// `sqlite_walk`). One decoding, [`from_columns`], serves both.
pub(crate) trait EventColumns {
    /// The text at `index` (`name` for errors), `None` for NULL.
    fn text(&self, index: usize, name: &'static str) -> Result<Option<&str>, StoreError>;
    /// The integer at `index`, `None` for NULL.
    fn integer(&self, index: usize, name: &'static str) -> Result<Option<i64>, StoreError>;
    /// The bytes at `index`, `None` for NULL. Text is read as its bytes: a hash a hand edit
    /// stored as text is then reported as not matching, instead of failing the read.
    fn bytes(&self, index: usize, name: &'static str) -> Result<Option<&[u8]>, StoreError>;
}

impl EventColumns for AnyRow {
    fn text(&self, index: usize, _name: &'static str) -> Result<Option<&str>, StoreError> {
        self.try_get(index).map_err(db_error)
    }
    fn integer(&self, index: usize, _name: &'static str) -> Result<Option<i64>, StoreError> {
        self.try_get(index).map_err(db_error)
    }
    fn bytes(&self, index: usize, _name: &'static str) -> Result<Option<&[u8]>, StoreError> {
        match self.try_get::<Option<&[u8]>, _>(index) {
            Ok(bytes) => Ok(bytes),
            Err(err) => match self.try_get::<Option<&str>, _>(index) {
                Ok(text) => Ok(text.map(str::as_bytes)),
                Err(_) => Err(db_error(err)),
            },
        }
    }
}

/// Indexes of [`COLUMNS`].
mod col {
    pub const ID: usize = 0;
    pub const GATEWAY: usize = 1;
    pub const SEQ: usize = 2;
    pub const TS: usize = 3;
    pub const KIND: usize = 4;
    pub const AGENT_ID: usize = 5;
    pub const AGENT_NAME: usize = 6;
    pub const ACTION: usize = 7;
    pub const RESOURCE: usize = 8;
    pub const DECISION: usize = 9;
    pub const CODE: usize = 10;
    pub const REASON: usize = 11;
    pub const POLICY: usize = 12;
    pub const RULE: usize = 13;
    pub const TRACE_ID: usize = 14;
    pub const APPROVAL_ID: usize = 15;
    pub const STATUS: usize = 16;
    pub const RESULT: usize = 17;
    pub const CONTEXT: usize = 18;
    pub const LATENCY_US: usize = 19;
    pub const PREV_HASH: usize = 20;
    pub const HASH: usize = 21;
    pub const SHADOW_DECISION: usize = 22;
    pub const SHADOW_CODE: usize = 23;
    pub const SHADOW_POLICY: usize = 24;
    pub const SHADOW_RULE: usize = 25;
    pub const REASON_TEMPLATE: usize = 26;
    pub const ANCHOR_SEQ: usize = 27;
    pub const ANCHOR_HASH: usize = 28;
    /// `pos`, where a listing selects it after [`super::COLUMNS`].
    pub const POS: usize = 29;
}

/// A text column that may be NULL, owned.
fn optional(
    row: &impl EventColumns,
    index: usize,
    name: &'static str,
) -> Result<Option<String>, StoreError> {
    Ok(row.text(index, name)?.map(str::to_owned))
}

/// A text column that is never NULL.
fn required<'r>(
    row: &'r impl EventColumns,
    index: usize,
    name: &'static str,
) -> Result<&'r str, StoreError> {
    row.text(index, name)?
        .ok_or_else(|| StoreError::Corrupt(format!("column `{name}` is NULL")))
}

/// An id column (see [`stored_id`]) that may be NULL, read back as the text written; `buffer`
/// holds the text when it is stored as bytes.
fn stored_text<'r>(
    row: &'r impl EventColumns,
    index: usize,
    name: &'static str,
    buffer: &'r mut stored_id::TextBuffer,
) -> Result<Option<&'r str>, StoreError> {
    row.bytes(index, name)?
        .map(|stored| {
            stored_id::read(stored, buffer).map_err(|err| {
                StoreError::Corrupt(format!("column `{name}` is not valid UTF-8: {err}"))
            })
        })
        .transpose()
}

/// The row's reason: its own text when it has one (what a hand edit writes wins, so that
/// verification sees it), else its template's, written into `buffer` with the row's action.
fn reason_of<'r>(
    row: &'r impl EventColumns,
    action: &str,
    buffer: &'r mut String,
) -> Result<Option<&'r str>, StoreError> {
    if let Some(reason) = row.text(col::REASON, "reason")? {
        return Ok(Some(reason));
    }
    Ok(row
        .text(col::REASON_TEMPLATE, "template")?
        .map(|template| reasons::expand(template, action, buffer)))
}

/// Buffers for the texts of a row that are not stored as they read: the two ids (as bytes) and
/// the reason (as a template).
struct TextBuffers {
    id: stored_id::TextBuffer,
    trace_id: stored_id::TextBuffer,
    /// The reason, when it is written from its template.
    reason: String,
}

impl Default for TextBuffers {
    fn default() -> Self {
        Self {
            id: [0; 36],
            trace_id: [0; 36],
            reason: String::new(),
        }
    }
}

/// A non-negative integer column that may be NULL.
fn optional_unsigned(
    row: &impl EventColumns,
    index: usize,
    name: &'static str,
) -> Result<Option<u64>, StoreError> {
    row.integer(index, name)?
        .map(|value| {
            u64::try_from(value)
                .map_err(|_| StoreError::Corrupt(format!("column `{name}` holds negative {value}")))
        })
        .transpose()
}

/// A hash column (32 bytes stored) as the 64 hex digits events carry.
fn hash_hex(
    row: &impl EventColumns,
    index: usize,
    name: &'static str,
) -> Result<String, StoreError> {
    row.bytes(index, name)?
        .map(hex::encode)
        .ok_or_else(|| StoreError::Corrupt(format!("column `{name}` is NULL")))
}

/// A stored 32-byte hash written as hex into `out`; `None` for any other length (such a row is
/// decoded the slow way, which reports it).
fn hash_hex_into<'b>(stored: &[u8], out: &'b mut [u8; 64]) -> Option<&'b str> {
    hex::encode_to_slice(stored, out).ok()?;
    std::str::from_utf8(out).ok()
}

/// Reads a typed column that may be NULL; a spelling MeshGuard never writes is corrupt data.
fn typed<T>(
    id: &str,
    row: &impl EventColumns,
    index: usize,
    name: &'static str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, StoreError> {
    row.text(index, name)?
        .map(|text| {
            parse(text).ok_or_else(|| {
                StoreError::Corrupt(format!("audit event `{id}` has {name} `{text}`"))
            })
        })
        .transpose()
}

/// The shadow verdict columns, all NULL when the event has none.
fn shadow_of(id: &str, row: &impl EventColumns) -> Result<Option<ShadowVerdict>, StoreError> {
    let Some(decision) = typed(
        id,
        row,
        col::SHADOW_DECISION,
        "shadow_decision",
        Effect::parse,
    )?
    else {
        return Ok(None);
    };
    let code = typed(id, row, col::SHADOW_CODE, "shadow_code", Code::parse)?.ok_or_else(|| {
        StoreError::Corrupt(format!(
            "audit event `{id}` has a shadow decision without a code"
        ))
    })?;
    Ok(Some(ShadowVerdict {
        decision,
        code,
        policy: optional(row, col::SHADOW_POLICY, "shadow_policy")?,
        rule: optional(row, col::SHADOW_RULE, "shadow_rule")?,
    }))
}

/// An audit event from a row of [`COLUMNS`].
pub(crate) fn from_columns(row: &impl EventColumns) -> Result<AuditEvent, StoreError> {
    event_of(row, None)
}

/// An audit event from a row of [`COLUMNS`] or [`WALK_COLUMNS`]; `derived` is the stored hash
/// of the event before it, when the caller knows it.
fn event_of(row: &impl EventColumns, derived: Option<&[u8]>) -> Result<AuditEvent, StoreError> {
    let TextBuffers {
        id: mut id_buffer,
        trace_id: mut trace_buffer,
        reason: mut reason_buffer,
    } = TextBuffers::default();
    let id = stored_text(row, col::ID, "id", &mut id_buffer)?
        .ok_or_else(|| StoreError::Corrupt("column `id` is NULL".to_owned()))?;
    let trace_id = stored_text(row, col::TRACE_ID, "trace_id", &mut trace_buffer)?;
    let action = required(row, col::ACTION, "action")?;
    let kind = required(row, col::KIND, "kind")?;
    let kind = AuditKind::parse(kind)
        .ok_or_else(|| StoreError::Corrupt(format!("audit event `{id}` has kind `{kind}`")))?;
    let agent_id = optional(row, col::AGENT_ID, "agent_id")?;
    let agent_name = optional(row, col::AGENT_NAME, "agent_name")?;
    let context = serde_json::from_str(required(row, col::CONTEXT, "context")?).map_err(|err| {
        StoreError::Corrupt(format!(
            "context of audit event `{id}` is not a JSON object: {err}"
        ))
    })?;
    let ts = row
        .integer(col::TS, "ts")?
        .ok_or_else(|| StoreError::Corrupt(format!("audit event `{id}` has no ts")))?;
    let seq = optional_unsigned(row, col::SEQ, "seq")?
        .ok_or_else(|| StoreError::Corrupt(format!("audit event `{id}` has no seq")))?;
    Ok(AuditEvent {
        event: NewAuditEvent {
            ts: from_micros(ts)?,
            kind,
            agent: agent_id.map(|id| AuditAgent {
                id,
                name: agent_name.unwrap_or_default(),
            }),
            action: action.to_owned(),
            resource: optional(row, col::RESOURCE, "resource")?,
            decision: typed(id, row, col::DECISION, "decision", Effect::parse)?,
            code: typed(id, row, col::CODE, "code", EventCode::parse)?,
            reason: reason_of(row, action, &mut reason_buffer)?.map(str::to_owned),
            policy: optional(row, col::POLICY, "policy")?,
            rule: optional(row, col::RULE, "rule")?,
            trace_id: trace_id.map(str::to_owned),
            approval_id: optional(row, col::APPROVAL_ID, "approval_id")?,
            status: optional(row, col::STATUS, "status")?,
            result: optional(row, col::RESULT, "result")?,
            context,
            latency_us: optional_unsigned(row, col::LATENCY_US, "latency_us")?,
            gateway: required(row, col::GATEWAY, "gateway")?.to_owned(),
            shadow: shadow_of(id, row)?,
            id: id.to_owned(),
        },
        seq,
        prev_hash: prev_hash_of(row, seq, derived)?,
        hash: hash_hex(row, col::HASH, "hash")?,
    })
}

/// The `prev_hash` of the row at `seq`, as hex: its own when it stores one, else the hash of
/// the event before it (`derived`, which a walk knows, or the joined column of [`COLUMNS`]),
/// else the chain's anchor for the first event after it; empty when the event before it is
/// gone (verification reports the gap).
fn prev_hash_of(
    row: &impl EventColumns,
    seq: u64,
    derived: Option<&[u8]>,
) -> Result<String, StoreError> {
    if let Some(stored) = row.bytes(col::PREV_HASH, "prev_hash")?.or(derived) {
        return Ok(hex::encode(stored));
    }
    let anchor_seq = optional_unsigned(row, col::ANCHOR_SEQ, "anchor_seq")?;
    if anchor_seq.is_some_and(|anchor| anchor.checked_add(1) == Some(seq)) {
        return Ok(required(row, col::ANCHOR_HASH, "anchor_hash")?.to_owned());
    }
    Ok(String::new())
}

/// The hashed fields of a row of [`COLUMNS`], borrowed from the row: what verification hashes
/// without decoding the event. `None` for anything [`from_columns`] would not decode as it is
/// (a NULL where a value belongs, a spelling MeshGuard never writes, a negative number, a
/// context that is not canonical JSON): the caller then decodes the row, which says why.
/// `prev_hash` is the row's, as hex.
fn chained_fields_of<'a>(
    row: &'a impl EventColumns,
    prev_hash: &'a str,
    buffers: &'a mut TextBuffers,
) -> Option<ChainedFields<'a>> {
    let text = |index, name| row.text(index, name).ok();
    let TextBuffers {
        id,
        trace_id,
        reason,
    } = buffers;
    let action = required(row, col::ACTION, "action").ok()?;
    // Read even without an agent id: decoding reads it too, and refuses a value that is not text.
    let agent_name = text(col::AGENT_NAME, "agent_name")?;
    let fields = ChainedFields {
        id: stored_text(row, col::ID, "id", id).ok()??,
        seq: optional_unsigned(row, col::SEQ, "seq").ok()??,
        ts: from_micros(row.integer(col::TS, "ts").ok()??).ok()?,
        kind: required(row, col::KIND, "kind").ok()?,
        agent: text(col::AGENT_ID, "agent_id")?.map(|id| (id, agent_name.unwrap_or_default())),
        action,
        resource: text(col::RESOURCE, "resource")?,
        decision: text(col::DECISION, "decision")?,
        code: text(col::CODE, "code")?,
        reason: reason_of(row, action, reason).ok()?,
        policy: text(col::POLICY, "policy")?,
        rule: text(col::RULE, "rule")?,
        trace_id: stored_text(row, col::TRACE_ID, "trace_id", trace_id).ok()?,
        approval_id: text(col::APPROVAL_ID, "approval_id")?,
        status: text(col::STATUS, "status")?,
        result: text(col::RESULT, "result")?,
        context: ContextFields::Stored(required(row, col::CONTEXT, "context").ok()?),
        latency_us: optional_unsigned(row, col::LATENCY_US, "latency_us").ok()?,
        gateway: required(row, col::GATEWAY, "gateway").ok()?,
        // A shadow verdict needs its code too: without one, decoding refuses the row.
        shadow: match text(col::SHADOW_DECISION, "shadow_decision")? {
            Some(decision) => Some((
                text(col::SHADOW_CODE, "shadow_code")??,
                decision,
                text(col::SHADOW_POLICY, "shadow_policy")?,
                text(col::SHADOW_RULE, "shadow_rule")?,
            )),
            None => None,
        },
        prev_hash,
    };
    fields.as_written().then_some(fields)
}

/// Hashes one row again for verification and hands its place in the chain (`seq`,
/// `prev_hash`, stored `hash`) and whether its stored hash is its content's to `link`.
/// `derived` is the stored hash of the row before it, the `prev_hash` of a row that stores none. Hashed
/// from the borrowed columns when they are as MeshGuard wrote them, else from the decoded event
/// (the definition); a row that does not decode is an error.
pub(super) fn verify_row(
    row: &impl EventColumns,
    derived: Option<&[u8]>,
    link: impl FnOnce(u64, &str, &str, bool),
) -> Result<(), StoreError> {
    let (mut prev_hex, mut stored_hex) = ([0_u8; 64], [0_u8; 64]);
    let mut buffers = TextBuffers::default();
    if let (Some(prev_hash), Some(stored)) = (
        row.bytes(col::PREV_HASH, "prev_hash")?.or(derived),
        row.bytes(col::HASH, "hash")?,
    ) && let Some(prev_hash) = hash_hex_into(prev_hash, &mut prev_hex)
        && let Some(fields) = chained_fields_of(row, prev_hash, &mut buffers)
        && chained_digest(&fields).is_some_and(|digest| digest == stored)
        && let Some(stored) = hash_hex_into(stored, &mut stored_hex)
    {
        link(fields.seq, fields.prev_hash, stored, true);
        return Ok(());
    }
    let event = event_of(row, derived)?;
    let matches = event_hash(&event) == event.hash;
    link(event.seq, &event.prev_hash, &event.hash, matches);
    Ok(())
}

fn from_row(row: &AnyRow) -> Result<AuditEvent, StoreError> {
    from_columns(row)
}
