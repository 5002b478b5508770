//! A YAML tree that keeps the position of every node, built from `saphyr-parser` events.
//!
//! We walk our own tree instead of deserialising with serde so that every error (unknown key,
//! wrong type, duplicate key) can name the exact line, column and field path. Anchors, aliases
//! and tags are refused: policies are plain data, and refusing aliases rules out expansion bombs.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use crate::error::{Loc, PolicyError};

/// Deeper nesting than this is refused, so hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

/// One YAML node with where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub kind: NodeKind,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NodeKind {
    /// A scalar; `plain` tells whether YAML's core schema types it (`true`, `12`, `null`).
    Scalar {
        value: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Keys are scalars; their order is kept and duplicates are refused while building.
    Map(Vec<(Node, Node)>),
}

/// The YAML core-schema type of a scalar, used for "expected …, got …" messages and typing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScalarType {
    Null,
    Bool(bool),
    Int,
    Float,
    Str,
}

impl Node {
    /// What kind of value this is, in words for messages.
    pub fn describe(&self) -> String {
        match &self.kind {
            NodeKind::Seq(_) => "a list".to_owned(),
            NodeKind::Map(_) => "a mapping".to_owned(),
            NodeKind::Scalar { value, .. } => match self.scalar_type() {
                Some(ScalarType::Null) => "null".to_owned(),
                Some(ScalarType::Bool(_)) => format!("the boolean `{value}`"),
                Some(ScalarType::Int | ScalarType::Float) => format!("the number `{value}`"),
                Some(ScalarType::Str) | None => format!("the string \"{value}\""),
            },
        }
    }

    pub fn scalar_type(&self) -> Option<ScalarType> {
        match &self.kind {
            NodeKind::Scalar { value, plain } => Some(if *plain {
                classify_plain(value)
            } else {
                ScalarType::Str
            }),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        self.scalar_type() == Some(ScalarType::Null)
    }

    /// The scalar's text, whatever its type.
    pub fn scalar_text(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// Converts to JSON with YAML core-schema typing, for `context` condition values.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.scalar_text().unwrap_or_default().to_owned(), v.to_json()))
                    .collect(),
            ),
            NodeKind::Scalar { value, .. } => match self.scalar_type() {
                Some(ScalarType::Null) => Value::Null,
                Some(ScalarType::Bool(b)) => Value::Bool(b),
                Some(ScalarType::Int) => parse_int(value)
                    .map(Value::from)
                    .unwrap_or_else(|| Value::String(value.clone())),
                Some(ScalarType::Float) => parse_float(value)
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .unwrap_or_else(|| Value::String(value.clone())),
                Some(ScalarType::Str) | None => Value::String(value.clone()),
            },
        }
    }
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn classify_plain(value: &str) -> ScalarType {
    match value {
        "" | "~" | "null" | "Null" | "NULL" => return ScalarType::Null,
        "true" | "True" | "TRUE" => return ScalarType::Bool(true),
        "false" | "False" | "FALSE" => return ScalarType::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => return ScalarType::Float,
        _ => {}
    }
    if is_int(value) {
        ScalarType::Int
    } else if is_float(value) {
        ScalarType::Float
    } else {
        ScalarType::Str
    }
}

fn is_int(value: &str) -> bool {
    let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
    if let Some(oct) = value.strip_prefix("0o") {
        return !oct.is_empty() && oct.bytes().all(|b| (b'0'..=b'7').contains(&b));
    }
    if let Some(hex) = value.strip_prefix("0x") {
        return !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn is_float(value: &str) -> bool {
    let body = value.strip_prefix(['-', '+']).unwrap_or(value);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (body.get(..at).unwrap_or(""), body.get(at + 1..)),
        None => (body, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (!int.is_empty() || !frac.is_empty())
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|b| b.is_ascii_digit()),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    mantissa_ok && exponent_ok
}

pub(crate) fn parse_int(value: &str) -> Option<i64> {
    if let Some(oct) = value.strip_prefix("0o") {
        return i64::from_str_radix(oct, 8).ok();
    }
    if let Some(hex) = value.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok();
    }
    value.parse().ok()
}

fn parse_float(value: &str) -> Option<f64> {
    let lower = value.to_ascii_lowercase();
    match lower.trim_start_matches('+') {
        ".inf" => Some(f64::INFINITY),
        "-.inf" => Some(f64::NEG_INFINITY),
        ".nan" => Some(f64::NAN),
        _ => value.parse().ok(),
    }
}

fn loc_of(span: &Span) -> Loc {
    Loc {
        line: u32::try_from(span.start.line()).unwrap_or(u32::MAX),
        column: u32::try_from(span.start.col().saturating_add(1)).unwrap_or(u32::MAX),
    }
}

/// Parses one YAML document into a positioned tree. An empty document is an error: a policy
/// file must say something.
pub(crate) fn parse_document(origin: &str, text: &str) -> Result<Node, PolicyError> {
    let mut builder = TreeBuilder {
        origin,
        parser: Parser::new_from_str(text),
        last: Loc { line: 1, column: 1 },
        path: Vec::new(),
    };
    let mut root = None;
    loop {
        let (event, span) = builder.next()?;
        match event {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::DocumentStart(_) => {
                if root.is_some() {
                    return Err(builder.error(
                        loc_of(&span),
                        "expected one YAML document, found a second one (`---`)",
                    ));
                }
                let (first, first_span) = builder.next()?;
                root = Some(builder.node(first, first_span, 0)?);
            }
            Event::StreamEnd => break,
            _ => return Err(builder.error(loc_of(&span), "unexpected YAML content")),
        }
    }
    root.ok_or_else(|| {
        PolicyError::new(
            origin,
            Loc { line: 1, column: 1 },
            "",
            "the document is empty",
        )
    })
}

struct TreeBuilder<'a> {
    origin: &'a str,
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    last: Loc,
    /// Where the builder is, so a duplicate key can name its field path.
    path: Vec<PathStep>,
}

