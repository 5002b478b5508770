"""CrewAI crews under MeshGuard: a real crew, a scripted model, the real gateway and CLI.

Each test runs ``crew.kickoff()`` with ``MeshGuardToolHooks`` installed and asserts what a user
would see: which tools really ran, what the model was told, and what the audit trail holds.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable, Dict, List, Tuple

import pytest
from scripted_crew import FINAL_ANSWER, ScriptedModel, Workspace, crew_of, react_call

from gateway_process import AgentIdentity, Gateway, event_field
from meshguard import MeshGuardClient
from meshguard.integrations import ToolCallGovernor, ToolNaming
from meshguard.integrations.crewai import MeshGuardToolHooks

# CrewAI reads its own deprecated fields (function_calling_llm, ...) on every crew it builds.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:crewai")

READ_NOTES = react_call("read_file", '{"path": "workspace/notes.txt"}')
DELETE_NOTES = react_call("delete_file", '{"path": "workspace/notes.txt"}')
SEND_EMAIL = react_call("send_email", '{"to": "ops@example.com", "body": "release is out"}')
# What the model reads instead of the result of a delete (denial_message of the gateway's answer).
DELETE_DENIED = (
    "MeshGuard denied `tool:delete_file` (denied_by_rule): Action 'tool:delete_file' denied by "
    "rule 'no-deletes' of policy 'crewai-tests': agents never delete files"
)


@pytest.fixture
def workspace() -> Workspace:
    """A fresh workspace: one file, no tool run yet."""
    return Workspace()


def run_events(gateway: Gateway, model: ScriptedModel) -> List[Dict[str, Any]]:
    """The audit events of the model's one run (its trace: CrewAI's execution id), oldest first."""
    runs = set(model.runs)
    assert len(runs) == 1 and None not in runs, runs
    events = gateway.audit(traceId=runs.pop())
    return sorted(events, key=lambda event: int(event_field(event, "seq")))


def summary(events: List[Dict[str, Any]]) -> List[Tuple[Any, ...]]:
    """(kind, action, resource, code or status) of each event."""
    return [
        (
            event_field(event, "kind"),
            event_field(event, "action"),
            event_field(event, "resource"),
            event_field(event, "code") or event_field(event, "status"),
        )
        for event in events
    ]


def test_an_allowed_tool_runs_and_its_outcome_is_recorded(
    shared_gateway: Gateway, client: MeshGuardClient, workspace: Workspace
) -> None:
    model = ScriptedModel(model="scripted", replies=[READ_NOTES, FINAL_ANSWER])
    with MeshGuardToolHooks(ToolCallGovernor(client)):
        crew_of(model, workspace).kickoff()

    assert workspace.calls == [("read_file", {"path": "workspace/notes.txt"})]
    assert model.tool_result_in(1) == "Ship on Friday."
    check, record = run_events(shared_gateway, model)
    assert summary([check, record]) == [
        ("check", "tool:read_file", "workspace/notes.txt", "allowed"),
        ("record", "tool:read_file", "workspace/notes.txt", "success"),
    ]
    assert event_field(check, "context") == {
        "tool": "read_file",
        "arguments": {"path": "workspace/notes.txt"},
    }
    assert event_field(record, "result") == "Ship on Friday."
    assert event_field(record, "context")["check_audit_id"] == event_field(check, "id")


def test_a_denied_tool_never_runs_and_the_model_reads_why(
    shared_gateway: Gateway, client: MeshGuardClient, workspace: Workspace
) -> None:
    model = ScriptedModel(model="scripted", replies=[DELETE_NOTES, FINAL_ANSWER])
    with MeshGuardToolHooks(ToolCallGovernor(client)):
        crew_of(model, workspace).kickoff()

    assert workspace.calls == []
    assert "workspace/notes.txt" in workspace.files
    assert model.tool_result_in(1) == DELETE_DENIED
    assert summary(run_events(shared_gateway, model)) == [
        ("check", "tool:delete_file", "workspace/notes.txt", "denied_by_rule"),
    ]


def test_native_function_calls_are_governed_alike(
    shared_gateway: Gateway, client: MeshGuardClient, workspace: Workspace
) -> None:
    """CrewAI's other path: the model answers with tool calls, not ReAct text."""

    def call(name: str, arguments: Dict[str, Any], call_id: str) -> List[Dict[str, Any]]:
        function = {"name": name, "arguments": json.dumps(arguments)}
        return [{"id": call_id, "type": "function", "function": function}]

    model = ScriptedModel(
        model="scripted",
        function_calling=True,
        replies=[
            call("read_file", {"path": "workspace/notes.txt"}, "call_1"),
            call("delete_file", {"path": "workspace/notes.txt"}, "call_2"),
            FINAL_ANSWER,
        ],
    )
    with MeshGuardToolHooks(ToolCallGovernor(client)):
        crew_of(model, workspace).kickoff()

    assert workspace.calls == [("read_file", {"path": "workspace/notes.txt"})]
    assert model.tool_result_in(1) == "Ship on Friday."
    assert model.tool_result_in(2) == DELETE_DENIED
    assert [code for *_, code in summary(run_events(shared_gateway, model))] == [
        "allowed",
        "success",
        "denied_by_rule",
    ]


