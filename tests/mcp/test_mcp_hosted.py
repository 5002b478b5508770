"""Gateway-hosted MCP servers end to end: ``[mcp.servers.S]`` in the gateway's config, served at
``/mcp/S`` as a streamable-HTTP MCP endpoint. The client is the official Python MCP SDK's
streamable-HTTP transport with the agent's MeshGuard token; the servers are the reference
filesystem and everything servers from npm, which the gateway starts for each session.

The policy and mapping are the ones the stdio proxy's tests use (examples/policies/
mcp-filesystem.yaml and examples/mcp/filesystem.toml, its root pointed at the test's workspace),
written into the gateway's config, so both surfaces are held to the same answers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import anyio
import httpx2
import pytest
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from test_mcp_proxy import (
    APPROVAL_POLICY,
    EVERYTHING,
    EVERYTHING_POLICY,
    EXAMPLE_ROOT,
    MAPPING,
    POLICY,
    READ_TOOLS,
    SERVER,
    Agent,
    Gateway,
    Workspace,
    free_port,
    pending_approval,
    run_session,
    text_of,
)


def toml_string(text: str) -> str:
    return json.dumps(text)


class Hosted:
    """A gateway hosting ``fs`` (the filesystem server on ``root``) and ``everything``."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "ws"
        self.root.mkdir()
        (self.root / "notes.txt").write_text("hello from the workspace\n")
        tools = MAPPING.read_text().replace(EXAMPLE_ROOT, str(self.root))
        tools = tools.replace("[servers.fs.tools]", "[mcp.servers.fs.tools]")
        config = tmp / "gateway.toml"
        config.write_text(
            "[mcp.servers.fs]\n"
            f"command = [{toml_string(str(SERVER))}, {toml_string(str(self.root))}]\n"
            f"cwd = {toml_string(str(self.root))}\n"
            "approval_wait_seconds = 30\n\n"
            "[mcp.servers.crash]\n"
            'command = ["sh", "-c", "read line; exit 3"]\n\n'
            "[mcp.servers.everything]\n"
            f'command = [{toml_string(str(EVERYTHING))}, "stdio"]\n\n' + tools
        )
        self.gateway = Gateway(tmp / "data", ("--config", str(config)))

    def agent(self, tags: str, policy: Optional[str] = None) -> Agent:
        if policy is not None:
            path = self.gateway.data_dir.parent / f"{tags}.yaml"
            path.write_text(policy)
            self.gateway.cli("policy", "apply", str(path))
        name = f"hosted-{tags}"
        created = json.loads(
            self.gateway.cli(
                "agent", "create", name, "--trust", "verified", "--tags", tags, "--json"
            )
        )
        return Agent(name=name, token=str(created["token"]))


@pytest.fixture
def hosted(tmp_path: Path) -> Iterator[Hosted]:
    host = Hosted(tmp_path)
    host.gateway.start()
    try:
        host.gateway.cli("policy", "apply", str(POLICY))
        yield host
    finally:
        host.gateway.stop()


def run_hosted(gateway: Gateway, agent: Agent, server: str, body: Any, **options: Any) -> Any:
    """Runs ``body`` in an MCP session with ``/mcp/<server>`` as ``agent``."""

    async def main() -> Any:
        headers = {"Authorization": f"Bearer {agent.token}"}
        timeout = httpx2.Timeout(30, read=120)
        with anyio.fail_after(60):
            async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http:
                url = f"{gateway.url}/mcp/{server}"
                async with streamable_http_client(url, http_client=http) as (read, write):
                    async with ClientSession(read, write, **options) as session:
                        await session.initialize()
                        return await body(session)

    return anyio.run(main)


def metrics(host: Hosted) -> str:
    with urllib.request.urlopen(f"{host.gateway.url}/metrics", timeout=10) as answer:
        return str(answer.read().decode())


