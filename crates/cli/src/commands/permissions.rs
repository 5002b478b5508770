//! `meshguard policy allowed`: an agent's effective permissions, as the gateway computes them
//! across every policy that applies (deny anywhere wins, allow anywhere beats a default).

use serde_json::Value;

use crate::commands::Context;
use crate::output::{display, field};

/// Prints every section of the permissions answer: lists of patterns as bullet lists, lists of
/// records (rate limits, policies) as tables, single values as `key: value`.
pub fn print(ctx: &Context, agent: &str, permissions: &Value) {
    let out = ctx.out;
    println!(
        "{}",
        out.heading(&format!("effective permissions of `{agent}`"))
    );
    let Some(sections) = permissions.as_object() else {
        println!("{}", display(permissions));
        return;
    };
    for (key, value) in sections {
        match value {
            Value::Array(items) if items.iter().all(Value::is_object) && !items.is_empty() => {
                println!();
                println!("{}", out.heading(&title(key)));
                let mut columns: Vec<String> = Vec::new();
                for item in items {
                    for column in item.as_object().into_iter().flat_map(|o| o.keys()) {
                        if !columns.contains(column) {
                            columns.push(column.clone());
                        }
                    }
                }
                let rows = items
                    .iter()
                    .map(|item| columns.iter().map(|c| field(item, c)).collect())
                    .collect();
                let headers: Vec<String> = columns.iter().map(|c| title(c)).collect();
                let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
                println!("{}", out.table(&headers, rows));
            }
            Value::Array(items) => {
                println!();
                println!("{}", out.heading(&title(key)));
                if items.is_empty() {
                    println!("  {}", out.dim("(none)"));
                }
                for item in items {
                    println!("  {}", paint_entry(ctx, key, &display(item)));
                }
            }
            Value::Object(_) => {
                println!();
                println!("{}", out.heading(&title(key)));
                for (k, v) in value.as_object().into_iter().flatten() {
                    println!("  {}: {}", title(k), display(v));
                }
            }
            scalar => println!("{}: {}", title(key), display(scalar)),
        }
    }
}

fn paint_entry(ctx: &Context, section: &str, entry: &str) -> String {
    let lower = section.to_lowercase();
    if lower.contains("den") {
        ctx.out.alert(entry)
    } else if lower.contains("allow") {
        ctx.out.good(entry)
    } else {
        entry.to_owned()
    }
}

/// `requireApproval` → `require approval`, `rate_limits` → `rate limits`.
fn title(key: &str) -> String {
    let mut text = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c == '_' {
            text.push(' ');
        } else if c.is_uppercase() {
            text.push(' ');
            text.extend(c.to_lowercase());
        } else {
            text.push(c);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::title;

    #[test]
    fn keys_read_as_words() {
        assert_eq!(title("requireApproval"), "require approval");
        assert_eq!(title("rate_limits"), "rate limits");
        assert_eq!(title("allowed"), "allowed");
    }
}
