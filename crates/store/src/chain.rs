//! The audit hash chain: the canonical JSON of an event and its hash.
//!
//! The definition lives here, in one place, and is spelled out for auditors in
//! docs/architecture/audit-chain.md. Changing anything in this file changes every hash: existing
//! chains would no longer verify.

use serde_json::Value;
#[cfg(test)]
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::AuditEvent;

/// `prev_hash` of the first event of a chain: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Hex SHA-256 (lowercase) of the canonical JSON of every field of `event` except `hash`.
///
/// Written straight from the event's fields, in the canonical key order, rather than through a
/// `serde_json::Value` ([`chained_fields`], the definition, which tests hold it equal to): it is
/// what `verify` spends its time on, and building the object costs more than hashing it.
pub fn event_hash(event: &AuditEvent) -> String {
    let hex = chained_hash(&ChainedFields::of(event)).unwrap_or([b'0'; 64]);
    // Hex digits are always UTF-8.
    String::from_utf8_lossy(&hex).into_owned()
}

/// The lowercase hex SHA-256 of the canonical JSON of `fields`; `None` when a stored context is
/// not a canonical JSON object (then only decoding the row says what it is).
pub(crate) fn chained_hash(fields: &ChainedFields<'_>) -> Option<[u8; 64]> {
    let mut hex = [0_u8; 64];
    // 32 bytes always fit 64 hex digits.
    hex::encode_to_slice(chained_digest(fields)?, &mut hex).ok()?;
    Some(hex)
}

/// The SHA-256 of the canonical JSON of `fields`, as bytes: what a stored row's hash is compared
/// with (rows keep the 32 bytes, events the hex).
pub(crate) fn chained_digest(fields: &ChainedFields<'_>) -> Option<[u8; 32]> {
    let mut text = String::with_capacity(768);
    if !write_chained_fields(fields, &mut text) {
        return None;
    }
    Some(Sha256::digest(text.as_bytes()).into())
}

/// The fields the hash covers, borrowed: from a decoded event, or straight from a stored row
/// where verification hashes rows without decoding them into events (no allocation per field).
pub(crate) struct ChainedFields<'a> {
    pub(crate) id: &'a str,
    pub(crate) seq: u64,
    pub(crate) ts: time::OffsetDateTime,
    pub(crate) kind: &'a str,
    /// The agent's id and name.
    pub(crate) agent: Option<(&'a str, &'a str)>,
    pub(crate) action: &'a str,
    pub(crate) resource: Option<&'a str>,
    pub(crate) decision: Option<&'a str>,
    pub(crate) code: Option<&'a str>,
    pub(crate) reason: Option<&'a str>,
    pub(crate) policy: Option<&'a str>,
    pub(crate) rule: Option<&'a str>,
    pub(crate) trace_id: Option<&'a str>,
    pub(crate) approval_id: Option<&'a str>,
    pub(crate) status: Option<&'a str>,
    pub(crate) result: Option<&'a str>,
    pub(crate) context: ContextFields<'a>,
    pub(crate) latency_us: Option<u64>,
    pub(crate) gateway: &'a str,
    /// The shadow verdict's code, decision, policy and rule.
    pub(crate) shadow: Option<(&'a str, &'a str, Option<&'a str>, Option<&'a str>)>,
    pub(crate) prev_hash: &'a str,
}

