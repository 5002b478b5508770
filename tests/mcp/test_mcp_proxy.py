"""``meshguard mcp run`` end to end, with parts MeshGuard did not write: the official Python MCP
SDK as the client and the reference filesystem server from npm, pinned in package.json, behind
the real ``meshguard`` binary and a real gateway on a free port with a temporary data dir.

The policy is examples/policies/mcp-filesystem.yaml and the mapping examples/mcp/filesystem.toml
(its root pointed at the test's workspace), exactly as docs/integrations/mcp.md shows them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, Iterator, List, Optional, Tuple

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
POLICY = REPO_ROOT / "examples" / "policies" / "mcp-filesystem.yaml"
MAPPING = REPO_ROOT / "examples" / "mcp" / "filesystem.toml"
SERVER = HERE / "node_modules" / ".bin" / "mcp-server-filesystem"
EVERYTHING = HERE / "node_modules" / ".bin" / "mcp-server-everything"
EXAMPLE_ROOT = "/srv/agent-ws"
# Every tool of the reference server that the example policy leaves open to the agent.
READ_TOOLS = {
    "read_text_file",
    "read_media_file",
    "list_directory",
    "list_directory_with_sizes",
    "directory_tree",
    "get_file_info",
}


def binary() -> Path:
    """The binary under test: ``MESHGUARD_BIN``, else ``target/debug/meshguard``."""
    configured = os.environ.get("MESHGUARD_BIN")
    path = Path(configured) if configured else REPO_ROOT / "target" / "debug" / "meshguard"
    if not path.is_file():
        pytest.fail(f"the meshguard binary is missing at {path}: run `cargo build -p meshguard`")
    if not SERVER.exists():
        pytest.fail(f"{SERVER} is missing: run `npm ci` in {HERE} (scripts/test-mcp.sh does)")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Gateway:
    """One ``meshguard serve`` process with its own data dir, driven through the CLI."""

    def __init__(self, data_dir: Path, serve_args: Tuple[str, ...] = ()) -> None:
        self.binary = binary()
        self.data_dir = data_dir
        self.serve_args = serve_args
        self.port = free_port()
        self.process: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir.parent / "gateway.log", "ab")
        self.process = subprocess.Popen(
            [
                str(self.binary),
                "--data-dir",
                str(self.data_dir),
                "serve",
                "--addr",
                f"127.0.0.1:{self.port}",
                *self.serve_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": "warn"},
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        pytest.fail("meshguard serve did not become healthy")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [str(self.binary), "--url", self.url, "--data-dir", str(self.data_dir), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, f"meshguard {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    def create_agent(self) -> Agent:
        name = f"mcp-{uuid.uuid4().hex[:10]}"
        created = json.loads(
            self.cli("agent", "create", name, "--trust", "verified", "--tags", "mcp-fs", "--json")
        )
        return Agent(name=name, token=str(created["token"]))

    def audit(self, agent: Agent) -> List[Dict[str, Any]]:
        """The agent's audit events (`GET /admin/audit`), oldest first."""
        token = (self.data_dir / "admin.token").read_text().strip()
        request = urllib.request.Request(
            f"{self.url}/admin/audit?agentId={agent.name}&limit=500",
            headers={"X-Admin-Token": token},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            entries: List[Dict[str, Any]] = json.load(answer)["entries"]
        return sorted(entries, key=lambda e: int(e["seq"]))


@dataclass
class Agent:
    name: str
    token: str


@dataclass
class Workspace:
    root: Path
    mapping: Path


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("gateway") / "data")
    gw.start()
    try:
        gw.cli("policy", "apply", str(POLICY))
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "notes.txt").write_text("hello from the workspace\n")
    mapping = tmp_path / "filesystem.toml"
    mapping.write_text(MAPPING.read_text().replace(EXAMPLE_ROOT, str(root)))
    return Workspace(root=root, mapping=mapping)


Session = Callable[[ClientSession], Awaitable[Any]]