def test_reads_pass_writes_are_denied_and_listing_hides_what_is_closed(hosted: Hosted) -> None:
    agent = hosted.agent("mcp-fs")
    notes = hosted.root / "notes.txt"

    async def body(session: ClientSession) -> Any:
        listed = {tool.name for tool in (await session.list_tools()).tools}
        read = await session.call_tool("read_text_file", {"path": str(notes)})
        write = await session.call_tool("write_file", {"path": str(notes), "content": "x"})
        again = await session.call_tool("read_text_file", {"path": str(notes)})
        return listed, read, write, again

    listed, read, write, again = run_hosted(hosted.gateway, agent, "fs", body)
    assert listed == READ_TOOLS
    assert not read.is_error and text_of(read) == "hello from the workspace\n"
    assert write.is_error
    assert text_of(write).startswith("MeshGuard denied `write_file`: "), text_of(write)
    assert "(policy mcp-filesystem, rule deny-writes)" in text_of(write)
    assert notes.read_text() == "hello from the workspace\n"
    assert text_of(again) == "hello from the workspace\n"
    # Each call's check and record share one trace id, as through the stdio proxy. A record is
    # sent once the server has answered, after the client has its answer: wait for both.
    deadline = time.monotonic() + 10
    while True:
        events = [e for e in hosted.gateway.audit(agent) if e["kind"] in ("check", "record")]
        if sum(e["kind"] == "record" for e in events) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    checks = [e for e in events if e["kind"] == "check"]
    assert [(e["action"], e["decision"]) for e in checks] == [
        ("read:workspace", "allow"),
        ("write:workspace", "deny"),
        ("read:workspace", "allow"),
    ]
    records = [e for e in events if e["kind"] == "record"]
    assert {r["trace_id"] for r in records} == {checks[0]["trace_id"], checks[2]["trace_id"]}
    assert 'meshguard_mcp_calls_total{decision="deny",server="fs",tool="write_file"} 1' in metrics(
        hosted
    )


def test_a_write_that_needs_approval_waits_for_the_human_and_goes_through_once(
    hosted: Hosted,
) -> None:
    agent = hosted.agent("mcp-fs-approvals", APPROVAL_POLICY)
    target = hosted.root / "notes.txt"
    arguments = {"path": str(target), "content": "approved change\n"}
    progress: List[Tuple[float, Optional[float], Optional[str]]] = []

    async def on_progress(done: float, total: Optional[float], message: Optional[str]) -> None:
        progress.append((done, total, message))

    async def body(session: ClientSession) -> Any:
        results: List[Any] = []

        async def call() -> None:
            results.append(
                await session.call_tool("write_file", arguments, progress_callback=on_progress)
            )

        async with anyio.create_task_group() as group:
            group.start_soon(call)
            approval = await pending_approval(hosted.gateway, arguments)
            untouched = target.read_text()
            await anyio.to_thread.run_sync(
                hosted.gateway.cli, "approval", "approve", approval["id"]
            )
        return approval, untouched, results[0]

    approval, untouched, written = run_hosted(hosted.gateway, agent, "fs", body)
    assert untouched == "hello from the workspace\n"
    assert not written.is_error, text_of(written)
    assert target.read_text() == "approved change\n"
    assert progress and approval["id"] in (progress[0][2] or ""), progress


def test_a_revoke_ends_the_session_and_nothing_more_reaches_the_server(hosted: Hosted) -> None:
    agent = hosted.agent("mcp-fs")
    notes = str(hosted.root / "notes.txt")

    async def body(session: ClientSession) -> Any:
        first = await session.call_tool("read_text_file", {"path": notes})
        await anyio.to_thread.run_sync(hosted.gateway.cli, "agent", "revoke", agent.name)
        try:
            with anyio.fail_after(20):
                second: Any = await session.call_tool("read_text_file", {"path": notes})
        except Exception as refused:  # noqa: BLE001 - any failure is the refusal we expect
            second = refused
        return first, second

    first, second = run_hosted(hosted.gateway, agent, "fs", body)
    assert text_of(first) == "hello from the workspace\n"
    assert not hasattr(second, "content") or second.is_error, second
    assert "hello" not in str(getattr(second, "content", second))
    # No check of the agent's after the revoke was allowed.
    checks = [e for e in hosted.gateway.audit(agent) if e["kind"] == "check"]
    assert [e["decision"] for e in checks if e["decision"] == "allow"] == ["allow"], checks