/// An event's context as the hash reads it.
pub(crate) enum ContextFields<'a> {
    /// Decoded.
    Object(&'a serde_json::Map<String, Value>),
    /// As stored: JSON text, canonical when MeshGuard wrote it (anything else is refused, and
    /// the caller decodes the row instead).
    Stored(&'a str),
}

impl<'a> ChainedFields<'a> {
    /// The fields of a decoded event.
    pub(crate) fn of(committed: &'a AuditEvent) -> Self {
        let event = &committed.event;
        Self {
            id: &event.id,
            seq: committed.seq,
            ts: event.ts,
            kind: event.kind.as_str(),
            agent: event
                .agent
                .as_ref()
                .map(|agent| (agent.id.as_str(), agent.name.as_str())),
            action: &event.action,
            resource: event.resource.as_deref(),
            decision: event.decision.map(|decision| decision.as_str()),
            code: event.code.map(|code| code.as_str()),
            reason: event.reason.as_deref(),
            policy: event.policy.as_deref(),
            rule: event.rule.as_deref(),
            trace_id: event.trace_id.as_deref(),
            approval_id: event.approval_id.as_deref(),
            status: event.status.as_deref(),
            result: event.result.as_deref(),
            context: ContextFields::Object(&event.context),
            latency_us: event.latency_us,
            gateway: &event.gateway,
            shadow: event.shadow.as_ref().map(|shadow| {
                (
                    shadow.code.as_str(),
                    shadow.decision.as_str(),
                    shadow.policy.as_deref(),
                    shadow.rule.as_deref(),
                )
            }),
            prev_hash: &committed.prev_hash,
        }
    }
}

impl ChainedFields<'_> {
    /// Whether every typed field holds a spelling MeshGuard writes (its kind, decision, code and
    /// shadow verdict), as a decoded event's always do. Fields read as text (a stored row, an
    /// exported line) are hashed as they are only when this holds; otherwise decoding decides.
    pub(crate) fn as_written(&self) -> bool {
        let effect = |text: &str| meshguard_policy::Effect::parse(text).is_some();
        crate::AuditKind::parse(self.kind).is_some()
            && self.decision.is_none_or(effect)
            && self
                .code
                .is_none_or(|code| crate::EventCode::parse(code).is_some())
            && self.shadow.is_none_or(|(code, decision, _, _)| {
                meshguard_policy::Code::parse(code).is_some() && effect(decision)
            })
    }
}

/// The canonical JSON of [`chained_fields`], written field by field: the keys below are in the
/// byte order canonical JSON sorts them in. False when a stored context is not canonical.
fn write_chained_fields(event: &ChainedFields<'_>, out: &mut String) -> bool {
    fn opt_str(value: Option<&str>, out: &mut String) {
        match value {
            Some(text) => write_string(text, out),
            None => out.push_str("null"),
        }
    }
    fn key(name: &str, out: &mut String) {
        out.push('"');
        out.push_str(name);
        out.push_str("\":");
    }
    out.push('{');
    key("action", out);
    write_string(event.action, out);
    out.push(',');
    key("agent", out);
    match event.agent {
        Some((id, name)) => {
            out.push_str("{\"id\":");
            write_string(id, out);
            out.push_str(",\"name\":");
            write_string(name, out);
            out.push('}');
        }
        None => out.push_str("null"),
    }
    out.push(',');
    key("approval_id", out);
    opt_str(event.approval_id, out);
    out.push(',');
    key("code", out);
    opt_str(event.code, out);
    out.push(',');
    key("context", out);
    match event.context {
        ContextFields::Object(map) => write_object(map, out),
        ContextFields::Stored(text) => {
            if !stored_context::write(text, out) {
                return false;
            }
        }
    }
    out.push(',');
    key("decision", out);
    opt_str(event.decision, out);
    out.push(',');
    key("gateway", out);
    write_string(event.gateway, out);
    out.push(',');
    key("id", out);
    write_string(event.id, out);
    out.push(',');
    key("kind", out);
    write_string(event.kind, out);
    out.push(',');
    key("latency_us", out);
    match event.latency_us {
        Some(latency) => out.push_str(itoa::Buffer::new().format(latency)),
        None => out.push_str("null"),
    }
    out.push(',');
    key("policy", out);
    opt_str(event.policy, out);
    out.push(',');
    key("prev_hash", out);
    write_string(event.prev_hash, out);
    out.push(',');
    key("reason", out);
    opt_str(event.reason, out);
    out.push(',');
    key("resource", out);
    opt_str(event.resource, out);
    out.push(',');
    key("result", out);
    opt_str(event.result, out);
    out.push(',');
    key("rule", out);
    opt_str(event.rule, out);
    out.push(',');
    key("seq", out);
    out.push_str(itoa::Buffer::new().format(event.seq));
    out.push(',');
    if let Some((code, decision, policy, rule)) = event.shadow {
        key("shadow", out);
        out.push_str("{\"code\":");
        write_string(code, out);
        out.push_str(",\"decision\":");
        write_string(decision, out);
        out.push_str(",\"policy\":");
        opt_str(policy, out);
        out.push_str(",\"rule\":");
        opt_str(rule, out);
        out.push_str("},");
    }
    key("status", out);
    opt_str(event.status, out);
    out.push(',');
    key("trace_id", out);
    opt_str(event.trace_id, out);
    out.push(',');
    key("ts", out);
    timestamp::write_json(event.ts, out);
    out.push('}');
    true
}

