//! `meshguard mcp run` as a process, with small shell programs as the MCP server: `cat` answers
//! every message by echoing it, so anything the proxy forwarded shows up on the client's side.
//! The gateway is a port nothing listens on: every governed call must fail closed.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{BIN, free_port};

fn proxy(server: &[&str]) -> Child {
    Command::new(BIN)
        .args(["mcp", "run", "--server", "echo", "--"])
        .args(server)
        .env("MESHGUARD_URL", format!("http://127.0.0.1:{}", free_port()))
        .env("MESHGUARD_TOKEN", "agent-token")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` to exit, at most `limit`; its exit code.
fn exit_within(child: &mut Child, limit: Duration) -> i32 {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(
            started.elapsed() < limit,
            "the proxy did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_all(stream: &mut impl Read) -> String {
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn ungoverned_messages_pass_and_an_unchecked_call_never_reaches_the_server() {
    let mut child = proxy(&["sh", "-c", "echo server-says-hello >&2; exec cat"]);
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_everything","arguments":{"path":"/"}}}"#;
    let note = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1}}"#;
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{ping}\n{call}\n{note}\nnot json").unwrap();
    drop(stdin);
    assert_eq!(exit_within(&mut child, Duration::from_secs(30)), 0);
    let stdout = read_all(child.stdout.as_mut().unwrap());
    let stderr = read_all(child.stderr.as_mut().unwrap());
    let lines: Vec<&str> = stdout.lines().collect();
    // `cat` echoed what it was sent: the ping and the notification, byte for byte, not the call.
    assert!(lines.contains(&ping), "{stdout}");
    assert!(lines.contains(&note), "{stdout}");
    assert!(!stdout.contains(r#""method":"tools/call""#), "{stdout}");
    let answers: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let refused = answers.iter().find(|m| m["id"] == 2).unwrap();
    assert_eq!(refused["result"]["isError"], true);
    let text = refused["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("MeshGuard could not check `delete_everything`, so it was not called"),
        "{text}"
    );
    let parse_error = answers
        .iter()
        .find(|m| m["error"]["code"] == -32700)
        .unwrap();
    assert!(parse_error["id"].is_null());
    // The server's stderr passes through, next to MeshGuard's warning.
    assert!(stderr.contains("server-says-hello"), "{stderr}");
    assert!(stderr.contains("call not forwarded"), "{stderr}");
}

#[test]
fn the_proxy_exits_with_the_server_even_while_the_client_stays() {
    let mut child = proxy(&["sh", "-c", "exit 3"]);
    // The client keeps stdin open; the server's exit ends the session all the same.
    let _stdin = child.stdin.take().unwrap();
    assert_eq!(exit_within(&mut child, Duration::from_secs(30)), 3);
}

#[test]
fn a_server_that_ignores_the_client_leaving_is_stopped() {
    let mut child = proxy(&["sh", "-c", "exec sleep 60"]);
    drop(child.stdin.take());
    // Closed stdin, a grace period of 5 s, then the server is killed and the proxy exits.
    let code = exit_within(&mut child, Duration::from_secs(20));
    assert_ne!(code, 0);
}

#[test]
fn bad_arguments_exit_2_before_anything_starts() {
    let run = Command::new(BIN)
        .args(["mcp", "run", "--server", "Bad/Name", "--", "cat"])
        .env("MESHGUARD_TOKEN", "t")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("--server `Bad/Name`"));
    let run = Command::new(BIN)
        .args(["mcp", "run", "--server", "fs", "--", "cat"])
        .env_remove("MESHGUARD_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("MESHGUARD_TOKEN"));
}

#[test]
fn mcp_tools_refuses_a_bad_server_name_and_reports_a_server_that_does_not_answer() {
    let tools = |args: &[&str]| {
        Command::new(BIN)
            .args([
                "--url",
                "http://127.0.0.1:1",
                "--admin-token",
                "t",
                "mcp",
                "tools",
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let run = tools(&["Bad/Name", "--agent", "a", "--", "cat"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("server `Bad/Name`"));
    // The server exits without answering: named, and nothing asked of the gateway.
    let run = tools(&["fs", "--agent", "a", "--", "true"]);
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("the server `true` did not answer `initialize` before closing its output"),
        "{stderr}"
    );
    let run = tools(&["fs", "--agent", "a", "--", "/nonexistent/mcp-server"]);
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("cannot run the server `/nonexistent/mcp-server`"),
        "{stderr}"
    );
}
