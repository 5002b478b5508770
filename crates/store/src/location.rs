//! Where the store lives: a SQLite file or a PostgreSQL URL.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::StoreError;

/// The database to open. Built from `--data-dir` (SQLite, the default) or `--database-url`.
///
/// `Debug` and `Display` never show a password: the value ends up in logs and `/health`.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite database file, created on first open.
    Sqlite {
        /// Path of the database file.
        path: PathBuf,
    },
    /// A PostgreSQL database shared by several gateways.
    Postgres {
        /// `postgres://` or `postgresql://` URL, credentials included.
        url: String,
    },
}

/// File name of the SQLite database inside the data directory.
pub const SQLITE_FILE_NAME: &str = "meshguard.db";

impl StoreLocation {
    /// The default store: `<data-dir>/meshguard.db`.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self::Sqlite {
            path: data_dir.join(SQLITE_FILE_NAME),
        }
    }

    /// Reads a `--database-url`: `postgres://…`/`postgresql://…`, `sqlite://PATH` or `sqlite:PATH`.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres {
                url: url.to_owned(),
            });
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"));
        match path {
            Some(path) if !path.is_empty() => Ok(Self::Sqlite {
                path: PathBuf::from(path),
            }),
            _ => Err(StoreError::invalid(
                "database_url",
                format!(
                    "`{}` is not a supported database URL (expected postgres://… or sqlite://PATH)",
                    redact_url(url)
                ),
            )),
        }
    }

    /// Short backend name for `/health` and logs.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite { .. } => "sqlite",
            Self::Postgres { .. } => "postgres",
        }
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite { path } => write!(f, "sqlite://{}", path.display()),
            Self::Postgres { url } => f.write_str(&redact_url(url)),
        }
    }
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
            Self::Postgres { url } => f
                .debug_struct("Postgres")
                .field("url", &redact_url(url))
                .finish(),
        }
    }
}

/// Replaces the password of `scheme://user:password@host/…` with `***`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_password() {
        let location = StoreLocation::parse("postgres://meshguard:s3cret@db:5432/mg").unwrap();
        assert!(!format!("{location:?}").contains("s3cret"));
        assert_eq!(location.to_string(), "postgres://meshguard:***@db:5432/mg");
    }

    #[test]
    fn parses_sqlite_urls_and_refuses_others() {
        assert_eq!(
            StoreLocation::parse("sqlite:///var/lib/mg.db").unwrap(),
            StoreLocation::Sqlite {
                path: PathBuf::from("/var/lib/mg.db")
            }
        );
        let err = StoreLocation::parse("mysql://u:pw@h/db").unwrap_err();
        assert!(err.to_string().contains("not a supported database URL"));
        assert!(!err.to_string().contains("pw@"));
    }
}
