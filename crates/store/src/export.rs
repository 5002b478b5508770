//! Streaming every event, oldest first, for `GET /admin/audit/export` (JSON lines).

use std::sync::Arc;

use futures::Stream;
use futures::stream::{self, StreamExt};

use crate::{AuditEvent, AuditFilter, AuditOrder, Store, StoreError};

/// Events per database round trip while exporting.
const EXPORT_PAGE: u32 = 500;

/// Every event matching `filter`, in commit order (so each chain in `seq` order), fetched page by
/// page so that an export of millions of events holds one page in memory. The filter's `limit`,
/// `cursor` and `order` are ignored.
pub fn export_audit(
    store: Arc<dyn Store>,
    filter: AuditFilter,
) -> impl Stream<Item = Result<AuditEvent, StoreError>> + Send + 'static {
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
            let next = page.next_cursor.map(|cursor| AuditFilter {
                cursor: Some(cursor),
                ..filter
            });
            Ok::<_, StoreError>(Some((stream::iter(page.entries.into_iter().map(Ok)), next)))
        }
    })
    .map(|page| match page {
        Ok(events) => events.boxed(),
        Err(err) => stream::once(async move { Err(err) }).boxed(),
    })
    .flatten()
}
