"""The real OpenAI Agents SDK (Runner, function tools, MCP servers) against the real gateway.

The model is scripted (scripted_responses.py); tools count their runs in ``ran``; what the model
was told is read from the inputs it was shown; humans answer through the real CLI.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest
from agents import Agent, FunctionTool, HostedMCPTool, Runner, RunResult, WebSearchTool
from agents.mcp import MCPServerStdio
from agents.tool import function_tool
from scripted_responses import ScriptedModel, call, hosted, say
from trace_recorder import TraceRecorder

from gateway_process import AgentIdentity, Gateway, event_field
from meshguard import (
    AuthenticationError,
    GatewayUnavailableError,
    MeshGuardClient,
    MeshGuardError,
)
from meshguard.integrations import ToolCallGovernor, ToolNaming
from meshguard.integrations.openai_agents import AgentGuard, ToolCallCheckFailed

POLICY = Path(__file__).parent / "policies" / "openai-agents-tests.yaml"
FILES_SERVER = Path(__file__).parent / "mcp_files_server.py"

Ran = List[Tuple[str, Any]]

DELETE_DENIED = (
    "MeshGuard denied `tool:delete_file` (denied_by_rule): Action 'tool:delete_file' denied by "
    "rule 'no-deletes' of policy 'openai-agents-tests': files are never deleted by agents"
)


def tools_that_count(ran: Ran) -> List[FunctionTool]:
    """search, delete_file, send_email, read_file and fetch_page; each run goes to ``ran``."""

    @function_tool
    def search(query: str) -> str:
        """Searches the web."""
        ran.append(("search", query))
        return f"results for {query}"

    @function_tool
    def delete_file(path: str) -> str:
        """Deletes a file."""
        ran.append(("delete_file", path))
        return f"deleted {path}"

    @function_tool
    def send_email(to: str, body: str) -> str:
        """Sends an email."""
        ran.append(("send_email", to))
        return f"sent to {to}"

    @function_tool
    def read_file(path: str) -> str:
        """Reads a file of the workspace."""
        ran.append(("read_file", path))
        return f"contents of {path}"

    @function_tool
    def fetch_page(url: str) -> str:
        """Fetches a web page."""
        ran.append(("fetch_page", url))
        raise RuntimeError("the site is down")

    return [search, delete_file, send_email, read_file, fetch_page]


def assistant(guard: AgentGuard, model: ScriptedModel, ran: Ran) -> Agent[Any]:
    return guard.govern(Agent(name="assistant", model=model, tools=tools_that_count(ran)))


def trail(gateway: Gateway, trace: str) -> List[Tuple[str, str, str]]:
    """The trace's events in order: (kind, action, code of a check or status of a record)."""
    return [
        (
            event_field(event, "kind"),
            event_field(event, "action"),
            event_field(event, "code") or event_field(event, "status"),
        )
        for event in events(gateway, trace)
    ]


def events(gateway: Gateway, trace: str) -> List[Dict[str, Any]]:
    return sorted(gateway.audit(traceId=trace), key=lambda event: int(event_field(event, "seq")))


def paused_on(guard: AgentGuard, result: RunResult) -> str:
    """The one MeshGuard approval the run waits for."""
    [request] = guard.approvals(result.interruptions)
    return request.approval_id


def test_an_allowed_call_runs_once_and_is_recorded_under_the_runs_trace(
    shared_gateway: Gateway, guard: AgentGuard, traces: TraceRecorder
) -> None:
    ran: Ran = []
    model = ScriptedModel([call("search", query="agents sdk")], [say("found it")])

    result = Runner.run_sync(assistant(guard, model, ran), "search the agents sdk")

    assert ran == [("search", "agents sdk")]
    assert list(model.told().values()) == ["results for agents sdk"]
    assert result.final_output == "found it"
    trace = traces.only()  # the SDK's own trace id
    assert trace.startswith("trace_")
    assert trail(shared_gateway, trace) == [
        ("check", "tool:search", "allowed"),
        ("record", "tool:search", "success"),
    ]
    check, record = events(shared_gateway, trace)
    assert check["context"] == {"tool": "search", "arguments": {"query": "agents sdk"}}
    assert record["context"]["check_audit_id"] == check["id"]
    assert record["result"] == "results for agents sdk"


