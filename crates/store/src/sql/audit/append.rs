//! Appending a batch: one transaction, gap-free `seq` and linked hashes per gateway chain.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use sqlx::AnyConnection;

use super::outcomes::Outcome;
use super::{reasons, rollup, stored_id};
use crate::chain::{GENESIS_HASH, canonical_json, event_hash, timestamp};
use crate::sql::{
    Dialect, SqlStore, column, db_error, is_unique_violation, micros, signed, unsigned,
};
use crate::{
    AuditEvent, MAX_ACTION_BYTES, MAX_REASON_BYTES, MAX_RESULT_BYTES, NewAuditEvent, StoreError,
};

/// Most events per `INSERT` statement. One statement per event costs a round trip per event (on
/// PostgreSQL a 100-event batch took 23 ms that way, 14 ms with multi-row statements; see
/// `benches/audit_append.rs`).
const MAX_ROWS_PER_INSERT: usize = 64;

/// Columns of `audit_events` written per event, in the order `insert` binds them. `prev_hash`
/// is not written: an event's is always the hash of the event before it in its chain (or the
/// chain's anchor), which reads take from there. Nor are the nine columns of the event's
/// outcome (`outcomes`): the row stores its number.
const INSERT_COLUMNS: &str = "id, chain, seq, ts, agent, agent_name, action, resource, reason, \
                              trace_id, approval_id, status, result, context, latency_us, hash, \
                              reason_ref, outcome";

/// The last committed event of a chain, and the chain's number (what its rows store).
struct Head {
    chain: i64,
    seq: u64,
    hash: String,
}

pub(crate) async fn append(
    store: &SqlStore,
    batch: &[NewAuditEvent],
) -> Result<Vec<AuditEvent>, StoreError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let _one_append_at_a_time = store.append_lock.lock().await;
    let mut tx = store.begin_write().await?;
    let committed = append_in(&mut tx, store.dialect, &store.audit_numbers, batch).await?;
    tx.commit().await.map_err(db_error)?;
    Ok(committed)
}

/// Appends events a caller already chained ([`crate::chain_event`]): one transaction that checks
/// each event continues its chain's head (the next `seq`, `prev_hash` the head's hash), so a
/// write-ahead log replayed twice, or a second writer of the same chain, is refused as a
/// `Conflict` instead of forking the chain.
///
/// Without `sync`, a SQLite commit is not flushed to disk (`synchronous = NORMAL` for this one
/// transaction): the caller's write-ahead log already holds the events durably, and the index
/// is rebuilt from it after a power loss. A commit with `sync` flushes every earlier one too
/// (they are frames of the same SQLite WAL file), so the caller syncs before it forgets logged
/// events. PostgreSQL always commits durably.
pub(crate) async fn append_chained(
    store: &SqlStore,
    events: &[AuditEvent],
    sync: bool,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let _one_append_at_a_time = store.append_lock.lock().await;
    let mut conn = store.connection().await?;
    let relaxed = store.dialect == Dialect::Sqlite && !sync;
    if relaxed {
        sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
    }
    let outcome = append_chained_in(&mut conn, store.dialect, &store.audit_numbers, events).await;
    if relaxed
        && let Err(err) = sqlx::query("PRAGMA synchronous = FULL")
            .execute(&mut *conn)
            .await
    {
        // A connection left relaxed must not serve the durable writes: close it.
        tracing::warn!(error = %err, "closing a SQLite connection that could not be made durable again");
        drop(conn.detach());
    }
    outcome
}

async fn append_chained_in(
    conn: &mut sqlx::pool::PoolConnection<sqlx::Any>,
    dialect: Dialect,
    known: &KnownNumbers,
    events: &[AuditEvent],
) -> Result<(), StoreError> {
    let mut tx = sqlx::Connection::begin_with(&mut **conn, dialect.begin_write())
        .await
        .map_err(db_error)?;
    let mut heads: BTreeMap<&str, Head> = BTreeMap::new();
    let gateways: BTreeSet<&str> = events.iter().map(|e| e.event.gateway.as_str()).collect();
    for gateway in gateways {
        heads.insert(gateway, load_head(&mut tx, gateway).await?);
    }
    for event in events {
        validate(&event.event)?;
        let head = heads.get_mut(event.event.gateway.as_str()).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "no head loaded for chain `{}`",
                event.event.gateway
            ))
        })?;
        if event.seq != head.seq.saturating_add(1) || event.prev_hash != head.hash {
            return Err(StoreError::conflict(
                "audit chain",
                format!(
                    "event {} does not continue chain `{}` at seq {}",
                    event.seq, event.event.gateway, head.seq
                ),
            ));
        }
        head.seq = event.seq;
        head.hash.clone_from(&event.hash);
    }
    insert_all(&mut tx, dialect, known, &heads, events).await?;
    update_heads(&mut tx, &heads).await?;
    let counts = rollup::tally(events.iter().map(|e| &e.event));
    rollup::apply(&mut tx, dialect, &counts, 1).await?;
    tx.commit().await.map_err(db_error)?;
    Ok(())
}

