//! Conditions on what a check says (`conditions.context`) and on when it is asked
//! (`conditions.schedule`), compiled at load (SPEC 3, "Conditions").
//!
//! A context condition names a value by a dotted path (`arguments.repo.owner`; a numeric segment
//! indexes a list) and tests it with operators. Evaluation never fails: a value that is missing
//! or of the wrong type makes the test not hold, so an `allow` with conditions allows only what
//! it describes. A schedule is read in its IANA time zone from the clock the caller passes in.

use std::cmp::Ordering;

use jiff::Timestamp;
use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use serde::Serialize;
use serde_json::Value;

use crate::pattern::Pattern;

/// One key of `conditions.context`: every test must hold for the value at `path`.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextCondition {
    /// The key as written (`arguments.amount`).
    pub(crate) key: String,
    /// The key split on `.`.
    pub(crate) path: Vec<String>,
    /// The tests, all of which must hold.
    pub(crate) tests: Vec<ValueTest>,
    /// The value as written, for display and for comparing rules.
    pub(crate) written: Value,
}

/// One operator of a context condition, compiled.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueTest {
    /// `eq` (or a plain value): JSON equality, numbers by value.
    Eq(Value),
    /// `ne`: present, of the operand's type, and not equal.
    Ne(Value),
    /// `lt`, `le`, `gt`, `ge`: a number, or a time when both sides are RFC 3339 times.
    Compare(Comparison, Operand),
    /// `in`: equal to one of these.
    In(Vec<Value>),
    /// `notIn`: present, of a type among these, and equal to none.
    NotIn(Vec<Value>),
    /// `matches`: a string matched by one of these patterns.
    Matches(Vec<Pattern>),
    /// `exists`: present (and not null), or absent.
    Exists(bool),
}

/// The four ordering operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `lt`
    Lt,
    /// `le`
    Le,
    /// `gt`
    Gt,
    /// `ge`
    Ge,
}

impl Comparison {
    /// The operator's YAML name.
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Lt => "lt",
            Comparison::Le => "le",
            Comparison::Gt => "gt",
            Comparison::Ge => "ge",
        }
    }

    fn admits(self, ordering: Ordering) -> bool {
        match self {
            Comparison::Lt => ordering == Ordering::Less,
            Comparison::Le => ordering != Ordering::Greater,
            Comparison::Gt => ordering == Ordering::Greater,
            Comparison::Ge => ordering != Ordering::Less,
        }
    }
}

/// The right-hand side of an ordering operator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Operand {
    /// A number.
    Number(f64),
    /// An instant, written as an RFC 3339 time.
    Time(Timestamp),
}

/// The operator names `conditions.context` accepts, in the order the docs list them.
pub const OPERATORS: [&str; 10] = [
    "eq", "ne", "lt", "le", "gt", "ge", "in", "notIn", "matches", "exists",
];

/// Reads an instant from a string: RFC 3339 (`2026-03-01T12:00:00Z`, any offset).
pub(crate) fn parse_time(text: &str) -> Option<Timestamp> {
    text.parse::<Timestamp>().ok()
}

/// The value at `path` in `context`; `None` when a step is missing or the value is null.
pub(crate) fn lookup<'c>(
    context: &'c serde_json::Map<String, Value>,
    path: &[String],
) -> Option<&'c Value> {
    let (first, rest) = path.split_first()?;
    let mut value = context.get(first)?;
    for segment in rest {
        value = match value {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    (!value.is_null()).then_some(value)
}

/// JSON equality where numbers compare by value (`1` equals `1.0`), as YAML and JSON authors
/// expect.
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(p), Some(q)) if p == q)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn same_type(a: &Value, b: &Value) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

impl ValueTest {
    /// Whether the test holds for `value` (`None`: missing or null).
    pub(crate) fn holds(&self, value: Option<&Value>) -> bool {
        match (self, value) {
            (ValueTest::Exists(wanted), value) => value.is_some() == *wanted,
            (_, None) => false,
            (ValueTest::Eq(expected), Some(value)) => json_eq(value, expected),
            (ValueTest::Ne(other), Some(value)) => {
                same_type(value, other) && !json_eq(value, other)
            }
            (ValueTest::Compare(op, operand), Some(value)) => {
                let ordering = match (operand, value) {
                    (Operand::Number(bound), Value::Number(n)) => {
                        n.as_f64().and_then(|n| n.partial_cmp(bound))
                    }
                    (Operand::Time(bound), Value::String(text)) => {
                        parse_time(text).map(|t| t.cmp(bound))
                    }
                    _ => None,
                };
                ordering.is_some_and(|o| op.admits(o))
            }
            (ValueTest::In(options), Some(value)) => options.iter().any(|o| json_eq(value, o)),
            (ValueTest::NotIn(options), Some(value)) => {
                options.iter().any(|o| same_type(value, o))
                    && !options.iter().any(|o| json_eq(value, o))
            }
            (ValueTest::Matches(patterns), Some(Value::String(text))) => {
                patterns.iter().any(|p| p.matches(text))
            }
            (ValueTest::Matches(_), Some(_)) => false,
        }
    }

