//! `audit verify`: walk every chain from its anchor (`--full`) or from its newest checkpoint an
//! earlier verification walked through, recomputing every hash and checking every signature.

use std::sync::Arc;

use sqlx::any::AnyRow;
use time::OffsetDateTime;

use super::{
    CHAIN_EVENTS, COLUMNS, EventColumns, WALK_COLUMNS, WALK_EVENTS, checkpoint, col, from_row,
    of_chain, sqlite_walk, verify_row,
};
use crate::chain::{GENESIS_HASH, event_hash};
use futures::{StreamExt as _, TryStreamExt as _};

use crate::chain_walk::ChainWalk;
use crate::sql::{SqlStore, column, db_error, signed, unsigned, unsigned_opt};
use crate::{ChainBreak, ChainReport, StoreError, VerifyOptions, VerifyReport};

/// Events (seqs) read per round trip while walking a chain.
const PAGE: u64 = 2000;
const PAGE_USIZE: usize = 2000;
/// Pages read and hashed ahead of the walk, each on a connection and a task of its own: two
/// per core of the reference machine, so that a page finished out of turn leaves no core idle.
const PAGES_AHEAD: usize = 4;
/// Chains walked at once (several gateways sharing a PostgreSQL database each have one).
const CHAINS_AT_ONCE: usize = 2;

/// One page of a chain: each event's place in it and whether its stored hash is its
/// content's. The hashes are kept in one string per page: a page is read on one thread and
/// walked on another, and freeing two strings per event across threads cost more than reading.
#[derive(Default)]
pub(super) struct Page {
    /// Each event's seq, the end of its `prev_hash` and of its `hash` in `hashes`, and whether
    /// its stored hash is the one recomputed from it.
    links: Vec<(u64, usize, usize, bool)>,
    hashes: String,
    /// The seq the page reads after: its row, when read, only gives the next its `prev_hash`.
    after: u64,
    /// The stored hash of the row before the next: the `prev_hash` of a row that stores none.
    before: Option<[u8; 32]>,
    /// Why the row after the last event could not be decoded (the walk breaks there).
    pub(super) unreadable: Option<String>,
}

impl Page {
    /// A page of the events after seq `after`, whose hash is `before` when the walk knows it
    /// (else the page reads that event too).
    pub(super) fn after(after: u64, before: Option<[u8; 32]>) -> Self {
        Self {
            after,
            before,
            ..Self::default()
        }
    }

    /// Adds the next row, hashed again; `false` (and the page ends) when the row did not
    /// decode.
    pub(super) fn push(&mut self, row: &impl EventColumns) -> bool {
        let seq = row.integer(col::SEQ, "seq").ok().flatten();
        // A stored hash that is not 32 bytes breaks the chain at its own row, before the next
        // one needs it.
        let stored = row
            .bytes(col::HASH, "hash")
            .ok()
            .flatten()
            .and_then(|hash| <[u8; 32]>::try_from(hash).ok());
        if seq.and_then(|seq| u64::try_from(seq).ok()) == Some(self.after) && self.links.is_empty()
        {
            self.before = stored;
            return true;
        }
        let Self {
            links,
            hashes,
            before,
            ..
        } = self;
        let added = verify_row(
            row,
            before.as_ref().map(|hash| &hash[..]),
            |seq, prev_hash, hash, matches| {
                hashes.push_str(prev_hash);
                let prev_end = hashes.len();
                hashes.push_str(hash);
                links.push((seq, prev_end, hashes.len(), matches));
            },
        );
        self.before = stored;
        match added {
            Ok(()) => true,
            Err(err) => {
                self.unreadable = Some(err.to_string());
                false
            }
        }
    }

    /// Each event's seq, `prev_hash`, `hash` and whether the hash matched, in order.
    fn links(&self) -> impl Iterator<Item = (u64, &str, &str, bool)> {
        let mut start = 0;
        self.links
            .iter()
            .map(move |&(seq, prev_end, end, matches)| {
                let prev_hash = self.hashes.get(start..prev_end).unwrap_or_default();
                let hash = self.hashes.get(prev_end..end).unwrap_or_default();
                start = end;
                (seq, prev_hash, hash, matches)
            })
    }
}