/// The newest `seq` and `hash` of `gateway`'s chain (0 and the genesis hash before its first
/// event).
pub(crate) async fn head(store: &SqlStore, gateway: &str) -> Result<(u64, String), StoreError> {
    let row = sqlx::query("SELECT head_seq, head_hash FROM audit_chains WHERE gateway = $1")
        .bind(gateway)
        .fetch_optional(&store.pool)
        .await
        .map_err(db_error)?;
    match row {
        Some(row) => Ok((unsigned(&row, "head_seq")?, column(&row, "head_hash")?)),
        None => Ok((0, GENESIS_HASH.to_owned())),
    }
}

/// `new` as the event `seq` of its chain after `prev_hash`: validated, cut to stored size, and
/// hashed — exactly what [`append_audit`](crate::Store::append_audit) commits.
pub fn chain_event(
    new: &NewAuditEvent,
    seq: u64,
    prev_hash: &str,
) -> Result<AuditEvent, StoreError> {
    validate(new)?;
    let mut event = chained(new, seq, prev_hash);
    event.hash = event_hash(&event);
    Ok(event)
}

async fn update_heads(
    tx: &mut AnyConnection,
    heads: &BTreeMap<&str, Head>,
) -> Result<(), StoreError> {
    for (gateway, head) in heads {
        sqlx::query("UPDATE audit_chains SET head_seq = $2, head_hash = $3 WHERE gateway = $1")
            .bind(*gateway)
            .bind(signed("seq", head.seq)?)
            .bind(&head.hash)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
    }
    Ok(())
}

/// Appends a batch inside the caller's write transaction (which must hold `append_lock`), so
/// that an admin change and its event commit together. Nothing is durable before the caller
/// commits.
pub(crate) async fn append_in(
    tx: &mut AnyConnection,
    dialect: Dialect,
    known: &KnownNumbers,
    batch: &[NewAuditEvent],
) -> Result<Vec<AuditEvent>, StoreError> {
    for event in batch {
        validate(event)?;
    }
    // Heads are read inside the write transaction, never cached across batches: a second process
    // (or a second gateway with the same instance id) appending to the same chain then
    // continues it instead of forking it. The cost is one primary-key read per chain per batch.
    // They are locked in gateway order, so two batches spanning the same chains cannot deadlock.
    let mut heads: BTreeMap<&str, Head> = BTreeMap::new();
    let gateways: BTreeSet<&str> = batch.iter().map(|event| event.gateway.as_str()).collect();
    for gateway in gateways {
        let head = load_head(tx, gateway).await?;
        heads.insert(gateway, head);
    }
    let mut committed = Vec::with_capacity(batch.len());
    for new in batch {
        let head = heads.get_mut(new.gateway.as_str()).ok_or_else(|| {
            StoreError::Corrupt(format!("no head loaded for chain `{}`", new.gateway))
        })?;
        let mut event = chained(new, head.seq.saturating_add(1), &head.hash);
        event.hash = event_hash(&event);
        head.seq = event.seq;
        head.hash.clone_from(&event.hash);
        committed.push(event);
    }
    insert_all(tx, dialect, known, &heads, &committed).await?;
    update_heads(tx, &heads).await?;
    let counts = rollup::tally(committed.iter().map(|e| &e.event));
    rollup::apply(tx, dialect, &counts, 1).await?;
    Ok(committed)
}

fn validate(event: &NewAuditEvent) -> Result<(), StoreError> {
    if event.id.is_empty() {
        return Err(StoreError::invalid("id", "an audit event needs an id"));
    }
    if event.gateway.is_empty() {
        return Err(StoreError::invalid(
            "gateway",
            "an audit event needs the gateway instance id that names its chain",
        ));
    }
    if timestamp::format(event.ts).is_none() {
        return Err(StoreError::invalid(
            "ts",
            format!("{} is outside the years 0000 to 9999", event.ts),
        ));
    }
    if let Some(latency) = event.latency_us {
        signed("latency_us", latency)?;
    }
    Ok(())
}