    /// The operator's YAML name.
    pub fn operator(&self) -> &'static str {
        match self {
            ValueTest::Eq(_) => "eq",
            ValueTest::Ne(_) => "ne",
            ValueTest::Compare(op, _) => op.as_str(),
            ValueTest::In(_) => "in",
            ValueTest::NotIn(_) => "notIn",
            ValueTest::Matches(_) => "matches",
            ValueTest::Exists(_) => "exists",
        }
    }
}

impl ContextCondition {
    /// The key as written.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value as written (a plain value, or a mapping of operators).
    pub fn written(&self) -> &Value {
        &self.written
    }

    /// The first test that does not hold for `context`, if any.
    pub(crate) fn failing<'s>(
        &'s self,
        context: &serde_json::Map<String, Value>,
    ) -> Option<&'s ValueTest> {
        let value = lookup(context, &self.path);
        self.tests.iter().find(|test| !test.holds(value))
    }

    /// Why the condition can never hold, if it cannot (a lint).
    pub(crate) fn contradiction(&self) -> Option<String> {
        let mut lower: Option<(Operand, bool)> = None;
        let mut upper: Option<(Operand, bool)> = None;
        let mut numbers = false;
        let mut times = false;
        let mut absent = false;
        let mut present = false;
        for test in &self.tests {
            match test {
                ValueTest::Exists(false) => absent = true,
                ValueTest::Exists(true) => {}
                ValueTest::In(options) if options.is_empty() => {
                    return Some("`in` lists no value".to_owned());
                }
                ValueTest::Compare(op, operand) => {
                    present = true;
                    match operand {
                        Operand::Number(_) => numbers = true,
                        Operand::Time(_) => times = true,
                    }
                    let strict = matches!(op, Comparison::Lt | Comparison::Gt);
                    match op {
                        Comparison::Gt | Comparison::Ge => lower = Some((*operand, strict)),
                        Comparison::Lt | Comparison::Le => upper = Some((*operand, strict)),
                    }
                }
                _ => present = true,
            }
        }
        if absent && present {
            return Some("`exists: false` and a test that needs the value".to_owned());
        }
        if numbers && times {
            return Some("compares one value both with a number and with a time".to_owned());
        }
        if let (Some((low, low_strict)), Some((high, high_strict))) = (lower, upper) {
            let ordering = match (low, high) {
                (Operand::Number(a), Operand::Number(b)) => a.partial_cmp(&b),
                (Operand::Time(a), Operand::Time(b)) => Some(a.cmp(&b)),
                _ => None,
            };
            let empty = match ordering {
                Some(Ordering::Greater) => true,
                Some(Ordering::Equal) => low_strict || high_strict,
                _ => false,
            };
            if empty {
                return Some("its lower bound is not below its upper bound".to_owned());
            }
        }
        let equal = self.tests.iter().find_map(|t| match t {
            ValueTest::Eq(v) => Some(v),
            _ => None,
        });
        if let Some(expected) = equal {
            let value = Some(expected);
            if let Some(other) = self.tests.iter().find(|t| !t.holds(value)) {
                return Some(format!(
                    "its `eq` value {expected} fails its own `{}` test",
                    other.operator()
                ));
            }
        }
        None
    }
}

/// When a rule applies: on these days, in this window, in this time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Monday first; `true` where the day opens a window.
    pub(crate) days: [bool; 7],
    /// Minutes after local midnight: start (inclusive) and end (exclusive); a window whose end
    /// is before its start crosses midnight. `None`: the whole day.
    pub(crate) hours: Option<(u16, u16)>,
    /// The zone the days and hours are read in.
    pub(crate) zone: TimeZone,
    /// How the schedule was written, for display.
    pub(crate) written: ScheduleText,
}

/// A schedule as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleText {
    /// The days, as written; `None` for every day.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<String>>,
    /// `HH:MM-HH:MM`, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hours: Option<String>,
    /// The IANA zone name (`UTC` when none was written).
    pub timezone: String,
}

/// Day names as the schedule accepts them, Monday first.
pub const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day_index(day: Weekday) -> usize {
    usize::try_from(day.to_monday_zero_offset()).unwrap_or(0)
}

impl Schedule {
    /// Whether the schedule is open at `now`. A window that crosses midnight belongs to the day
    /// it opens on: `fri 22:00-06:00` is open on Saturday at 03:00.
    pub(crate) fn is_open(&self, now: Timestamp) -> bool {
        let local = now.to_zoned(self.zone.clone());
        let today = day_index(local.weekday());
        let yesterday = (today + 6) % 7;
        let opens_today = self.days.get(today).copied().unwrap_or(false);
        let opened_yesterday = self.days.get(yesterday).copied().unwrap_or(false);
        let minute =
            u16::try_from(i32::from(local.hour()) * 60 + i32::from(local.minute())).unwrap_or(0);
        match self.hours {
            None => opens_today,
            Some((start, end)) if start < end => opens_today && (start..end).contains(&minute),
            Some((start, end)) if start > end => {
                (opens_today && minute >= start) || (opened_yesterday && minute < end)
            }
            Some(_) => false,
        }
    }