def test_a_tool_that_fails_is_recorded_as_an_error_and_the_model_reads_the_sdks_message(
    shared_gateway: Gateway, guard: AgentGuard, traces: TraceRecorder
) -> None:
    ran: Ran = []
    model = ScriptedModel([call("fetch_page", url="https://example.com")], [say("it is down")])

    Runner.run_sync(assistant(guard, model, ran), "fetch it")

    assert ran == [("fetch_page", "https://example.com")]
    [told] = model.told().values()
    assert told.startswith("An error occurred while running the tool")
    assert trail(shared_gateway, traces.only()) == [
        ("check", "tool:fetch_page", "allowed"),
        ("record", "tool:fetch_page", "error"),
    ]


def test_a_denied_call_never_runs_and_the_model_is_told_why(
    shared_gateway: Gateway, guard: AgentGuard, traces: TraceRecorder
) -> None:
    ran: Ran = []
    model = ScriptedModel([call("delete_file", path="notes.txt")], [say("I may not.")])

    result = Runner.run_sync(assistant(guard, model, ran), "delete notes.txt")

    assert ran == []
    assert list(model.told().values()) == [DELETE_DENIED]
    assert result.final_output == "I may not."
    assert trail(shared_gateway, traces.only()) == [("check", "tool:delete_file", "denied_by_rule")]


def test_a_call_that_needs_approval_pauses_the_run_until_a_human_approves(
    shared_gateway: Gateway, guard: AgentGuard, traces: TraceRecorder
) -> None:
    ran: Ran = []
    email = {"to": "ops@example.com", "body": "the deploy is done"}
    model = ScriptedModel([call("send_email", **email)], [say("sent")])
    agent = assistant(guard, model, ran)

    paused = Runner.run_sync(agent, "tell ops")

    [request] = guard.approvals(paused.interruptions)
    assert (request.tool, request.action, request.resource) == (
        "send_email",
        "tool:send_email",
        "*",
    )
    assert request.arguments == email
    assert request.approve == f"meshguard approval approve {request.approval_id}"
    assert request.item is paused.interruptions[0]
    assert ran == []
    assert len(model.seen) == 1  # the model waits too

    # Resumed before anyone decided: nothing runs, the run pauses again on the same call.
    state = paused.to_state()
    assert [a.status for a in guard.apply_approvals(state)] == ["pending"]
    early = Runner.run_sync(agent, state)
    assert paused_on(guard, early) == request.approval_id
    assert ran == []

    shared_gateway.cli("approval", "approve", request.approval_id)
    state = early.to_state()
    assert [a.status for a in guard.apply_approvals(state)] == ["approved"]
    done = Runner.run_sync(agent, state)

    assert done.interruptions == []
    assert ran == [("send_email", "ops@example.com")]
    assert list(model.told().values()) == ["sent to ops@example.com"]
    assert done.final_output == "sent"
    assert trail(shared_gateway, traces.only()) == [
        ("check", "tool:send_email", "approval_required"),
        ("approval", "tool:send_email", "approval_approved"),
        ("check", "tool:send_email", "allowed_with_approval"),
        ("record", "tool:send_email", "success"),
    ]


def test_a_human_who_says_no_is_heard_by_the_model_and_nothing_runs(
    shared_gateway: Gateway, guard: AgentGuard, traces: TraceRecorder
) -> None:
    ran: Ran = []
    model = ScriptedModel([call("send_email", to="all@example.com", body="hi")], [say("ok")])
    agent = assistant(guard, model, ran)
    paused = Runner.run_sync(agent, "tell everyone")

    shared_gateway.cli("approval", "deny", paused_on(guard, paused), "--reason", "not to all")
    state = paused.to_state()
    assert [a.status for a in guard.apply_approvals(state)] == ["denied"]
    Runner.run_sync(agent, state)

    assert ran == []
    [told] = model.told().values()
    assert told.startswith("MeshGuard denied `tool:send_email` (approval_denied): ")
    assert trail(shared_gateway, traces.only())[-1] == (
        "check",
        "tool:send_email",
        "approval_denied",
    )


