//! `/admin/audit`: query with filters and a cursor, follow as Server-Sent Events, stats, verify,
//! and a streamed JSON-lines export.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use meshguard_policy::{Effect, Loc, Pattern};
use meshguard_store::{
    AgentKey, AuditEvent, AuditFilter, AuditKind, AuditOrder, StatsQuery, VerifyOptions,
    export_audit,
};
use meshguard_store::{AuditStats, VerifyReport};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};

use super::sorted::SortedJson;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;
use crate::state::AppState;

/// The filters shared by query, stream and export.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Events per page: default 100, at most 1000.
    #[serde(default)]
    limit: Option<u32>,
    /// `allow`, `deny` or `require_approval`.
    #[serde(default)]
    decision: Option<String>,
    /// A code (`denied_by_rule`, `unauthorized`, …).
    #[serde(default)]
    code: Option<String>,
    /// The agent's id or name (also as `agent` or `agent_id`).
    #[serde(default, alias = "agent", alias = "agent_id")]
    agent_id: Option<String>,
    /// The action, exactly, or a pattern with `*` and `?`.
    #[serde(default)]
    action: Option<String>,
    /// One trace's events (also as `trace_id`).
    #[serde(default, alias = "trace_id")]
    trace_id: Option<String>,
    /// `check`, `record`, `test`, `approval` or `admin`.
    #[serde(default)]
    kind: Option<String>,
    /// One gateway's chain (its instance id).
    #[serde(default)]
    gateway: Option<String>,
    /// Events at or after this RFC 3339 time (also as `since`).
    #[serde(default, alias = "since")]
    from: Option<String>,
    /// Events before this RFC 3339 time (also as `until`).
    #[serde(default, alias = "until")]
    to: Option<String>,
    /// The `nextCursor` of the previous page (with the same filters).
    #[serde(default)]
    cursor: Option<String>,
    /// `newest` (default) or `oldest` first.
    #[serde(default)]
    order: Option<String>,
}

/// One page of audit events.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditList {
    /// The events, newest first unless `order=oldest`.
    entries: Vec<AuditEvent>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// The checks of a period: totals, shares, top denied actions, hourly buckets.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditSummary {
    /// The counts.
    #[serde(flatten)]
    stats: AuditStats,
    /// The period asked for, in hours.
    period_hours: u32,
}

fn timestamp(field: &str, value: Option<&str>) -> Result<Option<OffsetDateTime>, ApiError> {
    value
        .map(|v| {
            OffsetDateTime::parse(v, &Rfc3339).map_err(|_| {
                ApiError::BadRequest(format!(
                    "{field}: `{v}` is not an RFC 3339 time (example: 2026-01-31T12:00:00Z)"
                ))
            })
        })
        .transpose()
}

impl AuditParams {
    fn filter(&self) -> Result<AuditFilter, ApiError> {
        let decision = match self.decision.as_deref() {
            None | Some("") => None,
            Some(d @ ("allow" | "deny" | "require_approval")) => Some(d.to_owned()),
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "decision: expected `allow`, `deny` or `require_approval`, got `{other}`"
                )));
            }
        };
        let kind = match self.kind.as_deref() {
            None | Some("") => None,
            Some(k) => Some(AuditKind::parse(k).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "kind: expected `check`, `record`, `test`, `approval` or `admin`, got `{k}`"
                ))
            })?),
        };
        let order = match self.order.as_deref() {
            None | Some("" | "newest") => AuditOrder::NewestFirst,
            Some("oldest") => AuditOrder::OldestFirst,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "order: expected `newest` or `oldest`, got `{other}`"
                )));
            }
        };
        Ok(AuditFilter {
            limit: self.limit.unwrap_or(100),
            decision,
            code: self.code.clone().filter(|s| !s.is_empty()),
            agent: self.agent_id.clone().filter(|s| !s.is_empty()),
            action: self.action.clone().filter(|s| !s.is_empty()),
            trace_id: self.trace_id.clone().filter(|s| !s.is_empty()),
            kind,
            gateway: self.gateway.clone().filter(|s| !s.is_empty()),
            from: timestamp("from", self.from.as_deref())?,
            to: timestamp("to", self.to.as_deref())?,
            cursor: self.cursor.clone().filter(|s| !s.is_empty()),
            order,
        })
    }
}