/// The committed form of `new`: timestamp at stored precision; action, resource, reason and
/// result cut to size.
fn chained(new: &NewAuditEvent, seq: u64, prev_hash: &str) -> AuditEvent {
    AuditEvent {
        event: NewAuditEvent {
            ts: timestamp::truncate(new.ts),
            action: cut(&new.action, MAX_ACTION_BYTES),
            resource: new.resource.as_deref().map(|r| cut(r, MAX_ACTION_BYTES)),
            reason: new.reason.as_deref().map(|r| cut(r, MAX_REASON_BYTES)),
            result: new.result.as_deref().map(|r| cut(r, MAX_RESULT_BYTES)),
            ..new.clone()
        },
        seq,
        prev_hash: prev_hash.to_owned(),
        hash: String::new(),
    }
}

/// A hash as stored: its 32 bytes.
fn hash_bytes(field: &'static str, hex_digits: &str) -> Result<Vec<u8>, StoreError> {
    let mut bytes = vec![0_u8; 32];
    hex::decode_to_slice(hex_digits, &mut bytes).map_err(|err| {
        StoreError::invalid(
            field,
            format!("`{hex_digits}` is not a SHA-256 in hex: {err}"),
        )
    })?;
    Ok(bytes)
}

/// Cuts `text` to at most `max` bytes, on a character boundary.
fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().to_owned()
}

async fn load_head(tx: &mut AnyConnection, gateway: &str) -> Result<Head, StoreError> {
    // One statement creates the chain on first use and reads (and, on PostgreSQL, row-locks)
    // its head: the no-op update makes `RETURNING` answer for an existing row too.
    let row = sqlx::query(
        "INSERT INTO audit_chains (gateway, head_seq, head_hash, anchor_seq, anchor_hash) \
         VALUES ($1, 0, $2, 0, $2) \
         ON CONFLICT (gateway) DO UPDATE SET gateway = excluded.gateway \
         RETURNING chain, head_seq, head_hash",
    )
    .bind(gateway)
    .bind(GENESIS_HASH)
    .fetch_one(&mut *tx)
    .await
    .map_err(db_error)?;
    Ok(Head {
        chain: column(&row, "chain")?,
        seq: unsigned(&row, "head_seq")?,
        hash: column(&row, "head_hash")?,
    })
}

/// Rows for the next `INSERT` when `remaining` are left: the largest power of two that fits, so
/// that batches of any size use at most seven statement shapes (64, 32, …, 1 rows), which stay
/// in the connection's prepared-statement cache instead of being parsed again for every size.
fn insert_size(remaining: usize) -> usize {
    let fitting = remaining.clamp(1, MAX_ROWS_PER_INSERT);
    1 << fitting.ilog2()
}

/// Inserts `events` (chained, in order) in multi-row `INSERT`s of at most
/// [`MAX_ROWS_PER_INSERT`], numbering their agents, their reasons' templates and their outcomes
/// first.
async fn insert_all(
    tx: &mut AnyConnection,
    dialect: Dialect,
    known: &KnownNumbers,
    heads: &BTreeMap<&str, Head>,
    events: &[AuditEvent],
) -> Result<(), StoreError> {
    let agent_ids = events
        .iter()
        .filter_map(|e| e.event.agent.as_ref().map(|agent| agent.id.as_str()));
    let agents = numbers(
        tx,
        known,
        Numbering::Agents,
        agent_ids.map(|id| (id, &[][..])),
    )
    .await?;
    let templates: Vec<Option<String>> = events
        .iter()
        .map(|e| {
            let event = &e.event;
            reasons::template(event.reason.as_deref()?, &event.action)
        })
        .collect();
    let reasons = numbers(
        tx,
        known,
        Numbering::Reasons,
        templates
            .iter()
            .flatten()
            .map(|template| (template.as_str(), &[][..])),
    )
    .await?;
    let outcomes: Vec<(String, Outcome)> = events
        .iter()
        .map(|e| {
            let outcome = Outcome::of(&e.event);
            (outcome.key(), outcome)
        })
        .collect();
    let outcome_numbers = numbers(
        tx,
        known,
        Numbering::Outcomes,
        outcomes
            .iter()
            .map(|(key, outcome)| (key.as_str(), &outcome.fields[..])),
    )
    .await?;
    let numbers = RowNumbers {
        heads,
        agents: &agents,
        reasons: &reasons,
        outcomes: &outcome_numbers,
    };
    let (mut rest, mut rest_templates, mut rest_outcomes) =
        (events, templates.as_slice(), outcomes.as_slice());
    while !rest.is_empty() {
        let size = insert_size(rest.len());
        let (rows, tail) = rest.split_at(size);
        let (row_templates, templates_tail) = rest_templates.split_at(size);
        let (row_outcomes, outcomes_tail) = rest_outcomes.split_at(size);
        insert(tx, dialect, &numbers, rows, row_templates, row_outcomes).await?;
        (rest, rest_templates, rest_outcomes) = (tail, templates_tail, outcomes_tail);
    }
    Ok(())
}

