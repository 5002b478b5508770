//! The YAML files the CLI reads besides policies (test files, agent lists), with errors in the
//! same `file:line:col: what` form as policy errors.

use serde::de::DeserializeOwned;

/// Deserialises `text`; an error names `origin`, the line and the column.
pub fn parse<T: DeserializeOwned>(origin: &str, text: &str) -> anyhow::Result<T> {
    // Snippets are for terminals with room; one line is what every other CLI error gives.
    let options = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::from_str_with_options(text, options).map_err(|err| {
        let message = err.to_string();
        match err.location() {
            Some(at) => {
                let suffix = format!(" at line {}, column {}", at.line(), at.column());
                let message = message.strip_suffix(&suffix).unwrap_or(&message);
                anyhow::anyhow!("{origin}:{}:{}: {message}", at.line(), at.column())
            }
            None => anyhow::anyhow!("{origin}: {message}"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn errors_name_file_line_and_column_on_one_line() {
        let err = parse::<serde_json::Value>("t.yaml", "tests: [\n")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "t.yaml:1:8: unclosed bracket '['");
        let value: serde_json::Value = parse("t.yaml", "a: 1\n").unwrap();
        assert_eq!(value["a"], 1);
    }
}
