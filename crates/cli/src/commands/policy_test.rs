//! `meshguard policy test`: one question to the gateway (`POST /admin/decide`), or a test file —
//! `tests:` run against the gateway, `suites:` (the conformance corpus) run offline.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::cli::PolicyTestArgs;
use crate::client::AdminClient;
use crate::commands::Context;
use crate::error::CliError;
use crate::output::{Output, display, field};
use crate::yaml;

/// Exit code of `policy test` for an allow / every test passed.
const PASSED: u8 = 0;
/// Exit code of `policy test` for a deny or approval / a failed test.
const REFUSED: u8 = 1;

/// Runs `policy test` in whichever form the arguments name.
pub async fn run(ctx: &Context, args: PolicyTestArgs) -> anyhow::Result<ExitCode> {
    if let Some(file) = args.file {
        return run_file(ctx, &file).await;
    }
    let (Some(agent), Some(action)) = (args.agent, args.action) else {
        return Err(CliError::Usage("give AGENT and ACTION, or --file FILE".into()).into());
    };
    let request = DecideRequest {
        agent,
        action,
        resource: args.resource.unwrap_or_else(|| "*".to_owned()),
        context: args.context.into_iter().collect(),
        now: args.at,
    };
    let answer = ask_gateway(&ctx.client()?, &request).await?;
    if ctx.out.json {
        ctx.out.print_json(&answer);
    } else {
        print_decision(ctx.out, &answer, args.verbose);
    }
    Ok(ExitCode::from(
        if answer.get("decision").and_then(Value::as_str) == Some("allow") {
            PASSED
        } else {
            REFUSED
        },
    ))
}

/// One question for `POST /admin/decide`.
#[derive(Debug)]
struct DecideRequest {
    agent: String,
    action: String,
    resource: String,
    context: Map<String, Value>,
    /// When the question is asked (RFC 3339); the gateway's clock when absent.
    now: Option<String>,
}

/// What `POST /admin/decide` answers for one case: the gateway decides, so a test runs against
/// the policies and clock in force there.
async fn ask_gateway(client: &AdminClient, request: &DecideRequest) -> anyhow::Result<Value> {
    let body = json!({
        "agent": request.agent,
        "action": request.action,
        "resource": request.resource,
        "context": request.context,
        "now": request.now,
    });
    client
        .send_json(Method::POST, &["admin", "decide"], &[], Some(&body))
        .await
}

fn print_decision(out: Output, answer: &Value, verbose: bool) {
    let decision = field(answer, "decision");
    let rows = [
        ("decision", out.decision(&decision)),
        ("code", field(answer, "code")),
        ("reason", field(answer, "reason")),
        ("policy", field(answer, "policy")),
        ("rule", field(answer, "rule")),
    ];
    for (key, value) in rows {
        outln!("{} {value}", out.heading(&format!("{key:<9}")));
    }
    if let Some(seconds) = answer.get("retryAfterSeconds").filter(|v| !v.is_null()) {
        outln!(
            "{} {}",
            out.heading(&format!("{:<9}", "retry")),
            display(seconds)
        );
    }
    if let Some(id) = answer.get("approvalId").filter(|v| !v.is_null()) {
        outln!(
            "{} {}",
            out.heading(&format!("{:<9}", "approval")),
            display(id)
        );
    }
    if verbose {
        outln!();
        print_explanation(out, answer.get("explanation").unwrap_or(&Value::Null));
    }
}