/// The object the hash covers: the event's JSON form without `hash`. The definition, spelled as
/// JSON; [`event_hash`] writes the same text field by field, and tests hold the two equal.
#[cfg(test)]
fn chained_fields(committed: &AuditEvent) -> Value {
    let event = &committed.event;
    let mut fields = json!({
        "id": event.id,
        "seq": committed.seq,
        "ts": timestamp::format(event.ts),
        "kind": event.kind.as_str(),
        "agent": event.agent.as_ref().map(|agent| json!({"id": agent.id, "name": agent.name})),
        "action": event.action,
        "resource": event.resource,
        "decision": event.decision,
        "code": event.code,
        "reason": event.reason,
        "policy": event.policy,
        "rule": event.rule,
        "trace_id": event.trace_id,
        "approval_id": event.approval_id,
        "status": event.status,
        "result": event.result,
        "context": event.context,
        "latency_us": event.latency_us,
        "gateway": event.gateway,
        "prev_hash": committed.prev_hash,
    });
    // Only present when there is one, so events without it hash as they always did.
    if let (Some(shadow), Some(map)) = (&event.shadow, fields.as_object_mut()) {
        map.insert("shadow".into(), json!(shadow));
    }
    fields
}

/// Canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace, strings escaped only
/// where JSON requires it (`"`, `\`, control characters; `\b \f \n \r \t` short forms, others as
/// `\u00xx`), every other character written as UTF-8, numbers as serde_json prints them.
///
/// Hand-written rather than `serde_json::to_string` because that function's key order depends on
/// a cargo feature (`preserve_order`) that any crate in a build can switch on.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, &mut out);
    out
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => out.push_str(&number.to_string()),
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(map, out),
    }
}

fn write_object(map: &serde_json::Map<String, Value>, out: &mut String) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push('{');
    for (index, (key, item)) in entries.into_iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_string(key, out);
        out.push(':');
        write_value(item, out);
    }
    out.push('}');
}

/// A JSON string as canonical JSON writes it. Runs of characters that need no escape are copied
/// whole: every escaped character is ASCII, so each run ends on a character boundary.
fn write_string(text: &str, out: &mut String) {
    out.push('"');
    // Most text needs no escape at all: one scan, one copy. The scan looks at 16 bytes at a
    // time without stopping early inside a block, which the compiler turns into vector code.
    let needs_escape = |block: &[u8]| {
        block.iter().fold(false, |any, &b| {
            any | (b < 0x20) | (b == b'"') | (b == b'\\')
        })
    };
    if !text.as_bytes().chunks(16).any(needs_escape) {
        out.push_str(text);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (at, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x0c => "\\f",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..0x20 => "",
            _ => continue,
        };
        out.push_str(text.get(start..at).unwrap_or_default());
        if escape.is_empty() {
            out.push_str(&format!("\\u{byte:04x}"));
        } else {
            out.push_str(escape);
        }
        start = at + 1;
    }
    out.push_str(text.get(start..).unwrap_or_default());
    out.push('"');
}

/// An exported event's place in its chain, read from its line of `audit export` without
/// decoding the event (see [`exported_link`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedLink {
    /// The chain (gateway instance) the event belongs to.
    pub gateway: String,
    /// Its position.
    pub seq: u64,
    /// The hash of the event before it.
    pub prev_hash: String,
    /// Its hash, which is the hash of its content.
    pub hash: String,
}