def test_a_call_that_needs_approval_waits_for_the_human_then_runs_once(
    shared_gateway: Gateway,
    crew_agent: AgentIdentity,
    client: MeshGuardClient,
    workspace: Workspace,
    wait_until: Callable[..., Any],
) -> None:
    runs_when_approved: List[int] = []

    def pending() -> List[Dict[str, Any]]:
        listed = json.loads(shared_gateway.cli("approval", "list", "--json").stdout)
        return [a for a in listed["approvals"] if a.get("agentId") == crew_agent.id]

    def human() -> None:
        approvals = wait_until(pending, timeout=20)
        assert approvals, "the crew never asked for an approval"
        runs_when_approved.append(len(workspace.calls))
        shared_gateway.cli("approval", "approve", str(approvals[0]["id"]))

    operator = threading.Thread(target=human)
    operator.start()
    model = ScriptedModel(model="scripted", replies=[SEND_EMAIL, FINAL_ANSWER])
    with MeshGuardToolHooks(ToolCallGovernor(client), approval_wait=30):
        crew_of(model, workspace).kickoff()
    operator.join(timeout=30)

    assert runs_when_approved == [0]  # paused: nothing ran before the human approved
    assert workspace.calls == [("send_email", {"to": "ops@example.com", "body": "release is out"})]
    assert model.tool_result_in(1) == "sent to ops@example.com"
    events = run_events(shared_gateway, model)
    assert summary(events) == [
        ("check", "tool:send_email", "*", "approval_required"),
        ("approval", "tool:send_email", "*", "approval_approved"),
        ("check", "tool:send_email", "*", "allowed_with_approval"),
        ("record", "tool:send_email", "*", "success"),
    ]
    assert len({event_field(event, "approval_id") for event in events[:3]}) == 1


def test_an_approval_not_given_in_time_is_told_and_a_later_run_uses_it(
    shared_gateway: Gateway, client: MeshGuardClient, workspace: Workspace
) -> None:
    model = ScriptedModel(model="scripted", replies=[SEND_EMAIL, FINAL_ANSWER])
    with MeshGuardToolHooks(ToolCallGovernor(client), approval_wait=1):
        crew_of(model, workspace).kickoff()

    assert workspace.calls == []
    (asked,) = run_events(shared_gateway, model)
    approval_id = event_field(asked, "approval_id")
    assert approval_id
    assert model.tool_result_in(1) == (
        f"MeshGuard: `tool:send_email` needs a human's approval (approval {approval_id}): "
        "Action 'tool:send_email' requires human approval (policy 'crewai-tests')"
    )

    # The human approves afterwards: the same call in the next run goes through, once.
    shared_gateway.cli("approval", "approve", approval_id)
    again = ScriptedModel(model="scripted", replies=[SEND_EMAIL, FINAL_ANSWER])
    with MeshGuardToolHooks(ToolCallGovernor(client), approval_wait=1):
        crew_of(again, workspace).kickoff()
    assert [name for name, _ in workspace.calls] == ["send_email"]
    assert [code for *_, code in summary(run_events(shared_gateway, again))] == [
        "allowed_with_approval",
        "success",
    ]


def test_a_revoked_agent_fails_closed(
    shared_gateway: Gateway,
    crew_agent: AgentIdentity,
    client: MeshGuardClient,
    workspace: Workspace,
) -> None:
    with MeshGuardToolHooks(ToolCallGovernor(client)):
        crew_of(ScriptedModel(model="scripted", replies=[READ_NOTES]), workspace).kickoff()
        assert len(workspace.calls) == 1

        shared_gateway.revoke(crew_agent)
        model = ScriptedModel(model="scripted", replies=[READ_NOTES, FINAL_ANSWER])
        crew_of(model, workspace).kickoff()

    assert len(workspace.calls) == 1  # the second read never ran
    told = model.tool_result_in(1)
    assert told.startswith("MeshGuard could not check `tool:read_file`, so it was not called: ")
    assert "revoked" in told.lower()