/// A table that numbers a text audit rows name by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Numbering {
    /// `audit_agents`: agent ids.
    Agents,
    /// `audit_reasons`: reason templates (`reasons`).
    Reasons,
    /// `audit_outcomes`: outcomes (`outcomes`), by key, with their nine columns.
    Outcomes,
}

impl Numbering {
    fn select(self) -> &'static str {
        match self {
            Self::Agents => "SELECT agent FROM audit_agents WHERE agent_id = $1",
            Self::Reasons => "SELECT reason FROM audit_reasons WHERE template = $1",
            Self::Outcomes => "SELECT outcome FROM audit_outcomes WHERE key = $1",
        }
    }

    fn insert(self) -> &'static str {
        match self {
            Self::Agents => {
                "INSERT INTO audit_agents (agent_id) VALUES ($1) ON CONFLICT DO NOTHING"
            }
            Self::Reasons => {
                "INSERT INTO audit_reasons (template) VALUES ($1) ON CONFLICT DO NOTHING"
            }
            Self::Outcomes => concat!(
                "INSERT INTO audit_outcomes (key, ",
                outcome_fields!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING"
            ),
        }
    }
}

/// Numbers this process has read from the numbering tables, so that a batch reads none it has
/// read before (a batch of checks by one agent under one rule would otherwise read three).
/// Only numbers that were already committed are kept: a number this transaction inserts
/// disappears if it rolls back, and is kept when a later batch reads it. Numbers never change
/// and their rows are never deleted, so an entry never goes stale.
#[derive(Debug, Default)]
pub(crate) struct KnownNumbers(Mutex<HashMap<Numbering, HashMap<String, i64>>>);

/// Most numbers kept per table: reasons that carry a number of their own (an approval's id)
/// make many templates; past this many the table's map is dropped and filled again as batches
/// read them.
const MAX_KNOWN_NUMBERS: usize = 4096;

impl KnownNumbers {
    fn get(&self, numbering: Numbering, key: &str) -> Option<i64> {
        let known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        known.get(&numbering)?.get(key).copied()
    }

    fn remember(&self, numbering: Numbering, key: &str, number: i64) {
        let mut known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let table = known.entry(numbering).or_default();
        if table.len() >= MAX_KNOWN_NUMBERS {
            table.clear();
        }
        table.insert(key.to_owned(), number);
    }
}

/// The number of each text `keys` name, numbering those seen for the first time (with the
/// columns that come with the key, bound after it). One read per distinct text of the batch
/// that `known` does not hold; an insert only for a new one, which on PostgreSQL never waits
/// on a row lock another gateway holds (`DO NOTHING` locks nothing). Rows are never deleted:
/// events outlive their agent, and a template or an outcome costs a few bytes once.
async fn numbers<'k>(
    tx: &mut AnyConnection,
    known: &KnownNumbers,
    numbering: Numbering,
    keys: impl Iterator<Item = (&'k str, &'k [Option<&'k str>])>,
) -> Result<BTreeMap<&'k str, i64>, StoreError> {
    let keys: BTreeMap<&str, &[Option<&str>]> = keys.collect();
    let mut numbers = BTreeMap::new();
    for (key, columns) in keys {
        if let Some(number) = known.get(numbering, key) {
            numbers.insert(key, number);
            continue;
        }
        let number = match number(tx, numbering, key).await? {
            Some(number) => {
                known.remember(numbering, key, number);
                number
            }
            None => {
                columns
                    .iter()
                    .fold(
                        sqlx::query(numbering.insert()).bind(key),
                        |query, column| query.bind(*column),
                    )
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                number(tx, numbering, key)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt(format!("`{key}` could not be numbered")))?
            }
        };
        numbers.insert(key, number);
    }
    Ok(numbers)
}

async fn number(
    tx: &mut AnyConnection,
    numbering: Numbering,
    key: &str,
) -> Result<Option<i64>, StoreError> {
    sqlx::query_scalar(numbering.select())
        .bind(key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)
}

/// The numbers a batch's rows store instead of texts: chains, agents, reason templates,
/// outcomes.
struct RowNumbers<'a> {
    heads: &'a BTreeMap<&'a str, Head>,
    agents: &'a BTreeMap<&'a str, i64>,
    reasons: &'a BTreeMap<&'a str, i64>,
    outcomes: &'a BTreeMap<&'a str, i64>,
}

