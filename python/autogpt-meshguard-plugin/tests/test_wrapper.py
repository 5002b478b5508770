"""The wrapper (``meshguard_autogpt``) fails closed, reads its configuration on first use, sends
the plugin's resource for the same file, and runs the docs' human-in-the-loop example."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

from canned_answer import CannedAnswer
from gateway_process import AgentIdentity, Gateway, event_field
from meshguard import MeshGuardClient
from meshguard_autogpt import MeshGuardGateway, gateway, governed
from meshguard_autogpt.commands import governed_command

HERE = Path(__file__).parent
MAILER_POLICY = HERE / "policies" / "autogpt-approvals.yaml"


def governed_probe(via: MeshGuardGateway) -> Callable[[], Any]:
    ran: List[str] = []

    @governed("write:workspace", "filename", via=via)
    def touch(filename: str) -> str:
        ran.append(filename)
        return "written"

    def call() -> Any:
        result = touch("notes.txt")
        return result, list(ran)

    return call


def test_401_is_a_denial_not_an_allow(shared_gateway: Gateway) -> None:
    via = MeshGuardGateway(MeshGuardClient(gateway_url=shared_gateway.url, agent_token="forged"))
    decision = via.check_permission("write:workspace", "workspace/notes.txt")
    assert decision["allowed"] is False
    assert decision["code"] == "unauthorized"
    result, ran = governed_probe(via)()
    assert result["status"] == "blocked"
    assert ran == []


def test_a_revoked_agent_is_denied(shared_gateway: Gateway, agent: AgentIdentity) -> None:
    via = MeshGuardGateway(MeshGuardClient(gateway_url=shared_gateway.url, agent_token=agent.token))
    assert via.check_permission("read:workspace")["allowed"] is True
    shared_gateway.revoke(agent)
    assert via.check_permission("read:workspace")["allowed"] is False


def test_413_is_a_denial_not_an_allow(shared_gateway: Gateway, agent: AgentIdentity) -> None:
    via = MeshGuardGateway(MeshGuardClient(gateway_url=shared_gateway.url, agent_token=agent.token))
    decision = via.check_permission("read:workspace", "x" * (70 * 1024))
    assert decision["allowed"] is False
    assert "413" in decision["reason"]


def test_503_is_a_denial_not_an_allow() -> None:
    body = {"allowed": False, "decision": "deny", "code": "unavailable", "reason": "store down"}
    with CannedAnswer(503, body) as url:
        via = MeshGuardGateway(MeshGuardClient(gateway_url=url, agent_token="token"))
        decision = via.check_permission("write:workspace", "workspace/notes.txt")
        result, ran = governed_probe(via)()
    assert decision["allowed"] is False
    assert decision["code"] == "unavailable"
    assert result["status"] == "blocked"
    assert ran == []


def test_configuration_is_read_on_first_use_not_at_import(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHGUARD_")}
    probe = (
        "import meshguard_autogpt as m\n"
        "d = m.gateway.check_permission('read:workspace')\n"
        "print(d['allowed'], d['reason'])\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("False MESHGUARD_TOKEN is not set")


def test_wrapper_and_plugin_send_the_same_resource_for_the_same_file(
    shared_gateway: Gateway, page_agent: AgentIdentity, workspace: Path
) -> None:
    from meshguard_autogpt import write_file
    from meshguard_autogpt_plugin import MeshGuardPlugin

    trace = f"same-{uuid.uuid4()}"
    gateway.set_trace(trace)
    assert write_file(filename="reports/q1.txt", contents="numbers") != ""
    type(MeshGuardPlugin)._instances.pop(MeshGuardPlugin, None)  # the template's singleton
    plugin = MeshGuardPlugin()
    plugin.gateway.configure(shared_gateway.url, page_agent.token, trace_id=trace)
    name, _ = plugin.pre_command(
        "write_to_file", {"filename": str(workspace / "reports" / "q1.txt"), "text": "numbers"}
    )
    assert name == "write_to_file"
    checks = shared_gateway.audit(traceId=trace, kind="check")
    assert [(event_field(e, "action"), event_field(e, "resource")) for e in checks] == [
        ("write:workspace", "workspace/reports/q1.txt"),
        ("write:workspace", "workspace/reports/q1.txt"),
    ]


def test_a_path_out_of_the_workspace_is_not_a_workspace_write(tmp_path: Path) -> None:
    inside = governed_command("write_to_file", {"filename": "a/../b.txt"}, tmp_path)
    assert (inside.action, inside.resource) == ("write:workspace", "workspace/b.txt")
    outside = governed_command("write_to_file", {"filename": "../../etc/passwd"}, tmp_path)
    assert outside.action == "write:system"
    assert outside.resource.endswith("/etc/passwd")


@pytest.mark.parametrize(
    ("command", "arguments", "action", "resource"),
    [
        ("write_to_file", {"filename": "n.txt", "text": "x"}, "write:workspace", "workspace/n.txt"),
        (
            "append_to_file",
            {"filename": "n.txt", "text": "x"},
            "write:workspace",
            "workspace/n.txt",
        ),
        ("read_file", {"filename": "n.txt"}, "read:workspace", "workspace/n.txt"),
        ("delete_file", {"filename": "n.txt"}, "delete:workspace", "workspace/n.txt"),
        ("search_files", {"directory": "."}, "read:workspace", "workspace"),
        ("execute_python_file", {"filename": "x.py"}, "execute:python", "workspace/x.py"),
        ("execute_shell", {"command_line": "ls"}, "execute:shell", "ls"),
        ("execute_shell_popen", {"command_line": "ls"}, "execute:shell", "ls"),
        ("EXECUTE_SHELL", {"command_line": "ls"}, "execute:shell", "ls"),
        ("browse_website", {"url": "https://a.b", "question": "?"}, "browse:web", "https://a.b"),
        ("google", {"query": "q"}, "search:web", "q"),
        (
            "write_file",
            {"filename": "n.txt", "contents": "x"},
            "write:workspace",
            "workspace/n.txt",
        ),
        ("execute_python_code", {"code": "print(1)"}, "execute:python", "*"),
        ("send_email", {"recipient": "a@b.c"}, "send:email", "a@b.c"),
        ("start_agent", {"name": "x", "task": "t", "prompt": "p"}, "execute:start_agent", "*"),
    ],
)
def test_command_map(
    tmp_path: Path, command: str, arguments: Dict[str, Any], action: str, resource: str
) -> None:
    governed_as = governed_command(command, arguments, tmp_path)
    assert (governed_as.action, governed_as.resource) == (action, resource)


@pytest.fixture
def mailer(shared_gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> AgentIdentity:
    shared_gateway.apply_policy(MAILER_POLICY)
    identity = shared_gateway.create_agent(prefix="mailer", tags="autogpt-mailer")
    monkeypatch.setenv("MESHGUARD_URL", shared_gateway.url)
    monkeypatch.setenv("MESHGUARD_TOKEN", identity.token)
    gateway.configure()
    return identity


def test_human_in_the_loop_example_from_the_docs(
    shared_gateway: Gateway, mailer: AgentIdentity
) -> None:
    """The docs' example: the email goes out only once a human approved it."""
    sent: List[str] = []

    @governed("send:email", "recipient")
    def send_email(recipient: str, subject: str, body: str) -> str:
        sent.append(recipient)
        return f"sent to {recipient}"

    result = send_email("ops@example.com", "Weekly report", "All green.")
    assert result["status"] == "approval_required"
    approval_id = result["approval_id"]
    assert approval_id and approval_id in str(result)
    assert sent == []

    admin = MeshGuardClient(gateway_url=shared_gateway.url, admin_token=shared_gateway.admin_token)
    admin.approve(approval_id)  # what `meshguard approval approve <id>` does

    assert send_email("ops@example.com", "Weekly report", "All green.") == "sent to ops@example.com"
    assert sent == ["ops@example.com"]
    # single use: the next email waits for a human again
    assert send_email("ops@example.com", "Weekly report", "All green.")["status"] == (
        "approval_required"
    )


def test_human_in_the_loop_waiting_for_the_decision(
    shared_gateway: Gateway, mailer: AgentIdentity, wait_until: Callable[..., Any]
) -> None:
    admin = MeshGuardClient(gateway_url=shared_gateway.url, admin_token=shared_gateway.admin_token)

    @governed("send:email", "recipient", approval_wait=30)
    def send_email(recipient: str, subject: str, body: str) -> str:
        return f"sent to {recipient}"

    def approve_when_asked() -> None:
        def mine() -> List[Any]:
            return [
                a
                for a in admin.list_approvals(status="pending")
                if mailer.id in a.values() or mailer.name in a.values()
            ]

        for approval in wait_until(mine) or []:
            admin.approve(str(approval.get("id") or approval.get("approval_id")))

    human = threading.Thread(target=approve_when_asked)
    human.start()
    result = send_email("cfo@example.com", "Invoice", "Attached.")
    human.join(timeout=30)
    assert result == "sent to cfo@example.com"
