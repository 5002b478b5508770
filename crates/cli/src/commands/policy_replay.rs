//! `meshguard policy replay`: what the candidate policies would have changed over the audited
//! checks of a period (`POST /admin/replay`), for review before they are applied.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{Value, json};

use crate::commands::Context;
use crate::commands::audit::parse_time;
use crate::output::{display, field};
use crate::policy_files;

/// The arguments of `policy replay`.
#[derive(Debug)]
pub struct Replay {
    /// Candidate policy files or directories.
    pub paths: Vec<PathBuf>,
    /// Start of the period: an RFC 3339 time or an age such as `7d`.
    pub since: String,
    /// End of the period; now when absent.
    pub until: Option<String>,
    /// Only this agent's checks.
    pub agent: Option<String>,
    /// Exit 1 when any check would change.
    pub fail_on_change: bool,
}

/// Validates the candidates locally, asks the gateway to replay, prints what would change.
pub async fn run(ctx: &Context, args: Replay) -> anyhow::Result<ExitCode> {
    let files = match policy_files::load(&args.paths)? {
        Ok(files) => files,
        Err(errors) => {
            return Err(super::policy::report_invalid(
                &errors,
                "nothing was replayed",
            ));
        }
    };
    let policies: Vec<Value> = files
        .iter()
        .map(|file| json!({"origin": file.path.display().to_string(), "text": file.text}))
        .collect();
    let until = args.until.as_deref().map(parse_time).transpose()?;
    let body = json!({
        "policies": policies,
        "since": parse_time(&args.since)?,
        "until": until,
        "agent": args.agent,
    });
    let report = ctx
        .client()?
        .post_json_unbounded(&["admin", "replay"], &body)
        .await?;
    if ctx.out.json {
        ctx.out.print_json(&report);
    } else {
        print_report(ctx, &report);
    }
    let changed = report.get("changed").and_then(Value::as_u64).unwrap_or(0);
    Ok(if args.fail_on_change && changed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn list(report: &Value, key: &str) -> Vec<Value> {
    report
        .get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn print_report(ctx: &Context, report: &Value) {
    let out = ctx.out;
    let names = |key: &str| {
        let names: Vec<String> = list(report, key).iter().map(display).collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    };
    outln!(
        "{} {} to {}",
        out.heading("replayed"),
        field(report, "since"),
        field(report, "until")
    );
    outln!("replaces: {}; adds: {}", names("replaced"), names("added"));
    outln!(
        "{} checks decided again, {} would change ({} skipped: refusals of dead tokens, purged agents)",
        field(report, "checked"),
        field(report, "changed"),
        field(report, "skipped")
    );
    let transitions = list(report, "transitions");
    if !transitions.is_empty() {
        outln!();
        let rows = transitions
            .iter()
            .map(|t| {
                vec![
                    out.decision(&field(t, "from")),
                    out.decision(&field(t, "to")),
                    field(t, "count"),
                ]
            })
            .collect();
        outln!("{}", out.table(&["from", "to", "checks"], rows));
    }
    let actions = list(report, "topChangedActions");
    if !actions.is_empty() {
        outln!();
        let rows = actions
            .iter()
            .map(|a| vec![field(a, "action"), field(a, "count")])
            .collect();
        outln!("{}", out.table(&["changed action", "checks"], rows));
    }
    let examples = list(report, "examples");
    if !examples.is_empty() {
        outln!();
        let verdict = |v: Option<&Value>| {
            let v = v.unwrap_or(&Value::Null);
            format!("{} ({})", field(v, "decision"), field(v, "code"))
        };
        let rows = examples
            .iter()
            .map(|e| {
                vec![
                    field(e, "traceId"),
                    field(e, "agent"),
                    field(e, "action"),
                    verdict(e.get("from")),
                    verdict(e.get("to")),
                ]
            })
            .collect();
        outln!(
            "{}",
            out.table(&["trace", "agent", "action", "was", "would be"], rows)
        );
    }
}
