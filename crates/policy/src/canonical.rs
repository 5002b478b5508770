//! The one canonical form of SPEC 3, applied to the action and the resource before any matching,
//! so that no spelling of a path (`workspace/../system`, `workspace//secret`, `%73ecret`,
//! fullwidth dots, `Execute:shell`, a trailing `/`) can walk around a rule written for another.
//!
//! A text either has exactly one canonical form or is refused with a [`NotCanonical`] saying
//! why; refusing is how the engine fails closed on forms it cannot map to one meaning (a second
//! level of percent-encoding, a backslash, control characters, Windows-style aliases). Text that is
//! already canonical is borrowed, never copied: that is the common case on the check path.

use std::borrow::Cow;
use std::fmt;

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfkc_quick};

/// Which half of a check a refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// The action (`verb:object`).
    Action,
    /// The resource.
    Resource,
}

impl Part {
    fn as_str(self) -> &'static str {
        match self {
            Part::Action => "action",
            Part::Resource => "resource",
        }
    }
}

/// Why a text has no canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The action has no `:` between verb and object.
    NoColon,
    /// The verb is empty or holds a character other than ASCII letters, digits, `_`, `-`, `.`.
    BadVerb,
    /// A control character (Unicode category Cc: NUL, CR, LF, ESC, DEL, …).
    ControlCharacter,
    /// A `\`, which some systems read as a path separator.
    Backslash,
    /// Leading or trailing whitespace.
    Whitespace,
    /// An escape that decodes to `%`, `/` or `\`, or a `%XX` escape left after decoding: it
    /// would need a second decoding or change the path's structure.
    EncodedSeparator,
    /// Percent-escapes that do not decode to UTF-8.
    NotUtf8,
    /// A path segment made only of dots and whitespace (`...`, `. .`), which Windows reads as an
    /// empty name or a parent.
    AliasSegment,
    /// A `..` with nothing left to remove.
    EscapesRoot,
}

impl Fault {
    /// What is wrong, as the end of a sentence about the text ("… holds a backslash").
    pub fn describe(self) -> &'static str {
        match self {
            Fault::NoColon => "is not `verb:object` (no `:`)",
            Fault::BadVerb => {
                "has a verb that is empty or holds characters other than ASCII letters, digits, `_`, `-` and `.`"
            }
            Fault::ControlCharacter => "holds a control character",
            Fault::Backslash => "holds a backslash",
            Fault::Whitespace => "has leading or trailing whitespace",
            Fault::EncodedSeparator => {
                "holds an escape of `%`, `/` or `\\` (it would need a second decoding)"
            }
            Fault::NotUtf8 => "holds percent-escapes that do not decode to UTF-8",
            Fault::AliasSegment => "has a path segment made only of dots and whitespace",
            Fault::EscapesRoot => "escapes its root with `..`",
        }
    }
}

/// A text with no canonical form: the check is denied, never allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub struct NotCanonical {
    /// The action or the resource.
    pub part: Part,
    /// What is wrong with it.
    pub fault: Fault,
}

impl fmt::Display for NotCanonical {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the {} {}", self.part.as_str(), self.fault.describe())
    }
}

/// The canonical form of an action: `verb:object` with the verb lower-cased and the object a
/// canonical path (see [`canonical_resource`]).
pub fn canonical_action(action: &str) -> Result<Cow<'_, str>, NotCanonical> {
    let refuse = |fault| NotCanonical {
        part: Part::Action,
        fault,
    };
    let (verb, object) = action.split_once(':').ok_or(refuse(Fault::NoColon))?;
    let verb = canonical_verb(verb).map_err(refuse)?;
    let object = canonical_path(object).map_err(refuse)?;
    match (verb, object) {
        (Cow::Borrowed(_), Cow::Borrowed(_)) => Ok(Cow::Borrowed(action)),
        (verb, object) => Ok(Cow::Owned(format!("{verb}:{object}"))),
    }
}

/// The canonical form of a resource: `*` stays `*`; anything else is a canonical path.
pub fn canonical_resource(resource: &str) -> Result<Cow<'_, str>, NotCanonical> {
    if resource == "*" {
        return Ok(Cow::Borrowed(resource));
    }
    canonical_path(resource).map_err(|fault| NotCanonical {
        part: Part::Resource,
        fault,
    })
}