enum PathStep {
    Key(String),
    Index(usize),
}

fn join_path(steps: &[PathStep], last: &str) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            PathStep::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            PathStep::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    if !out.is_empty() {
        out.push('.');
    }
    out.push_str(last);
    out
}

impl<'a> TreeBuilder<'a> {
    fn error(&self, loc: Loc, message: impl Into<String>) -> PolicyError {
        PolicyError::new(self.origin, loc, "", message)
    }

    fn next(&mut self) -> Result<(Event<'a>, Span), PolicyError> {
        match self.parser.next_event() {
            Some(Ok((event, span))) => {
                self.last = loc_of(&span);
                Ok((event, span))
            }
            Some(Err(err)) => {
                let marker = err.marker();
                let loc = Loc {
                    line: u32::try_from(marker.line()).unwrap_or(u32::MAX),
                    column: u32::try_from(marker.col().saturating_add(1)).unwrap_or(u32::MAX),
                };
                Err(self.error(loc, format!("invalid YAML: {}", err.info())))
            }
            None => Err(self.error(self.last, "unexpected end of the YAML document")),
        }
    }

    fn node(&mut self, event: Event<'a>, span: Span, depth: usize) -> Result<Node, PolicyError> {
        let loc = loc_of(&span);
        if depth > MAX_DEPTH {
            return Err(self.error(loc, format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        match event {
            Event::Scalar(value, style, anchor, tag) => {
                refuse_anchor_and_tag(self, loc, anchor, tag.is_some())?;
                Ok(Node {
                    kind: NodeKind::Scalar {
                        value: value.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    },
                    loc,
                })
            }
            Event::SequenceStart(anchor, tag) => {
                refuse_anchor_and_tag(self, loc, anchor, tag.is_some())?;
                let mut items = Vec::new();
                loop {
                    let (event, span) = self.next()?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    self.path.push(PathStep::Index(items.len()));
                    let item = self.node(event, span, depth + 1);
                    self.path.pop();
                    items.push(item?);
                }
                Ok(Node {
                    kind: NodeKind::Seq(items),
                    loc,
                })
            }
            Event::MappingStart(anchor, tag) => {
                refuse_anchor_and_tag(self, loc, anchor, tag.is_some())?;
                let mut entries: Vec<(Node, Node)> = Vec::new();
                let mut seen: HashMap<String, u32> = HashMap::new();
                loop {
                    let (event, span) = self.next()?;
                    if matches!(event, Event::MappingEnd) {
                        break;
                    }
                    let key = self.node(event, span, depth + 1)?;
                    let Some(key_text) = key.scalar_text().map(str::to_owned) else {
                        return Err(self.error(key.loc, "mapping keys must be plain strings"));
                    };
                    if let Some(first_line) = seen.get(&key_text) {
                        let path = join_path(&self.path, &key_text);
                        return Err(PolicyError::new(
                            self.origin,
                            key.loc,
                            path,
                            format!("duplicate key `{key_text}` (first at line {first_line})"),
                        ));
                    }
                    seen.insert(key_text.clone(), key.loc.line);
                    self.path.push(PathStep::Key(key_text));
                    let (event, span) = self.next()?;
                    let value = self.node(event, span, depth + 1);
                    self.path.pop();
                    entries.push((key, value?));
                }
                Ok(Node {
                    kind: NodeKind::Map(entries),
                    loc,
                })
            }
            Event::Alias(_) => Err(self.error(loc, "YAML aliases (`*name`) are not supported")),
            _ => Err(self.error(loc, "unexpected YAML content")),
        }
    }
}

fn refuse_anchor_and_tag(
    builder: &TreeBuilder<'_>,
    loc: Loc,
    anchor: usize,
    tagged: bool,
) -> Result<(), PolicyError> {
    if anchor != 0 {
        return Err(builder.error(loc, "YAML anchors (`&name`) are not supported"));
    }
    if tagged {
        return Err(builder.error(loc, "YAML tags (`!tag`) are not supported"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn core_schema_typing() {
        let node = parse_document(
            "t.yaml",
            "a: [~, null, true, False, 12, -3, 0x1F, 0o17, 1.5, .5, 1e3, '12', \"true\", yes, 1.2.3, '', .inf]\n",
        )
        .unwrap();
        let NodeKind::Map(entries) = &node.kind else {
            panic!("{node:?}")
        };
        let expected = json!([
            null, null, true, false, 12, -3, 31, 15, 1.5, 0.5, 1000.0, "12", "true", "yes",
            "1.2.3", "",
            // JSON has no infinity: `.inf` stays the text it was written as.
            ".inf"
        ]);
        assert_eq!(entries[0].1.to_json(), expected);
    }

    #[test]
    fn positions_are_one_based() {
        let node = parse_document("t.yaml", "x:\n  - a\n  - {b: c}\n").unwrap();
        let NodeKind::Map(entries) = &node.kind else {
            panic!()
        };
        let (key, value) = &entries[0];
        assert_eq!(key.loc, Loc { line: 1, column: 1 });
        let NodeKind::Seq(items) = &value.kind else {
            panic!()
        };
        assert_eq!(items[0].loc, Loc { line: 2, column: 5 });
        assert_eq!(items[1].loc, Loc { line: 3, column: 5 });
    }
}