/// Where the pages of a walk are read from.
#[derive(Clone)]
enum Source {
    /// Through the pool (PostgreSQL).
    Pool(sqlx::AnyPool),
    /// Straight from the SQLite file, on a blocking thread per page, with the small tables the
    /// rows name read once for the chain.
    Sqlite(
        Arc<sqlite_walk::SqliteReader>,
        Arc<sqlite_walk::Dictionaries>,
    ),
}

/// The events of `gateway`'s chain with `after < seq <= through`, in order, each hashed again;
/// a row that does not decode ends the page there.
async fn read_page(
    source: Source,
    gateway: String,
    after: u64,
    through: u64,
    before: Option<[u8; 32]>,
) -> Result<Page, StoreError> {
    let page = Page::after(after, before);
    let (after, through) = (signed("seq", after)?, signed("seq", through)?);
    match source {
        Source::Sqlite(reader, dictionaries) => {
            tokio::task::spawn_blocking(move || reader.page(&dictionaries, after, through, page))
                .await
                .map_err(|err| StoreError::Unavailable(format!("reading a page failed: {err}")))?
        }
        Source::Pool(pool) => {
            let sql = format!(
                "SELECT {WALK_COLUMNS} FROM {WALK_EVENTS} WHERE {} AND e.seq >= $2 \
                 AND e.seq <= $3 ORDER BY e.seq",
                of_chain("$1")
            );
            let rows = sqlx::query(&sql)
                .bind(&gateway)
                .bind(after)
                .bind(through)
                .fetch_all(&pool)
                .await
                .map_err(db_error)?;
            let mut page = page;
            for row in &rows {
                if !page.push(row) {
                    break;
                }
            }
            Ok(page)
        }
    }
}

/// A chain as `audit_chains` records it.
struct ChainRow {
    gateway: String,
    head_seq: u64,
    head_hash: String,
    anchor_seq: u64,
    anchor_hash: String,
}

fn chain_from_row(row: &AnyRow) -> Result<ChainRow, StoreError> {
    Ok(ChainRow {
        gateway: column(row, "gateway")?,
        head_seq: unsigned(row, "head_seq")?,
        head_hash: column(row, "head_hash")?,
        anchor_seq: unsigned(row, "anchor_seq")?,
        anchor_hash: column(row, "anchor_hash")?,
    })
}