/// The link of one line of an export when the line is an event as `audit export` writes it and
/// its `hash` is the hash of its content, read with its strings borrowed from the line and its
/// context rewritten token by token: what offline verification does for every line. `None` for
/// anything else (a checkpoint, a field MeshGuard never writes so, a hash that does not match):
/// the caller then decodes the line, which says what it is.
pub fn exported_link(line: &str) -> Option<ExportedLink> {
    use std::borrow::Cow;

    #[derive(serde::Deserialize)]
    struct Agent<'a> {
        #[serde(borrow)]
        id: Cow<'a, str>,
        #[serde(borrow)]
        name: Cow<'a, str>,
    }
    #[derive(serde::Deserialize)]
    struct Shadow<'a> {
        #[serde(borrow)]
        code: Cow<'a, str>,
        #[serde(borrow)]
        decision: Cow<'a, str>,
        #[serde(borrow)]
        policy: Option<Cow<'a, str>>,
        #[serde(borrow)]
        rule: Option<Cow<'a, str>>,
    }
    #[derive(serde::Deserialize)]
    struct Line<'a> {
        #[serde(borrow)]
        id: Cow<'a, str>,
        seq: u64,
        #[serde(borrow)]
        ts: Cow<'a, str>,
        #[serde(borrow)]
        kind: Cow<'a, str>,
        #[serde(borrow)]
        agent: Option<Agent<'a>>,
        #[serde(borrow)]
        action: Cow<'a, str>,
        #[serde(borrow)]
        resource: Option<Cow<'a, str>>,
        #[serde(borrow)]
        decision: Option<Cow<'a, str>>,
        #[serde(borrow)]
        code: Option<Cow<'a, str>>,
        #[serde(borrow)]
        reason: Option<Cow<'a, str>>,
        #[serde(borrow)]
        policy: Option<Cow<'a, str>>,
        #[serde(borrow)]
        rule: Option<Cow<'a, str>>,
        #[serde(borrow)]
        trace_id: Option<Cow<'a, str>>,
        #[serde(borrow)]
        approval_id: Option<Cow<'a, str>>,
        #[serde(borrow)]
        status: Option<Cow<'a, str>>,
        #[serde(borrow)]
        result: Option<Cow<'a, str>>,
        #[serde(borrow)]
        context: &'a serde_json::value::RawValue,
        latency_us: Option<u64>,
        #[serde(borrow)]
        gateway: Cow<'a, str>,
        #[serde(borrow)]
        shadow: Option<Shadow<'a>>,
        #[serde(borrow)]
        prev_hash: Cow<'a, str>,
        #[serde(borrow)]
        hash: Cow<'a, str>,
    }
    let line: Line<'_> = serde_json::from_str(line).ok()?;
    let fields = ChainedFields {
        id: &line.id,
        seq: line.seq,
        ts: timestamp::parse_canonical(&line.ts)?,
        kind: &line.kind,
        agent: line
            .agent
            .as_ref()
            .map(|agent| (agent.id.as_ref(), agent.name.as_ref())),
        action: &line.action,
        resource: line.resource.as_deref(),
        decision: line.decision.as_deref(),
        code: line.code.as_deref(),
        reason: line.reason.as_deref(),
        policy: line.policy.as_deref(),
        rule: line.rule.as_deref(),
        trace_id: line.trace_id.as_deref(),
        approval_id: line.approval_id.as_deref(),
        status: line.status.as_deref(),
        result: line.result.as_deref(),
        context: ContextFields::Stored(line.context.get()),
        latency_us: line.latency_us,
        gateway: &line.gateway,
        shadow: line.shadow.as_ref().map(|shadow| {
            (
                shadow.code.as_ref(),
                shadow.decision.as_ref(),
                shadow.policy.as_deref(),
                shadow.rule.as_deref(),
            )
        }),
        prev_hash: &line.prev_hash,
    };
    if !fields.as_written() {
        return None;
    }
    let hash = chained_hash(&fields)?;
    (hash == line.hash.as_bytes()).then(|| ExportedLink {
        gateway: line.gateway.clone().into_owned(),
        seq: line.seq,
        prev_hash: line.prev_hash.clone().into_owned(),
        hash: line.hash.clone().into_owned(),
    })
}

/// A stored context (JSON text) written as canonical JSON without building a `serde_json::Value`:
/// the text is read token by token and each token written as canonical JSON writes it. Keys
/// must already be in canonical order (MeshGuard stores the canonical text); any other text —
/// keys out of order or repeated, escaped keys, not an object, not JSON — is refused, and the
/// caller decodes the row, whose canonical form [`canonical_json`] then defines.
mod stored_context {
    use std::fmt;

    use serde::de::{self, DeserializeSeed, Deserializer as _, MapAccess, SeqAccess, Visitor};

    /// Writes the canonical form of `text` to `out`; false (and `out` unusable) when refused.
    pub(super) fn write(text: &str, out: &mut String) -> bool {
        let mut reader = serde_json::Deserializer::from_str(text);
        reader.deserialize_map(Canonical { out }).is_ok() && reader.end().is_ok()
    }