def run_session(
    gw: Gateway,
    agent: Agent,
    ws: Workspace,
    body: Session,
    *extra: str,
    everything: bool = False,
    **session_options: Any,
) -> Any:
    """Starts ``meshguard mcp run`` as the client's server and runs ``body`` in the session: the
    filesystem server on the workspace (``--server fs`` with its mapping), or with ``everything``
    the everything server (``--server everything``). ``session_options`` go to the SDK's
    ``ClientSession`` (sampling and logging callbacks)."""
    if everything:
        served = ["--server", "everything", *extra, "--", str(EVERYTHING), "stdio"]
    else:
        served = [
            "--server",
            "fs",
            "--config",
            str(ws.mapping),
            *extra,
            "--",
            str(SERVER),
            str(ws.root),
        ]
    params = StdioServerParameters(
        command=str(gw.binary),
        args=["mcp", "run", *served],
        env={
            "MESHGUARD_TOKEN": agent.token,
            "MESHGUARD_URL": gw.url,
            "PATH": os.environ.get("PATH", ""),
        },
        cwd=str(ws.root),
    )

    async def main() -> Any:
        with anyio.fail_after(60):
            async with stdio_client(params) as (read, write):
                async with ClientSession(read, write, **session_options) as session:
                    await session.initialize()
                    return await body(session)

    return anyio.run(main)


