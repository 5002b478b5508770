//! The tools a stdio MCP server offers, asked of the server itself: start it, initialize a
//! session, read every page of `tools/list`, stop it. For `meshguard mcp tools`, which shows an
//! operator what the policies let an agent do with them.

use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use rmcp::model::ProtocolVersion;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// How long the server has to answer each request.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Most `tools/list` pages read: a server that keeps handing out cursors is not listing tools.
const MAX_PAGES: usize = 100;

/// One tool as the server lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ListedTool {
    /// The name a `tools/call` uses.
    pub name: String,
    /// The server's description.
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ToolsPage {
    tools: Vec<ListedTool>,
    #[serde(default, rename = "nextCursor")]
    next_cursor: Option<String>,
}

/// Why the tools could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// No command to start.
    #[error(
        "no server command: give it after `--`, e.g. `meshguard mcp tools fs --agent A -- npx …`"
    )]
    NoCommand,
    /// The server could not be started or talked to.
    #[error("cannot run the server `{command}`: {source}")]
    Io {
        /// The program.
        command: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The server did not answer in time or closed its output.
    #[error("the server `{command}` did not answer `{method}` {why}")]
    NoAnswer {
        /// The program.
        command: String,
        /// The request.
        method: &'static str,
        /// Timed out or closed.
        why: &'static str,
    },
    /// The server answered with an error or with something that is not the answer.
    #[error("the server `{command}` answered `{method}` with {answer}")]
    BadAnswer {
        /// The program.
        command: String,
        /// The request.
        method: &'static str,
        /// What it said (cut short).
        answer: String,
    },
}

/// Starts `command` as a stdio MCP server and returns every tool it lists; the server is stopped
/// afterwards.
pub async fn list_tools(command: &[OsString]) -> Result<Vec<ListedTool>, InventoryError> {
    let (program, args) = command.split_first().ok_or(InventoryError::NoCommand)?;
    let name = program.to_string_lossy().into_owned();
    let io = |source| InventoryError::Io {
        command: name.clone(),
        source,
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(io)?;
    let (Some(mut input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(io(std::io::Error::other("no pipe to the server")));
    };
    let mut output = BufReader::new(output).lines();
    let mut session = Session {
        name: &name,
        next_id: 0,
    };
    let initialize = json!({
        "protocolVersion": ProtocolVersion::LATEST_WITH_INITIALIZE,
        "capabilities": {},
        "clientInfo": {"name": "meshguard-mcp-tools", "version": env!("CARGO_PKG_VERSION")},
    });
    session
        .request(&mut input, &mut output, "initialize", initialize)
        .await?;
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    write(&mut input, &initialized).await.map_err(io)?;
    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let params = match &cursor {
            Some(cursor) => json!({"cursor": cursor}),
            None => json!({}),
        };
        let answer = session
            .request(&mut input, &mut output, "tools/list", params)
            .await?;
        let page: ToolsPage = serde_json::from_value(answer.clone())
            .map_err(|_| session.bad("tools/list", &answer))?;
        tools.extend(page.tools);
        cursor = page.next_cursor.filter(|c| !c.is_empty());
        if cursor.is_none() {
            break;
        }
    }
    // Closing its input tells a stdio server to exit; it is killed when it does not.
    drop(input);
    if tokio::time::timeout(Duration::from_secs(2), child.wait())
        .await
        .is_err()
    {
        // Ignored: the child may have exited in the meantime.
        let _ = child.kill().await;
    }
    Ok(tools)
}

/// The client side of one short session: numbered requests, answers matched by id.
struct Session<'a> {
    name: &'a str,
    next_id: u64,
}

impl Session<'_> {
    fn bad(&self, method: &'static str, answer: &Value) -> InventoryError {
        InventoryError::BadAnswer {
            command: self.name.to_owned(),
            method,
            answer: answer.to_string().chars().take(300).collect(),
        }
    }

    /// Sends `method` and returns its result, skipping the server's notifications and requests.
    async fn request<W, R>(
        &mut self,
        input: &mut W,
        output: &mut tokio::io::Lines<R>,
        method: &'static str,
        params: Value,
    ) -> Result<Value, InventoryError>
    where
        W: tokio::io::AsyncWrite + Unpin,
        R: tokio::io::AsyncBufRead + Unpin,
    {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let no_answer = |why| InventoryError::NoAnswer {
            command: self.name.to_owned(),
            method,
            why,
        };
        // A server that already exited closes its input too: writing to it then fails with a
        // broken pipe, which says the same as its closed output.
        match write(input, &request).await {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {
                return Err(no_answer("before closing its output"));
            }
            Err(source) => {
                return Err(InventoryError::Io {
                    command: self.name.to_owned(),
                    source,
                });
            }
        }
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, async {
            while let Ok(Some(line)) = output.next_line().await {
                let Ok(message) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if message.get("id") == Some(&json!(id)) && message.get("method").is_none() {
                    return Some(message);
                }
            }
            None
        })
        .await
        .map_err(|_| no_answer("in time"))?
        .ok_or_else(|| no_answer("before closing its output"))?;
        match answer.get("result") {
            Some(result) => Ok(result.clone()),
            None => Err(self.bad(method, &answer)),
        }
    }
}

async fn write<W: tokio::io::AsyncWrite + Unpin>(
    input: &mut W,
    message: &Value,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    input.write_all(&line).await?;
    input.flush().await
}