/// `GET /admin/audit`: one page, newest first by default → `{"entries", "nextCursor"}`.
#[utoipa::path(
    get,
    path = "/audit",
    operation_id = "query_audit",
    summary = "Query the audit trail",
    params(AuditParams),
    responses(
        (status = 200, body = AuditList, description = "One page of events."),
        (status = 400, body = ErrorBody, description = "`bad_request`: a filter, time or cursor the gateway cannot read."),
    )
)]
pub async fn query(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<SortedJson<AuditList>, ApiError> {
    let filter = params.filter()?;
    state.audit.settled().await;
    let page = state.store.query_audit(&filter).await?;
    Ok(SortedJson(AuditList {
        entries: page.entries,
        next_cursor: page.next_cursor,
    }))
}

/// The in-memory form of a filter, applied to events as they are committed.
struct LiveFilter {
    filter: AuditFilter,
    action: Option<Pattern>,
}

impl LiveFilter {
    fn new(filter: AuditFilter) -> Result<LiveFilter, ApiError> {
        let action = filter
            .action
            .as_deref()
            .map(|a| Pattern::compile(a, Loc::default()))
            .transpose()
            .map_err(|e| ApiError::BadRequest(format!("action: {e}")))?;
        Ok(LiveFilter { filter, action })
    }

    fn matches(&self, committed: &AuditEvent) -> bool {
        let event = &committed.event;
        let f = &self.filter;
        f.decision
            .as_ref()
            .is_none_or(|d| event.decision.map(Effect::as_str) == Some(d.as_str()))
            && f.code
                .as_ref()
                .is_none_or(|c| event.code.map(|code| code.as_str()) == Some(c.as_str()))
            && f.agent.as_ref().is_none_or(|a| {
                // As the stored query reads it: an id-shaped key is an id, anything else a name.
                event
                    .agent
                    .as_ref()
                    .is_some_and(|agent| match AgentKey::of(a) {
                        AgentKey::Id(id) => agent.id == id,
                        AgentKey::Name(name) => agent.name == name,
                    })
            })
            && self
                .action
                .as_ref()
                .is_none_or(|p| p.matches(&event.action))
            && f.trace_id
                .as_ref()
                .is_none_or(|t| event.trace_id.as_ref() == Some(t))
            && f.kind.is_none_or(|k| event.kind == k)
            && f.gateway.as_ref().is_none_or(|g| &event.gateway == g)
            && f.from.is_none_or(|from| event.ts >= from)
            && f.to.is_none_or(|to| event.ts < to)
    }
}

/// `GET /admin/audit/stream`: every event committed from now on that matches the filters, as
/// Server-Sent Events (`event: audit`, `id`: the event id, `data`: the event as JSON). The stream
/// ends when the gateway shuts down.
#[utoipa::path(
    get,
    path = "/audit/stream",
    operation_id = "stream_audit",
    summary = "Follow the audit trail",
    description = "Server-Sent Events: each matching event committed from now on as an `audit` \
        event (its id the event's id, its data the event's JSON); `lagged` with `{\"missed\": N}` \
        when the reader fell behind; a comment every 15 s keeps the connection open.",
    params(AuditParams),
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
         description = "The stream of events."),
        (status = 400, body = ErrorBody, description = "`bad_request`: a filter the gateway cannot read."),
    )
)]
pub async fn stream(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let live = LiveFilter::new(params.filter()?)?;
    // The other gateways' chains as they are now, read before subscribing: events they commit
    // from here on reach this stream too (see `audit_peers`).
    let heads = state.store.audit_heads().await?;
    let receiver = state.audit.subscribe();
    state.audit_follow_from.register(heads);
    let stopping = state.stopping.subscribe();
    let events = futures::stream::unfold(
        (receiver, live, stopping),
        |(mut receiver, live, mut stopping)| async move {
            loop {
                if *stopping.borrow_and_update() {
                    return None;
                }
                let next = tokio::select! {
                    next = receiver.recv() => next,
                    _ = stopping.changed() => return None,
                };
                match next {
                    Ok(event) if live.matches(&event) => {
                        let sse = Event::default()
                            .event("audit")
                            .id(event.event.id.clone())
                            .json_data(&event)
                            .unwrap_or_else(|_| Event::default().comment("unserialisable event"));
                        return Some((Ok(sse), (receiver, live, stopping)));
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(missed)) => {
                        let sse = Event::default()
                            .event("lagged")
                            .data(json!({ "missed": missed }).to_string());
                        return Some((Ok(sse), (receiver, live, stopping)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// `?period=HOURS&agentId&breakdown=hourly`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// Hours back from now: 1 to 8784, default 24.
    #[serde(default)]
    period: Option<u32>,
    /// Only this agent's checks: its id or name (also as `agent` or `agent_id`).
    #[serde(default, alias = "agent", alias = "agent_id")]
    agent_id: Option<String>,
    /// `hourly`: fill `hourly` with one bucket per hour.
    #[serde(default)]
    breakdown: Option<String>,
}

/// `GET /admin/audit/stats`: checks in the last `period` hours (default 24).
#[utoipa::path(
    get,
    path = "/audit/stats",
    operation_id = "audit_stats",
    summary = "Check statistics",
    params(StatsParams),
    responses(
        (status = 200, body = AuditSummary, description = "The checks of the period."),
        (status = 400, body = ErrorBody, description = "`bad_request`: a bad `period` or `breakdown`."),
    )
)]
pub async fn stats(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<StatsParams>,
) -> Result<SortedJson<AuditSummary>, ApiError> {
    let hours = params.period.unwrap_or(24);
    if hours == 0 || hours > 24 * 366 {
        return Err(ApiError::BadRequest(
            "period: expected a number of hours from 1 to 8784".into(),
        ));
    }
    let hourly = match params.breakdown.as_deref() {
        None | Some("") => false,
        Some("hourly") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "breakdown: expected `hourly`, got `{other}`"
            )));
        }
    };
    state.audit.settled().await;
    let to = OffsetDateTime::now_utc();
    let from = to - time::Duration::hours(i64::from(hours));
    let stats = state
        .store
        .audit_stats(&StatsQuery {
            from,
            to,
            agent: params.agent_id.filter(|s| !s.is_empty()),
            hourly,
        })
        .await?;
    Ok(SortedJson(AuditSummary {
        stats,
        period_hours: hours,
    }))
}

/// `?full=true` on `GET /admin/audit/verify`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VerifyParams {
    /// Walk every chain from its anchor, not from its newest verified checkpoint.
    #[serde(default)]
    full: bool,
}

