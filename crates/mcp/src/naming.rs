//! How an MCP call becomes a check (SPEC "MCP tool calls"): `tools/call` of tool `T` on server
//! `S` is action `mcp:S/T`, `resources/read` is `mcp:S/resources/read` with the URI as resource,
//! `prompts/get` of prompt `P` is `mcp:S/prompts/P`. The resource comes from the call's arguments,
//! and the arguments travel in `context.arguments` with `context.server` and `context.tool`.

use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

use crate::config::{DEFAULT_RESOURCE_ARGUMENTS, ServerConfig, ToolMapping};

/// The resource of a call that names none.
pub const ANY_RESOURCE: &str = "*";

/// The verb of every default MCP action.
const MCP_VERB: &str = "mcp";

/// The context keys a governed call carries.
pub mod context_key {
    /// The server name the operator gave.
    pub const SERVER: &str = "server";
    /// The tool (or `resources/read`, or `prompts/<name>`) called.
    pub const TOOL: &str = "tool";
    /// The call's arguments as the client sent them.
    pub const ARGUMENTS: &str = "arguments";
}

/// The three MCP methods MeshGuard checks before forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GovernedMethod {
    /// `tools/call`.
    ToolsCall,
    /// `resources/read`.
    ResourcesRead,
    /// `prompts/get`.
    PromptsGet,
}

impl GovernedMethod {
    /// The method of a JSON-RPC request, when MeshGuard governs it.
    pub fn of(method: &str) -> Option<Self> {
        match method {
            "tools/call" => Some(GovernedMethod::ToolsCall),
            "resources/read" => Some(GovernedMethod::ResourcesRead),
            "prompts/get" => Some(GovernedMethod::PromptsGet),
            _ => None,
        }
    }
}

/// One call as the gateway is asked about it.
#[derive(Debug, Clone, PartialEq)]
pub struct GovernedCall {
    /// `mcp:S/T`, or the tool's mapped action.
    pub action: String,
    /// The resource taken from the arguments, or `*`.
    pub resource: String,
    /// `server`, `tool`, `arguments`.
    pub context: Map<String, Value>,
    /// What the call is named in messages to the model: the tool, `resources/read`, or
    /// `prompts/<name>`.
    pub target: String,
}

/// Names the calls of one server.
#[derive(Debug, Clone)]
pub struct Naming {
    server: String,
    config: ServerConfig,
    /// The directory relative paths are resolved against: the child server's working directory,
    /// which it inherits from the proxy.
    cwd: PathBuf,
}

impl Naming {
    /// The naming of server `server` under `config`; relative paths resolve against `cwd`.
    pub fn new(server: &str, config: ServerConfig, cwd: PathBuf) -> Self {
        Naming {
            server: server.to_owned(),
            config,
            cwd,
        }
    }

    /// The server name.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// `tools/call` of `tool` with `arguments`.
    pub fn tool_call(&self, tool: &str, arguments: Map<String, Value>) -> GovernedCall {
        let mapping = self.config.tools.get(tool);
        let action = mapping
            .and_then(|m| m.action.clone())
            .unwrap_or_else(|| self.default_action(tool));
        let resource = self.resource_of(mapping, &arguments);
        self.call(action, resource, tool.to_owned(), arguments)
    }

    /// The action and resource a tool would be checked with when called with no arguments: what
    /// `tools/list` asks the gateway about.
    pub fn tool_listing(&self, tool: &str) -> GovernedCall {
        self.tool_call(tool, Map::new())
    }

    /// `resources/read` of `uri`.
    pub fn resource_read(&self, uri: &str) -> GovernedCall {
        let target = "resources/read".to_owned();
        let mut arguments = Map::new();
        arguments.insert("uri".into(), Value::String(uri.to_owned()));
        let resource = if uri.is_empty() {
            ANY_RESOURCE.to_owned()
        } else {
            uri.to_owned()
        };
        self.call(self.default_action(&target), resource, target, arguments)
    }

    /// `prompts/get` of prompt `name`.
    pub fn prompt_get(&self, name: &str, arguments: Map<String, Value>) -> GovernedCall {
        let target = format!("prompts/{name}");
        let resource = self.resource_of(None, &arguments);
        self.call(self.default_action(&target), resource, target, arguments)
    }

    fn default_action(&self, target: &str) -> String {
        format!("{MCP_VERB}:{}/{target}", self.server)
    }

    fn call(
        &self,
        action: String,
        resource: String,
        target: String,
        arguments: Map<String, Value>,
    ) -> GovernedCall {
        let mut context = Map::new();
        context.insert(
            context_key::SERVER.into(),
            Value::String(self.server.clone()),
        );
        context.insert(context_key::TOOL.into(), Value::String(target.clone()));
        context.insert(context_key::ARGUMENTS.into(), Value::Object(arguments));
        GovernedCall {
            action,
            resource,
            context,
            target,
        }
    }

    /// The tool's argument, else the server's, else the first present default argument; its
    /// string value, made relative to the tool's `root` when it lies under it.
    fn resource_of(&self, mapping: Option<&ToolMapping>, arguments: &Map<String, Value>) -> String {
        let named = mapping
            .and_then(|m| m.resource.as_deref())
            .or(self.config.resource.as_deref());
        let value = match named {
            Some(name) => arguments.get(name).and_then(Value::as_str),
            None => DEFAULT_RESOURCE_ARGUMENTS
                .iter()
                .find_map(|name| arguments.get(*name).and_then(Value::as_str)),
        };
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            return ANY_RESOURCE.to_owned();
        };
        match mapping.and_then(|m| m.root.as_deref()) {
            Some(root) => under_root(value, root, &self.cwd),
            None => value.to_owned(),
        }
    }
}

