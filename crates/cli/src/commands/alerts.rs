//! `meshguard alerts test`: sends a test alert through the gateway's configured receivers and
//! says, per receiver, whether it arrived, so an operator learns of a wrong URL or secret before
//! a real denial goes unheard.

use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::{AlertsCommand, TriggerArg};
use crate::commands::Context;
use crate::error::CliError;
use crate::output::field;

/// Runs one `alerts` subcommand.
pub async fn run(ctx: &Context, command: AlertsCommand) -> anyhow::Result<()> {
    match command {
        AlertsCommand::Test { trigger } => test(ctx, trigger).await,
    }
}

async fn test(ctx: &Context, trigger: TriggerArg) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let body = json!({ "trigger": trigger.as_str() });
    let report = client
        .send_json(Method::POST, &["admin", "alerts", "test"], &[], Some(&body))
        .await?;
    let receivers = report
        .get("receivers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let failed = receivers
        .iter()
        .filter(|r| r.get("delivered") != Some(&Value::Bool(true)))
        .count();
    if ctx.out.json {
        ctx.out.print_json(&report);
    } else {
        for receiver in &receivers {
            let name = field(receiver, "receiver");
            if receiver.get("delivered") == Some(&Value::Bool(true)) {
                outln!("{name}: delivered `{}` test alert", trigger.as_str());
            } else {
                outln!("{name}: not delivered: {}", field(receiver, "error"));
            }
        }
    }
    match failed {
        0 => Ok(()),
        n => Err(CliError::Reported {
            summary: format!("{n} of {} alert receiver(s) failed", receivers.len()),
            code: 1,
        }
        .into()),
    }
}
