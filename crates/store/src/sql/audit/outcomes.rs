//! Outcomes as numbers. An event's kind, decision, code, policy, rule and shadow verdict take a
//! handful of values across a whole trail (one per rule that decides, in practice): a row
//! stores the number of its combination (`audit_outcomes`), not the nine texts, and reads take
//! them from there (docs/architecture/audit-log.md, "Outcomes as numbers").

use std::fmt::Write as _;

use crate::NewAuditEvent;

/// The nine fields of an event that its outcome number stands for, in the order of
/// `audit_outcomes`' columns (and of the migration that fills it).
pub(super) struct Outcome<'a> {
    pub(super) fields: [Option<&'a str>; 9],
}

impl<'a> Outcome<'a> {
    /// The outcome of `event`.
    pub(super) fn of(event: &'a NewAuditEvent) -> Self {
        let shadow = event.shadow.as_ref();
        Self {
            fields: [
                Some(event.kind.as_str()),
                event.decision.map(|decision| decision.as_str()),
                event.code.map(|code| code.as_str()),
                event.policy.as_deref(),
                event.rule.as_deref(),
                shadow.map(|s| s.decision.as_str()),
                shadow.map(|s| s.code.as_str()),
                shadow.and_then(|s| s.policy.as_deref()),
                shadow.and_then(|s| s.rule.as_deref()),
            ],
        }
    }

    /// The text that names this combination uniquely (`audit_outcomes.key`): each field as
    /// its length in characters, `:` and the field, or `-` for none. Length-prefixed, so no
    /// two combinations share a key whatever their texts hold; the migration writes the same
    /// key in SQL (`COALESCE(length(f) || ':' || f, '-')`).
    pub(super) fn key(&self) -> String {
        let mut key = String::new();
        for field in self.fields {
            match field {
                // Writing into a `String` cannot fail.
                Some(text) => {
                    let _ = write!(key, "{}:{text}", text.chars().count());
                }
                None => key.push('-'),
            }
        }
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(fields: [Option<&str>; 9]) -> String {
        Outcome { fields }.key()
    }

    #[test]
    fn keys_name_each_combination_once() {
        let allow = [
            Some("check"),
            Some("allow"),
            Some("allowed_by_rule"),
            Some("web"),
            Some("rule-1"),
            None,
            None,
            None,
            None,
        ];
        assert_eq!(
            key(allow),
            "5:check5:allow15:allowed_by_rule3:web6:rule-1----"
        );
        // Texts that would run together without their lengths stay apart, and an empty text
        // is not a missing one.
        let mut run_together = allow;
        run_together[3] = Some("web6:rule-1");
        run_together[4] = None;
        assert_ne!(key(run_together), key(allow));
        let mut empty = allow;
        empty[4] = Some("");
        let mut none = allow;
        none[4] = None;
        assert_ne!(key(empty), key(none));
        // Lengths count characters, as SQL's `length` does.
        let mut wide = allow;
        wide[3] = Some("ü-policy");
        assert!(key(wide).contains("8:ü-policy"));
    }
}