    /// Why the schedule never opens, if it cannot (a lint).
    pub(crate) fn never_opens(&self) -> Option<&'static str> {
        if !self.days.contains(&true) {
            return Some("it lists no day");
        }
        match self.hours {
            Some((start, end)) if start == end => Some("its window starts where it ends"),
            _ => None,
        }
    }

    /// The schedule as written.
    pub fn written(&self) -> &ScheduleText {
        &self.written
    }
}

/// Reads `HH:MM-HH:MM` into minutes after midnight; `24:00` is allowed as an end.
pub(crate) fn parse_hours(text: &str) -> Result<(u16, u16), String> {
    let minutes = |part: &str, end: bool| -> Option<u16> {
        let (h, m) = part.trim().split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        match (h, m) {
            (24, 0) if end => Some(24 * 60),
            (0..=23, 0..=59) => Some(h * 60 + m),
            _ => None,
        }
    };
    let parsed = text
        .split_once('-')
        .and_then(|(start, end)| Some((minutes(start, false)?, minutes(end, true)?)));
    parsed.ok_or_else(|| {
        format!("expected a window `HH:MM-HH:MM` such as \"09:00-18:00\", got \"{text}\"")
    })
}

/// Converts the caller's clock into the engine's instant; a time outside jiff's range (years
/// beyond ±9999) reads as the nearest end, so a schedule still answers.
pub(crate) fn instant(now: time::OffsetDateTime) -> Timestamp {
    let nanos = i32::try_from(now.nanosecond()).unwrap_or(0);
    Timestamp::new(now.unix_timestamp(), nanos).unwrap_or(if now.unix_timestamp() < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn schedule(days: &[usize], hours: Option<(u16, u16)>, zone: &str) -> Schedule {
        let mut open = [false; 7];
        for d in days {
            open[*d] = true;
        }
        Schedule {
            days: open,
            hours,
            zone: TimeZone::get(zone).unwrap(),
            written: ScheduleText {
                days: None,
                hours: None,
                timezone: zone.into(),
            },
        }
    }

    #[test]
    fn hours_parse_with_a_clear_error() {
        assert_eq!(parse_hours("09:00-18:00"), Ok((540, 1080)));
        assert_eq!(parse_hours("22:00-06:00"), Ok((1320, 360)));
        assert_eq!(parse_hours("00:00-24:00"), Ok((0, 1440)));
        assert!(parse_hours("9-18").unwrap_err().contains("HH:MM-HH:MM"));
        assert!(parse_hours("24:00-10:00").is_err());
    }

    #[test]
    fn a_window_across_midnight_belongs_to_the_day_it_opens() {
        // Friday only, 22:00 to 06:00 UTC. 2026-03-06 is a Friday.
        let s = schedule(&[4], Some((1320, 360)), "UTC");
        assert!(s.is_open(at("2026-03-06T23:00:00Z")));
        assert!(s.is_open(at("2026-03-07T03:00:00Z"))); // Saturday, in Friday's window
        assert!(!s.is_open(at("2026-03-07T23:00:00Z"))); // Saturday's own night: closed
        assert!(!s.is_open(at("2026-03-06T03:00:00Z"))); // Friday morning: Thursday's window
    }

    #[test]
    fn the_zone_moves_with_daylight_saving() {
        // Berlin switches to summer time on 2026-03-29: 07:30 UTC is 08:30 local the day
        // before (closed) and 09:30 local the day after (open).
        let s = schedule(&[0, 1, 2, 3, 4, 5, 6], Some((540, 1080)), "Europe/Berlin");
        assert!(!s.is_open(at("2026-03-28T07:30:00Z")));
        assert!(s.is_open(at("2026-03-30T07:30:00Z")));
    }

    #[test]
    fn a_wrong_type_never_holds_and_never_errors() {
        let context = json!({"arguments": {"amount": "50", "when": "2026-03-01T10:00:00Z"}});
        let context = context.as_object().unwrap();
        let amount = vec!["arguments".to_owned(), "amount".to_owned()];
        let value = lookup(context, &amount);
        assert!(!ValueTest::Compare(Comparison::Le, Operand::Number(100.0)).holds(value));
        assert!(!ValueTest::Ne(json!(5)).holds(value));
        let when = vec!["arguments".to_owned(), "when".to_owned()];
        let before = Operand::Time(at("2026-03-02T00:00:00Z"));
        assert!(ValueTest::Compare(Comparison::Lt, before).holds(lookup(context, &when)));
    }
}