/// `GET /admin/audit/verify`: recomputes every chain from its newest checkpoint an earlier
/// verification walked through (`?full=true`: from its anchor), checking every signed checkpoint
/// on the way; 200 with `ok: false` and the first broken `seq` when one does not verify.
#[utoipa::path(
    get,
    path = "/audit/verify",
    operation_id = "verify_audit",
    summary = "Verify the audit chains",
    params(VerifyParams),
    responses(
        (status = 200, body = VerifyReport,
         description = "Every chain walked and its checkpoints checked; `ok: false` names the first broken `seq`."),
        (status = 400, body = ErrorBody, description = "`bad_request`: `full` is not a boolean."),
    )
)]
pub async fn verify(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<VerifyParams>,
) -> Result<SortedJson<VerifyReport>, ApiError> {
    state.audit.settled().await;
    let options = VerifyOptions {
        full: params.full,
        keys: state.audit_keys.accepted.clone(),
    };
    let report = state.store.verify_audit(&options).await?;
    if let Some(broken) = report.first_break() {
        tracing::error!(gateway = %broken.gateway, seq = broken.seq, reason = %broken.reason, "audit chain does not verify");
    }
    Ok(SortedJson(report))
}

/// Most export lines sent as one piece of the body (a page of the export is 500 events).
const EXPORT_LINES_PER_PIECE: usize = 512;

/// `GET /admin/audit/export`: every matching event, oldest first, one JSON object per line,
/// streamed page by page. A store failure mid-way aborts the transfer (the client sees a
/// truncated body, never a silently short export).
#[utoipa::path(
    get,
    path = "/audit/export",
    operation_id = "export_audit",
    summary = "Export the audit trail",
    description = "Every matching event, oldest first, one JSON object (an `AuditEvent`) per line, \
        each signed event followed by its `{\"checkpoint\": {…}}` line, streamed; verifiable \
        offline with the gateway's public key (docs/architecture/audit-chain.md).",
    params(AuditParams),
    responses(
        (status = 200, content_type = "application/x-ndjson", body = String,
         description = "JSON lines."),
        (status = 400, body = ErrorBody, description = "`bad_request`: a filter the gateway cannot read."),
    )
)]
pub async fn export(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Response, ApiError> {
    let filter = params.filter()?;
    state.audit.settled().await;
    // The lines ready at once (a page of events) go out as one piece of the body: one piece
    // per line cost the client a wake-up and a write per event, which held `audit export` at
    // a third of the gateway's pace (docs/benchmarks.md, "Outcomes as numbers").
    let pieces = export_audit(state.store.clone(), filter)
        .ready_chunks(EXPORT_LINES_PER_PIECE)
        .flat_map(|lines| {
            let mut piece = Vec::new();
            let mut failed = None;
            for line in lines {
                let written = line
                    .map_err(|e| {
                        tracing::error!(error = %e, "audit export aborted");
                        std::io::Error::other(e.to_string())
                    })
                    .and_then(|line| {
                        serde_json::to_writer(&mut piece, &line).map_err(std::io::Error::other)
                    });
                match written {
                    Ok(()) => piece.push(b'\n'),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            // The lines before a failure still go out, then the body ends in error.
            futures::stream::iter(
                (!piece.is_empty())
                    .then_some(Ok(piece))
                    .into_iter()
                    .chain(failed.map(Err)),
            )
        });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(pieces),
    )
        .into_response())
}
