//! Patterns of SPEC 3: `*` is any run (including `/` and `:`), `?` exactly one character,
//! everything else literal and case-sensitive; `[ ] { } \` are reserved; a pattern ending in
//! `/*` also matches its bare prefix.
//!
//! Hand-written because no glob crate has exactly these semantics: `globset` and `glob` stop
//! `*` at `/` (or need a flag per matcher) and give `[`, `{` and `\` meaning, and a regex
//! translation would pay for a regex engine on the hot path for what is a two-token language.
//! Patterns are compiled once at load into the cheapest matcher that fits.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::error::Loc;

const RESERVED: [char; 5] = ['[', ']', '{', '}', '\\'];

/// A compiled pattern, with its source text and where it was written.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    loc: Loc,
    matcher: Matcher,
    /// For a pattern ending in `/*`: the matcher of the bare prefix.
    bare: Option<Matcher>,
    /// The lower-cased pattern and its bare prefix: deny rules and approval entries match
    /// lower-cased text with these, so a case variant cannot slip past them.
    /// `None` when the pattern has no upper-case letter (the common case): then the matchers
    /// above serve, and the pattern stays small.
    folded: Option<Box<(Matcher, Option<Matcher>)>>,
}

#[derive(Debug, Clone)]
enum Matcher {
    /// No wildcard: string equality.
    Exact(String),
    /// A literal followed by one trailing `*`: a prefix test.
    Prefix(String),
    /// Anything else.
    Glob(Vec<Token>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    One,
    Any,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

impl Pattern {
    /// Compiles `source`; the error message says what is wrong (without the position).
    pub fn compile(source: &str, loc: Loc) -> Result<Pattern, String> {
        if source.is_empty() {
            return Err("a pattern cannot be empty".to_owned());
        }
        if let Some(reserved) = source.chars().find(|c| RESERVED.contains(c)) {
            return Err(format!(
                "`{reserved}` is reserved in patterns (in `{source}`); only `*` and `?` are wildcards"
            ));
        }
        let bare_of = |source: &str| {
            source
                .strip_suffix("/*")
                .filter(|prefix| !prefix.is_empty())
                .map(Matcher::build)
        };
        let lower = source.to_lowercase();
        let folded = (lower != source).then(|| Box::new((Matcher::build(&lower), bare_of(&lower))));
        Ok(Pattern {
            source: source.to_owned(),
            loc,
            matcher: Matcher::build(source),
            bare: bare_of(source),
            folded,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Where the pattern was written.
    pub fn loc(&self) -> Loc {
        self.loc
    }

    /// Whether `text` (already canonical) matches, case-sensitively.
    pub fn matches(&self, text: &str) -> bool {
        self.matcher.matches(text) || self.bare.as_ref().is_some_and(|bare| bare.matches(text))
    }

    /// Like [`Pattern::matches`], but a `…/*` pattern matches its bare prefix only when `bare`
    /// says so: an allow reaches `write:workspace` alone only when no resource is named.
    pub(crate) fn matches_with_bare(&self, text: &str, bare: bool) -> bool {
        self.matcher.matches(text)
            || (bare
                && self
                    .bare
                    .as_ref()
                    .is_some_and(|prefix| prefix.matches(text)))
    }

    /// Whether lower-cased `text` matches the lower-cased pattern (bare prefix included).
    pub(crate) fn matches_folded(&self, folded_text: &str) -> bool {
        match self.folded.as_deref() {
            Some((matcher, bare)) => {
                matcher.matches(folded_text)
                    || bare.as_ref().is_some_and(|b| b.matches(folded_text))
            }
            None => self.matches(folded_text),
        }
    }

    /// The literal text every match starts with (up to the first wildcard): the index key.
    pub(crate) fn literal_prefix(&self) -> &str {
        // The bare prefix of a `…/*` pattern is the shorter of its two forms.
        let source = match self.bare {
            Some(_) => self.source.strip_suffix("/*").unwrap_or(&self.source),
            None => &self.source,
        };
        let end = source.find(['*', '?']).unwrap_or(source.len());
        source.get(..end).unwrap_or("")
    }

    /// True when every string `other` matches, `self` matches too. Sound but not complete:
    /// a `false` may be a coverage this check cannot prove. Used by lints only.
    pub(crate) fn covers(&self, other: &Pattern) -> bool {
        let mine: Vec<Vec<Sym>> = std::iter::once(&self.matcher)
            .chain(self.bare.as_ref())
            .map(Matcher::symbols)
            .collect();
        std::iter::once(&other.matcher)
            .chain(other.bare.as_ref())
            .all(|theirs| {
                let theirs = theirs.symbols();
                mine.iter().any(|m| symbols_cover(m, &theirs))
            })
    }

    /// Whether some string might match both patterns. Sound for "no": `false` means they are
    /// disjoint; used by lints to decide that an earlier rule cannot get in the way.
    pub(crate) fn may_overlap(&self, other: &Pattern) -> bool {
        let (a, b) = (self.literal_prefix(), other.literal_prefix());
        a.starts_with(b) || b.starts_with(a)
    }
}

impl Matcher {
    fn build(source: &str) -> Matcher {
        let wildcards = source.matches(['*', '?']).count();
        if wildcards == 0 {
            return Matcher::Exact(source.to_owned());
        }
        if wildcards == 1
            && let Some(prefix) = source.strip_suffix('*')
        {
            return Matcher::Prefix(prefix.to_owned());
        }
        let mut tokens = Vec::new();
        let mut literal = String::new();
        for c in source.chars() {
            let token = match c {
                '*' => Token::Any,
                '?' => Token::One,
                _ => {
                    literal.push(c);
                    continue;
                }
            };
            if !literal.is_empty() {
                tokens.push(Token::Literal(std::mem::take(&mut literal)));
            }
            // Consecutive `*` mean the same as one and would only slow backtracking.
            if !(token == Token::Any && tokens.last() == Some(&Token::Any)) {
                tokens.push(token);
            }
        }
        if !literal.is_empty() {
            tokens.push(Token::Literal(literal));
        }
        Matcher::Glob(tokens)
    }

    fn matches(&self, text: &str) -> bool {
        match self {
            Matcher::Exact(literal) => text == literal,
            Matcher::Prefix(prefix) => text.starts_with(prefix.as_str()),
            Matcher::Glob(tokens) => glob_matches(tokens, text),
        }
    }

    fn symbols(&self) -> Vec<Sym> {
        match self {
            Matcher::Exact(literal) => literal.chars().map(Sym::Char).collect(),
            Matcher::Prefix(prefix) => prefix
                .chars()
                .map(Sym::Char)
                .chain(std::iter::once(Sym::Any))
                .collect(),
            Matcher::Glob(tokens) => tokens
                .iter()
                .flat_map(|token| match token {
                    Token::Literal(literal) => literal.chars().map(Sym::Char).collect(),
                    Token::One => vec![Sym::One],
                    Token::Any => vec![Sym::Any],
                })
                .collect(),
        }
    }
}

/// Classic wildcard matching with backtracking to the last `*` only: linear for the common
/// patterns, O(pattern × text) at worst, never exponential.
fn glob_matches(tokens: &[Token], text: &str) -> bool {
    let mut t = 0;
    let mut i = 0;
    // (token after the last `*`, text position that `*` has consumed up to)
    let mut star: Option<(usize, usize)> = None;
    loop {
        let rest = text.get(i..).unwrap_or("");
        let step = match tokens.get(t) {
            Some(Token::Any) => {
                star = Some((t + 1, i));
                t += 1;
                continue;
            }
            Some(Token::Literal(literal)) => {
                rest.starts_with(literal.as_str()).then_some(literal.len())
            }
            Some(Token::One) => rest.chars().next().map(char::len_utf8),
            None if rest.is_empty() => return true,
            None => None,
        };
        if let Some(len) = step {
            t += 1;
            i += len;
            continue;
        }
        let Some((after_star, consumed)) = star else {
            return false;
        };
        let Some(c) = text.get(consumed..).and_then(|r| r.chars().next()) else {
            return false;
        };
        let consumed = consumed + c.len_utf8();
        star = Some((after_star, consumed));
        t = after_star;
        i = consumed;
    }
}

/// One symbol of a pattern, for the coverage check between two patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sym {
    Char(char),
    One,
    Any,
}

/// Whether pattern `p` matches every expansion of pattern `q`: the same backtracking as
/// matching, where `q`'s wildcards can only be absorbed by a `*` of `p` (or `?` by `?`).
fn symbols_cover(p: &[Sym], q: &[Sym]) -> bool {
    let mut pi = 0;
    let mut qi = 0;
    let mut star: Option<(usize, usize)> = None;
    loop {
        let advance = match (p.get(pi), q.get(qi)) {
            (Some(Sym::Any), _) => {
                star = Some((pi + 1, qi));
                pi += 1;
                continue;
            }
            (None, None) => return true,
            (Some(Sym::Char(a)), Some(Sym::Char(b))) => a == b,
            (Some(Sym::One), Some(Sym::Char(_) | Sym::One)) => true,
            _ => false,
        };
        if advance {
            pi += 1;
            qi += 1;
            continue;
        }
        let Some((after_star, consumed)) = star else {
            return false;
        };
        if consumed >= q.len() {
            return false;
        }
        star = Some((after_star, consumed + 1));
        pi = after_star;
        qi = consumed + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(source: &str) -> Pattern {
        Pattern::compile(source, Loc::default()).unwrap()
    }

    #[test]
    fn wildcards_and_literals() {
        let cases = [
            ("read:*", "read:workspace/a/b", true),
            ("read:*", "read:", true),
            ("read:*", "write:x", false),
            ("*", "", true),
            ("*:shell", "execute:shell", true),
            ("execute:shell", "execute:shellcheck", false),
            ("exec?te:*", "execute:x", true),
            ("exec?te:*", "exectte:x", true),
            ("exec?te:*", "exece:x", false),
            ("a?c", "aéc", true),
            ("a?c", "aééc", false),
            ("*@example.com", "ana@example.com", true),
            ("*@example.com", "ana@example.com.evil", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
            ("READ:*", "read:x", false),
            ("write:workspace/*", "write:workspace", true),
            ("write:workspace/*", "write:workspaces", false),
            ("write:workspace/*", "write:workspace/", true),
            ("a.b", "axb", false),
            ("??", "ab", true),
            ("??", "a", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(p(pattern).matches(text), expected, "{pattern} vs {text}");
        }
    }

    #[test]
    fn reserved_and_empty_are_errors() {
        for bad in ["", "read:[ab]", "x{a,b}", "a\\*", "]"] {
            assert!(Pattern::compile(bad, Loc::default()).is_err(), "{bad}");
        }
    }

    #[test]
    fn coverage_between_patterns() {
        assert!(p("send:*").covers(&p("send:email")));
        assert!(p("pay:*").covers(&p("pay:*")));
        assert!(p("*").covers(&p("a?b*")));
        assert!(p("a/*").covers(&p("a")));
        assert!(p("a/*").covers(&p("a/*")));
        assert!(!p("a/b*").covers(&p("a/*")));
        assert!(!p("send:email").covers(&p("send:*")));
        assert!(!p("a?").covers(&p("a*")));
        assert!(p("a?").covers(&p("a?")));
    }
}
