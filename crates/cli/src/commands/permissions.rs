//! `meshguard policy allowed`: an agent's effective permissions, as the gateway computes them
//! across every policy that applies (deny anywhere wins, allow anywhere beats a default).

use serde_json::Value;

use crate::commands::Context;
use crate::output::{display, field};

/// Prints the agent, the applicable policies, then allowed, denied and approval patterns, the
/// rate limits and the budgets as tables, each entry with the policy and rule it comes from.
pub fn print(ctx: &Context, agent: &str, answer: &Value) {
    let out = ctx.out;
    let profile = answer.get("agent").unwrap_or(&Value::Null);
    let permissions = answer.get("permissions").unwrap_or(answer);
    outln!(
        "{} ({}, tags {}, {})",
        out.heading(profile.get("name").and_then(Value::as_str).unwrap_or(agent)),
        field(profile, "trustTier"),
        field(profile, "tags"),
        field(profile, "status")
    );
    let policies = field(permissions, "policies");
    if policies == "-" {
        outln!("no policy applies: every action is denied (no_policy)");
        return;
    }
    outln!("policies: {}", policies.replace(',', ", "));
    outln!(
        "anything not listed: {} (explicit deny wins over any allow)",
        out.decision(&field(permissions, "default_effect"))
    );

    let entries = |key: &str| {
        permissions
            .get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let pattern_rows = |items: &[Value]| -> Vec<Vec<String>> {
        items
            .iter()
            .map(|e| {
                vec![
                    field(e, "pattern"),
                    field(e, "policy"),
                    field(e, "rule"),
                    conditions(e.get("conditions")),
                ]
            })
            .collect()
    };
    for (key, title) in [("allowed", "allowed"), ("denied", "denied")] {
        let items = entries(key);
        if !items.is_empty() {
            outln!();
            out.print_table(
                &[title, "policy", "rule", "conditions"],
                pattern_rows(&items),
            );
        }
    }
    let approvals = entries("approvals");
    if !approvals.is_empty() {
        outln!();
        let rows = approvals
            .iter()
            .map(|a| {
                let timeout = a
                    .get("timeout_seconds")
                    .and_then(Value::as_u64)
                    .map_or_else(|| "gateway default".to_owned(), |s| format!("{s} s"));
                vec![field(a, "pattern"), field(a, "policy"), timeout]
            })
            .collect();
        out.print_table(&["requires approval", "policy", "timeout"], rows);
    }
    let limits = entries("rate_limits");
    if !limits.is_empty() {
        outln!();
        let rows = limits
            .iter()
            .map(|l| {
                vec![
                    field(l, "policy"),
                    field(l, "rule"),
                    field(l, "requests_per_minute"),
                    field(l, "requests_per_hour"),
                ]
            })
            .collect();
        out.print_table(&["rate limit of", "rule", "per minute", "per hour"], rows);
    }
    let budgets = entries("budgets");
    if !budgets.is_empty() {
        outln!();
        let rows = budgets
            .iter()
            .map(|b| {
                vec![
                    field(b, "policy"),
                    field(b, "rule"),
                    field(b, "field"),
                    field(b, "perHour"),
                    field(b, "perDay"),
                ]
            })
            .collect();
        out.print_table(&["budget of", "rule", "field", "per hour", "per day"], rows);
    }
}

/// `resourcePattern=workspace/*, sandbox=true`: a rule's conditions on one line.
fn conditions(value: Option<&Value>) -> String {
    let Some(Value::Object(map)) = value else {
        return "-".to_owned();
    };
    if map.is_empty() {
        return "-".to_owned();
    }
    map.iter()
        .map(|(key, value)| match value {
            Value::Object(inner) => {
                let parts: Vec<String> = inner
                    .iter()
                    .map(|(k, v)| format!("{k}={}", display(v)))
                    .collect();
                format!("{key}({})", parts.join(", "))
            }
            other => format!("{key}={}", display(other)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::conditions;
    use serde_json::json;

    #[test]
    fn conditions_read_on_one_line() {
        assert_eq!(conditions(None), "-");
        assert_eq!(
            conditions(Some(
                &json!({"resourcePattern": ["workspace/*"], "sandbox": true})
            )),
            "resourcePattern=workspace/*, sandbox=true"
        );
        assert_eq!(
            conditions(Some(&json!({"rateLimit": {"requestsPerMinute": 10}}))),
            "rateLimit(requestsPerMinute=10)"
        );
    }
}