/// Inserts `rows` with one multi-row `INSERT`; `numbers` number their chains, agents, the
/// `templates` of their reasons (one per row, `None` for a reason stored as it is) and their
/// `outcomes` (one per row, by key).
async fn insert(
    tx: &mut AnyConnection,
    dialect: Dialect,
    numbers: &RowNumbers<'_>,
    rows: &[AuditEvent],
    templates: &[Option<String>],
    outcomes: &[(String, Outcome<'_>)],
) -> Result<(), StoreError> {
    let RowNumbers {
        heads,
        agents,
        reasons,
        outcomes: outcome_numbers,
    } = numbers;
    let width = INSERT_COLUMNS.split(',').count();
    let placeholders: Vec<String> = (0..rows.len())
        .map(|row| {
            let first = row * width + 1;
            let columns: Vec<String> = (first..first + width)
                .map(|n| dialect.placeholder(n))
                .collect();
            format!("({})", columns.join(", "))
        })
        .collect();
    let sql = format!(
        "INSERT INTO audit_events ({INSERT_COLUMNS}) VALUES {}",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(&sql);
    for (
        (
            AuditEvent {
                event, seq, hash, ..
            },
            template,
        ),
        (outcome_key, _),
    ) in rows.iter().zip(templates).zip(outcomes)
    {
        let outcome = outcome_numbers
            .get(outcome_key.as_str())
            .copied()
            .ok_or_else(|| {
                StoreError::Corrupt(format!("no number loaded for outcome `{outcome_key}`"))
            })?;
        let reason_ref = template
            .as_deref()
            .map(|template| {
                reasons.get(template).copied().ok_or_else(|| {
                    StoreError::Corrupt(format!("no number loaded for reason `{template}`"))
                })
            })
            .transpose()?;
        let context = canonical_json(&serde_json::Value::Object(event.context.clone()));
        let chain = heads
            .get(event.gateway.as_str())
            .ok_or_else(|| {
                StoreError::Corrupt(format!("no head loaded for chain `{}`", event.gateway))
            })?
            .chain;
        query = query
            .bind(stored_id::to_stored(&event.id))
            .bind(chain)
            .bind(signed("seq", *seq)?)
            .bind(micros(event.ts))
            .bind(
                event
                    .agent
                    .as_ref()
                    .map(|agent| {
                        agents.get(agent.id.as_str()).copied().ok_or_else(|| {
                            StoreError::Corrupt(format!(
                                "no number loaded for agent `{}`",
                                agent.id
                            ))
                        })
                    })
                    .transpose()?,
            )
            .bind(event.agent.as_ref().map(|agent| agent.name.as_str()))
            .bind(&event.action)
            .bind(&event.resource)
            .bind(event.reason.as_deref().filter(|_| reason_ref.is_none()))
            .bind(event.trace_id.as_deref().map(stored_id::to_stored))
            .bind(&event.approval_id)
            .bind(&event.status)
            .bind(&event.result)
            .bind(context)
            .bind(
                event
                    .latency_us
                    .map(|us| signed("latency_us", us))
                    .transpose()?,
            )
            .bind(hash_bytes("hash", hash)?)
            .bind(reason_ref)
            .bind(outcome);
    }
    query.execute(&mut *tx).await.map_err(|err| {
        if is_unique_violation(&err) {
            StoreError::conflict(
                "audit batch",
                "an event id of the batch is already stored (or repeated in it)",
            )
        } else {
            db_error(err)
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_into_power_of_two_inserts() {
        let sizes = |mut n: usize| {
            let mut sizes = Vec::new();
            while n > 0 {
                let size = insert_size(n);
                sizes.push(size);
                n -= size;
            }
            sizes
        };
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(100), [64, 32, 4]);
        assert_eq!(sizes(127), [64, 32, 16, 8, 4, 2, 1]);
        assert_eq!(sizes(130), [64, 64, 2]);
    }

    #[test]
    fn results_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_RESULT_BYTES);
        let short = cut(&long, MAX_RESULT_BYTES);
        assert_eq!(short.len(), MAX_RESULT_BYTES);
        assert_eq!(cut("short", MAX_RESULT_BYTES), "short");
        let odd = format!("a{}", "é".repeat(MAX_RESULT_BYTES));
        assert_eq!(cut(&odd, MAX_RESULT_BYTES).len(), MAX_RESULT_BYTES - 1);
    }
}
