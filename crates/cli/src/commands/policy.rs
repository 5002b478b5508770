//! `meshguard policy …` except `test`: apply, list, show, delete, validate (offline), allowed.

use std::path::PathBuf;

use anyhow::Context as _;
use meshguard_policy::{AgentProfile, TrustTier};
use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::PolicyCommand;
use crate::commands::Context;
use crate::error::CliError;
use crate::output::{display, field, short_time};
use crate::policy_files;

/// Runs one `policy` subcommand.
pub async fn run(ctx: &Context, command: PolicyCommand) -> anyhow::Result<std::process::ExitCode> {
    match command {
        PolicyCommand::Apply { path } => apply(ctx, path).await?,
        PolicyCommand::List => list(ctx).await?,
        PolicyCommand::Show { name } => {
            let shown = ctx
                .client()?
                .get(&["admin", "policies", &name], &[])
                .await?;
            if ctx.out.json {
                ctx.out.print_json(&shown);
            } else {
                print_source(&shown);
            }
        }
        PolicyCommand::Delete { name } => {
            let deleted = ctx
                .client()?
                .send_json(Method::DELETE, &["admin", "policies", &name], &[], None)
                .await?;
            if ctx.out.json {
                ctx.out.print_json(&deleted);
            } else {
                outln!("policy `{name}` deleted");
            }
        }
        PolicyCommand::Validate {
            files,
            agents,
            strict,
        } => validate(ctx, &files, agents.as_deref(), strict)?,
        PolicyCommand::Allowed { agent } => allowed(ctx, &agent).await?,
        PolicyCommand::Test(args) => return crate::commands::policy_test::run(ctx, args).await,
        PolicyCommand::Replay {
            paths,
            since,
            until,
            agent,
            fail_on_change,
        } => {
            let replay = crate::commands::policy_replay::Replay {
                paths,
                since,
                until,
                agent,
                fail_on_change,
            };
            return crate::commands::policy_replay::run(ctx, replay).await;
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Validates every file locally, then upserts them one by one.
async fn apply(ctx: &Context, path: PathBuf) -> anyhow::Result<()> {
    let files = match policy_files::load(std::slice::from_ref(&path))? {
        Ok(files) => files,
        Err(errors) => return Err(report_invalid(&errors, "nothing was applied")),
    };
    let client = ctx.client()?;
    let mut applied = Vec::new();
    for file in files {
        let name = file.policy.name().to_owned();
        let context = || format!("applying `{}` from `{}`", name, file.path.display());
        // An unchanged policy is not sent again: no new revision and no admin event for nothing.
        let stored = match client.get(&["admin", "policies", &name], &[]).await {
            Ok(stored) => Some(stored),
            Err(e)
                if matches!(
                    e.downcast_ref::<CliError>(),
                    Some(CliError::Api { status: 404, .. })
                ) =>
            {
                None
            }
            Err(e) => return Err(e.context(context())),
        };
        let unchanged = stored
            .as_ref()
            .and_then(|s| s.get("source"))
            .and_then(Value::as_str)
            == Some(file.text.as_str());
        let answer = match stored {
            Some(stored) if unchanged => stored,
            _ => client
                .put_yaml(&["admin", "policies", &name], file.text)
                .await
                .with_context(context)?,
        };
        let revision = answer
            .get("revision")
            .map(display)
            .unwrap_or_else(|| "-".to_owned());
        let verb = if unchanged { "unchanged" } else { "applied" };
        if !ctx.out.json {
            outln!(
                "policy `{name}` {verb} (revision {revision}) from {}",
                file.path.display()
            );
        }
        applied.push(json!({ "name": name, "file": file.path.display().to_string(), "changed": !unchanged, "policy": answer }));
    }
    if ctx.out.json {
        ctx.out.print_json(&json!({ "applied": applied }));
    }
    Ok(())
}

/// Prints each problem on its own line and returns the closing error (exit 1).
pub(crate) fn report_invalid(errors: &[String], consequence: &str) -> anyhow::Error {
    for error in errors {
        eprintln!("error: {error}");
    }
    let summary = match errors.len() {
        1 => format!("1 error; {consequence}"),
        n => format!("{n} errors; {consequence}"),
    };
    CliError::Reported { summary, code: 1 }.into()
}

async fn list(ctx: &Context) -> anyhow::Result<()> {
    let policies = ctx
        .client()?
        .list_all(&["admin", "policies"], &[], "policies")
        .await?;
    if ctx.out.json {
        ctx.out.print_json(&json!({ "policies": policies }));
        return Ok(());
    }
    let rows = policies
        .iter()
        .map(|p| {
            let name = field(p, "name");
            let shadow = p.get("mode").and_then(Value::as_str) == Some("shadow");
            vec![
                if shadow {
                    format!("{name} (shadow)")
                } else {
                    name
                },
                field(p, "version"),
                field(p, "revision"),
                field(p, "origin"),
                short_time(p.get("updatedAt").unwrap_or(&Value::Null)),
                field(p, "description"),
            ]
        })
        .collect();
    ctx.out.print_table(
        &[
            "name",
            "version",
            "revision",
            "source",
            "updated",
            "description",
        ],
        rows,
    );
    Ok(())
}

/// Prints the stored YAML exactly as applied, or the JSON form when the gateway has no source.
fn print_source(policy: &Value) {
    let source = policy.get("source").and_then(Value::as_str);
    match source {
        Some(text) => outln!("{}", text.strip_suffix('\n').unwrap_or(text)),
        None => outln!(
            "{}",
            serde_json::to_string_pretty(policy).unwrap_or_default()
        ),
    }
}

/// Offline: parse errors with positions, then lint warnings; exit 1 only on errors. With
/// `strict`, the warnings whose kind says so are errors too.
fn validate(
    ctx: &Context,
    files: &[PathBuf],
    agents: Option<&std::path::Path>,
    strict: bool,
) -> anyhow::Result<()> {
    let agents = agents.map(load_agents).transpose()?;
    let parsed = match policy_files::load(files)? {
        Ok(parsed) => parsed,
        Err(errors) => {
            if ctx.out.json {
                ctx.out
                    .print_json(&json!({ "valid": false, "errors": errors, "warnings": [] }));
                return Err(CliError::Reported {
                    summary: format!("{} errors", errors.len()),
                    code: 1,
                }
                .into());
            }
            return Err(report_invalid(&errors, "the policies are invalid"));
        }
    };
    let policies: Vec<_> = parsed.iter().map(|f| f.policy.clone()).collect();
    let (errors, warnings): (Vec<_>, Vec<_>) = meshguard_policy::lint(&policies, agents.as_deref())
        .into_iter()
        .partition(|w| strict && w.kind.is_error_when_strict());
    let refused = || CliError::Reported {
        summary: format!(
            "{} error{} (--strict)",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" }
        ),
        code: 1,
    };
    if ctx.out.json {
        ctx.out.print_json(
            &json!({ "valid": errors.is_empty(), "errors": errors, "warnings": warnings }),
        );
        return if errors.is_empty() {
            Ok(())
        } else {
            Err(refused().into())
        };
    }
    for error in &errors {
        outln!(
            "{}:{}:{}: error: {}",
            error.origin,
            error.line,
            error.column,
            error.message
        );
    }
    for warning in &warnings {
        outln!("{warning}");
    }
    if !errors.is_empty() {
        return Err(refused().into());
    }
    let names: Vec<&str> = policies.iter().map(|p| p.name()).collect();
    outln!(
        "{} valid ({}), {} warning{}",
        if names.len() == 1 {
            "1 policy".to_owned()
        } else {
            format!("{} policies", names.len())
        },
        names.join(", "),
        warnings.len(),
        if warnings.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

/// Reads agents for the "applies to none" lint. Accepted shapes: the output of
/// `meshguard --json agent list` (`{"agents": [...]}`), a list of agents, or the corpus's mapping
/// `{name: {trust, tags}}` (optionally under `agents:`).
fn load_agents(path: &std::path::Path) -> anyhow::Result<Vec<AgentProfile>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    let value: Value = crate::yaml::parse(&path.display().to_string(), &text)?;
    let value = match value {
        Value::Object(mut map) if map.contains_key("agents") => {
            map.remove("agents").unwrap_or(Value::Null)
        }
        other => other,
    };
    let entries: Vec<(Option<String>, Value)> = match value {
        Value::Array(items) => items.into_iter().map(|a| (None, a)).collect(),
        Value::Object(map) => map.into_iter().map(|(name, a)| (Some(name), a)).collect(),
        _ => anyhow::bail!(
            "{}: expected a list of agents or a mapping of agent names",
            path.display()
        ),
    };
    entries
        .into_iter()
        .enumerate()
        .map(|(i, (key, agent))| {
            agent_profile(key, &agent)
                .with_context(|| format!("{}: agent {}", path.display(), i + 1))
        })
        .collect()
}

fn agent_profile(key: Option<String>, agent: &Value) -> anyhow::Result<AgentProfile> {
    let name = key
        .or_else(|| agent.get("name").and_then(Value::as_str).map(str::to_owned))
        .context("`name` is missing")?;
    let trust_text = ["trust", "trustTier", "trust_tier"]
        .iter()
        .find_map(|k| agent.get(*k).and_then(Value::as_str))
        .unwrap_or("verified");
    let trust: TrustTier = trust_text
        .parse()
        .map_err(|e| anyhow::anyhow!("`trust`: {e}"))?;
    let tags = agent
        .get("tags")
        .and_then(Value::as_array)
        .map(|tags| {
            tags.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let id = agent
        .get("id")
        .and_then(Value::as_str)
        .map_or_else(|| name.clone(), str::to_owned);
    Ok(AgentProfile {
        id,
        name,
        trust,
        tags,
    })
}

/// The effective permissions of one agent across every policy that applies to it.
async fn allowed(ctx: &Context, agent: &str) -> anyhow::Result<()> {
    let permissions = ctx
        .client()?
        .get(&["admin", "agents", agent, "permissions"], &[])
        .await?;
    if ctx.out.json {
        ctx.out.print_json(&permissions);
        return Ok(());
    }
    crate::commands::permissions::print(ctx, agent, &permissions);
    Ok(())
}