pub(crate) async fn verify(
    store: &SqlStore,
    options: &VerifyOptions,
) -> Result<VerifyReport, StoreError> {
    let rows = sqlx::query(
        "SELECT gateway, head_seq, head_hash, anchor_seq, anchor_hash FROM audit_chains",
    )
    .fetch_all(&store.pool)
    .await
    .map_err(db_error)?;
    let mut chains = rows
        .iter()
        .map(chain_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    // Events whose chain has no record at all: their chain row was deleted (and with it the
    // gateway's instance id, so the chain is named by its number).
    // The chains present are found by seeking `(chain, seq)` once per chain (a loose index
    // scan), not by reading every row: routine verification stays O(new events).
    let orphans = sqlx::query(
        "WITH RECURSIVE present (chain) AS ( \
             SELECT MIN(chain) FROM audit_events \
             UNION ALL \
             SELECT (SELECT MIN(e.chain) FROM audit_events e WHERE e.chain > present.chain) \
             FROM present WHERE present.chain IS NOT NULL) \
         SELECT p.chain, \
             (SELECT MIN(e.seq) FROM audit_events e WHERE e.chain = p.chain) AS first_seq \
         FROM present p \
         WHERE p.chain IS NOT NULL AND p.chain NOT IN (SELECT chain FROM audit_chains)",
    )
    .fetch_all(&store.pool)
    .await
    .map_err(db_error)?;
    chains.sort_by(|a, b| a.gateway.as_bytes().cmp(b.gateway.as_bytes()));

    // Chains are independent: a few are walked at once, each with its own pages ahead.
    let mut reports: Vec<ChainReport> = futures::stream::iter(chains)
        .map(|chain| async move {
            let report = walk(store, &chain, options).await?;
            if report.broken.is_none() {
                checkpoint::mark_verified(
                    store,
                    &chain.gateway,
                    report.head_seq,
                    OffsetDateTime::now_utc(),
                )
                .await?;
            }
            Ok::<_, StoreError>(report)
        })
        .buffered(CHAINS_AT_ONCE)
        .try_collect()
        .await?;
    let events_checked = reports.iter().map(|report| report.events).sum();
    reports.reserve(orphans.len());
    for row in &orphans {
        let gateway = format!("chain #{}", column::<i64>(row, "chain")?);
        let seq = unsigned(row, "first_seq")?;
        reports.push(ChainReport {
            anchor_seq: 0,
            head_seq: 0,
            from_seq: 0,
            events: 0,
            checkpoints: 0,
            signed_seq: None,
            broken: Some(ChainBreak {
                gateway: gateway.clone(),
                seq,
                reason: "the chain's head record is missing".to_owned(),
            }),
            gateway,
        });
    }
    reports.sort_by(|a, b| a.gateway.as_bytes().cmp(b.gateway.as_bytes()));
    Ok(VerifyReport {
        ok: reports.iter().all(|report| report.broken.is_none()),
        full: options.full,
        events_checked,
        chains: reports,
    })
}

/// Where a walk of `chain` starts: the anchor, or (routinely) the newest checkpoint an earlier
/// verification walked through — after checking again its signature and that its event is
/// still the one it signed.
async fn start<'k>(
    store: &SqlStore,
    chain: &ChainRow,
    options: &'k VerifyOptions,
) -> Result<ChainWalk<'k>, StoreError> {
    let from_anchor = || {
        let first_link = if chain.anchor_seq == 0 && chain.anchor_hash == GENESIS_HASH {
            "prev_hash is not the genesis hash of a new chain".to_owned()
        } else {
            format!(
                "prev_hash does not match the retention anchor (seq {})",
                chain.anchor_seq
            )
        };
        ChainWalk::new(
            &chain.gateway,
            chain.anchor_seq,
            &chain.anchor_hash,
            first_link,
            &options.keys,
        )
    };
    if options.full {
        return Ok(from_anchor());
    }
    let Some(trusted) = checkpoint::latest(store, &chain.gateway, chain.anchor_seq, true).await?
    else {
        return Ok(from_anchor());
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM {CHAIN_EVENTS} WHERE {} AND e.seq = $2",
        of_chain("$1")
    );
    let row = sqlx::query(&sql)
        .bind(&chain.gateway)
        .bind(signed("seq", trusted.seq)?)
        .fetch_optional(&store.pool)
        .await
        .map_err(db_error)?;
    let mut walk = ChainWalk::new(
        &chain.gateway,
        trusted.seq,
        &trusted.hash,
        format!(
            "prev_hash does not match the hash of seq {} (a verified checkpoint): the chain \
             was relinked",
            trusted.seq
        ),
        &options.keys,
    );
    let event = row.as_ref().map(from_row).transpose();
    let problem = match (&event, trusted.check_signature(&options.keys)) {
        (_, Err(reason)) => Some(reason),
        (Err(err), _) => Some(format!("the event cannot be read: {err}")),
        (Ok(None), _) => Some(format!(
            "seq {} is missing: a verified checkpoint signed it",
            trusted.seq
        )),
        (Ok(Some(event)), Ok(()))
            if event.hash != trusted.hash || event_hash(event) != event.hash =>
        {
            Some(format!(
                "the event at seq {} no longer matches its verified checkpoint: the event was \
                 altered",
                trusted.seq
            ))
        }
        (Ok(Some(_)), Ok(())) => None,
    };
    match problem {
        Some(reason) => walk.break_at(trusted.seq, reason),
        None => {
            walk.start_signed();
            walk.report_mut().checkpoints = 1;
        }
    }
    Ok(walk)
}