def test_approving_in_the_sdk_alone_never_runs_the_tool(
    shared_gateway: Gateway, guard: AgentGuard, traces: TraceRecorder
) -> None:
    """Only the gateway approves: the SDK's own approve hands the call to it, nothing more."""
    ran: Ran = []
    model = ScriptedModel([call("send_email", to="ops@example.com", body="x")], [say("later")])
    agent = assistant(guard, model, ran)
    paused = Runner.run_sync(agent, "tell ops")
    approval_id = paused_on(guard, paused)

    state = paused.to_state()
    state.approve(paused.interruptions[0])
    Runner.run_sync(agent, state)

    assert ran == []
    assert list(model.told().values()) == [
        f"MeshGuard: `tool:send_email` needs a human's approval (approval {approval_id}): "
        f"Action 'tool:send_email' requires human approval: approval '{approval_id}' is pending"
    ]
    assert trail(shared_gateway, traces.only()) == [
        ("check", "tool:send_email", "approval_required"),
        ("check", "tool:send_email", "approval_pending"),
    ]


def test_an_expired_approval_is_told_to_the_model_with_the_new_one(
    shared_gateway: Gateway, wait_until: Callable[..., Any]
) -> None:
    shared_gateway.apply_policy(POLICY.with_name("openai-agents-expiry.yaml"))
    identity = shared_gateway.create_agent(prefix="agents-sdk", tags="openai-agents-expiry")
    client = MeshGuardClient(gateway_url=shared_gateway.url, agent_token=identity.token)
    guard = AgentGuard(ToolCallGovernor(client))
    ran: Ran = []
    model = ScriptedModel([call("send_email", to="ops@example.com", body="x")], [say("later")])
    agent = assistant(guard, model, ran)
    paused = Runner.run_sync(agent, "tell ops")
    expired = paused_on(guard, paused)
    state = paused.to_state()

    assert wait_until(lambda: client.get_approval(expired).status == "expired", timeout=10)
    assert [a.status for a in guard.apply_approvals(state)] == ["expired"]
    Runner.run_sync(agent, state)

    assert ran == []
    [told] = model.told().values()
    assert told.startswith("MeshGuard: `tool:send_email` needs a human's approval (approval apr_")
    assert expired not in told


def test_a_tools_own_approval_stays_the_applications(
    shared_gateway: Gateway, guard: AgentGuard, traces: TraceRecorder
) -> None:
    """A tool that needs the application's approval is paused by the SDK, not by MeshGuard."""
    ran: Ran = []

    @function_tool(needs_approval=True)
    def search(query: str) -> str:
        """Searches the web."""
        ran.append(("search", query))
        return f"results for {query}"

    model = ScriptedModel([call("search", query="own approval")], [say("found")])
    agent = guard.govern(Agent(name="assistant", model=model, tools=[search]))

    paused = Runner.run_sync(agent, "search")
    assert len(paused.interruptions) == 1
    assert guard.approvals(paused.interruptions) == []
    state = paused.to_state()
    state.approve(paused.interruptions[0])
    Runner.run_sync(agent, state)

    assert ran == [("search", "own approval")]
    # Allowed before the pause, and asked again as the call runs.
    assert trail(shared_gateway, traces.only()) == [
        ("check", "tool:search", "allowed"),
        ("check", "tool:search", "allowed"),
        ("record", "tool:search", "success"),
    ]


def test_parallel_calls_each_run_exactly_once(
    shared_gateway: Gateway, guard: AgentGuard, traces: TraceRecorder
) -> None:
    ran: Ran = []
    search, delete, email = (
        call("search", query="parallel"),
        call("delete_file", path="notes.txt"),
        call("send_email", to="ops@example.com", body="x"),
    )
    model = ScriptedModel([search, delete, email], [say("done")])
    agent = assistant(guard, model, ran)

    paused = Runner.run_sync(agent, "all three")
    assert ran == [("search", "parallel")]
    shared_gateway.cli("approval", "approve", paused_on(guard, paused))
    state = paused.to_state()
    guard.apply_approvals(state)
    Runner.run_sync(agent, state)

    assert ran == [("search", "parallel"), ("send_email", "ops@example.com")]
    assert model.told() == {
        search.call_id: "results for parallel",
        delete.call_id: DELETE_DENIED,
        email.call_id: "sent to ops@example.com",
    }
    records = [e for e in trail(shared_gateway, traces.only()) if e[0] == "record"]
    assert records == [
        ("record", "tool:search", "success"),
        ("record", "tool:send_email", "success"),
    ]