/// Whether a canonical resource names something relative (not `*`, not rooted at `/`, no
/// `scheme://`, no drive letter): only such a resource can lie under an action's object.
pub fn is_relative(resource: &str) -> bool {
    resource != "*"
        && !resource.starts_with('/')
        && url_scheme_end(resource).is_none()
        && !has_drive_letter(resource)
}

/// Verbs are NFKC-normalised and lower-cased; only ASCII letters, digits, `_`, `-`, `.` remain.
fn canonical_verb(verb: &str) -> Result<Cow<'_, str>, Fault> {
    let verb = nfkc(Cow::Borrowed(verb));
    let mut upper = false;
    for b in verb.bytes() {
        upper |= b.is_ascii_uppercase();
        if !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) {
            return Err(Fault::BadVerb);
        }
    }
    if verb.is_empty() {
        return Err(Fault::BadVerb);
    }
    if upper {
        return Ok(Cow::Owned(verb.to_ascii_lowercase()));
    }
    Ok(verb)
}

/// Decode once → NFKC → refuse what has no single meaning → collapse and resolve segments.
fn canonical_path(raw: &str) -> Result<Cow<'_, str>, Fault> {
    if is_plain(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    let text = nfkc(percent_decode(raw)?);
    if let Some(c) = text.chars().find(|c| c.is_control() || *c == '\\') {
        return Err(match c {
            '\\' => Fault::Backslash,
            _ => Fault::ControlCharacter,
        });
    }
    // An escape left after decoding (`%%34%31`, `％41`) would decode again elsewhere.
    if holds_escape(&text) {
        return Err(Fault::EncodedSeparator);
    }
    if text.starts_with(char::is_whitespace) || text.ends_with(char::is_whitespace) {
        return Err(Fault::Whitespace);
    }
    match resolve_segments(&text)? {
        // `a/../ b` would leave a leading space that the text as given did not have.
        Some(resolved) if resolved.starts_with(char::is_whitespace) => Err(Fault::Whitespace),
        Some(resolved) => Ok(Cow::Owned(resolved)),
        None => Ok(text),
    }
}

/// One pass over the bytes proving that the slow path would change nothing: printable ASCII
/// without `%` or `\\`, no URL, no leading or trailing space, and no segment that is empty
/// (but a leading root), `.`, `..`, or ends in `.` or a space. Most requests are such text.
fn is_plain(text: &str) -> bool {
    // A URL's `scheme://` is its root: the rest is checked like a relative path.
    let (bytes, may_root) = match url_scheme_end(text) {
        Some(end) => (text.as_bytes().get(end..).unwrap_or_default(), false),
        None => (text.as_bytes(), true),
    };
    if bytes.first() == Some(&b' ') || (bytes.len() > 1 && bytes.last() == Some(&b'/')) {
        return false;
    }
    let plain_segment = |segment: &[u8], leading: bool| match segment {
        [] => leading,
        b"." | b".." | [.., b'.' | b' '] => false,
        _ => true,
    };
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'/' => {
                let segment = bytes.get(start..i).unwrap_or_default();
                if !plain_segment(segment, may_root && i == 0) {
                    return false;
                }
                start = i + 1;
            }
            // A second `scheme://` inside is left to the slow path.
            b':' if bytes.get(i + 1..i + 3) == Some(b"//") => return false,
            b'%' | b'\\' | 0x7f.. | ..0x20 => return false,
            _ => {}
        }
    }
    plain_segment(
        bytes.get(start..).unwrap_or_default(),
        may_root && bytes.is_empty(),
    )
}

/// The positions of the `%XX` escapes of `text` (a `%` not followed by two hex digits is a
/// literal `%`, as in `100% sure`, and no decoder reads it otherwise).
fn escapes(text: &str) -> impl Iterator<Item = &[u8]> {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().filter_map(move |(at, &b)| {
        let hex = bytes.get(at + 1..at + 3)?;
        (b == b'%' && hex.iter().all(u8::is_ascii_hexdigit)).then_some(hex)
    })
}

/// Whether `text` still holds a `%XX` escape.
fn holds_escape(text: &str) -> bool {
    escapes(text).next().is_some()
}

/// Decodes `%XX` escapes once. Borrows when there is none.
fn percent_decode(raw: &str) -> Result<Cow<'_, str>, Fault> {
    let mut any = false;
    for hex in escapes(raw) {
        if matches!(hex, b"25" | b"2F" | b"2f" | b"5C" | b"5c") {
            return Err(Fault::EncodedSeparator);
        }
        any = true;
    }
    if !any {
        return Ok(Cow::Borrowed(raw));
    }
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|decoded| Cow::Owned(decoded.into_owned()))
        .map_err(|_| Fault::NotUtf8)
}

