//! How results reach the terminal: aligned tables for people, JSON for scripts, colour only when a
//! person is looking.
//!
//! Text from the gateway (actions, resources, reasons, names) is agent input: every value shown
//! goes through [`escape`], so an escape sequence, a carriage return or a bidi override in it
//! cannot move the cursor, retitle the window, or forge a row.

/// `println!` for command output: when the reader has gone away (`meshguard audit export | head`)
/// the command stops quietly instead of panicking on the closed pipe.
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

use std::io::IsTerminal as _;

use anstyle::{AnsiColor, Style};
use comfy_table::{Cell, CellAlignment, ColumnConstraint, ContentArrangement, Table, presets};
use serde_json::Value;

/// Output choices made once from the flags and the environment.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// `--json`: print the gateway's JSON instead of tables.
    pub json: bool,
    colour: bool,
}

impl Output {
    /// Colour only on a terminal and never when `NO_COLOR` is set (https://no-color.org).
    pub fn detect(json: bool) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Output {
            json,
            colour: !json && !no_color && std::io::stdout().is_terminal(),
        }
    }

    /// Prints `value` as pretty JSON on stdout.
    pub fn print_json(&self, value: &Value) {
        outln!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        );
    }

    /// Paints `text` in `style` when colour is on.
    pub fn paint(&self, text: &str, style: Style) -> String {
        if self.colour {
            format!("{style}{text}{style:#}")
        } else {
            text.to_owned()
        }
    }

    /// Colours a decision: green allow, red deny, yellow approval.
    pub fn decision(&self, decision: &str) -> String {
        let colour = match decision {
            "allow" => AnsiColor::Green,
            "deny" => AnsiColor::Red,
            "require_approval" => AnsiColor::Yellow,
            _ => return decision.to_owned(),
        };
        self.paint(decision, Style::new().fg_color(Some(colour.into())).bold())
    }

    /// Paints a good state (PASS, ok) in green.
    pub fn good(&self, text: &str) -> String {
        self.paint(
            text,
            Style::new().fg_color(Some(AnsiColor::Green.into())).bold(),
        )
    }

    /// Paints something to look at, not yet wrong (a doctor's `warn`), in yellow.
    pub fn caution(&self, text: &str) -> String {
        self.paint(
            text,
            Style::new().fg_color(Some(AnsiColor::Yellow.into())).bold(),
        )
    }

    /// Paints a warning state (revoked, broken) in red.
    pub fn alert(&self, text: &str) -> String {
        self.paint(
            text,
            Style::new().fg_color(Some(AnsiColor::Red.into())).bold(),
        )
    }

    /// Styles a heading.
    pub fn heading(&self, text: &str) -> String {
        self.paint(text, Style::new().bold())
    }

    /// Dims secondary text.
    pub fn dim(&self, text: &str) -> String {
        self.paint(text, Style::new().dimmed())
    }

    /// Prints `rows` under `headers` as an aligned, borderless table.
    pub fn print_table(&self, headers: &[&str], rows: Vec<Vec<String>>) {
        outln!("{}", self.table(headers, rows));
    }

    /// Renders an aligned, borderless table (kubectl-style) without a trailing newline.
    pub fn table(&self, headers: &[&str], rows: Vec<Vec<String>>) -> String {
        let mut table = Table::new();
        table
            .load_preset(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(
                headers
                    .iter()
                    .map(|h| Cell::new(self.heading(&h.to_uppercase()))),
            );
        for row in rows {
            table.add_row(row);
        }
        for column in table.column_iter_mut() {
            column.set_padding((0, 2));
            column.set_cell_alignment(CellAlignment::Left);
            column.set_constraint(ColumnConstraint::ContentWidth);
        }
        table
            .to_string()
            .lines()
            .map(str::trim_end)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Writes to stdout; a closed pipe ends the process with success, as `head` or `grep -q` expect.
pub fn write_stdout(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        exit_on_write_error(&e);
    }
}

/// Ends the process for a failed stdout write: quietly on a closed pipe, else with the error.
pub fn exit_on_write_error(error: &std::io::Error) -> ! {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to stdout: {error}");
    std::process::exit(1);
}

/// `text` with every character that a terminal would act on rather than show written as
/// `\u{…}`: C0 controls (ESC, CR, LF, TAB, …), DEL, C1 controls, the bidi embeddings, overrides
/// and isolates (U+202A–U+202E, U+2066–U+2069), the bidi marks, and the line and paragraph
/// separators.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    fn acts(c: char) -> bool {
        c.is_control()
            || matches!(
                c,
                '\u{202a}'..='\u{202e}'
                    | '\u{2066}'..='\u{2069}'
                    | '\u{200e}'
                    | '\u{200f}'
                    | '\u{061c}'
                    | '\u{2028}'
                    | '\u{2029}'
            )
    }
    if !text.chars().any(acts) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if acts(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A JSON field as display text: strings bare, `null`/absent as `-`, lists comma-joined.
pub fn field(value: &Value, key: &str) -> String {
    display(value.get(key).unwrap_or(&Value::Null))
}

/// A JSON value as display text (see [`field`]), [`escape`]d.
pub fn display(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => escape(s).into_owned(),
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::Array(items) => items.iter().map(display).collect::<Vec<_>>().join(","),
        other => escape(&other.to_string()).into_owned(),
    }
}