def test_a_request_without_the_agent_s_token_or_session_is_refused(hosted: Hosted) -> None:
    agent = hosted.agent("mcp-fs")
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"},
        },
    }

    def post(body: Any, headers: Optional[dict[str, str]] = None) -> Tuple[int, str]:
        request = urllib.request.Request(
            f"{hosted.gateway.url}/mcp/fs",
            data=json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream",
                **(headers or {}),
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as refused:
            return refused.code, refused.read().decode()

    bearer = {"Authorization": f"Bearer {agent.token}"}
    assert post(initialize)[0] == 401
    status, text = post({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, bearer)
    assert status == 400 and "initialize" in text, text
    status, text = post(initialize, {**bearer, "Mcp-Session-Id": "nope"})
    assert status == 404, text
    status, text = post([initialize], bearer)
    assert status == 400 and "batch" in text, text
    broken = urllib.request.Request(
        f"{hosted.gateway.url}/mcp/fs",
        data=b'{"jsonrpc": "2.0", "id": 1, "method": ',
        headers={"Content-Type": "application/json", **bearer},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as malformed:
        urllib.request.urlopen(broken, timeout=10)
    assert malformed.value.code == 400
    assert "not JSON" in malformed.value.read().decode()
    status, text = post(initialize, {"Authorization": f"Bearer {agent.token}"})
    assert status == 200, text
    unknown = urllib.request.Request(
        f"{hosted.gateway.url}/mcp/nowhere",
        data=json.dumps(initialize).encode(),
        headers={"Content-Type": "application/json", **bearer},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(unknown, timeout=10)
    assert missing.value.code == 404


def test_the_everything_servers_progress_sampling_and_logs_round_trip(hosted: Hosted) -> None:
    agent = hosted.agent("mcp-everything", EVERYTHING_POLICY)
    progress: List[Tuple[float, Optional[float]]] = []
    asked: List[str] = []
    logged: List[Any] = []
    heard = anyio.Event()

    async def on_progress(done: float, total: Optional[float], message: Optional[str]) -> None:
        progress.append((done, total))

    async def sample(context: Any, params: types.CreateMessageRequestParams) -> Any:
        asked.append("".join(getattr(m.content, "text", "") for m in params.messages))
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="sampled by the test client"),
            model="test-model",
        )

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logged.append(params)
        heard.set()

    async def body(session: ClientSession) -> Any:
        long = await session.call_tool(
            "trigger-long-running-operation",
            {"duration": 1, "steps": 3},
            progress_callback=on_progress,
        )
        sampled = await session.call_tool("trigger-sampling-request", {"prompt": "say hello"})
        await session.set_logging_level("debug")
        await session.call_tool("toggle-simulated-logging", {})
        with anyio.fail_after(15):
            await heard.wait()
        await session.call_tool("toggle-simulated-logging", {})
        return long, sampled

    long, sampled = run_hosted(
        hosted.gateway, agent, "everything", body, sampling_callback=sample, logging_callback=on_log
    )
    assert not long.is_error, text_of(long)
    assert progress == [(1, 3), (2, 3), (3, 3)], progress
    assert not sampled.is_error, text_of(sampled)
    assert len(asked) == 1 and "say hello" in asked[0], asked
    assert "sampled by the test client" in text_of(sampled)
    assert logged, "no log notification reached the client"


def test_a_stopped_gateway_fails_closed(hosted: Hosted) -> None:
    agent = hosted.agent("mcp-fs")
    notes = str(hosted.root / "notes.txt")
    seen: List[Any] = []

    async def body(session: ClientSession) -> Any:
        seen.append(await session.call_tool("read_text_file", {"path": notes}))
        await anyio.to_thread.run_sync(hosted.gateway.stop)
        with anyio.fail_after(20):
            seen.append(await session.call_tool("read_text_file", {"path": notes}))

    # The session cannot go on without its gateway: the client's transport fails (or the call
    # is refused); either way the file's text never comes back.
    try:
        run_hosted(hosted.gateway, agent, "fs", body)
    except BaseException as failed:  # noqa: BLE001 - the transport's failure is the expected end
        assert "hello" not in str(failed)
    assert text_of(seen[0]) == "hello from the workspace\n"
    assert all(result.is_error for result in seen[1:]), seen


def test_a_server_that_exits_answers_the_waiting_request_and_its_session_is_gone(
    hosted: Hosted,
) -> None:
    agent = hosted.agent("mcp-fs")

    async def body(session: ClientSession) -> Any:
        return None

    # The server reads the initialize request and exits: the client is told, it does not hang.
    with pytest.raises(BaseException) as ended:
        run_hosted(hosted.gateway, agent, "crash", body)
    assert "ended" in str(ended.value) or "ended" in repr(ended.value.__context__), ended.value


REMOTE_POLICY = """
name: mcp-remote
version: "1"
appliesTo:
  tags: [mcp-remote]
rules:
  - name: echo-only
    effect: allow
    actions: ["mcp:remote/echo", "mcp:remote/trigger-*"]
defaultEffect: deny
"""


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[Tuple[Gateway, Agent]]:
    """A gateway hosting ``remote``: the everything server in its streamable-HTTP mode, reached by
    URL with an injected header."""
    port = free_port()
    server = subprocess.Popen(
        [str(EVERYTHING), "streamableHttp"],
        env={**os.environ, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the everything server did not listen"
                time.sleep(0.1)
        config = tmp_path / "gateway.toml"
        config.write_text(
            "[mcp.servers.remote]\n"
            f'url = "http://127.0.0.1:{port}/mcp"\n'
            'headers = { "X-Upstream-Key" = "${UPSTREAM_KEY}" }\n'
        )
        os.environ["UPSTREAM_KEY"] = "upstream-secret"
        gateway = Gateway(tmp_path / "data", ("--config", str(config)))
        gateway.start()
        try:
            policy = tmp_path / "remote.yaml"
            policy.write_text(REMOTE_POLICY)
            gateway.cli("policy", "apply", str(policy))
            created = json.loads(
                gateway.cli(
                    "agent",
                    "create",
                    "remote",
                    "--trust",
                    "verified",
                    "--tags",
                    "mcp-remote",
                    "--json",
                )
            )
            yield gateway, Agent(name="remote", token=str(created["token"]))
        finally:
            gateway.stop()
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_streamable_http_upstream_is_governed_like_a_local_server(
    remote: Tuple[Gateway, Agent],
) -> None:
    gateway, agent = remote
    progress: List[Tuple[float, Optional[float]]] = []

    async def on_progress(done: float, total: Optional[float], message: Optional[str]) -> None:
        progress.append((done, total))

    async def body(session: ClientSession) -> Any:
        listed = {tool.name for tool in (await session.list_tools()).tools}
        echoed = await session.call_tool("echo", {"message": "through the gateway"})
        refused = await session.call_tool("get-sum", {"a": 1, "b": 2})
        long = await session.call_tool(
            "trigger-long-running-operation",
            {"duration": 1, "steps": 2},
            progress_callback=on_progress,
        )
        return listed, echoed, refused, long

    listed, echoed, refused, long = run_hosted(gateway, agent, "remote", body)
    assert "echo" in listed and "get-sum" not in listed, listed
    assert not echoed.is_error and "through the gateway" in text_of(echoed)
    assert refused.is_error and "rule" in text_of(refused), text_of(refused)
    assert not long.is_error, text_of(long)
    assert progress == [(1, 2), (2, 2)], progress


LIMITED_POLICY = """
name: mcp-limited
version: "1"
appliesTo:
  tags: [mcp-limited]
rules:
  - name: three-echoes-a-minute
    effect: allow
    actions: ["mcp:everything/echo"]
    conditions:
      rateLimit: {requestsPerMinute: 3}
defaultEffect: deny
"""


@pytest.mark.parametrize("surface", ["stdio", "hosted"])
def test_a_rate_limit_of_n_calls_a_minute_admits_exactly_n_and_the_trail_verifies(
    hosted: Hosted, surface: str
) -> None:
    agent = hosted.agent("mcp-limited", LIMITED_POLICY)

    async def body(session: ClientSession) -> Any:
        return [await session.call_tool("echo", {"message": f"m{i}"}) for i in range(5)]

    if surface == "hosted":
        results = run_hosted(hosted.gateway, agent, "everything", body)
    else:
        workspace = Workspace(root=hosted.root, mapping=MAPPING)
        results = run_session(hosted.gateway, agent, workspace, body, everything=True)
    assert [result.is_error for result in results] == [False, False, False, True, True]
    assert "rate limit" in text_of(results[3]), text_of(results[3])
    verified = hosted.gateway.cli("audit", "verify")
    assert "ok" in verified.lower() or "verified" in verified.lower(), verified
