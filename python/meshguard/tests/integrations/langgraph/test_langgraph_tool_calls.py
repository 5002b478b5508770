"""The real LangGraph (a prebuilt ReAct agent and ToolNode) against the real gateway.

The model is scripted (scripted_model.py); tools count their runs in ``ran``; what the model
was told is read from the conversations it was shown; humans answer through the real CLI.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode, create_react_agent
from langgraph.types import Command
from scripted_model import ScriptedChatModel, script

from gateway_process import AgentIdentity, Gateway, event_field
from meshguard import (
    AuthenticationError,
    GatewayUnavailableError,
    MeshGuardClient,
    PolicyDeniedError,
)
from meshguard.integrations import ToolCallGovernor, ToolNaming
from meshguard.integrations.langgraph import (
    GovernedToolNode,
    ToolCallGuard,
    resume_approvals,
    trace_id_from_config,
)
from meshguard.langchain import GovernedTool

pytestmark = pytest.mark.filterwarnings("ignore:create_react_agent has been moved")

POLICY = Path(__file__).parent / "policies" / "langgraph-tests.yaml"

Ran = List[Tuple[str, Any]]


def tools_that_count(ran: Ran) -> List[BaseTool]:
    """search, delete_file, send_email and read_file; each run is appended to ``ran``."""

    @tool
    def search(query: str) -> str:
        """Searches the web."""
        ran.append(("search", query))
        if query == "boom":
            raise RuntimeError("the search engine is down")
        return f"results for {query}"

    @tool
    def delete_file(path: str) -> str:
        """Deletes a file."""
        ran.append(("delete_file", path))
        return f"deleted {path}"

    @tool
    def send_email(to: str, body: str) -> str:
        """Sends an email."""
        ran.append(("send_email", to))
        return f"sent to {to}"

    @tool
    def read_file(path: str) -> str:
        """Reads a file of the workspace."""
        ran.append(("read_file", path))
        return f"contents of {path}"

    return [search, delete_file, send_email, read_file]


def react_agent(
    model: ScriptedChatModel,
    client: MeshGuardClient,
    ran: Ran,
    trace_id: Optional[Callable[[RunnableConfig], Optional[str]]] = None,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    node = GovernedToolNode(
        tools_that_count(ran),
        ToolCallGovernor(client),
        trace_id=trace_id or trace_id_from_config,
    )
    return create_react_agent(model, node, checkpointer=InMemorySaver())


def run_config(trace: str) -> RunnableConfig:
    return {"configurable": {"thread_id": trace, "meshguard_trace_id": trace}}


def ask(text: str) -> Dict[str, Any]:
    return {"messages": [("user", text)]}


def trail(gateway: Gateway, trace: str) -> List[Tuple[str, str, str]]:
    """The trace's events in order: (kind, action, code of a check or status of a record)."""
    events = sorted(gateway.audit(traceId=trace), key=lambda event: int(event_field(event, "seq")))
    return [
        (
            event_field(event, "kind"),
            event_field(event, "action"),
            event_field(event, "code") or event_field(event, "status"),
        )
        for event in events
    ]


def test_an_allowed_call_runs_once_and_is_recorded_under_the_runs_trace(
    shared_gateway: Gateway, graph_client: MeshGuardClient
) -> None:
    ran: Ran = []
    model = script([{"name": "search", "args": {"query": "langgraph"}}], "found it")
    agent = react_agent(model, graph_client, ran)
    trace = f"graph-{uuid.uuid4()}"

    result = agent.invoke(ask("search langgraph"), run_config(trace))

    assert ran == [("search", "langgraph")]
    assert [told.content for told in model.tool_results()] == ["results for langgraph"]
    assert result["messages"][-1].content == "found it"
    assert trail(shared_gateway, trace) == [
        ("check", "tool:search", "allowed"),
        ("record", "tool:search", "success"),
    ]
    check, record = sorted(
        shared_gateway.audit(traceId=trace), key=lambda event: int(event_field(event, "seq"))
    )
    assert check["context"] == {"tool": "search", "arguments": {"query": "langgraph"}}
    assert record["context"]["check_audit_id"] == check["id"]
    assert record["result"] == "results for langgraph"