/// Shortens an RFC 3339 timestamp to whole seconds (`2026-11-25T23:30:49Z`) for tables; other
/// values are shown as they are.
pub fn short_time(value: &Value) -> String {
    use time::format_description::well_known::Rfc3339;
    let text = display(value);
    time::OffsetDateTime::parse(&text, &Rfc3339)
        .ok()
        .and_then(|t| t.replace_nanosecond(0).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_are_aligned_without_borders() {
        let out = Output {
            json: false,
            colour: false,
        };
        let text = out.table(
            &["name", "trust"],
            vec![
                vec!["a".into(), "verified".into()],
                vec!["longer-name".into(), "trusted".into()],
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "NAME         TRUST",
                "a            verified",
                "longer-name  trusted"
            ]
        );
    }

    #[test]
    fn no_colour_means_plain_text() {
        let out = Output {
            json: false,
            colour: false,
        };
        assert_eq!(out.decision("deny"), "deny");
        let coloured = Output {
            json: false,
            colour: true,
        };
        assert!(coloured.decision("deny").contains("\u{1b}["));
    }

    #[test]
    fn terminal_controls_are_shown_not_obeyed() {
        let v = json!({
            "action": "read:x\u{1b}]0;owned\u{7}",
            "resource": "a\r\n approved \u{202e}gnp.exe\u{9b}2J\u{7f}",
            "plain": "write:workspace/ünï",
        });
        assert_eq!(field(&v, "action"), "read:x\\u{1b}]0;owned\\u{7}");
        assert_eq!(
            field(&v, "resource"),
            "a\\u{d}\\u{a} approved \\u{202e}gnp.exe\\u{9b}2J\\u{7f}"
        );
        assert_eq!(field(&v, "plain"), "write:workspace/ünï");
        assert_eq!(display(&json!({"k": "\u{2066}"})), "{\"k\":\"\\u{2066}\"}");
    }

    #[test]
    fn fields_render_for_people() {
        let v = json!({"tags": ["a", "b"], "none": null, "n": 3, "s": "x", "empty": []});
        assert_eq!(field(&v, "tags"), "a,b");
        assert_eq!(field(&v, "none"), "-");
        assert_eq!(field(&v, "missing"), "-");
        assert_eq!(field(&v, "n"), "3");
        assert_eq!(field(&v, "empty"), "-");
        assert_eq!(
            short_time(&json!("2026-11-25T23:30:49.123456Z")),
            "2026-11-25T23:30:49Z"
        );
        assert_eq!(
            short_time(&json!("2026-11-25T23:30:49.5+01:00")),
            "2026-11-25T23:30:49+01:00"
        );
        assert_eq!(
            short_time(&json!("2026-11-25T23:30:49Z")),
            "2026-11-25T23:30:49Z"
        );
    }
}
