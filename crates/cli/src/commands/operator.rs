//! `meshguard operator …`: the named operators of the web console. The password travels once,
//! over the admin API, and is kept by the gateway only as an argon2id hash.

use std::io::BufRead as _;

use reqwest::Method;
use serde_json::json;

use crate::cli::OperatorCommand;
use crate::commands::Context;
use crate::error::CliError;
use crate::output::field;

/// Runs one `operator` subcommand.
pub async fn run(ctx: &Context, command: OperatorCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match command {
        OperatorCommand::Create {
            name,
            role,
            password_stdin,
        } => {
            if !password_stdin {
                return Err(CliError::Usage(
                    "give the password on standard input with --password-stdin, e.g. `pass show meshguard/alice | meshguard operator create alice --role approver --password-stdin`".into(),
                )
                .into());
            }
            let mut password = String::new();
            std::io::stdin().lock().read_line(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']).to_owned();
            let body = json!({"name": name, "role": role.as_str(), "password": password});
            let created = client
                .send_json(Method::POST, &["admin", "operators"], &[], Some(&body))
                .await?;
            if ctx.out.json {
                ctx.out.print_json(&created);
            } else {
                outln!(
                    "operator `{}` created ({}): sign in at {}/console",
                    field(&created, "name"),
                    field(&created, "role"),
                    ctx.url.trim_end_matches('/')
                );
            }
        }
        OperatorCommand::List => {
            let listed = client
                .send_json(Method::GET, &["admin", "operators"], &[], None)
                .await?;
            if ctx.out.json {
                ctx.out.print_json(&listed);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = listed
                .get("operators")
                .and_then(|o| o.as_array())
                .map(|operators| {
                    operators
                        .iter()
                        .map(|o| vec![field(o, "name"), field(o, "role"), field(o, "createdAt")])
                        .collect()
                })
                .unwrap_or_default();
            if rows.is_empty() {
                outln!("no operators: sign in to the console with the admin token, or create one");
            } else {
                ctx.out.print_table(&["name", "role", "created"], rows);
            }
        }
        OperatorCommand::Delete { name } => {
            let deleted = client
                .send_json(Method::DELETE, &["admin", "operators", &name], &[], None)
                .await?;
            if ctx.out.json {
                ctx.out.print_json(&deleted);
            } else {
                outln!("operator `{name}` deleted: it can no longer sign in");
            }
        }
    }
    Ok(())
}