/// `path` relative to `root` when it lies under it (`*` for the root itself); otherwise the path
/// as an absolute path, which no pattern of the form `verb:object/*` matches (SPEC 3). A relative
/// path is first resolved against `cwd`, as the server resolves it. A path with a `..` component
/// is never under the root: its meaning depends on links the proxy cannot see.
pub fn under_root(path: &str, root: &Path, cwd: &Path) -> String {
    let given = Path::new(path);
    let absolute = if given.is_absolute() {
        given.to_path_buf()
    } else {
        cwd.join(given)
    };
    let escapes = absolute
        .components()
        .any(|c| matches!(c, Component::ParentDir));
    if escapes {
        return absolute.display().to_string();
    }
    match absolute.strip_prefix(root) {
        Ok(relative) => {
            let parts: Vec<String> = relative
                .components()
                .filter_map(|c| match c {
                    Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
                    _ => None,
                })
                .collect();
            if parts.is_empty() {
                ANY_RESOURCE.to_owned()
            } else {
                parts.join("/")
            }
        }
        Err(_) => absolute.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::McpConfig;

    fn naming(toml: &str) -> Naming {
        let config = McpConfig::parse(toml, Path::new("mcp.toml")).unwrap();
        Naming::new("fs", config.server("fs"), PathBuf::from("/home/agent"))
    }

    fn args(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn a_tool_call_is_mcp_server_slash_tool_with_the_first_present_argument() {
        let naming = naming("");
        let call = naming.tool_call(
            "read_text_file",
            args(json!({"path": "/srv/a.txt", "head": 3})),
        );
        assert_eq!(call.action, "mcp:fs/read_text_file");
        assert_eq!(call.resource, "/srv/a.txt");
        assert_eq!(call.context["server"], "fs");
        assert_eq!(call.context["tool"], "read_text_file");
        assert_eq!(
            call.context["arguments"],
            json!({"path": "/srv/a.txt", "head": 3})
        );
        // The order is path, uri, url, file, filename; only strings count.
        let call = naming.tool_call(
            "fetch",
            args(json!({"url": "https://x", "uri": "file:///y"})),
        );
        assert_eq!(call.resource, "file:///y");
        let call = naming.tool_call("open", args(json!({"path": 3, "filename": "a.txt"})));
        assert_eq!(call.resource, "a.txt");
        let call = naming.tool_call("search", args(json!({"query": "x"})));
        assert_eq!(call.resource, "*");
    }

    #[test]
    fn the_resource_argument_is_configurable_per_server_and_per_tool() {
        let naming = naming(
            "[servers.fs]\nresource = \"source\"\n[servers.fs.tools]\nmove_file = { resource = \"destination\" }\n",
        );
        let arguments = json!({"path": "/p", "source": "/s", "destination": "/d"});
        assert_eq!(
            naming.tool_call("copy", args(arguments.clone())).resource,
            "/s"
        );
        assert_eq!(
            naming.tool_call("move_file", args(arguments)).resource,
            "/d"
        );
        // A named argument that is absent is `*`, not a fall back to the defaults.
        assert_eq!(
            naming
                .tool_call("copy", args(json!({"path": "/p"})))
                .resource,
            "*"
        );
    }

    #[test]
    fn a_mapped_tool_speaks_the_policy_s_action_and_its_root() {
        let naming = naming(
            "[servers.fs.tools]\nwrite_file = { action = \"write:workspace\", resource = \"path\", root = \"/srv/agent-ws\" }\n",
        );
        let write = |path: &str| naming.tool_call("write_file", args(json!({"path": path})));
        let call = write("/srv/agent-ws/notes/a.txt");
        assert_eq!(call.action, "write:workspace");
        assert_eq!(call.resource, "notes/a.txt");
        assert_eq!(call.context["tool"], "write_file");
        assert_eq!(write("/etc/passwd").resource, "/etc/passwd");
        // Prefixes count whole components only.
        assert_eq!(
            write("/srv/agent-ws-other/a").resource,
            "/srv/agent-ws-other/a"
        );
        assert_eq!(write("/srv/agent-ws").resource, "*");
        assert_eq!(write("/srv/agent-ws/./a.txt").resource, "a.txt");
        // `..` keeps the path absolute: it never matches `write:workspace/*`.
        assert_eq!(
            write("/srv/agent-ws/../etc/passwd").resource,
            "/srv/agent-ws/../etc/passwd"
        );
        // A relative path is the server's: resolved against the directory it runs in.
        assert_eq!(write("notes.txt").resource, "/home/agent/notes.txt");
    }

    #[test]
    fn resources_and_prompts_have_their_own_actions() {
        let naming = naming("");
        let read = naming.resource_read("file:///srv/a.txt");
        assert_eq!(read.action, "mcp:fs/resources/read");
        assert_eq!(read.resource, "file:///srv/a.txt");
        assert_eq!(
            read.context["arguments"],
            json!({"uri": "file:///srv/a.txt"})
        );
        let prompt = naming.prompt_get("review", args(json!({"file": "a.rs"})));
        assert_eq!(prompt.action, "mcp:fs/prompts/review");
        assert_eq!(prompt.resource, "a.rs");
        assert_eq!(prompt.target, "prompts/review");
    }

    #[test]
    fn only_the_three_methods_are_governed() {
        assert_eq!(
            GovernedMethod::of("tools/call"),
            Some(GovernedMethod::ToolsCall)
        );
        assert_eq!(
            GovernedMethod::of("resources/read"),
            Some(GovernedMethod::ResourcesRead)
        );
        assert_eq!(
            GovernedMethod::of("prompts/get"),
            Some(GovernedMethod::PromptsGet)
        );
        assert_eq!(GovernedMethod::of("tools/list"), None);
        assert_eq!(GovernedMethod::of("sampling/createMessage"), None);
    }
}