def test_a_tool_that_fails_is_recorded_as_an_error_and_the_run_raises(
    shared_gateway: Gateway, graph_client: MeshGuardClient
) -> None:
    ran: Ran = []
    agent = react_agent(script([{"name": "search", "args": {"query": "boom"}}]), graph_client, ran)
    trace = f"graph-{uuid.uuid4()}"

    with pytest.raises(RuntimeError, match="the search engine is down"):
        agent.invoke(ask("search boom"), run_config(trace))

    assert ran == [("search", "boom")]
    assert trail(shared_gateway, trace) == [
        ("check", "tool:search", "allowed"),
        ("record", "tool:search", "error"),
    ]


def test_a_denied_call_never_runs_and_the_model_is_told_why(
    shared_gateway: Gateway, graph_client: MeshGuardClient
) -> None:
    ran: Ran = []
    model = script([{"name": "delete_file", "args": {"path": "notes.txt"}}], "I may not.")
    agent = react_agent(model, graph_client, ran)
    trace = f"graph-{uuid.uuid4()}"

    result = agent.invoke(ask("delete notes.txt"), run_config(trace))

    assert ran == []
    [told] = model.tool_results()
    assert told.content == (
        "MeshGuard denied `tool:delete_file` (denied_by_rule): Action 'tool:delete_file' "
        "denied by rule 'no-deletes' of policy 'langgraph-tests': files are never deleted by agents"
    )
    assert told.status == "error"
    assert told.artifact["meshguard"]["rule"] == "no-deletes"
    assert result["messages"][-1].content == "I may not."
    assert trail(shared_gateway, trace) == [("check", "tool:delete_file", "denied_by_rule")]


def test_a_call_that_needs_approval_pauses_the_graph_until_a_human_approves(
    shared_gateway: Gateway, graph_client: MeshGuardClient
) -> None:
    ran: Ran = []
    email = {"to": "ops@example.com", "body": "the deploy is done"}
    model = script([{"name": "send_email", "args": email}], "sent")
    # The thread is the trace here: checks across pauses and resumes share it.
    agent = react_agent(
        model, graph_client, ran, trace_id=lambda config: config["configurable"]["thread_id"]
    )
    thread = f"graph-{uuid.uuid4()}"
    config: RunnableConfig = {"configurable": {"thread_id": thread}}

    paused = agent.invoke(ask("tell ops"), config)

    [waiting] = paused["__interrupt__"]
    approval_id = waiting.value["approval_id"]
    assert waiting.value["kind"] == "meshguard_approval"
    assert waiting.value["action"] == "tool:send_email"
    assert waiting.value["arguments"] == email
    assert waiting.value["approve"] == f"meshguard approval approve {approval_id}"
    assert ran == []
    assert agent.get_state(config).next == ("tools",)
    assert len(model.seen) == 1  # the model waits too

    # Resumed before anyone decided: paused again on the same approval, nothing sent.
    early = agent.invoke(Command(resume=approval_id), config)
    assert [again.value["approval_id"] for again in early["__interrupt__"]] == [approval_id]
    assert ran == []

    shared_gateway.cli("approval", "approve", approval_id)
    done = agent.invoke(Command(resume=approval_id), config)

    assert "__interrupt__" not in done
    assert ran == [("send_email", "ops@example.com")]
    assert [told.content for told in model.tool_results()] == ["sent to ops@example.com"]
    assert done["messages"][-1].content == "sent"
    assert trail(shared_gateway, thread) == [
        ("check", "tool:send_email", "approval_required"),
        ("check", "tool:send_email", "approval_pending"),
        ("approval", "tool:send_email", "approval_approved"),
        ("check", "tool:send_email", "allowed_with_approval"),
        ("record", "tool:send_email", "success"),
    ]


def test_a_refused_approval_is_told_to_the_model_and_nothing_runs(
    shared_gateway: Gateway, graph_client: MeshGuardClient
) -> None:
    ran: Ran = []
    model = script([{"name": "send_email", "args": {"to": "all@example.com", "body": "hi"}}], "ok")
    agent = react_agent(model, graph_client, ran)
    config = run_config(f"graph-{uuid.uuid4()}")
    approval_id = agent.invoke(ask("tell everyone"), config)["__interrupt__"][0].value[
        "approval_id"
    ]

    shared_gateway.cli("approval", "deny", approval_id, "--reason", "not to everyone")
    done = agent.invoke(Command(resume=approval_id), config)

    assert ran == []
    [told] = model.tool_results()
    assert told.content.startswith("MeshGuard denied `tool:send_email` (approval_denied): ")
    assert "__interrupt__" not in done


