//! `meshguard audit …`: tail (and follow), stats, trace, verify, export.

use std::collections::HashSet;
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;
use serde_json::Value;

use crate::cli::{AuditCommand, AuditTailArgs, Breakdown};
use crate::client::AdminClient;
use crate::commands::Context;
use crate::error::CliError;
use crate::output::{Output, display, exit_on_write_error, field, short_time};

/// Runs one `audit` subcommand.
pub async fn run(ctx: &Context, command: AuditCommand) -> anyhow::Result<ExitCode> {
    // An export is verified offline: no gateway, no admin token.
    if let AuditCommand::Verify { file, key, .. } = &command
        && !file.is_empty()
    {
        let report = crate::commands::audit_offline::verify_files(file, key)?;
        return verdict(ctx, &report);
    }
    let client = ctx.client()?;
    match command {
        AuditCommand::Tail(args) => tail(ctx, &client, args).await?,
        AuditCommand::Stats {
            agent,
            period,
            breakdown,
        } => {
            let mut query = vec![("period", period.to_string())];
            if let Some(agent) = agent {
                query.push(("agentId", agent));
            }
            if breakdown == Some(Breakdown::Hourly) {
                query.push(("breakdown", "hourly".to_owned()));
            }
            let stats = client.get(&["admin", "audit", "stats"], &query).await?;
            if ctx.out.json {
                ctx.out.print_json(&stats);
            } else {
                crate::commands::audit_view::print_stats(ctx.out, period, &stats);
            }
        }
        AuditCommand::Trace {
            trace_id,
            limit,
            cursor,
        } => {
            // Oldest first, so that `--limit` keeps the start of the trace and `--cursor`
            // goes on from there.
            let filters = [
                ("traceId", trace_id.clone()),
                ("order", "oldest".to_owned()),
            ];
            let cap = limit.map(|n| n as usize);
            let first_page = cursor.is_none();
            let listed = client
                .list(&["admin", "audit"], &filters, "entries", cursor, cap)
                .await?;
            let events = chronological(listed.rows);
            if ctx.out.json {
                ctx.out.print_json(&Value::Array(events));
            } else if events.is_empty() && first_page {
                return Err(CliError::Api {
                    status: 404,
                    message: format!("no audit event has the trace id `{trace_id}`"),
                }
                .into());
            } else {
                print_events(ctx.out, &events);
            }
            if let Some(next) = listed.next_cursor {
                eprintln!(
                    "… more events of this trace: meshguard audit trace {trace_id} --cursor {next}"
                );
            }
        }
        AuditCommand::Verify { full, .. } => return verify(ctx, &client, full).await,
        AuditCommand::Export { since, until } => {
            let mut query = Vec::new();
            if let Some(since) = since {
                query.push(("from", parse_time(&since)?));
            }
            if let Some(until) = until {
                query.push(("to", parse_time(&until)?));
            }
            let response = client
                .open_stream(
                    &["admin", "audit", "export"],
                    &query,
                    "application/x-ndjson",
                )
                .await?;
            let mut body = response.bytes_stream();
            let mut stdout = std::io::stdout().lock();
            // Streamed chunk by chunk: an export can be far larger than memory.
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| client.transport_error(&e))?;
                if let Err(e) = stdout.write_all(&chunk) {
                    exit_on_write_error(&e);
                }
            }
            if let Err(e) = stdout.flush() {
                exit_on_write_error(&e);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Oldest first, like `tail`: ids are UUIDv7, so their text order is their time order.
fn chronological(mut events: Vec<Value>) -> Vec<Value> {
    events.sort_by_key(|e| field(e, "id"));
    events
}

async fn tail(ctx: &Context, client: &AdminClient, args: AuditTailArgs) -> anyhow::Result<()> {
    let mut query = vec![];
    if let Some(agent) = &args.agent {
        query.push(("agentId", agent.clone()));
    }
    if let Some(decision) = args.decision {
        query.push(("decision", decision.as_str().to_owned()));
    }
    if let Some(action) = &args.action {
        query.push(("action", action.clone()));
    }
    // Subscribe before reading the backlog, so that no event falls between the two.
    let stream = if args.follow {
        Some(
            client
                .open_stream(&["admin", "audit", "stream"], &query, "text/event-stream")
                .await?,
        )
    } else {
        None
    };
    let backlog = client
        .list(
            &["admin", "audit"],
            &query,
            "entries",
            None,
            Some(args.lines as usize),
        )
        .await?;
    let events = chronological(backlog.rows);
    if backlog.next_cursor.is_some() {
        eprintln!("… older events exist: show more with -n");
    }
    let Some(stream) = stream else {
        if ctx.out.json {
            ctx.out.print_json(&Value::Array(events));
        } else {
            print_events(ctx.out, &events);
        }
        return Ok(());
    };
    // Events committed between subscribing and reading the backlog arrive twice: skip them by id
    // (not by order: concurrent requests may commit out of id order).
    let mut printed: HashSet<String> = events.iter().map(|e| field(e, "id")).collect();
    for event in &events {
        print_line(ctx.out, event);
    }
    let mut sse = stream.bytes_stream().eventsource();
    loop {
        let next = tokio::select! {
            next = sse.next() => next,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(message) = next else {
            return Err(anyhow::anyhow!(
                "the gateway at {} closed the audit stream",
                ctx.url
            ));
        };
        let message =
            message.map_err(|e| anyhow::anyhow!("the audit stream from {} broke: {e}", ctx.url))?;
        let Ok(event) = crate::client::parse_value(message.data.as_bytes()) else {
            continue; // keep-alives and other non-event messages
        };
        if event.get("id").is_none() || printed.remove(&field(&event, "id")) {
            continue;
        }
        print_line(ctx.out, &event);
    }
}

/// One event per line while following: JSON lines with `--json`, else fixed columns.
fn print_line(out: Output, event: &Value) {
    if out.json {
        outln!("{event}");
        return;
    }
    let decision = field(event, "decision");
    outln!(
        "{}  {:<6}  {:<20}  {}  {:<22}  {} {}",
        short_time(event.get("ts").unwrap_or(&Value::Null)),
        field(event, "kind"),
        agent_name(event),
        // Pad before painting: escape codes would throw the columns off.
        out.decision(&format!("{decision:<16}")),
        field(event, "code"),
        field(event, "action"),
        field(event, "resource"),
    );
}

fn agent_name(event: &Value) -> String {
    match event.get("agent") {
        Some(Value::Object(agent)) => agent
            .get("name")
            .or_else(|| agent.get("id"))
            .map(display)
            .unwrap_or_else(|| "-".into()),
        Some(other) => display(other),
        None => field(event, "agentId"),
    }
}

fn print_events(out: Output, events: &[Value]) {
    let rows = events
        .iter()
        .map(|e| {
            vec![
                short_time(e.get("ts").unwrap_or(&Value::Null)),
                field(e, "kind"),
                agent_name(e),
                field(e, "action"),
                field(e, "resource"),
                out.decision(&field(e, "decision")),
                field(e, "code"),
                field(e, "policy"),
                field(e, "rule"),
            ]
        })
        .collect();
    out.print_table(
        &[
            "time", "kind", "agent", "action", "resource", "decision", "code", "policy", "rule",
        ],
        rows,
    );
}

async fn verify(ctx: &Context, client: &AdminClient, full: bool) -> anyhow::Result<ExitCode> {
    let query = if full {
        vec![("full", "true".to_owned())]
    } else {
        Vec::new()
    };
    let report = client.get(&["admin", "audit", "verify"], &query).await?;
    verdict(ctx, &report)
}

/// Prints a verification report; exit 1 when a chain is broken.
fn verdict(ctx: &Context, report: &Value) -> anyhow::Result<ExitCode> {
    let verdict = crate::commands::audit_view::Verdict::read(report);
    if ctx.out.json {
        ctx.out.print_json(report);
    } else {
        crate::commands::audit_view::print_verify(ctx.out, &verdict);
    }
    match verdict.broken {
        None => Ok(ExitCode::SUCCESS),
        Some(broken) => Err(CliError::Reported {
            summary: format!(
                "the audit trail of gateway {} is broken at seq {}",
                broken.gateway, broken.seq
            ),
            code: 1,
        }
        .into()),
    }
}

/// An RFC 3339 time, or an age (`24h`, `7d`) counted back from now.
pub(crate) fn parse_time(text: &str) -> anyhow::Result<String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return t.format(&Rfc3339).context("cannot format the time");
    }
    let age = humantime::parse_duration(text).map_err(|_| {
        CliError::Usage(format!(
            "`{text}` is neither an RFC 3339 time (2026-01-31T00:00:00Z) nor an age such as `24h`"
        ))
    })?;
    let then = time::OffsetDateTime::now_utc() - age;
    then.format(&Rfc3339).context("cannot format the time")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_absolute_or_ages() {
        assert_eq!(
            parse_time("2026-01-31T00:00:00Z").unwrap(),
            "2026-01-31T00:00:00Z"
        );
        let ago = parse_time("1h").unwrap();
        let parsed =
            time::OffsetDateTime::parse(&ago, &time::format_description::well_known::Rfc3339)
                .unwrap();
        let delta = time::OffsetDateTime::now_utc() - parsed;
        assert!(delta.whole_seconds() >= 3599 && delta.whole_seconds() <= 3605);
        let err = parse_time("yesterday-ish").unwrap_err();
        assert_eq!(
            err.downcast_ref::<CliError>().map(CliError::exit_code),
            Some(2)
        );
    }
}
