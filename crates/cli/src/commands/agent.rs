//! `meshguard agent …`: the agent registry and its tokens.

use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::{AgentCommand, AgentCreateArgs};
use crate::commands::Context;
use crate::output::{field, short_time};

/// Runs one `agent` subcommand.
pub async fn run(ctx: &Context, command: AgentCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let out = ctx.out;
    match command {
        AgentCommand::Create(args) => create(ctx, args).await,
        AgentCommand::List => {
            let agents = client.list_all(&["admin", "agents"], &[], "agents").await?;
            if out.json {
                out.print_json(&json!({ "agents": agents }));
                return Ok(());
            }
            let rows = agents
                .iter()
                .map(|a| {
                    vec![
                        field(a, "name"),
                        field(a, "id"),
                        field(a, "trustTier"),
                        field(a, "tags"),
                        status(ctx, a),
                        short_time(a.get("createdAt").unwrap_or(&Value::Null)),
                    ]
                })
                .collect();
            out.print_table(&["name", "id", "trust", "tags", "status", "created"], rows);
            Ok(())
        }
        AgentCommand::Show(agent) => {
            let shown = client.get(&["admin", "agents", &agent.agent], &[]).await?;
            if out.json {
                out.print_json(&shown);
            } else {
                print_agent(ctx, &shown);
            }
            Ok(())
        }
        AgentCommand::Token { agent, rotate } => {
            let query = if rotate {
                vec![("rotate", "true".to_owned())]
            } else {
                Vec::new()
            };
            let issued = client
                .send_json(
                    Method::POST,
                    &["admin", "agents", &agent, "token"],
                    &query,
                    None,
                )
                .await?;
            if out.json {
                out.print_json(&issued);
                return Ok(());
            }
            let token = issued
                .get("token")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if rotate {
                eprintln!(
                    "new token for `{agent}` (every older token is revoked); it is shown only once:"
                );
            } else {
                eprintln!(
                    "new token for `{agent}` (older tokens stay valid; --rotate revokes them); it is shown only once:"
                );
            }
            outln!("{token}");
            Ok(())
        }
        AgentCommand::Revoke(agent) => {
            let revoked = client
                .send_json(
                    Method::POST,
                    &["admin", "agents", &agent.agent, "revoke"],
                    &[],
                    None,
                )
                .await?;
            done(
                ctx,
                &revoked,
                &format!(
                    "agent `{}` revoked: its next request is answered 401",
                    agent.agent
                ),
            );
            Ok(())
        }
        AgentCommand::Restore(agent) => {
            let restored = client
                .send_json(
                    Method::POST,
                    &["admin", "agents", &agent.agent, "restore"],
                    &[],
                    None,
                )
                .await?;
            done(
                ctx,
                &restored,
                &format!(
                    "agent `{}` restored: its existing tokens work again",
                    agent.agent
                ),
            );
            Ok(())
        }
        AgentCommand::Delete(agent) => {
            let query = [("purge", "true".to_owned())];
            let deleted = client
                .send_json(
                    Method::DELETE,
                    &["admin", "agents", &agent.agent],
                    &query,
                    None,
                )
                .await?;
            done(
                ctx,
                &deleted,
                &format!(
                    "agent `{}` deleted with its tokens; its audit events stay",
                    agent.agent
                ),
            );
            Ok(())
        }
    }
}

async fn create(ctx: &Context, args: AgentCreateArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let mut body = serde_json::Map::new();
    body.insert("name".into(), json!(args.name));
    body.insert("trustTier".into(), json!(args.trust));
    let tags: Vec<&str> = args
        .tags
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .collect();
    body.insert("tags".into(), json!(tags));
    if let Some(description) = &args.description {
        body.insert("description".into(), json!(description));
    }
    if let Some(ttl) = args.ttl {
        body.insert("ttlSeconds".into(), json!(ttl.as_secs()));
    }
    let body = Value::Object(body);
    let created = client
        .send_json(Method::POST, &["admin", "agents"], &[], Some(&body))
        .await?;
    if ctx.out.json {
        ctx.out.print_json(&created);
        return Ok(());
    }
    // The summary goes to stderr and the token alone to stdout, so `TOKEN=$(meshguard agent
    // create …)` captures exactly the token.
    eprintln!(
        "agent `{}` created (id {}, trust {}, tags {})",
        field(&created, "name"),
        field(&created, "id"),
        field(&created, "trustTier"),
        field(&created, "tags")
    );
    eprintln!("token (shown only once; store it now, e.g. as MESHGUARD_TOKEN):");
    outln!(
        "{}",
        created
            .get("token")
            .and_then(Value::as_str)
            .unwrap_or_default()
    );
    Ok(())
}

fn status(ctx: &Context, agent: &Value) -> String {
    let status = field(agent, "status");
    if status == "revoked" {
        ctx.out.alert(&status)
    } else {
        status
    }
}

fn print_agent(ctx: &Context, agent: &Value) {
    let rows = [
        ("name", field(agent, "name")),
        ("id", field(agent, "id")),
        ("trust", field(agent, "trustTier")),
        ("tags", field(agent, "tags")),
        ("status", status(ctx, agent)),
        ("description", field(agent, "description")),
        (
            "created",
            short_time(agent.get("createdAt").unwrap_or(&Value::Null)),
        ),
        (
            "updated",
            short_time(agent.get("updatedAt").unwrap_or(&Value::Null)),
        ),
    ];
    for (key, value) in rows {
        outln!("{} {value}", ctx.out.heading(&format!("{key:<12}")));
    }
    let tokens = agent
        .get("tokens")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if tokens.is_empty() {
        return;
    }
    outln!();
    let now = time::OffsetDateTime::now_utc();
    let rows = tokens
        .iter()
        .map(|t| {
            let expires = t.get("expiresAt").unwrap_or(&Value::Null);
            let expired = expires
                .as_str()
                .and_then(|e| {
                    time::OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .is_some_and(|e| e <= now);
            let state = if t.get("revokedAt").is_some_and(|r| !r.is_null()) {
                ctx.out.alert("revoked")
            } else if expired {
                ctx.out.alert("expired")
            } else {
                ctx.out.good("active")
            };
            vec![
                field(t, "jti"),
                short_time(t.get("issuedAt").unwrap_or(&Value::Null)),
                short_time(expires),
                state,
            ]
        })
        .collect();
    ctx.out
        .print_table(&["token id", "issued", "expires", "state"], rows);
}

/// Prints `message`, or the gateway's answer with `--json`.
fn done(ctx: &Context, answer: &Value, message: &str) {
    if ctx.out.json {
        ctx.out.print_json(answer);
    } else {
        outln!("{message}");
    }
}