def test_an_expired_approval_pauses_the_graph_again_on_a_new_one(
    shared_gateway: Gateway, wait_until: Callable[..., Any]
) -> None:
    shared_gateway.apply_policy(POLICY.with_name("langgraph-expiry.yaml"))
    identity = shared_gateway.create_agent(prefix="graph", tags="langgraph-expiry")
    client = MeshGuardClient(gateway_url=shared_gateway.url, agent_token=identity.token)
    ran: Ran = []
    model = script([{"name": "send_email", "args": {"to": "ops@example.com", "body": "x"}}], "ok")
    agent = react_agent(model, client, ran)
    config = run_config(f"graph-{uuid.uuid4()}")
    first = agent.invoke(ask("tell ops"), config)["__interrupt__"][0].value["approval_id"]
    assert wait_until(lambda: client.get_approval(first).status == "expired", timeout=10)

    again = agent.invoke(Command(resume=first), config)

    [waiting] = again["__interrupt__"]
    second = waiting.value["approval_id"]
    assert second != first
    assert ran == []


def test_parallel_calls_wait_each_alone_and_each_runs_exactly_once(
    shared_gateway: Gateway, graph_client: MeshGuardClient
) -> None:
    ran: Ran = []
    model = script(
        [
            {"name": "search", "args": {"query": "status"}},
            {"name": "send_email", "args": {"to": "a@example.com", "body": "up"}},
            {"name": "send_email", "args": {"to": "b@example.com", "body": "up"}},
        ],
        "all done",
    )
    agent = react_agent(model, graph_client, ran)
    config = run_config(f"graph-{uuid.uuid4()}")

    paused = agent.invoke(ask("check and tell a and b"), config)

    waiting = paused["__interrupt__"]
    assert sorted(w.value["arguments"]["to"] for w in waiting) == ["a@example.com", "b@example.com"]
    assert ran == [("search", "status")]
    for pending in waiting:
        shared_gateway.cli("approval", "approve", pending.value["approval_id"])
    done = agent.invoke(resume_approvals(waiting), config)

    assert "__interrupt__" not in done
    assert sorted(ran) == [
        ("search", "status"),
        ("send_email", "a@example.com"),
        ("send_email", "b@example.com"),
    ]
    assert sorted(told.content for told in model.tool_results()) == [
        "results for status",
        "sent to a@example.com",
        "sent to b@example.com",
    ]


def test_a_revoked_agent_fails_closed_even_with_an_approval(
    shared_gateway: Gateway, graph_agent: AgentIdentity, graph_client: MeshGuardClient
) -> None:
    ran: Ran = []
    model = script([{"name": "send_email", "args": {"to": "ops@example.com", "body": "x"}}])
    agent = react_agent(model, graph_client, ran)
    config = run_config(f"graph-{uuid.uuid4()}")
    approval_id = agent.invoke(ask("tell ops"), config)["__interrupt__"][0].value["approval_id"]
    shared_gateway.cli("approval", "approve", approval_id)

    shared_gateway.revoke(graph_agent)

    with pytest.raises(AuthenticationError):
        agent.invoke(Command(resume=approval_id), config)
    another = react_agent(script([{"name": "search", "args": {"query": "x"}}]), graph_client, ran)
    with pytest.raises(AuthenticationError):
        another.invoke(ask("search"), run_config(f"graph-{uuid.uuid4()}"))
    assert ran == []


def test_an_unreachable_gateway_fails_closed_and_the_run_goes_on_from_its_checkpoint(
    private_gateway: Gateway,
) -> None:
    private_gateway.apply_policy(POLICY)
    identity = private_gateway.create_agent(prefix="graph", tags="langgraph-tests")
    ran: Ran = []
    model = script([{"name": "search", "args": {"query": "news"}}], "here is the news")
    governor = ToolCallGovernor(
        MeshGuardClient(gateway_url=private_gateway.url, agent_token=identity.token, timeout=2)
    )
    agent = create_react_agent(
        model, GovernedToolNode(tools_that_count(ran), governor), checkpointer=InMemorySaver()
    )
    config = run_config(f"graph-{uuid.uuid4()}")
    private_gateway.stop()

    with pytest.raises(GatewayUnavailableError):
        agent.invoke(ask("news?"), config)
    assert ran == []
    assert len(model.seen) == 1

    # The gateway is back (on another port: a new client, as a restarted process would make);
    # the run goes on from the tool call it stopped at, checked this time.
    private_gateway.start()
    governor.client = MeshGuardClient(gateway_url=private_gateway.url, agent_token=identity.token)
    done = agent.invoke(None, config)

    assert ran == [("search", "news")]
    assert done["messages"][-1].content == "here is the news"


