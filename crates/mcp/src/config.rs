//! The mapping config (`--config FILE`, TOML): how the calls of each MCP server are named for the
//! gateway. Read once at start into typed values; an error names the file, line, column and field.
//!
//! ```toml
//! [servers.fs]
//! resource = "path"                 # the argument holding the resource (default: see below)
//!
//! [servers.fs.tools]
//! write_file = { action = "write:workspace", resource = "path", root = "/srv/agent-ws" }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The arguments tried, in order, when neither the tool nor the server names one.
pub const DEFAULT_RESOURCE_ARGUMENTS: [&str; 5] = ["path", "uri", "url", "file", "filename"];

/// The whole file: one table per server name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// Keyed by the server name the operator gives with `--server`.
    #[serde(default)]
    pub servers: BTreeMap<String, ServerConfig>,
}

/// How the calls of one server are named.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The argument that holds the resource of every tool of this server (a tool's own
    /// `resource` wins); absent: the first present of [`DEFAULT_RESOURCE_ARGUMENTS`].
    #[serde(default)]
    pub resource: Option<String>,
    /// Per-tool overrides, keyed by tool name.
    #[serde(default)]
    pub tools: BTreeMap<String, ToolMapping>,
}

/// How one tool's calls are named, when the default `mcp:S/T` is not what the policies speak.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolMapping {
    /// The action checked instead of `mcp:S/T`, e.g. `write:workspace`.
    #[serde(default)]
    pub action: Option<String>,
    /// The argument that holds the resource.
    #[serde(default)]
    pub resource: Option<String>,
    /// A directory: a path under it becomes relative to it, so that `write:workspace/*` can
    /// match; a path outside it stays absolute and never does (SPEC 3).
    #[serde(default)]
    pub root: Option<PathBuf>,
}

/// Why the mapping config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the MCP config `{file}`: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not TOML, or a field of the wrong shape or name.
    #[error("{file}:{line}:{column}: `{field}`: {message}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// The dotted path of the field at fault.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl McpConfig {
    /// Reads and validates `file`.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_owned(),
            source,
        })?;
        Self::parse(&text, file)
    }

    /// Parses `text` (named `file` in errors): a pure function, so tests need no files.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let invalid = |offset: Option<usize>, field: String, message: String| {
            let (line, column) = offset.map_or((0, 0), |at| line_column(text, at));
            ConfigError::Invalid {
                file: file.to_owned(),
                line,
                column,
                field,
                message,
            }
        };
        let de = toml::Deserializer::new(text);
        let config: McpConfig = serde_path_to_error::deserialize(de).map_err(|err| {
            let field = err.path().to_string();
            let inner = err.into_inner();
            let offset = inner.span().map(|span| span.start);
            invalid(offset, field, inner.message().to_owned())
        })?;
        for (name, server) in &config.servers {
            let at = |key: &str| find_key(text, key);
            if !is_server_name(name) {
                return Err(invalid(
                    at(name),
                    format!("servers.{name}"),
                    "a server name is 1 to 64 of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit".into(),
                ));
            }
            if server.resource.as_deref() == Some("") {
                let field = format!("servers.{name}.resource");
                return Err(invalid(at("resource"), field, "must not be empty".into()));
            }
            for (tool, mapping) in &server.tools {
                let field = |key: &str| format!("servers.{name}.tools.{tool}.{key}");
                if let Some(action) = &mapping.action {
                    let ok = action
                        .split_once(':')
                        .is_some_and(|(verb, object)| !verb.is_empty() && !object.is_empty());
                    if !ok || action.contains(['*', '?']) {
                        return Err(invalid(
                            at(tool),
                            field("action"),
                            format!("`{action}` is not an action `verb:object` without `*` or `?`"),
                        ));
                    }
                }
                if mapping.resource.as_deref() == Some("") {
                    return Err(invalid(
                        at(tool),
                        field("resource"),
                        "must not be empty".into(),
                    ));
                }
                if let Some(root) = mapping.root.as_ref().filter(|root| !root.is_absolute()) {
                    return Err(invalid(
                        at(tool),
                        field("root"),
                        format!("`{}` must be an absolute directory", root.display()),
                    ));
                }
            }
        }
        Ok(config)
    }

    /// The naming of server `name`: its table, or the defaults when the file has none.
    pub fn server(&self, name: &str) -> ServerConfig {
        self.servers.get(name).cloned().unwrap_or_default()
    }
}

/// The server-name syntax (the agent-name syntax of SPEC 1): it becomes part of every action, so
/// it must not hold `/`, `:` or pattern characters.
pub fn is_server_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    first_ok
        && name.len() <= 64
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

/// The 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Where `key` first appears as a key, for the position of a validation error (best effort: the
/// typed config keeps no spans).
fn find_key(text: &str, key: &str) -> Option<usize> {
    text.match_indices(key).map(|(at, _)| at).next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<McpConfig, ConfigError> {
        McpConfig::parse(text, Path::new("mcp.toml"))
    }

    #[test]
    fn a_tool_mapping_reads_as_typed_values() {
        let config = parse(
            "[servers.fs]\nresource = \"source\"\n[servers.fs.tools]\n\
             write_file = { action = \"write:workspace\", resource = \"path\", root = \"/srv/ws\" }\n",
        )
        .unwrap();
        let fs = config.server("fs");
        assert_eq!(fs.resource.as_deref(), Some("source"));
        assert_eq!(
            fs.tools.get("write_file"),
            Some(&ToolMapping {
                action: Some("write:workspace".into()),
                resource: Some("path".into()),
                root: Some("/srv/ws".into()),
            })
        );
        assert!(config.server("other").tools.is_empty());
    }

    #[test]
    fn an_unknown_field_names_file_line_and_field() {
        let err = parse("[servers.fs.tools]\nwrite_file = { acton = \"write:x\" }\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("mcp.toml:2:"), "{text}");
        assert!(text.contains("servers.fs.tools.write_file"), "{text}");
        assert!(text.contains("acton"), "{text}");
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let err = parse("[servers.fs]\nresource = 3\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("mcp.toml:2:"), "{text}");
        assert!(text.contains("`servers.fs.resource`"), "{text}");
    }

    #[test]
    fn bad_values_are_refused_with_their_field() {
        let cases = [
            (
                "[servers.fs.tools]\nw = { action = \"write\" }\n",
                "servers.fs.tools.w.action",
            ),
            (
                "[servers.fs.tools]\nw = { action = \"write:*\" }\n",
                "servers.fs.tools.w.action",
            ),
            (
                "[servers.fs.tools]\nw = { root = \"ws\" }\n",
                "servers.fs.tools.w.root",
            ),
            (
                "[servers.fs.tools]\nw = { resource = \"\" }\n",
                "servers.fs.tools.w.resource",
            ),
            ("[servers.\"a/b\"]\n", "servers.a/b"),
        ];
        for (text, field) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(&format!("`{field}`")), "{text}: {err}");
            assert!(err.starts_with("mcp.toml:"), "{err}");
        }
    }

    #[test]
    fn server_names_follow_the_agent_name_syntax() {
        assert!(is_server_name("fs"));
        assert!(is_server_name("my-server.v2"));
        assert!(!is_server_name(""));
        assert!(!is_server_name("-fs"));
        assert!(!is_server_name("a/b"));
        assert!(!is_server_name("Fs"));
        assert!(!is_server_name(&"a".repeat(65)));
    }
}
