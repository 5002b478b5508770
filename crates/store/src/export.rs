//! Streaming every event, oldest first, for `GET /admin/audit/export` (JSON lines), with the
//! signed checkpoints of the exported events, so that an export verifies offline.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::Stream;
use futures::stream::{self, StreamExt};
use serde::Serialize;

use crate::{AuditCheckpoint, AuditEvent, AuditFilter, AuditOrder, Store, StoreError};

/// Events per database round trip while exporting.
const EXPORT_PAGE: u32 = 500;

/// One line of an export: an event as the API shows it, or `{"checkpoint": {…}}` right after the
/// event a checkpoint signed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ExportLine {
    /// An audit event.
    Event(Box<AuditEvent>),
    /// A signed checkpoint over the event just before it.
    Checkpoint {
        /// The checkpoint.
        checkpoint: AuditCheckpoint,
    },
}

/// Every event matching `filter`, in commit order (so each chain in `seq` order), each followed
/// by the checkpoint that signed it if there is one, fetched page by page so that an export of
/// millions of events holds one page in memory. The filter's `limit`, `cursor` and `order` are
/// ignored.
pub fn export_audit(
    store: Arc<dyn Store>,
    filter: AuditFilter,
) -> impl Stream<Item = Result<ExportLine, StoreError>> + Send + 'static {
    let first = AuditFilter {
        limit: EXPORT_PAGE,
        cursor: None,
        order: AuditOrder::OldestFirst,
        ..filter
    };
    stream::try_unfold(Some(first), move |next| {
        let store = Arc::clone(&store);
        async move {
            let Some(filter) = next else {
                return Ok(None);
            };
            let page = store.query_audit(&filter).await?;
            let lines = with_checkpoints(store.as_ref(), page.entries).await?;
            let next = page.next_cursor.map(|cursor| AuditFilter {
                cursor: Some(cursor),
                ..filter
            });
            Ok::<_, StoreError>(Some((stream::iter(lines.into_iter().map(Ok)), next)))
        }
    })
    .map(|page| match page {
        Ok(lines) => lines.boxed(),
        Err(err) => stream::once(async move { Err(err) }).boxed(),
    })
    .flatten()
}

/// `events` as export lines, each followed by its checkpoint (one query per chain in the page).
async fn with_checkpoints(
    store: &dyn Store,
    events: Vec<AuditEvent>,
) -> Result<Vec<ExportLine>, StoreError> {
    let mut spans: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for event in &events {
        let span = spans
            .entry(event.event.gateway.as_str())
            .or_insert((event.seq, event.seq));
        span.0 = span.0.min(event.seq);
        span.1 = span.1.max(event.seq);
    }
    let mut signed: HashMap<(String, u64), AuditCheckpoint> = HashMap::new();
    for (gateway, (first, last)) in spans {
        for checkpoint in store
            .audit_checkpoints(gateway, first.saturating_sub(1), last)
            .await?
        {
            signed.insert((checkpoint.gateway.clone(), checkpoint.seq), checkpoint);
        }
    }
    let mut lines = Vec::with_capacity(events.len() + signed.len());
    for event in events {
        let key = (event.event.gateway.clone(), event.seq);
        lines.push(ExportLine::Event(Box::new(event)));
        if let Some(checkpoint) = signed.remove(&key) {
            lines.push(ExportLine::Checkpoint { checkpoint });
        }
    }
    Ok(lines)
}