/// Walks one chain; stops at its first break.
async fn walk(
    store: &SqlStore,
    chain: &ChainRow,
    options: &VerifyOptions,
) -> Result<ChainReport, StoreError> {
    let mut walk = start(store, chain, options).await?;
    walk.report_mut().anchor_seq = chain.anchor_seq;
    if walk.is_broken() {
        walk.report_mut().head_seq = chain.head_seq;
        return Ok(walk.finish());
    }
    let (from_seq, _) = walk.last();
    for checkpoint in checkpoint::range(store, &chain.gateway, from_seq, chain.head_seq).await? {
        walk.expect(checkpoint);
    }
    // The walk stops at the head read above: events appended since (through MeshGuard, which
    // moves the head in the same transaction) are the next verification's, not a break. Pages
    // are seq ranges, read and hashed by tasks of their own, a few ahead of the walk: reading
    // rows is what verification spends its time on, and each connection reads on its own thread.
    let ranges: Vec<(u64, u64)> = (from_seq..chain.head_seq)
        .step_by(PAGE_USIZE)
        .map(|after| (after, after.saturating_add(PAGE).min(chain.head_seq)))
        .collect();
    let source = match &store.sqlite_reader {
        Some(reader) => {
            let (blocking, gateway) = (reader.clone(), chain.gateway.clone());
            let dictionaries = tokio::task::spawn_blocking(move || blocking.dictionaries(&gateway))
                .await
                .map_err(|err| {
                    StoreError::Unavailable(format!("reading the audit tables failed: {err}"))
                })??;
            Source::Sqlite(reader.clone(), Arc::new(dictionaries))
        }
        None => Source::Pool(store.pool.clone()),
    };
    let gateway = chain.gateway.clone();
    // The first page's `prev_hash` for a row that stores none is where the walk starts; the
    // other pages read the event before them.
    let mut start = [0_u8; 32];
    let start = hex::decode_to_slice(walk.last().1, &mut start)
        .ok()
        .map(|()| start);
    let mut pages = futures::stream::iter(ranges)
        .map(|(after, through)| {
            let before = start.filter(|_| after == from_seq);
            tokio::spawn(read_page(
                source.clone(),
                gateway.clone(),
                after,
                through,
                before,
            ))
        })
        .buffered(PAGES_AHEAD);
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|err| StoreError::Unavailable(format!("reading a page failed: {err}")))??;
        for (seq, prev_hash, hash, matches) in page.links() {
            if !walk.push_link(seq, prev_hash, hash, matches) {
                break;
            }
        }
        if walk.is_broken() {
            break;
        }
        if let Some(reason) = page.unreadable {
            let (last, _) = walk.last();
            walk.break_at(last + 1, format!("the event cannot be read: {reason}"));
            break;
        }
    }
    drop(pages);
    let (last_seq, last_hash) = walk.last();
    let (last_seq, last_hash) = (last_seq, last_hash.to_owned());
    if !walk.is_broken() {
        // Deleting the newest events leaves a chain that links perfectly: the head record
        // catches it.
        if last_seq < chain.head_seq {
            walk.break_at(
                last_seq + 1,
                format!(
                    "seq {} to {} are missing: the chain's head is at seq {}",
                    last_seq + 1,
                    chain.head_seq,
                    chain.head_seq
                ),
            );
        } else if last_hash != chain.head_hash {
            walk.break_at(
                chain.head_seq,
                "the last event's hash differs from the chain's recorded head",
            );
        } else if let Some((seq, head_seq)) = beyond_head(store, &chain.gateway).await? {
            walk.break_at(
                seq,
                format!(
                    "events after seq {head_seq} were not appended through MeshGuard (the head is at seq {head_seq})"
                ),
            );
        }
    }
    walk.report_mut().head_seq = chain.head_seq;
    Ok(walk.finish())
}

/// The first event stored past its chain's current head, with that head: rows written behind
/// MeshGuard's back. One statement, so the head and the events are read in one snapshot and an
/// append committing meanwhile (events and head move together) is never mistaken for one.
async fn beyond_head(store: &SqlStore, gateway: &str) -> Result<Option<(u64, u64)>, StoreError> {
    // A subquery per chain record, so that both databases seek `(chain, seq)` past the head
    // (as a join, PostgreSQL scanned every event).
    let row = sqlx::query(
        "SELECT c.head_seq, (SELECT MIN(e.seq) FROM audit_events e \
             WHERE e.chain = c.chain AND e.seq > c.head_seq) AS first_seq \
         FROM audit_chains c WHERE c.gateway = $1",
    )
    .bind(gateway)
    .fetch_optional(&store.pool)
    .await
    .map_err(db_error)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let first = unsigned_opt(&row, "first_seq")?;
    let head = unsigned_opt(&row, "head_seq")?;
    Ok(first.zip(head))
}
