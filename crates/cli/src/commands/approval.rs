//! `meshguard approval …`: the human side of SPEC 3's approval table. An agent's check that needs a
//! human creates a pending approval; an operator lists them here and approves (one request may go
//! ahead) or denies (the agent's requests are refused until the timeout runs out).

use std::collections::HashMap;

use anstyle::{AnsiColor, Style};
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::cli::{ApprovalCommand, ApprovalDecisionArgs, ApprovalStatusArg};
use crate::client::AdminClient;
use crate::commands::Context;
use crate::error::CliError;
use crate::output::{display, field, short_time};

/// Runs one `approval` subcommand.
pub async fn run(ctx: &Context, command: ApprovalCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match command {
        ApprovalCommand::List { status } => list(ctx, &client, status).await,
        ApprovalCommand::Approve(args) => {
            send_verdict(ctx, &client, Verdict::Approve, args, None).await
        }
        ApprovalCommand::Deny { decision, reason } => {
            send_verdict(ctx, &client, Verdict::Deny, decision, reason).await
        }
    }
}

/// The arguments an approval is bound to, in full as compact JSON: the approver decides on the
/// exact call, so nothing of it is cut.
fn arguments_of(approval: &Value) -> String {
    match approval.get("arguments").and_then(|a| a.get("value")) {
        Some(value) => display(value),
        None => "-".to_owned(),
    }
}

async fn list(
    ctx: &Context,
    client: &AdminClient,
    status: ApprovalStatusArg,
) -> anyhow::Result<()> {
    let query = [("status", status.as_str().to_owned())];
    let approvals = client
        .list_all(&["admin", "approvals"], &query, "approvals")
        .await?;
    if ctx.out.json {
        ctx.out.print_json(&json!({ "approvals": approvals }));
        return Ok(());
    }
    if approvals.is_empty() {
        match status {
            ApprovalStatusArg::All => outln!("no approvals"),
            other => outln!("no {} approvals", other.as_str()),
        }
        return Ok(());
    }
    let names = agent_names(client).await?;
    let rows = approvals
        .iter()
        .map(|a| {
            let agent_id = field(a, "agentId");
            vec![
                field(a, "id"),
                names.get(&agent_id).cloned().unwrap_or(agent_id),
                field(a, "action"),
                field(a, "resource"),
                paint_status(ctx, &field(a, "status")),
                short_time(a.get("createdAt").unwrap_or(&Value::Null)),
                short_time(a.get("expiresAt").unwrap_or(&Value::Null)),
                field(a, "decidedBy"),
                arguments_of(a),
            ]
        })
        .collect();
    ctx.out.print_table(
        &[
            "id",
            "agent",
            "action",
            "resource",
            "status",
            "created",
            "expires",
            "decided by",
            "arguments",
        ],
        rows,
    );
    Ok(())
}

/// Agent id → name, so that the table names agents the way operators do.
async fn agent_names(client: &AdminClient) -> anyhow::Result<HashMap<String, String>> {
    let agents = client.list_all(&["admin", "agents"], &[], "agents").await?;
    Ok(agents
        .iter()
        .map(|a| (field(a, "id"), field(a, "name")))
        .collect())
}

fn paint_status(ctx: &Context, status: &str) -> String {
    match status {
        "pending" => ctx.out.paint(
            status,
            Style::new().fg_color(Some(AnsiColor::Yellow.into())).bold(),
        ),
        "approved" => ctx.out.good(status),
        "denied" => ctx.out.alert(status),
        _ => status.to_owned(),
    }
}

#[derive(Debug, Clone, Copy)]
enum Verdict {
    Approve,
    Deny,
}

impl Verdict {
    fn path(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        }
    }
}

async fn send_verdict(
    ctx: &Context,
    client: &AdminClient,
    verdict: Verdict,
    args: ApprovalDecisionArgs,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let id = args.id.trim();
    if id.is_empty() {
        return Err(CliError::Usage("the approval id is empty".into()).into());
    }
    let decided_by = args
        .by
        .map(|b| b.trim().to_owned())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(operator);
    let mut body = Map::new();
    body.insert("decidedBy".into(), json!(decided_by));
    if let Some(reason) = reason.filter(|r| !r.trim().is_empty()) {
        body.insert("reason".into(), json!(reason));
    }
    let answer = client
        .send_json(
            Method::POST,
            &["admin", "approvals", id, verdict.path()],
            &[],
            Some(&Value::Object(body)),
        )
        .await;
    let decided = match answer {
        Ok(decided) => decided,
        Err(err) => return Err(explain_refusal(client, id, err).await),
    };
    if ctx.out.json {
        ctx.out.print_json(&decided);
        return Ok(());
    }
    let names = agent_names(client).await.unwrap_or_default();
    let agent_id = field(&decided, "agentId");
    let agent = names.get(&agent_id).cloned().unwrap_or(agent_id);
    let action = field(&decided, "action");
    let resource = field(&decided, "resource");
    let expires = short_time(decided.get("expiresAt").unwrap_or(&Value::Null));
    match verdict {
        Verdict::Approve => outln!(
            "approval `{id}` approved by {decided_by}: agent `{agent}` may `{action}` on `{resource}` once, until {expires}"
        ),
        Verdict::Deny => outln!(
            "approval `{id}` denied by {decided_by}: agent `{agent}` is refused `{action}` on `{resource}` until {expires}"
        ),
    }
    Ok(())
}

/// Rewrites the gateway's 404 and 409 into the one line an operator acts on: the id is unknown,
/// or the approval is no longer pending (and what it is instead).
async fn explain_refusal(client: &AdminClient, id: &str, err: anyhow::Error) -> anyhow::Error {
    let status = match err.downcast_ref::<CliError>() {
        Some(CliError::Api { status, .. }) => *status,
        _ => return err,
    };
    match status {
        404 => CliError::Api {
            status,
            message: format!("no approval `{id}`"),
        }
        .into(),
        409 => {
            let current = current_state(client, id).await;
            let message = match current {
                Some((state, Some(by))) => {
                    format!("approval `{id}` is already {state} (decided by {by}); nothing changed")
                }
                Some((state, None)) => {
                    format!("approval `{id}` is already {state}; nothing changed")
                }
                None => err.to_string(),
            };
            CliError::Api { status, message }.into()
        }
        _ => err,
    }
}

/// The approval's status as the gateway shows it now, and who decided it.
async fn current_state(client: &AdminClient, id: &str) -> Option<(String, Option<String>)> {
    let listed = client
        .list_all(
            &["admin", "approvals"],
            &[("status", "all".to_owned())],
            "approvals",
        )
        .await
        .ok()?;
    let found = listed
        .iter()
        .find(|a| a.get("id").and_then(Value::as_str) == Some(id))?;
    let by = found
        .get("decidedBy")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Some((field(found, "status"), by))
}

/// The operator as `user@host`: who decided is kept in the audit trail, so the default names the
/// account and machine the command ran on; `--by` overrides it (e.g. in a chat-ops bot).
fn operator() -> String {
    let user = whoami::fallible::username()
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    match whoami::fallible::hostname() {
        Ok(host) if !host.is_empty() => format!("{user}@{host}"),
        _ => user,
    }
}
