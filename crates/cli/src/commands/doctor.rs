//! `meshguard doctor`: checks this machine's MeshGuard setup and says what to fix. Local checks
//! read the data dir, the configuration and the policy files; the store, Redis and the clock are
//! asked of the running gateway (`GET /health`), so the doctor never creates or migrates anything.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use meshguard_gateway::data_dir::{ADMIN_TOKEN_FILE, SIGNING_KEY_FILE};
use meshguard_gateway::{Config, ConfigFlags};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use crate::cli::DoctorArgs;
use crate::commands::Context;
use crate::output::Output;
use crate::policy_files;

/// The largest difference between this machine's clock and the gateway's that goes unremarked:
/// tokens expire and schedules open by the gateway's clock.
const MAX_SKEW_SECS: i64 = 5;
/// How long the gateway has to answer `/health`.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Level {
    Ok,
    Warn,
    Fail,
}

/// One check's result and, when something is wrong, what to do.
#[derive(Debug, Serialize)]
struct Finding {
    check: &'static str,
    level: Level,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

impl Finding {
    fn ok(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            check,
            level: Level::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn bad(
        check: &'static str,
        level: Level,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            check,
            level,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Runs every check; exits 1 when any failed.
pub async fn run(ctx: &Context, args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut findings = data_dir(&ctx.data_dir);
    let config = config(ctx, &args, &mut findings);
    if let Some(config) = &config {
        findings.push(policies(config.policies_dir.as_deref()));
        findings.push(alerts(config));
    }
    findings.extend(gateway(&ctx.url).await);
    print(ctx.out, &findings);
    Ok(if findings.iter().any(|f| f.level == Level::Fail) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Whether anyone but the owner may read or enter `path`.
fn shared_mode(path: &Path) -> Option<u32> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

fn data_dir(dir: &Path) -> Vec<Finding> {
    if !dir.is_dir() {
        return vec![Finding::bad(
            "data dir",
            Level::Warn,
            format!("no data dir at {}", dir.display()),
            "`meshguard serve` creates it (or point --data-dir / MESHGUARD_HOME at the gateway's)",
        )];
    }
    let mut findings = Vec::new();
    match shared_mode(dir) {
        Some(mode) => findings.push(Finding::bad(
            "data dir",
            Level::Fail,
            format!(
                "{} has mode {mode:o}: other users can look inside",
                dir.display()
            ),
            format!("chmod 700 {}", dir.display()),
        )),
        None => findings.push(Finding::ok(
            "data dir",
            format!("{} (owner only)", dir.display()),
        )),
    }
    for (check, name) in [
        ("signing key", SIGNING_KEY_FILE),
        ("admin token", ADMIN_TOKEN_FILE),
    ] {
        let path = dir.join(name);
        let finding = if !path.is_file() {
            Finding::bad(
                check,
                Level::Warn,
                format!("no {name} in the data dir"),
                "`meshguard serve` creates it on first start",
            )
        } else if let Some(mode) = shared_mode(&path) {
            Finding::bad(
                check,
                Level::Fail,
                format!(
                    "{} has mode {mode:o}: other users can read it",
                    path.display()
                ),
                format!("chmod 600 {}", path.display()),
            )
        } else {
            Finding::ok(check, format!("{} (owner only)", path.display()))
        };
        findings.push(finding);
    }
    findings
}

/// The configuration as `serve` would read it (flags given here, the environment, the file).
fn config(ctx: &Context, args: &DoctorArgs, findings: &mut Vec<Finding>) -> Option<Config> {
    let file = match &args.config {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some((path.display().to_string(), text)),
            Err(err) => {
                findings.push(Finding::bad(
                    "config",
                    Level::Fail,
                    format!("cannot read `{}`: {err}", path.display()),
                    "give the path of the gateway's config file",
                ));
                return None;
            }
        },
        None => None,
    };
    let env: HashMap<String, String> = std::env::vars().collect();
    let flags = ConfigFlags {
        data_dir: ctx.data_dir_flag.clone(),
        database_url: args.database_url.clone(),
        redis_url: args.redis_url.clone(),
        policies_dir: args.policies.clone(),
        ..ConfigFlags::default()
    };
    let home = std::env::home_dir();
    match Config::load(
        file.as_ref().map(|(o, t)| (o.as_str(), t.as_str())),
        &env,
        &flags,
        home.as_deref(),
    ) {
        Ok(config) => {
            findings.push(Finding::ok("config", "valid"));
            Some(config)
        }
        Err(err) => {
            findings.push(Finding::bad(
                "config",
                Level::Fail,
                err.to_string(),
                "fix the key named; `meshguard serve --validate-only` checks it again",
            ));
            None
        }
    }
}

fn policies(dir: Option<&Path>) -> Finding {
    let Some(dir) = dir else {
        return Finding::ok(
            "policy files",
            "none configured (policies are applied through the API)",
        );
    };
    match policy_files::load(&[dir.to_path_buf()]) {
        Ok(Ok(files)) => {
            let parsed: Vec<_> = files.into_iter().map(|f| f.policy).collect();
            let warnings = meshguard_policy::lint(&parsed, None).len();
            let detail = format!(
                "{} valid in {}, {warnings} lint warnings",
                parsed.len(),
                dir.display()
            );
            if warnings == 0 {
                Finding::ok("policy files", detail)
            } else {
                Finding::bad(
                    "policy files",
                    Level::Warn,
                    detail,
                    format!("meshguard policy validate {}", dir.display()),
                )
            }
        }
        Ok(Err(errors)) => Finding::bad(
            "policy files",
            Level::Fail,
            errors.first().cloned().unwrap_or_default(),
            format!(
                "meshguard policy validate {} lists every error",
                dir.display()
            ),
        ),
        Err(err) => Finding::bad(
            "policy files",
            Level::Fail,
            err.to_string(),
            "point `policies_dir` at a readable directory",
        ),
    }
}

fn alerts(config: &Config) -> Finding {
    let receivers = [&config.alerts.webhook_url, &config.alerts.slack_webhook]
        .into_iter()
        .filter(|r| r.is_some())
        .count();
    if receivers == 0 {
        Finding::bad(
            "alert receivers",
            Level::Warn,
            "none: denials, revocations and outages reach nobody",
            "set `alerts.webhook_url` or `alerts.slack_webhook` (docs/alerts.md)",
        )
    } else {
        Finding::ok(
            "alert receivers",
            format!("{receivers} configured; `meshguard alerts test` sends a test alert"),
        )
    }
}

/// The running gateway's own view of its store and Redis, and its clock against this one.
async fn gateway(url: &str) -> Vec<Finding> {
    let unreachable = |why: String| {
        vec![Finding::bad(
            "gateway",
            Level::Warn,
            format!("no answer from {url}: {why}"),
            "start it with `meshguard serve`, or give its address with --url",
        )]
    };
    crate::client::install_crypto();
    let client = match reqwest::Client::builder().timeout(HEALTH_TIMEOUT).build() {
        Ok(client) => client,
        Err(err) => return unreachable(err.to_string()),
    };
    let response = match client
        .get(format!("{}/health", url.trim_end_matches('/')))
        .send()
        .await
    {
        Ok(response) => response,
        Err(err) => return unreachable(err.to_string()),
    };
    let date = response
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let health: Value = response.json().await.unwrap_or(Value::Null);
    let mut findings = vec![Finding::ok(
        "gateway",
        format!(
            "{url}: {} ({} mode, gateway {})",
            text(&health, &["status"]),
            text(&health, &["mode"]),
            text(&health, &["gateway"])
        ),
    )];
    for (check, key, fix) in [
        (
            "store",
            "store",
            "see the gateway's log; for PostgreSQL check `database_url` and the server",
        ),
        (
            "redis",
            "rate_limits",
            "check `redis.url` and that Redis answers (`redis-cli ping`)",
        ),
    ] {
        let status = text(&health, &["checks", key, "status"]);
        let backend = text(&health, &["checks", key, "backend"]);
        findings.push(if status == "ok" {
            Finding::ok(check, backend)
        } else {
            Finding::bad(check, Level::Fail, format!("{backend}: {status}"), fix)
        });
    }
    if let Some(date) = date {
        let theirs = OffsetDateTime::from(date);
        let skew = (OffsetDateTime::now_utc() - theirs).whole_seconds();
        findings.push(if skew.abs() > MAX_SKEW_SECS {
            Finding::bad(
                "clock",
                Level::Warn,
                format!("this machine's clock is {skew} s from the gateway's"),
                "synchronise both clocks (NTP): tokens expire and schedules open by the gateway's",
            )
        } else {
            Finding::ok(
                "clock",
                format!("within {MAX_SKEW_SECS} s of the gateway's"),
            )
        });
    }
    findings
}

fn text(value: &Value, path: &[&str]) -> String {
    let found = path.iter().try_fold(value, |v, key| v.get(key));
    match found {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "unknown".to_owned(),
        Some(other) => other.to_string(),
    }
}

fn print(out: Output, findings: &[Finding]) {
    if out.json {
        out.print_json(&serde_json::json!({ "findings": findings }));
        return;
    }
    let rows = findings
        .iter()
        .map(|f| {
            let level = match f.level {
                Level::Ok => out.good("ok"),
                Level::Warn => out.caution("warn"),
                Level::Fail => out.alert("FAIL"),
            };
            vec![
                level,
                f.check.to_owned(),
                f.detail.clone(),
                f.fix.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.print_table(&["", "check", "finding", "what to do"], rows);
}