/// Every policy of the set, whether it applies to the agent, and each rule tried up to the first
/// match, with the reason it matched or not.
fn print_explanation(out: Output, explanation: &Value) {
    if let Some(normalised) = explanation
        .get("normalised_action")
        .filter(|v| !v.is_null())
    {
        outln!(
            "normalised: action {} resource {}",
            display(normalised),
            field(explanation, "normalised_resource")
        );
    } else {
        outln!("normalised: the action or resource escapes its root");
    }
    let policies = explanation
        .get("policies")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if policies.is_empty() {
        outln!("{}", out.dim("no policy was considered"));
        return;
    }
    let mut rows = Vec::new();
    for policy in &policies {
        let name = field(policy, "policy");
        let applies = policy.get("applies").and_then(Value::as_bool) == Some(true);
        if !applies {
            rows.push(vec![
                name,
                "-".into(),
                "-".into(),
                field(policy, "applies_because"),
            ]);
            continue;
        }
        let verdict = if policy.get("verdict_is_default").and_then(Value::as_bool) == Some(true) {
            format!("{} (default)", field(policy, "verdict"))
        } else {
            field(policy, "verdict")
        };
        rows.push(vec![
            name,
            "-".into(),
            verdict,
            field(policy, "applies_because"),
        ]);
        for rule in policy
            .get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            rows.push(vec![
                String::new(),
                field(rule, "rule"),
                field(rule, "effect"),
                rule_outcome(rule),
            ]);
        }
        if let Some(pattern) = policy.get("approval_pattern").filter(|v| !v.is_null()) {
            rows.push(vec![
                String::new(),
                "requireApproval".into(),
                "approval".into(),
                format!("matched `{}`", display(pattern)),
            ]);
        }
    }
    out.print_table(&["policy", "rule", "effect", "why"], rows);
}

fn rule_outcome(rule: &Value) -> String {
    match rule.get("outcome").and_then(Value::as_str) {
        Some("matched") => format!("matched `{}`", field(rule, "pattern")),
        Some("no_action_match") => "no action pattern matches".to_owned(),
        Some("condition_failed") => format!(
            "condition `{}` fails: {}",
            field(rule, "condition"),
            field(rule, "detail")
        ),
        _ => field(rule, "outcome"),
    }
}

/// Runs a test file in the format its top-level key names.
async fn run_file(ctx: &Context, path: &Path) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    let origin = path.display().to_string();
    let top: Value = yaml::parse(&origin, &text)?;
    let results = if top.get("suites").is_some() {
        crate::commands::corpus::run(path, &origin, &text)?
    } else if top.get("tests").is_some() {
        run_tests(ctx, &origin, &text).await?
    } else {
        anyhow::bail!(
            "{origin}: expected a top-level `tests:` (gateway tests) or `suites:` (conformance corpus)"
        );
    };
    let passed = results.iter().filter(|r| r.failure.is_none()).count();
    let failed = results.len() - passed;
    if ctx.out.json {
        let tests: Vec<Value> = results
            .iter()
            .map(|r| json!({ "name": r.name, "passed": r.failure.is_none(), "failure": r.failure }))
            .collect();
        ctx.out
            .print_json(&json!({ "tests": tests, "passed": passed, "failed": failed }));
    } else {
        for result in &results {
            match &result.failure {
                None => outln!("{}   {}", ctx.out.good("ok"), result.name),
                Some(why) => outln!("{} {}: {why}", ctx.out.alert("FAIL"), result.name),
            }
        }
        outln!("{passed} passed, {failed} failed");
    }
    Ok(ExitCode::from(if failed == 0 { PASSED } else { REFUSED }))
}

/// The outcome of one test case, whichever runner produced it.
#[derive(Debug)]
pub struct TestResult {
    /// "suite / case" or the test's name.
    pub name: String,
    /// `None` when the test passed, else what differed.
    pub failure: Option<String>,
}

/// MeshGuard's gateway test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    tests: Vec<GatewayTest>,
}

/// `{name, agent, action, resource?, context?, expect}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayTest {
    name: String,
    agent: String,
    action: String,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    context: Map<String, Value>,
    /// When the check is asked (RFC 3339): schedules are decided at this time.
    #[serde(default)]
    now: Option<String>,
    expect: Expectation,
}

/// `expect: deny`, or a mapping of the fields that must match (`null` expects null).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Expectation {
    Decision(String),
    Fields(Map<String, Value>),
}

/// The fields an expectation may name.
const EXPECTABLE: [&str; 4] = ["decision", "code", "policy", "rule"];