def text_of(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def test_an_allowed_read_returns_the_file(gateway: Gateway, workspace: Workspace) -> None:
    agent = gateway.create_agent()

    async def body(session: ClientSession) -> Any:
        return await session.call_tool(
            "read_text_file", {"path": str(workspace.root / "notes.txt")}
        )

    result = run_session(gateway, agent, workspace, body)
    assert not result.is_error, text_of(result)
    assert text_of(result) == "hello from the workspace\n"


def test_a_denied_write_leaves_the_disk_unchanged_and_names_the_rule(
    gateway: Gateway, workspace: Workspace
) -> None:
    agent = gateway.create_agent()
    target = workspace.root / "notes.txt"
    created = workspace.root / "new.txt"

    async def body(session: ClientSession) -> Any:
        overwrite = await session.call_tool(
            "write_file", {"path": str(target), "content": "overwritten"}
        )
        create = await session.call_tool("write_file", {"path": str(created), "content": "x"})
        # The session goes on after a denial.
        read = await session.call_tool("read_text_file", {"path": str(target)})
        return overwrite, create, read

    overwrite, create, read = run_session(gateway, agent, workspace, body)
    for result in (overwrite, create):
        assert result.is_error
        assert text_of(result).startswith("MeshGuard denied `write_file`: "), text_of(result)
        assert "(policy mcp-filesystem, rule deny-writes)" in text_of(result)
    assert target.read_text() == "hello from the workspace\n"
    assert not created.exists()
    assert text_of(read) == "hello from the workspace\n"


def test_a_read_outside_the_workspace_is_denied(
    gateway: Gateway, workspace: Workspace, tmp_path: Path
) -> None:
    agent = gateway.create_agent()
    outside = tmp_path / "secret.txt"
    outside.write_text("secret\n")

    async def body(session: ClientSession) -> Any:
        return await session.call_tool("read_text_file", {"path": str(outside)})

    result = run_session(gateway, agent, workspace, body)
    assert result.is_error
    assert "secret" not in text_of(result).replace("secret.txt", "")
    assert "rule deny-everything-else" in text_of(result), text_of(result)


def test_tools_list_hides_the_denied_tools(gateway: Gateway, workspace: Workspace) -> None:
    agent = gateway.create_agent()

    async def body(session: ClientSession) -> Any:
        return {tool.name for tool in (await session.list_tools()).tools}

    listed = run_session(gateway, agent, workspace, body)
    assert listed == READ_TOOLS
    everything = run_session(gateway, agent, workspace, body, "--show-denied")
    assert READ_TOOLS < everything
    assert {"write_file", "edit_file", "move_file", "search_files"} <= everything
    # Listing asks the gateway without creating approvals or charging limits: a preview is
    # audited as a `test`, never as a `check`.
    kinds = {event["kind"] for event in gateway.audit(agent)}
    assert "test" in kinds and "check" not in kinds, kinds


def test_each_call_s_check_and_record_share_one_trace_id(
    gateway: Gateway, workspace: Workspace
) -> None:
    agent = gateway.create_agent()

    async def body(session: ClientSession) -> Any:
        await session.call_tool("read_text_file", {"path": str(workspace.root / "notes.txt")})
        await session.call_tool("get_file_info", {"path": str(workspace.root / "notes.txt")})
        await session.call_tool(
            "write_file", {"path": str(workspace.root / "notes.txt"), "content": "x"}
        )

    run_session(gateway, agent, workspace, body)
    events = [e for e in gateway.audit(agent) if e["kind"] in ("check", "record")]
    checks = [e for e in events if e["kind"] == "check"]
    assert [(e["action"], e["resource"], e["decision"]) for e in checks] == [
        ("read:workspace", "notes.txt", "allow"),
        ("read:workspace", "notes.txt", "allow"),
        ("write:workspace", "notes.txt", "deny"),
    ]
    traces = [e.get("traceId", e.get("trace_id")) for e in checks]
    assert len(set(traces)) == 3
    for check in checks:
        trace = check.get("traceId", check.get("trace_id"))
        records = [
            e
            for e in events
            if e["kind"] == "record" and e.get("traceId", e.get("trace_id")) == trace
        ]
        if check["decision"] == "allow":
            assert len(records) == 1, events
            assert records[0]["status"] == "success"
            assert records[0]["action"] == check["action"]
        else:
            assert records == [], "a denied call is never made, so nothing is recorded"
    assert check["context"]["server"] == "fs"
    assert check["context"]["tool"] == "write_file"
    assert check["context"]["arguments"]["content"] == "x"


def test_a_stopped_gateway_fails_closed(tmp_path: Path, workspace: Workspace) -> None:
    gw = Gateway(tmp_path / "private" / "data")
    gw.start()
    try:
        gw.cli("policy", "apply", str(POLICY))
        agent = gw.create_agent()

        async def body(session: ClientSession) -> Any:
            first = await session.call_tool(
                "read_text_file", {"path": str(workspace.root / "notes.txt")}
            )
            gw.stop()
            second = await session.call_tool(
                "read_text_file", {"path": str(workspace.root / "notes.txt")}
            )
            return first, second

        first, second = run_session(gw, agent, workspace, body)
    finally:
        gw.stop()
    assert text_of(first) == "hello from the workspace\n"
    assert second.is_error
    assert text_of(second).startswith(
        "MeshGuard could not check `read_text_file`, so it was not called"
    ), text_of(second)
    assert "hello" not in text_of(second)


def test_a_revoked_agent_s_calls_fail_closed(gateway: Gateway, workspace: Workspace) -> None:
    agent = gateway.create_agent()
    notes = str(workspace.root / "notes.txt")

    async def body(session: ClientSession) -> Any:
        first = await session.call_tool("read_text_file", {"path": notes})
        gateway.cli("agent", "revoke", agent.name)
        second = await session.call_tool("read_text_file", {"path": notes})
        return first, second

    first, second = run_session(gateway, agent, workspace, body)
    assert text_of(first) == "hello from the workspace\n"
    assert second.is_error
    assert "the gateway refused the agent token" in text_of(second), text_of(second)
    assert "hello" not in text_of(second)


APPROVAL_POLICY = """
name: mcp-fs-approvals
version: "1"
appliesTo:
  tags: [mcp-fs-approvals]
rules:
  - name: read-workspace
    effect: allow
    actions: ["read:workspace/*"]
humanInTheLoop:
  requireApproval: ["write:workspace/*"]
defaultEffect: deny
"""


def approvals_agent(gateway: Gateway, tmp_path: Path) -> Agent:
    policy = tmp_path / "approvals.yaml"
    policy.write_text(APPROVAL_POLICY)
    gateway.cli("policy", "apply", str(policy))
    name = f"mcp-{uuid.uuid4().hex[:10]}"
    created = json.loads(
        gateway.cli(
            "agent", "create", name, "--trust", "verified", "--tags", "mcp-fs-approvals", "--json"
        )
    )
    return Agent(name=name, token=str(created["token"]))


async def pending_approval(gateway: Gateway, arguments: Dict[str, Any]) -> Dict[str, Any]:
    """The pending approval bound to ``arguments``, as ``meshguard approval list`` shows it to
    the operator, once the proxy's check has created it."""
    with anyio.fail_after(20):
        while True:
            listed = await anyio.to_thread.run_sync(
                gateway.cli, "approval", "list", "--status", "pending", "--json"
            )
            for approval in json.loads(listed)["approvals"]:
                if approval.get("arguments", {}).get("value") == arguments:
                    return dict(approval)
            await anyio.sleep(0.2)


def test_a_write_that_needs_approval_waits_for_the_human_and_goes_through_once(
    gateway: Gateway, workspace: Workspace, tmp_path: Path
) -> None:
    agent = approvals_agent(gateway, tmp_path)
    target = workspace.root / "notes.txt"
    arguments = {"path": str(target), "content": "approved change\n"}
    progress: List[Tuple[float, Optional[float], Optional[str]]] = []

    async def on_progress(done: float, total: Optional[float], message: Optional[str]) -> None:
        progress.append((done, total, message))

    async def body(session: ClientSession) -> Any:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        results: List[Any] = []

        async def call() -> None:
            results.append(
                await session.call_tool("write_file", arguments, progress_callback=on_progress)
            )

        async with anyio.create_task_group() as group:
            group.start_soon(call)
            approval = await pending_approval(gateway, arguments)
            # Nothing reached the server while the human had not decided.
            untouched = target.read_text()
            await anyio.to_thread.run_sync(gateway.cli, "approval", "approve", approval["id"])
        return tools, approval, untouched, results[0]

    tools, approval, untouched, written = run_session(gateway, agent, workspace, body)
    assert "needs a human's approval" in (tools["write_file"].description or "")
    assert (approval["action"], approval["resource"]) == ("write:workspace", "notes.txt"), approval
    assert untouched == "hello from the workspace\n"
    assert not written.is_error, text_of(written)
    assert target.read_text() == "approved change\n"
    # The client heard that the call waited, and for which approval.
    assert progress, "no progress notification while waiting"
    assert approval["id"] in (progress[0][2] or ""), progress


def test_a_denied_or_unanswered_approval_writes_nothing_and_each_call_needs_its_own(
    gateway: Gateway, workspace: Workspace, tmp_path: Path
) -> None:
    agent = approvals_agent(gateway, tmp_path)
    target = workspace.root / "notes.txt"
    denied_change = {"path": str(target), "content": "denied change\n"}
    late_change = {"path": str(target), "content": "late change\n"}
    other_change = {"path": str(target), "content": "another change\n"}

    async def body(session: ClientSession) -> Any:
        results: List[Any] = []

        async def call() -> None:
            results.append(await session.call_tool("write_file", denied_change))

        async with anyio.create_task_group() as group:
            group.start_soon(call)
            approval = await pending_approval(gateway, denied_change)
            await anyio.to_thread.run_sync(
                gateway.cli, "approval", "deny", approval["id"], "--reason", "not today"
            )
        # Nobody answers within the wait: the model is told which approval to ask for.
        unanswered = await session.call_tool("write_file", late_change)
        untouched = target.read_text()
        late_id = (await pending_approval(gateway, late_change))["id"]
        await anyio.to_thread.run_sync(gateway.cli, "approval", "approve", late_id)
        # Approved for the late change only: other content needs an approval of its own.
        other = await session.call_tool("write_file", other_change)
        late = await session.call_tool("write_file", late_change)
        return approval, results[0], unanswered, untouched, late_id, other, late

    approval, denied, unanswered, untouched, late_id, other, late = run_session(
        gateway, agent, workspace, body, "--approval-wait", "2"
    )
    assert denied.is_error
    assert approval["id"] in text_of(denied), text_of(denied)
    assert "a human denied it" in text_of(denied), text_of(denied)
    assert unanswered.is_error
    assert f"meshguard approval approve {late_id}" in text_of(unanswered), text_of(unanswered)
    assert untouched == "hello from the workspace\n"
    assert other.is_error
    assert late_id not in text_of(other), text_of(other)
    assert not late.is_error, text_of(late)
    assert target.read_text() == "late change\n"


def test_a_call_the_client_gave_up_on_is_not_made_when_approved_later(
    gateway: Gateway, workspace: Workspace, tmp_path: Path
) -> None:
    agent = approvals_agent(gateway, tmp_path)
    target = workspace.root / "notes.txt"
    arguments = {"path": str(target), "content": "abandoned change\n"}

    async def body(session: ClientSession) -> Any:
        # The SDK gives up after the timeout and sends notifications/cancelled for the call.
        with pytest.raises(MCPError, match="timed out"):
            await session.call_tool("write_file", arguments, read_timeout_seconds=1.5)
        approval = await pending_approval(gateway, arguments)
        await anyio.to_thread.run_sync(gateway.cli, "approval", "approve", approval["id"])
        await anyio.sleep(1.5)
        read = await session.call_tool("read_text_file", {"path": str(target)})
        approved = await anyio.to_thread.run_sync(
            gateway.cli, "approval", "list", "--status", "approved", "--json"
        )
        return approval, read, json.loads(approved)["approvals"]

    approval, read, approved = run_session(gateway, agent, workspace, body, "--approval-wait", "30")
    assert text_of(read) == "hello from the workspace\n"
    assert target.read_text() == "hello from the workspace\n"
    # Nothing used the approval: the cancelled call was never checked again nor forwarded.
    assert approval["id"] in [a["id"] for a in approved], approved


EVERYTHING_POLICY = """
name: mcp-everything
version: "1"
appliesTo:
  tags: [mcp-everything]
rules:
  - name: everything-open
    effect: allow
    actions: ["mcp:everything/*"]
defaultEffect: deny
"""


@pytest.fixture
def everything_agent(gateway: Gateway, tmp_path: Path) -> Agent:
    policy = tmp_path / "everything.yaml"
    policy.write_text(EVERYTHING_POLICY)
    gateway.cli("policy", "apply", str(policy))
    name = f"mcp-{uuid.uuid4().hex[:10]}"
    created = json.loads(
        gateway.cli(
            "agent", "create", name, "--trust", "verified", "--tags", "mcp-everything", "--json"
        )
    )
    return Agent(name=name, token=str(created["token"]))


def test_the_servers_progress_notifications_reach_the_client(
    gateway: Gateway, workspace: Workspace, everything_agent: Agent
) -> None:
    progress: List[Tuple[float, Optional[float], Optional[str]]] = []

    async def on_progress(done: float, total: Optional[float], message: Optional[str]) -> None:
        progress.append((done, total, message))

    async def body(session: ClientSession) -> Any:
        return await session.call_tool(
            "trigger-long-running-operation",
            {"duration": 1, "steps": 3},
            progress_callback=on_progress,
        )

    result = run_session(gateway, everything_agent, workspace, body, everything=True)
    assert not result.is_error, text_of(result)
    assert "Long running operation completed" in text_of(result)
    assert [(done, total) for done, total, _ in progress] == [(1, 3), (2, 3), (3, 3)]


def test_a_sampling_request_of_the_server_round_trips_through_the_client(
    gateway: Gateway, workspace: Workspace, everything_agent: Agent
) -> None:
    asked: List[str] = []

    async def sample(context: Any, params: types.CreateMessageRequestParams) -> Any:
        asked.append("".join(getattr(m.content, "text", "") for m in params.messages))
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="sampled by the test client"),
            model="test-model",
        )

    async def body(session: ClientSession) -> Any:
        return await session.call_tool("trigger-sampling-request", {"prompt": "say hello"})

    result = run_session(
        gateway, everything_agent, workspace, body, everything=True, sampling_callback=sample
    )
    assert not result.is_error, text_of(result)
    assert len(asked) == 1 and "say hello" in asked[0], asked
    assert "sampled by the test client" in text_of(result)