    struct Canonical<'o> {
        out: &'o mut String,
    }

    impl<'de> DeserializeSeed<'de> for Canonical<'_> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, reader: D) -> Result<(), D::Error> {
            reader.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Canonical<'_> {
        type Value = ();

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("JSON")
        }
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            self.out.push_str("null");
            Ok(())
        }
        fn visit_bool<E: de::Error>(self, value: bool) -> Result<(), E> {
            self.out.push_str(if value { "true" } else { "false" });
            Ok(())
        }
        fn visit_u64<E: de::Error>(self, value: u64) -> Result<(), E> {
            self.out.push_str(itoa::Buffer::new().format(value));
            Ok(())
        }
        fn visit_i64<E: de::Error>(self, value: i64) -> Result<(), E> {
            self.out.push_str(itoa::Buffer::new().format(value));
            Ok(())
        }
        fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
            // As a decoded `Value` prints it.
            let number = serde_json::Number::from_f64(value)
                .ok_or_else(|| E::custom("not a finite number"))?;
            self.out.push_str(&number.to_string());
            Ok(())
        }
        fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
            super::write_string(value, self.out);
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
            self.out.push('[');
            let mut first = true;
            loop {
                if !first {
                    self.out.push(',');
                }
                let at = self.out.len();
                if items
                    .next_element_seed(Canonical {
                        out: &mut *self.out,
                    })?
                    .is_none()
                {
                    if !first {
                        // The comma written ahead of an item that was not there.
                        self.out.truncate(at - 1);
                    }
                    break;
                }
                first = false;
            }
            self.out.push(']');
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
            self.out.push('{');
            let mut last: Option<&'de str> = None;
            // Keys borrowed from the text: an escaped key cannot be, and is refused.
            while let Some(key) = entries.next_key::<&'de str>()? {
                if last.is_some_and(|last| last.as_bytes() >= key.as_bytes()) {
                    return Err(de::Error::custom("keys out of canonical order"));
                }
                if last.is_some() {
                    self.out.push(',');
                }
                super::write_string(key, self.out);
                self.out.push(':');
                entries.next_value_seed(Canonical {
                    out: &mut *self.out,
                })?;
                last = Some(key);
            }
            self.out.push('}');
            Ok(())
        }
    }
}