def test_a_revoked_agent_fails_closed_and_the_run_stops(
    shared_gateway: Gateway, tools_agent: AgentIdentity, guard: AgentGuard
) -> None:
    ran: Ran = []
    model = ScriptedModel([call("search", query="x")], [say("never")])
    shared_gateway.revoke(tools_agent)

    with pytest.raises(ToolCallCheckFailed) as stopped:
        Runner.run_sync(assistant(guard, model, ran), "search")

    assert isinstance(stopped.value.error, AuthenticationError)
    assert isinstance(stopped.value, MeshGuardError)
    assert str(stopped.value).startswith("MeshGuard could not check `tool:search`")
    assert ran == []
    assert len(model.seen) == 1


def test_an_agent_revoked_while_paused_never_runs_its_approved_call(
    shared_gateway: Gateway, tools_agent: AgentIdentity, guard: AgentGuard
) -> None:
    ran: Ran = []
    model = ScriptedModel([call("send_email", to="ops@example.com", body="x")], [say("never")])
    agent = assistant(guard, model, ran)
    paused = Runner.run_sync(agent, "tell ops")
    shared_gateway.cli("approval", "approve", paused_on(guard, paused))
    state = paused.to_state()
    guard.apply_approvals(state)

    shared_gateway.revoke(tools_agent)

    with pytest.raises(ToolCallCheckFailed) as stopped:
        Runner.run_sync(agent, state)
    assert isinstance(stopped.value.error, AuthenticationError)
    assert ran == []


def test_an_unreachable_gateway_fails_closed(private_gateway: Gateway) -> None:
    private_gateway.apply_policy(POLICY)
    identity = private_gateway.create_agent(prefix="agents-sdk", tags="openai-agents-tests")
    client = MeshGuardClient(gateway_url=private_gateway.url, agent_token=identity.token)
    guard = AgentGuard(ToolCallGovernor(client))
    ran: Ran = []
    model = ScriptedModel([call("search", query="x")], [say("never")])

    private_gateway.stop()

    with pytest.raises(ToolCallCheckFailed) as stopped:
        Runner.run_sync(assistant(guard, model, ran), "search")
    assert isinstance(stopped.value.error, GatewayUnavailableError)
    assert ran == []


def test_naming_maps_tools_to_the_policys_actions(
    shared_gateway: Gateway, client: MeshGuardClient, traces: TraceRecorder
) -> None:
    ran: Ran = []
    inside, outside = call("read_file", path="notes.txt"), call("read_file", path="/etc/passwd")
    model = ScriptedModel([inside, outside], [say("read what I may")])
    guard = AgentGuard(
        ToolCallGovernor(client, ToolNaming(actions={"read_file": "read:workspace"}))
    )

    Runner.run_sync(assistant(guard, model, ran), "read two files")

    assert ran == [("read_file", "notes.txt")]
    told = model.told()
    assert told[inside.call_id] == "contents of notes.txt"
    assert told[outside.call_id].startswith("MeshGuard denied `read:workspace` (default_deny): ")
    checks = shared_gateway.audit(traceId=traces.only(), kind="check")
    assert sorted(
        (event_field(e, "action"), event_field(e, "resource"), event_field(e, "code"))
        for e in checks
    ) == [
        ("read:workspace", "/etc/passwd", "default_deny"),
        ("read:workspace", "notes.txt", "allowed"),
    ]


def test_the_agents_it_hands_off_to_are_governed_too(
    shared_gateway: Gateway, guard: AgentGuard, traces: TraceRecorder
) -> None:
    ran: Ran = []
    model = ScriptedModel(
        [call("transfer_to_files")], [call("delete_file", path="notes.txt")], [say("no")]
    )
    files = Agent(name="files", model=model, tools=tools_that_count(ran))
    triage = guard.govern(Agent(name="triage", model=model, handoffs=[files]))

    result = Runner.run_sync(triage, "delete notes.txt")

    assert result.last_agent.name == "files"
    assert ran == []
    assert DELETE_DENIED in model.told().values()
    assert trail(shared_gateway, traces.only()) == [("check", "tool:delete_file", "denied_by_rule")]


def test_tools_meshguard_cannot_check_are_refused_unless_allowed(guard: AgentGuard) -> None:
    search = WebSearchTool()
    agent = Agent(name="researcher", tools=[search])

    with pytest.raises(TypeError, match="cannot check tool `web_search`"):
        guard.govern(agent)
    assert guard.govern(agent, allow_ungoverned=True).tools == [search]


