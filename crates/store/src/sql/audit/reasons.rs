//! Reasons as templates. Most reasons are one of a few sentences of the decision engine with
//! the check's action in it ("Action 'browse:web' allowed by rule 'rule-1' of policy 'web'"):
//! the row stores the number of the sentence with the action taken out (`audit_reasons`), not
//! the sentence, and reads put the row's own action back. A reason that contains the marker
//! (which neither the engine nor any action writes) is stored as it is.

/// What stands for the action in a template.
const ACTION: char = '\u{1}';

/// The template `reason` is stored as, with every occurrence of `action` taken out; `None` when
/// the reason must be stored as it is.
pub(super) fn template(reason: &str, action: &str) -> Option<String> {
    if reason.contains(ACTION) {
        return None;
    }
    if action.is_empty() {
        return Some(reason.to_owned());
    }
    Some(reason.replace(action, ACTION.encode_utf8(&mut [0; 4])))
}

/// The reason `template` stands for in a row whose action is `action`, written into `buffer`.
pub(super) fn expand<'b>(template: &'b str, action: &str, buffer: &'b mut String) -> &'b str {
    if !template.contains(ACTION) {
        return template;
    }
    buffer.clear();
    let mut parts = template.split(ACTION);
    buffer.push_str(parts.next().unwrap_or_default());
    for part in parts {
        buffer.push_str(action);
        buffer.push_str(part);
    }
    buffer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(reason: &str, action: &str) -> Option<String> {
        let template = template(reason, action)?;
        let mut buffer = String::new();
        assert_eq!(expand(&template, action, &mut buffer), reason);
        Some(template)
    }

    #[test]
    fn the_action_is_taken_out_and_put_back() {
        let template = round_trip(
            "Action 'browse:web' allowed by rule 'rule-1' of policy 'web'",
            "browse:web",
        );
        assert_eq!(
            template.as_deref(),
            Some("Action '\u{1}' allowed by rule 'rule-1' of policy 'web'")
        );
        // The same sentence for another action is the same template.
        assert_eq!(
            round_trip(
                "Action 'read:file' allowed by rule 'rule-1' of policy 'web'",
                "read:file"
            ),
            template
        );
    }

    #[test]
    fn every_occurrence_and_none_round_trip() {
        round_trip("a:b then a:b again, a:ba:b", "a:b");
        round_trip("no action named here", "send:email");
        round_trip("", "send:email");
        round_trip("reason with an empty action", "");
        round_trip("überall 'x:ü'", "x:ü");
    }

    #[test]
    fn a_reason_with_the_marker_is_kept_as_it_is() {
        assert_eq!(round_trip("odd \u{1} reason", "a:b"), None);
    }
}