impl Expectation {
    /// Checks the gateway's answer; the error says every field that differed.
    fn check(&self, answer: &Value) -> Result<(), String> {
        let fields = match self {
            Expectation::Decision(decision) => {
                Map::from_iter([("decision".to_owned(), Value::String(decision.clone()))])
            }
            Expectation::Fields(fields) => fields.clone(),
        };
        let mismatches: Vec<String> = fields
            .iter()
            .filter(|(key, want)| answer.get(key.as_str()).unwrap_or(&Value::Null) != *want)
            .map(|(key, want)| {
                format!(
                    "expected {key} {}, got {}",
                    display(want),
                    field(answer, key)
                )
            })
            .collect();
        if mismatches.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} ({})",
                mismatches.join(", "),
                field(answer, "reason")
            ))
        }
    }

    fn validate(&self) -> Result<(), String> {
        let decisions = ["allow", "deny", "require_approval"];
        match self {
            Expectation::Decision(d) if decisions.contains(&d.as_str()) => Ok(()),
            Expectation::Decision(d) => Err(format!(
                "`expect`: expected allow, deny or require_approval, got `{d}`"
            )),
            Expectation::Fields(fields) => {
                match fields.keys().find(|k| !EXPECTABLE.contains(&k.as_str())) {
                    Some(key) => Err(format!(
                        "`expect.{key}`: unknown field, expected one of {}",
                        EXPECTABLE.join(", ")
                    )),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Parses the whole file first (a typo fails before any request), then asks the gateway once per test.
async fn run_tests(ctx: &Context, origin: &str, text: &str) -> anyhow::Result<Vec<TestResult>> {
    let file: TestFile = yaml::parse(origin, text)?;
    for (i, test) in file.tests.iter().enumerate() {
        test.expect
            .validate()
            .map_err(|e| anyhow::anyhow!("{origin}: tests[{i}] (`{}`): {e}", test.name))?;
    }
    let client = ctx.client()?;
    let mut results = Vec::with_capacity(file.tests.len());
    for test in file.tests {
        let request = DecideRequest {
            agent: test.agent,
            action: test.action,
            resource: test.resource.unwrap_or_else(|| "*".to_owned()),
            context: test.context,
            now: test.now,
        };
        let failure = match ask_gateway(&client, &request).await {
            Ok(answer) => test.expect.check(&answer).err(),
            // An unknown agent fails this test, not the whole run; an unreachable gateway or a bad
            // admin token fails every test the same way, so it stops the run.
            Err(e) => match e.downcast_ref::<CliError>() {
                Some(CliError::Api { message, .. }) => Some(message.clone()),
                _ => return Err(e),
            },
        };
        results.push(TestResult {
            name: test.name,
            failure,
        });
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_name_what_differed() {
        let answer = json!({"decision": "deny", "code": "denied_by_rule", "policy": "p", "rule": null, "reason": "no"});
        assert!(Expectation::Decision("deny".into()).check(&answer).is_ok());
        let err = Expectation::Decision("allow".into())
            .check(&answer)
            .unwrap_err();
        assert_eq!(err, "expected decision allow, got deny (no)");
        let fields: Map<String, Value> =
            serde_json::from_value(json!({"code": "denied_by_rule", "rule": null})).unwrap();
        assert!(Expectation::Fields(fields).check(&answer).is_ok());
        let fields: Map<String, Value> = serde_json::from_value(json!({"rule": "rule-4"})).unwrap();
        assert_eq!(
            Expectation::Fields(fields).check(&answer).unwrap_err(),
            "expected rule rule-4, got - (no)"
        );
    }

    #[test]
    fn test_files_reject_typos_before_running() {
        let bad = yaml::parse::<TestFile>(
            "t.yaml",
            "tests:\n  - {name: a, agent: b, action: c, expct: allow}\n",
        );
        let message = bad.unwrap_err().to_string();
        assert!(
            message.starts_with("t.yaml:2:36: unknown field `expct`"),
            "{message}"
        );
        assert!(Expectation::Decision("alow".into()).validate().is_err());
        let fields: Map<String, Value> = serde_json::from_value(json!({"reasn": "x"})).unwrap();
        assert!(Expectation::Fields(fields).validate().is_err());
        let ok: TestFile = yaml::parse(
            "t.yaml",
            "tests:\n  - {name: a, agent: b, action: c, expect: {decision: deny, rule: null}}\n",
        )
        .unwrap();
        assert!(ok.tests[0].expect.validate().is_ok());
    }
}