def test_an_unreachable_gateway_fails_closed(
    private_gateway: Gateway, workspace: Workspace
) -> None:
    identity = private_gateway.create_agent(prefix="crew", tags="autogpt")
    client = MeshGuardClient(gateway_url=private_gateway.url, agent_token=identity.token)
    private_gateway.stop()
    model = ScriptedModel(model="scripted", replies=[READ_NOTES, FINAL_ANSWER])
    with MeshGuardToolHooks(ToolCallGovernor(client)):
        crew_of(model, workspace).kickoff()

    assert workspace.calls == []
    told = model.tool_result_in(1)
    assert told.startswith("MeshGuard could not check `tool:read_file`, so it was not called: ")
    assert private_gateway.url in told


def test_each_kickoff_is_one_trace_holding_its_checks_and_records(
    shared_gateway: Gateway, client: MeshGuardClient, workspace: Workspace
) -> None:
    first = ScriptedModel(model="scripted", replies=[READ_NOTES, DELETE_NOTES, FINAL_ANSWER])
    second = ScriptedModel(model="scripted", replies=[READ_NOTES, FINAL_ANSWER])
    with MeshGuardToolHooks(ToolCallGovernor(client)):
        crew_of(first, workspace).kickoff()
        crew_of(second, workspace).kickoff()

    assert set(first.runs) != set(second.runs)  # CrewAI's execution id, one per kickoff
    assert [code for *_, code in summary(run_events(shared_gateway, first))] == [
        "allowed",
        "success",
        "denied_by_rule",
    ]
    assert [code for *_, code in summary(run_events(shared_gateway, second))] == [
        "allowed",
        "success",
    ]


def test_naming_maps_a_tool_to_an_action_and_a_resource(
    shared_gateway: Gateway, client: MeshGuardClient, workspace: Workspace
) -> None:
    naming = ToolNaming(
        actions={"fetch_report": "read:reports"}, resource_arguments={"fetch_report": "report"}
    )
    model = ScriptedModel(
        model="scripted", replies=[react_call("fetch_report", '{"report": "q3"}'), FINAL_ANSWER]
    )
    with MeshGuardToolHooks(ToolCallGovernor(client, naming)):
        crew_of(model, workspace).kickoff()

    assert workspace.calls == [("fetch_report", {"report": "q3"})]
    check, record = run_events(shared_gateway, model)
    assert summary([check, record]) == [
        ("check", "read:reports", "q3", "allowed"),
        ("record", "read:reports", "q3", "success"),
    ]
    assert event_field(check, "context")["arguments"] == {"report": "q3"}


def test_a_tool_that_reports_a_failure_is_recorded_as_an_error(
    shared_gateway: Gateway, client: MeshGuardClient, workspace: Workspace
) -> None:
    model = ScriptedModel(
        model="scripted", replies=[react_call("check_disk", '{"path": "sda"}'), FINAL_ANSWER]
    )
    with MeshGuardToolHooks(ToolCallGovernor(client)):
        crew_of(model, workspace).kickoff()

    assert workspace.calls == [("check_disk", {"path": "sda"})]
    check, record = run_events(shared_gateway, model)
    assert event_field(check, "code") == "allowed"
    assert event_field(record, "status") == "error"
    assert event_field(record, "result") == "disk at sda is unreadable"


def test_hooks_install_once_and_uninstall(
    shared_gateway: Gateway, client: MeshGuardClient, workspace: Workspace
) -> None:
    hooks = MeshGuardToolHooks(ToolCallGovernor(client)).install()
    hooks.install()
    try:
        model = ScriptedModel(model="scripted", replies=[READ_NOTES, FINAL_ANSWER])
        crew_of(model, workspace).kickoff()
    finally:
        hooks.uninstall()
    assert [code for *_, code in summary(run_events(shared_gateway, model))] == [
        "allowed",
        "success",
    ]  # installed twice, checked once

    # Uninstalled: CrewAI runs the tool without asking anyone.
    ungoverned = ScriptedModel(model="scripted", replies=[DELETE_NOTES, FINAL_ANSWER])
    crew_of(ungoverned, workspace).kickoff()
    assert workspace.calls[-1] == ("delete_file", {"path": "workspace/notes.txt"})
    assert run_events(shared_gateway, ungoverned) == []
