//! Load-time errors: every one names the file, line, column and field path, so an operator
//! can fix the policy without guessing.

use std::fmt;

use serde::Serialize;

/// A position in a policy's source text (1-based line and column, in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct Loc {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A policy that cannot be loaded, with where and why.
/// Display: `autogpt.yaml:14:9: rules[2].effect: expected "allow" or "deny", got "alow"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
pub struct PolicyError {
    origin: String,
    loc: Loc,
    path: String,
    message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.origin, self.loc)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl PolicyError {
    pub(crate) fn new(
        origin: &str,
        loc: Loc,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        PolicyError {
            origin: origin.to_owned(),
            loc,
            path: path.into(),
            message: message.into(),
        }
    }

    /// The file name (or other origin) the policy came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// 1-based line of the offending node.
    pub fn line(&self) -> u32 {
        self.loc.line
    }

    /// 1-based column of the offending node.
    pub fn column(&self) -> u32 {
        self.loc.column
    }

    /// The field path, e.g. `rules[2].effect`; empty for the document itself.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What is wrong, without the position.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Policies that load one by one but cannot form a set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicySetError {
    /// Two policies have the same name: a decision could not say which one it means.
    #[error(
        "{second_origin}:{second_loc}: name: duplicate policy name `{name}`, first defined at {first_origin}:{first_loc}"
    )]
    DuplicateName {
        /// The name both policies use.
        name: String,
        /// Where the first one came from.
        first_origin: String,
        /// Position of the first one's `name`.
        first_loc: Loc,
        /// Where the second one came from.
        second_origin: String,
        /// Position of the second one's `name`.
        second_loc: Loc,
    },
}

/// Either kind of load failure, for callers that parse and build a set in one step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// One policy did not parse.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The policies did not form a set.
    #[error(transparent)]
    Set(#[from] PolicySetError),
}