/// Audit timestamps: UTC, exactly six fractional digits (`2026-03-01T12:00:00.123456Z`), the
/// form stored, hashed and serialised, so the JSON of an event is the hashed text.
pub mod timestamp {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _, ser::Error as _};
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    use time::{OffsetDateTime, UtcOffset};

    /// Formats `ts` in the canonical form; `None` outside years 0000–9999.
    pub fn format(ts: OffsetDateTime) -> Option<String> {
        let format = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        );
        ts.to_offset(UtcOffset::UTC).format(format).ok()
    }

    /// Writes `ts` in the canonical form as a JSON string (`null` where [`format`] has none):
    /// digit by digit for years 0000–9999, the only ones MeshGuard writes, which is what
    /// verification spends its time on; through [`format`] otherwise.
    pub(crate) fn write_json(ts: OffsetDateTime, out: &mut String) {
        let utc = ts.to_offset(UtcOffset::UTC);
        let Ok(year) = u32::try_from(utc.year()) else {
            return write_formatted(ts, out);
        };
        if year > 9999 {
            return write_formatted(ts, out);
        }
        let separators = ['"', '-', '-', 'T', ':', ':', '.'];
        let parts = [
            (year, 4),
            (u32::from(u8::from(utc.month())), 2),
            (u32::from(utc.day()), 2),
            (u32::from(utc.hour()), 2),
            (u32::from(utc.minute()), 2),
            (u32::from(utc.second()), 2),
            (utc.microsecond(), 6),
        ];
        for (separator, (value, width)) in separators.into_iter().zip(parts) {
            out.push(separator);
            push_digits(out, value, width);
        }
        out.push_str("Z\"");
    }

    fn push_digits(out: &mut String, value: u32, width: u32) {
        for place in (0..width).rev() {
            let digit = value / 10_u32.pow(place) % 10;
            out.push(char::from(b'0' + u8::try_from(digit).unwrap_or(0)));
        }
    }

    fn write_formatted(ts: OffsetDateTime, out: &mut String) {
        match format(ts) {
            Some(text) => {
                out.push('"');
                out.push_str(&text);
                out.push('"');
            }
            None => out.push_str("null"),
        }
    }

    /// Reads a timestamp written in the canonical form (`2026-03-01T12:00:00.123456Z`, years
    /// 0000–9999); `None` for any other text, even a valid RFC 3339 time.
    pub(crate) fn parse_canonical(text: &str) -> Option<OffsetDateTime> {
        let bytes = text.as_bytes();
        if bytes.len() != 27 {
            return None;
        }
        let number = |from: usize, to: usize| -> Option<u32> {
            bytes.get(from..to)?.iter().try_fold(0_u32, |value, &b| {
                b.is_ascii_digit().then(|| value * 10 + u32::from(b - b'0'))
            })
        };
        let separators = [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
            (26, b'Z'),
        ];
        if separators
            .iter()
            .any(|&(at, want)| bytes.get(at) != Some(&want))
        {
            return None;
        }
        let date = time::Date::from_calendar_date(
            i32::try_from(number(0, 4)?).ok()?,
            time::Month::try_from(u8::try_from(number(5, 7)?).ok()?).ok()?,
            u8::try_from(number(8, 10)?).ok()?,
        )
        .ok()?;
        let time = time::Time::from_hms_micro(
            u8::try_from(number(11, 13)?).ok()?,
            u8::try_from(number(14, 16)?).ok()?,
            u8::try_from(number(17, 19)?).ok()?,
            number(20, 26)?,
        )
        .ok()?;
        Some(time::PrimitiveDateTime::new(date, time).assume_utc())
    }

    /// `ts` in UTC with its nanoseconds cut to microseconds, the precision stored.
    pub fn truncate(ts: OffsetDateTime) -> OffsetDateTime {
        let utc = ts.to_offset(UtcOffset::UTC);
        let micros_only = utc.nanosecond() / 1_000 * 1_000;
        utc.replace_nanosecond(micros_only).unwrap_or(utc)
    }

    /// Serde `serialize_with`.
    pub fn serialize<S: Serializer>(ts: &OffsetDateTime, serializer: S) -> Result<S::Ok, S::Error> {
        let text = format(*ts).ok_or_else(|| S::Error::custom("timestamp out of range"))?;
        serializer.serialize_str(&text)
    }

    /// Serde `deserialize_with`: any RFC 3339 time, brought to UTC microseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        OffsetDateTime::parse(&text, &Rfc3339)
            .map(truncate)
            .map_err(|err| D::Error::custom(format!("`{text}` is not an RFC 3339 time: {err}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuditAgent, AuditKind, NewAuditEvent};
    use time::macros::datetime;

    /// The fixed event of the golden test; other tests only compare it with changed copies.
    fn sample_event() -> AuditEvent {
        let mut context = serde_json::Map::new();
        context.insert("sandbox".into(), json!(true));
        context.insert("a".into(), json!({"z": 1, "b": [1.5, null, "x\ny"]}));
        AuditEvent {
            event: NewAuditEvent {
                id: "0192f0c6-0000-7000-8000-000000000001".into(),
                ts: datetime!(2026-03-01 12:00:00.123456 UTC),
                kind: AuditKind::Check,
                agent: Some(AuditAgent {
                    id: "agent_0123".into(),
                    name: "autogpt".into(),
                }),
                action: "execute:shell".into(),
                resource: Some("ls -la".into()),
                decision: Some(meshguard_policy::Effect::Deny),
                code: Some(crate::EventCode::Decided(
                    meshguard_policy::Code::DeniedByRule,
                )),
                reason: Some("Action 'execute:shell' denied".into()),
                policy: Some("autogpt-policy".into()),
                rule: Some("rule-4".into()),
                trace_id: Some("t-1".into()),
                approval_id: Some("apr_1".into()),
                status: Some("success".into()),
                result: Some("ok \u{e9}".into()),
                context,
                latency_us: Some(42),
                gateway: "gw-1".into(),
                shadow: None,
            },
            seq: 1,
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        }
    }

    /// The JSON text of the golden event, exactly as `serde_json::to_string` writes it.
    const GOLDEN_JSON: &str = r#"{"id":"0192f0c6-0000-7000-8000-000000000001","seq":7,"ts":"2026-03-01T12:00:00.123456Z","kind":"check","agent":{"id":"agent_0123","name":"autogpt"},"action":"execute:shell","resource":"ls -la","decision":"deny","code":"denied_by_rule","reason":"Action 'execute:shell' denied","policy":"autogpt-policy","rule":"rule-4","trace_id":"t-1","approval_id":"apr_1","status":"success","result":"ok é","context":{"a":{"b":[1.5,null,"x\ny"],"z":1},"sandbox":true},"latency_us":42,"gateway":"gw-1","prev_hash":"abababababababababababababababababababababababababababababababab","hash":"5e0f84a3577f54caad01b9d68fddcf7fb8784d96d2a618e6b5b9cd1b7f05ef50"}"#;

    /// Golden values computed before `AuditEvent` was restructured: neither the hash nor the JSON
    /// text of a committed event may change, or existing chains, exports and API clients break.
    #[test]
    fn golden_event_hash_and_json_are_unchanged() {
        let mut event = sample_event();
        event.seq = 7;
        event.prev_hash = "ab".repeat(32);
        event.hash = event_hash(&event);
        assert_eq!(
            event.hash,
            "5e0f84a3577f54caad01b9d68fddcf7fb8784d96d2a618e6b5b9cd1b7f05ef50"
        );
        assert_eq!(serde_json::to_string(&event).unwrap(), GOLDEN_JSON);
        let read: AuditEvent = serde_json::from_str(GOLDEN_JSON).unwrap();
        assert_eq!(read, event);
    }

    /// The sample event, one with every optional field empty, and one with every odd value.
    fn event_variants() -> Vec<AuditEvent> {
        let mut variants = vec![sample_event()];
        let mut bare = sample_event();
        bare.event.agent = None;
        bare.event.resource = None;
        bare.event.decision = None;
        bare.event.code = None;
        bare.event.reason = None;
        bare.event.policy = None;
        bare.event.rule = None;
        bare.event.trace_id = None;
        bare.event.approval_id = None;
        bare.event.status = None;
        bare.event.result = None;
        bare.event.latency_us = None;
        bare.event.context = serde_json::Map::new();
        variants.push(bare);
        let mut odd = sample_event();
        odd.event.action = "écrire:\"x\"\\\u{1}\u{7f}\u{2028}😀".into();
        odd.event.reason = Some("\n\t\r\u{8}\u{c}\u{1f} é\"".into());
        odd.event.kind = crate::AuditKind::Admin;
        odd.event.code = Some(crate::EventCode::parse("unauthorized").unwrap());
        odd.event
            .context
            .insert("Z".into(), json!([{"b": 1, "a": -2.5e-7}, u64::MAX]));
        odd.event.shadow = Some(crate::ShadowVerdict {
            decision: meshguard_policy::Effect::RequireApproval,
            code: meshguard_policy::Code::ApprovalRequired,
            policy: None,
            rule: Some("rule-9".into()),
        });
        odd.seq = u64::MAX;
        variants.push(odd);
        variants
    }

    /// An exported line as `audit export` writes it hashes without decoding, to the link the
    /// decoded event gives; any other line is left to decoding.
    #[test]
    fn an_exported_line_links_without_decoding_or_is_left_to_decoding() {
        for mut event in event_variants() {
            event.hash = event_hash(&event);
            let line = serde_json::to_string(&event).unwrap();
            let link = exported_link(&line).unwrap_or_else(|| panic!("{line}"));
            assert_eq!(
                (
                    link.gateway.as_str(),
                    link.seq,
                    link.prev_hash.as_str(),
                    link.hash.as_str()
                ),
                (
                    event.event.gateway.as_str(),
                    event.seq,
                    event.prev_hash.as_str(),
                    event.hash.as_str()
                )
            );
            let mut value: Value = serde_json::from_str(&line).unwrap();
            let altered = |edit: &dyn Fn(&mut Value)| {
                let mut copy = value.clone();
                edit(&mut copy);
                exported_link(&copy.to_string())
            };
            // A changed field no longer matches its hash.
            assert_eq!(altered(&|v| v["action"] = json!("pay:invoice")), None);
            assert_eq!(altered(&|v| v["context"]["added"] = json!(1)), None);
            // Valid, but not as MeshGuard writes it: decoding decides.
            assert_eq!(altered(&|v| v["ts"] = json!("2026-03-01T12:00:00Z")), None);
            assert_eq!(altered(&|v| v["kind"] = json!("CHECK")), None);
            assert_eq!(
                altered(&|v| v["ts"] = json!("2026-02-30T12:00:00.000000Z")),
                None
            );
            // A checkpoint line is not an event.
            value = json!({"checkpoint": {"gateway": "gw", "seq": 1}});
            assert_eq!(exported_link(&value.to_string()), None);
        }
    }

    /// The hash is written field by field for speed; it must stay the hash of the definition.
    #[test]
    fn the_fast_hash_is_the_hash_of_the_definition() {
        let reference = |event: &AuditEvent| {
            hex::encode(Sha256::digest(
                canonical_json(&chained_fields(event)).as_bytes(),
            ))
        };
        let variants = event_variants();
        for event in &variants {
            assert_eq!(event_hash(event), reference(event), "{event:?}");
        }
    }

    #[test]
    fn canonical_json_sorts_keys_and_drops_whitespace() {
        let value = json!({"b": 1, "a": {"d": [true, null], "c": "é\"\\\u{1}\t"}, "B": 2.5});
        assert_eq!(
            canonical_json(&value),
            r#"{"B":2.5,"a":{"c":"é\"\\\u0001\t","d":[true,null]},"b":1}"#
        );
    }

    #[test]
    fn a_stored_context_is_written_as_its_canonical_json_or_refused() {
        let canonical_ones = [
            json!({}),
            json!({"": [], "a": 1, "b": [1, -2, 3.5, 1e300, -2.5e-7, u64::MAX, i64::MIN, null,
                   true, false, "x\n\"y\u{1}é", [], {}], "é": {"z": {"y": [[{}]]}}}),
            json!({"arguments": {"amount": 12.0, "to": "acct\\7"}, "tool": "pay"}),
        ];
        for context in canonical_ones {
            let text = canonical_json(&context);
            let mut out = String::new();
            assert!(stored_context::write(&text, &mut out), "{text}");
            assert_eq!(out, text);
        }
        // Whitespace is dropped, as decoding and writing again drops it.
        let mut out = String::new();
        assert!(stored_context::write(
            r#" { "a" : [ 1 , 2.50 ] } "#,
            &mut out
        ));
        assert_eq!(out, r#"{"a":[1,2.5]}"#);
        // Anything whose canonical form needs more than a rewrite token by token is refused.
        for refused in [
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"\u0061":1}"#,
            r#"[1]"#,
            "null",
            "{",
            "{} x",
            "",
        ] {
            assert!(
                !stored_context::write(refused, &mut String::new()),
                "{refused}"
            );
        }
    }

    #[test]
    fn the_serialised_event_is_the_hashed_object_plus_hash() {
        let mut event = sample_event();
        event.hash = event_hash(&event);
        let mut serialised = serde_json::to_value(&event).unwrap();
        let hash = serialised.as_object_mut().unwrap().remove("hash").unwrap();
        assert_eq!(serialised, chained_fields(&event));
        let recomputed = hex::encode(Sha256::digest(canonical_json(&serialised).as_bytes()));
        assert_eq!(hash, json!(recomputed));
    }

    #[test]
    fn every_field_is_covered_by_the_hash() {
        let base = sample_event();
        let original = event_hash(&base);
        let mut changed = base.clone();
        changed.event.latency_us = Some(43);
        assert_ne!(event_hash(&changed), original);
        let mut changed = base.clone();
        changed.prev_hash = "1".repeat(64);
        assert_ne!(event_hash(&changed), original);
        let mut changed = base;
        changed.event.context.insert("sandbox".into(), json!(false));
        assert_ne!(event_hash(&changed), original);
    }

    #[test]
    fn timestamps_are_written_digit_by_digit_exactly_as_formatted() {
        let micros = [
            0_i64,
            1,
            -1,
            1_796_495_463_396_415,
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999Z
            -62_167_219_200_000_000, // 0000-01-01T00:00:00Z
            -62_167_219_200_000_001, // a year before 0000
            -377_705_116_800_000_000,
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let random = std::iter::repeat_with(move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            i64::try_from(state % 253_402_300_800_000_000).unwrap()
        });
        for us in micros.into_iter().chain(random.take(2000)) {
            let Ok(ts) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
            else {
                continue;
            };
            let mut written = String::new();
            timestamp::write_json(ts, &mut written);
            let expected = timestamp::format(ts).map_or("null".to_owned(), |t| format!("\"{t}\""));
            assert_eq!(written, expected, "{us}");
        }
    }

    #[test]
    fn timestamps_have_six_fractional_digits_in_utc() {
        let ts = datetime!(2026-03-01 14:00:00.5 +02:00);
        assert_eq!(
            timestamp::format(ts).unwrap(),
            "2026-03-01T12:00:00.500000Z"
        );
        let truncated = timestamp::truncate(datetime!(2026-03-01 12:00:00.123456789 UTC));
        assert_eq!(truncated, datetime!(2026-03-01 12:00:00.123456 UTC));
    }

    #[test]
    fn a_shadow_verdict_is_hashed_only_when_present() {
        let plain = sample_event();
        let mut shadowed = sample_event();
        shadowed.event.shadow = Some(crate::ShadowVerdict {
            decision: meshguard_policy::Effect::Allow,
            code: meshguard_policy::Code::Allowed,
            policy: Some("next".into()),
            rule: Some("rule-1".into()),
        });
        assert_ne!(event_hash(&plain), event_hash(&shadowed));
        let text = serde_json::to_string(&shadowed).unwrap();
        assert!(
            text.contains(r#""gateway":"gw-1","shadow":{"decision":"allow","code":"allowed","policy":"next","rule":"rule-1"},"prev_hash""#),
            "{text}"
        );
        assert!(!serde_json::to_string(&plain).unwrap().contains("shadow"));
        let back: AuditEvent = serde_json::from_str(&text).unwrap();
        assert_eq!(back, shadowed);
    }
}