def test_naming_maps_tools_to_the_policys_actions_in_a_plain_tool_node(
    shared_gateway: Gateway, graph_client: MeshGuardClient
) -> None:
    ran: Ran = []
    model = script(
        [
            {"name": "read_file", "args": {"path": "notes.txt"}},
            {"name": "read_file", "args": {"path": "/etc/passwd"}},
        ],
        "read what I may",
    )
    guard = ToolCallGuard(
        ToolCallGovernor(graph_client, ToolNaming(actions={"read_file": "read:workspace"}))
    )
    node = ToolNode(
        tools_that_count(ran),
        wrap_tool_call=guard.wrap_tool_call,
        awrap_tool_call=guard.awrap_tool_call,
    )
    agent = create_react_agent(model, node, checkpointer=InMemorySaver())
    trace = f"graph-{uuid.uuid4()}"

    agent.invoke(ask("read two files"), run_config(trace))

    assert ran == [("read_file", "notes.txt")]
    told = {message.tool_call_id: message.content for message in model.tool_results()}
    assert told["call-0-0"] == "contents of notes.txt"
    assert told["call-0-1"].startswith("MeshGuard denied `read:workspace` (default_deny): ")
    checks = shared_gateway.audit(traceId=trace, kind="check")
    assert sorted(
        (event_field(e, "action"), event_field(e, "resource"), event_field(e, "code"))
        for e in checks
    ) == [
        ("read:workspace", "/etc/passwd", "default_deny"),
        ("read:workspace", "notes.txt", "allowed"),
    ]
    assert {e["context"]["arguments"]["path"] for e in checks} == {"notes.txt", "/etc/passwd"}


def test_async_runs_are_checked_paused_and_recorded_alike(
    shared_gateway: Gateway, graph_client: MeshGuardClient
) -> None:
    ran: Ran = []
    model = script(
        [
            {"name": "search", "args": {"query": "async"}},
            {"name": "delete_file", "args": {"path": "notes.txt"}},
            {"name": "send_email", "args": {"to": "ops@example.com", "body": "async"}},
        ],
        "done",
    )
    agent = react_agent(model, graph_client, ran)
    trace = f"graph-{uuid.uuid4()}"
    config = run_config(trace)

    async def run() -> Dict[str, Any]:
        paused = await agent.ainvoke(ask("all three"), config)
        assert ran == [("search", "async")]
        [waiting] = paused["__interrupt__"]
        shared_gateway.cli("approval", "approve", waiting.value["approval_id"])
        return await agent.ainvoke(resume_approvals(paused["__interrupt__"]), config)

    done = asyncio.run(run())

    assert "__interrupt__" not in done
    assert sorted(ran) == [("search", "async"), ("send_email", "ops@example.com")]
    told = {message.tool_call_id: message.content for message in model.tool_results()}
    assert told["call-0-0"] == "results for async"
    assert told["call-0-1"].startswith("MeshGuard denied `tool:delete_file` (denied_by_rule)")
    assert told["call-0-2"] == "sent to ops@example.com"
    records = shared_gateway.audit(traceId=trace, kind="record")
    assert sorted(event_field(e, "action") for e in records) == ["tool:search", "tool:send_email"]


def test_the_langchain_helpers_govern_langchain_core_tools(graph_client: MeshGuardClient) -> None:
    """meshguard.langchain (the 0.1.x API) keeps working with today's langchain-core tools."""
    ran: Ran = []
    search, delete_file, *_ = tools_that_count(ran)

    assert GovernedTool(search, "tool:search", graph_client).run({"query": "x"}) == "results for x"
    with pytest.raises(PolicyDeniedError):
        GovernedTool(delete_file, "tool:delete_file", graph_client).run({"path": "notes.txt"})
    assert ran == [("search", "x")]