/// NFKC, borrowing when the quick check proves the text already is.
fn nfkc(text: Cow<'_, str>) -> Cow<'_, str> {
    if text.is_ascii() || is_nfkc_quick(text.chars()) == IsNormalized::Yes {
        return text;
    }
    Cow::Owned(text.nfkc().collect())
}

/// Where the `scheme://` prefix of a URL ends, if `text` has one (a scheme of two or more
/// characters, so that `c://` is a drive letter, not a URL).
fn url_scheme_end(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    if !bytes.first().is_some_and(u8::is_ascii_alphabetic) {
        return None;
    }
    // The scheme is a prefix: scanning stops at its first character that cannot be in one.
    let colon = bytes
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))?;
    let is_url = colon >= 2 && bytes.get(colon..colon + 3) == Some(b"://");
    is_url.then_some(colon + 3)
}

/// `C:` alone or followed by `/`.
fn has_drive_letter(text: &str) -> bool {
    let bytes = text.as_bytes();
    matches!(bytes, [letter, b':', rest @ ..] if letter.is_ascii_alphabetic() && (rest.is_empty() || rest.first() == Some(&b'/')))
}

/// Resolves segments: empty ones (repeated or trailing `/`) are dropped, `.` is dropped, `..`
/// removes the segment before it, and a segment ending in dots or whitespace loses them, as
/// Windows reads it (`secret.` is `secret`; one made only of them, `...`, is refused). A URL's
/// `scheme://authority` and a leading `/` are roots that `..` cannot remove. `Ok(None)` when
/// nothing changes.
fn resolve_segments(text: &str) -> Result<Option<String>, Fault> {
    let (root, body) = match url_scheme_end(text) {
        Some(end) => text.split_at(end),
        None => match text.strip_prefix('/') {
            Some(rest) => ("/", rest),
            None => ("", text),
        },
    };
    // `/` alone is the root itself, already canonical.
    if body.is_empty() && !root.is_empty() {
        return Ok(None);
    }
    // A URL's authority is part of its root: `..` cannot climb above the host.
    let min_segments = usize::from(root.ends_with("://"));
    // First pass without allocating: canonical text (the common case) is only checked.
    let mut changed = false;
    for segment in body.split('/') {
        match segment {
            "" | "." | ".." => changed = true,
            other if other != trim_alias(other) => {
                if trim_alias(other).is_empty() {
                    return Err(Fault::AliasSegment);
                }
                changed = true;
            }
            _ => {}
        }
    }
    if !changed {
        return Ok(None);
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in body.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                if segments.len() <= min_segments || segments.pop().is_none() {
                    return Err(Fault::EscapesRoot);
                }
            }
            other => segments.push(trim_alias(other)),
        }
    }
    let mut resolved = String::with_capacity(text.len());
    resolved.push_str(root);
    resolved.push_str(&segments.join("/"));
    Ok(Some(resolved))
}