def test_local_mcp_server_tools_are_checked_as_the_mcp_proxy_names_them(
    shared_gateway: Gateway, guard: AgentGuard, traces: TraceRecorder, tmp_path: Path
) -> None:
    log = tmp_path / "files-server.log"
    log.touch()
    read, delete = call("read_file", path="notes.txt"), call("delete_file", path="notes.txt")
    model = ScriptedModel([read, delete], [say("read it, kept it")])

    async def run() -> None:
        async with MCPServerStdio(
            name="files",
            params={
                "command": sys.executable,
                "args": [str(FILES_SERVER)],
                "env": {**os.environ, "FILES_SERVER_LOG": str(log)},
            },
        ) as server:
            agent = Agent(name="clerk", model=model, mcp_servers=[server])
            await Runner.run(guard.govern(agent), "read notes.txt, then delete it")

    asyncio.run(run())

    assert log.read_text().splitlines() == ["read_file notes.txt"]
    told = model.told()
    assert told[read.call_id] == [{"type": "input_text", "text": "contents of notes.txt"}]
    assert told[delete.call_id] == (
        "MeshGuard denied `mcp:files/delete_file` (denied_by_rule): Action "
        "'mcp:files/delete_file' denied by rule 'no-deletes' of policy 'openai-agents-tests': "
        "files are never deleted by agents"
    )
    trace = traces.only()
    # The two calls are checked side by side: their events interleave.
    assert sorted(trail(shared_gateway, trace)) == [
        ("check", "mcp:files/delete_file", "denied_by_rule"),
        ("check", "mcp:files/read_file", "allowed"),
        ("record", "mcp:files/read_file", "success"),
    ]
    by_kind = {(e["kind"], e["action"]): e for e in events(shared_gateway, trace)}
    check = by_kind[("check", "mcp:files/read_file")]
    assert check["resource"] == "notes.txt"
    assert check["context"] == {
        "server": "files",
        "tool": "read_file",
        "arguments": {"path": "notes.txt"},
    }
    assert by_kind[("record", "mcp:files/read_file")]["result"] == "contents of notes.txt"


def test_hosted_mcp_calls_are_checked_before_openai_makes_them(
    shared_gateway: Gateway,
    tools_agent: AgentIdentity,
    guard: AgentGuard,
    traces: TraceRecorder,
    wait_until: Callable[..., Any],
) -> None:
    search = hosted("docs", "search_docs", '{"query": "refunds"}')
    delete = hosted("docs", "delete_page", '{"path": "refunds.md"}')
    publish = hosted("docs", "publish_page", '{"path": "refunds.md"}')
    model = ScriptedModel([search, delete, publish], [say("searched and published")])
    docs = HostedMCPTool(
        tool_config={
            "type": "mcp",
            "server_label": "docs",
            "server_url": "https://docs.example.com/mcp",
            "require_approval": "never",
        }
    )
    agent = guard.govern(Agent(name="writer", model=model, tools=[docs]))
    # OpenAI asks before every call of the server, whatever the tool said.
    [governed_docs] = agent.tools
    assert isinstance(governed_docs, HostedMCPTool)
    assert governed_docs.tool_config["require_approval"] == "always"
    admin = MeshGuardClient(gateway_url=shared_gateway.url, admin_token=shared_gateway.admin_token)

    def approve_the_publication() -> None:
        def asked() -> List[Dict[str, Any]]:
            return [
                approval
                for approval in admin.list_approvals(status="pending")
                if approval["agentId"] == tools_agent.id
            ]

        for approval in wait_until(asked) or []:
            shared_gateway.cli("approval", "approve", str(approval["id"]))

    human = threading.Thread(target=approve_the_publication)
    human.start()
    Runner.run_sync(agent, "tidy the refund docs")
    human.join(timeout=30)

    answers = model.hosted_answers()
    assert answers[search.id]["approve"] is True
    assert answers[delete.id]["approve"] is False
    assert answers[delete.id]["reason"].startswith(
        "MeshGuard denied `mcp:docs/delete_page` (denied_by_rule): "
    )
    assert answers[publish.id]["approve"] is True
    assert sorted(trail(shared_gateway, traces.only())) == sorted(
        [
            ("check", "mcp:docs/search_docs", "allowed"),
            ("check", "mcp:docs/delete_page", "denied_by_rule"),
            ("check", "mcp:docs/publish_page", "approval_required"),
            ("approval", "mcp:docs/publish_page", "approval_approved"),
            ("check", "mcp:docs/publish_page", "allowed_with_approval"),
        ]
    )