def test_the_servers_log_notifications_reach_the_client(
    gateway: Gateway, workspace: Workspace, everything_agent: Agent
) -> None:
    logged: List[Any] = []
    heard = anyio.Event()

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logged.append(params)
        heard.set()

    async def body(session: ClientSession) -> Any:
        await session.set_logging_level("debug")
        started = await session.call_tool("toggle-simulated-logging", {})
        with anyio.fail_after(15):
            await heard.wait()
        stopped = await session.call_tool("toggle-simulated-logging", {})
        return started, stopped

    started, stopped = run_session(
        gateway, everything_agent, workspace, body, everything=True, logging_callback=on_log
    )
    assert not started.is_error and not stopped.is_error, text_of(started)
    assert logged and "message" in str(logged[0].data), logged


def test_mcp_tools_shows_what_the_policies_let_an_agent_do_with_each_tool(
    gateway: Gateway, workspace: Workspace, tmp_path: Path
) -> None:
    reader = gateway.create_agent()
    writer = approvals_agent(gateway, tmp_path)

    def decisions(agent: Agent) -> Dict[str, Dict[str, Any]]:
        shown = json.loads(
            gateway.cli(
                "--json",
                "mcp",
                "tools",
                "fs",
                "--agent",
                agent.name,
                "--config",
                str(workspace.mapping),
                "--",
                str(SERVER),
                str(workspace.root),
            )
        )
        assert shown["server"] == "fs"
        return {tool["tool"]: tool for tool in shown["tools"]}

    for_reader = decisions(reader)
    # Every tool the server offers is shown, as `mcp run` names it.
    assert READ_TOOLS | {"write_file", "edit_file", "move_file"} <= set(for_reader)
    for tool in READ_TOOLS:
        assert for_reader[tool]["decision"] == "allow", for_reader[tool]
    write = for_reader["write_file"]
    assert (write["action"], write["decision"], write["rule"]) == (
        "write:workspace",
        "deny",
        "deny-writes",
    ), write
    assert for_reader["search_files"]["action"] == "mcp:fs/search_files"
    assert for_reader["search_files"]["rule"] == "deny-everything-else"

    for_writer = decisions(writer)
    assert for_writer["write_file"]["decision"] == "require_approval", for_writer["write_file"]
    assert for_writer["read_text_file"]["decision"] == "allow"
    assert for_writer["search_files"]["decision"] == "deny"
    # Asking creates no approval.
    pending = json.loads(gateway.cli("--json", "approval", "list"))["approvals"]
    assert not [a for a in pending if a["action"] == "write:workspace" and a["resource"] == "*"]