/// A segment without the trailing dots and whitespace that Windows ignores.
fn trim_alias(segment: &str) -> &str {
    segment.trim_end_matches(|c: char| c == '.' || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(raw: &str) -> Result<String, Fault> {
        canonical_path(raw).map(Cow::into_owned)
    }

    #[test]
    fn path_table() {
        let cases: &[(&str, Result<&str, Fault>)] = &[
            ("notes.txt", Ok("notes.txt")),
            ("drafts/../notes.txt", Ok("notes.txt")),
            ("./a/./b", Ok("a/b")),
            ("a/b/..", Ok("a")),
            ("a/..", Ok("")),
            ("..", Err(Fault::EscapesRoot)),
            ("../../etc/shadow", Err(Fault::EscapesRoot)),
            ("https://python.org/./docs", Ok("https://python.org/docs")),
            ("https://python.org", Ok("https://python.org")),
            ("https://python.org/", Ok("https://python.org")),
            ("https://python.org/../x", Err(Fault::EscapesRoot)),
            ("https://python.org//a/b/../c", Ok("https://python.org/a/c")),
            ("a//b/../c", Ok("a/c")),
            ("/etc/../passwd", Ok("/passwd")),
            ("//etc/passwd", Ok("/etc/passwd")),
            ("/", Ok("/")),
            ("/..", Err(Fault::EscapesRoot)),
            ("a/", Ok("a")),
            ("workspace//secret/key", Ok("workspace/secret/key")),
            ("%2e%2e", Err(Fault::EscapesRoot)),
            ("a/%2e%2e/b", Ok("b")),
            ("%73ecret", Ok("secret")),
            ("a%2Fb", Err(Fault::EncodedSeparator)),
            ("a%252e", Err(Fault::EncodedSeparator)),
            ("a%5cb", Err(Fault::EncodedSeparator)),
            ("a%zz", Ok("a%zz")),
            ("a%2", Ok("a%2")),
            ("100% sure", Ok("100% sure")),
            ("%%32%65", Err(Fault::EncodedSeparator)),
            ("%ff", Err(Fault::NotUtf8)),
            ("a%00", Err(Fault::ControlCharacter)),
            ("secret\\key", Err(Fault::Backslash)),
            ("secret./", Ok("secret")),
            ("secret. /key", Ok("secret/key")),
            ("secret /x", Ok("secret/x")),
            ("rm -rf /", Ok("rm -rf")),
            ("python tutorials.", Ok("python tutorials")),
            ("...", Err(Fault::AliasSegment)),
            ("a/. ./b", Err(Fault::AliasSegment)),
            ("a/\u{ff0e}\u{ff0e}/b", Ok("b")),
            ("a/\u{2025}/b", Ok("b")),
            ("\u{ff0e}\u{ff0e}", Err(Fault::EscapesRoot)),
            ("\u{ff05}41", Err(Fault::EncodedSeparator)),
            (" x", Err(Fault::Whitespace)),
            ("a/../ b", Err(Fault::Whitespace)),
            ("./ -", Err(Fault::Whitespace)),
            ("/a/../ b", Ok("/ b")),
            ("x\n", Err(Fault::ControlCharacter)),
            ("x\u{1b}[2J", Err(Fault::ControlCharacter)),
            ("x\u{7f}", Err(Fault::ControlCharacter)),
            ("python tutorials", Ok("python tutorials")),
        ];
        for (input, expected) in cases {
            assert_eq!(path(input), expected.map(str::to_owned), "{input:?}");
        }
    }

    #[test]
    fn actions() {
        let ok = |raw: &str| canonical_action(raw).map(Cow::into_owned);
        assert_eq!(ok("Execute:shell").unwrap(), "execute:shell");
        assert_eq!(ok("DELETE:x").unwrap(), "delete:x");
        assert_eq!(ok("execute:shell/").unwrap(), "execute:shell");
        assert_eq!(ok("write://etc/passwd").unwrap(), "write:/etc/passwd");
        assert_eq!(
            ok("browse:https://python.org/").unwrap(),
            "browse:https://python.org"
        );
        assert_eq!(ok("a:b/c/../d").unwrap(), "a:b/d");
        let fault = |raw: &str| canonical_action(raw).unwrap_err().fault;
        assert_eq!(fault("delete"), Fault::NoColon);
        assert_eq!(fault(":x"), Fault::BadVerb);
        assert_eq!(fault(" execute:shell"), Fault::BadVerb);
        assert_eq!(fault("execute:shell "), Fault::Whitespace);
        assert_eq!(fault("execute:shell\n"), Fault::ControlCharacter);
        assert_eq!(fault("execute:shell\u{0}"), Fault::ControlCharacter);
        assert_eq!(fault("write:workspace/../../x"), Fault::EscapesRoot);
    }

    #[test]
    fn canonical_text_is_borrowed() {
        for raw in ["read:workspace/notes.txt", "browse:https://python.org"] {
            assert!(
                matches!(canonical_action(raw), Ok(Cow::Borrowed(_))),
                "{raw}"
            );
        }
        for raw in [
            "*",
            "notes.txt",
            "/etc/passwd",
            "https://python.org/docs",
            "ana@example.com",
        ] {
            assert!(
                matches!(canonical_resource(raw), Ok(Cow::Borrowed(_))),
                "{raw}"
            );
        }
    }

    #[test]
    fn relative_resources() {
        for (resource, relative) in [
            ("notes.txt", true),
            ("mailto:ana@example.com", true),
            ("*", false),
            ("/etc/passwd", false),
            ("https://example.com/x", false),
            ("C:", false),
            ("c:/windows", false),
        ] {
            assert_eq!(is_relative(resource), relative, "{resource}");
        }
    }
}
