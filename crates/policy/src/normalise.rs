//! Path normalisation of SPEC 3, applied to the action's object and to the resource before any
//! matching, so that `workspace/../system/passwd` cannot slip past a `write:system/*` deny.

/// A `..` had nothing left to remove: the path escapes its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Escape;

/// Splits on `/`, drops `.` segments and lets `..` remove the segment before it. Empty segments
/// are kept (so `https://python.org` is unchanged) and a leading `/` is a root `..` cannot
/// remove. Borrows when nothing changes, which is the common case.
pub(crate) fn normalise_path(path: &str) -> Result<std::borrow::Cow<'_, str>, Escape> {
    let has_dot_segment = path
        .split('/')
        .any(|segment| segment == "." || segment == "..");
    if !has_dot_segment {
        return Ok(std::borrow::Cow::Borrowed(path));
    }
    let (rooted, body) = match path.strip_prefix('/') {
        Some(rest) => (true, rest),
        None => (false, path),
    };
    let mut segments: Vec<&str> = Vec::new();
    for segment in body.split('/') {
        match segment {
            "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(Escape);
                }
            }
            other => segments.push(other),
        }
    }
    let joined = segments.join("/");
    Ok(std::borrow::Cow::Owned(if rooted {
        format!("/{joined}")
    } else {
        joined
    }))
}

/// Normalises the object of `verb:object` (the part after the first `:`); an action without
/// `:` has no object and is kept as it is.
pub(crate) fn normalise_action(action: &str) -> Result<std::borrow::Cow<'_, str>, Escape> {
    match action.split_once(':') {
        Some((verb, object)) => match normalise_path(object)? {
            std::borrow::Cow::Borrowed(_) => Ok(std::borrow::Cow::Borrowed(action)),
            std::borrow::Cow::Owned(object) => {
                Ok(std::borrow::Cow::Owned(format!("{verb}:{object}")))
            }
        },
        None => Ok(std::borrow::Cow::Borrowed(action)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_table() {
        let cases: [(&str, Result<&str, Escape>); 16] = [
            ("notes.txt", Ok("notes.txt")),
            ("drafts/../notes.txt", Ok("notes.txt")),
            ("./a/./b", Ok("a/b")),
            ("a/b/..", Ok("a")),
            ("a/..", Ok("")),
            ("..", Err(Escape)),
            ("../../etc/shadow", Err(Escape)),
            ("a/../..", Err(Escape)),
            ("https://python.org/./docs", Ok("https://python.org/docs")),
            ("https://python.org", Ok("https://python.org")),
            ("a//b/../c", Ok("a//c")),
            ("/etc/../passwd", Ok("/passwd")),
            ("/..", Err(Escape)),
            ("/a/b/../../..", Err(Escape)),
            ("a/", Ok("a/")),
            ("...", Ok("...")),
        ];
        for (input, expected) in cases {
            assert_eq!(
                normalise_path(input).as_deref().map_err(|e| *e),
                expected,
                "{input}"
            );
        }
    }

    #[test]
    fn action_object_only() {
        assert_eq!(
            normalise_action("write:workspace/../system/passwd").unwrap(),
            "write:system/passwd"
        );
        assert_eq!(
            normalise_action("write:workspace/../../x").unwrap_err(),
            Escape
        );
        assert_eq!(normalise_action("launch").unwrap(), "launch");
        assert_eq!(normalise_action("a:b:../c").unwrap(), "a:b:../c");
    }
}
