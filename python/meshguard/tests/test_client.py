"""The SDK against the real gateway (``meshguard serve`` from conftest.py), one agent per test."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any, Callable, List

import pytest

import meshguard.admin
from canned_answer import CannedAnswer
from gateway_process import AUTOGPT_POLICY, AgentIdentity, Gateway, event_field, meshguard_binary
from meshguard import (
    ApprovalRequiredError,
    AuthenticationError,
    MeshGuardClient,
    MeshGuardError,
    PolicyDeniedError,
    RateLimitError,
    governed,
)
from meshguard.langchain import governed_tool

APPROVALS_POLICY = Path(__file__).parent / "policies" / "approvals.yaml"


def client_of(gateway: Gateway, agent: AgentIdentity, **kwargs: Any) -> MeshGuardClient:
    return MeshGuardClient(gateway_url=gateway.url, agent_token=agent.token, **kwargs)


def test_check_allows_what_the_policy_allows(shared_gateway: Gateway, agent: AgentIdentity) -> None:
    decision = client_of(shared_gateway, agent).check("read:workspace", "workspace/notes.txt")
    assert decision.allowed
    assert (decision.decision, decision.code, decision.policy) == (
        "allow",
        "allowed",
        "autogpt-policy",
    )
    assert decision.audit_id


def test_check_reports_the_rule_that_denied(shared_gateway: Gateway, agent: AgentIdentity) -> None:
    decision = client_of(shared_gateway, agent).check("execute:shell", "ls -la")
    assert not decision.allowed
    assert decision.decision == "deny"
    assert decision.code == "denied_by_rule"
    assert decision.policy == "autogpt-policy"
    assert decision.rule
    assert decision.resource == "ls -la"
    assert "denied" in (decision.reason or "")


def test_enforce_raises_the_denial_with_its_reasons(
    shared_gateway: Gateway, agent: AgentIdentity
) -> None:
    client = client_of(shared_gateway, agent)
    assert client.enforce("search:web", "python tutorials").allowed
    with pytest.raises(PolicyDeniedError) as denied:
        client.enforce("delete:workspace", "workspace/notes.txt")
    assert denied.value.policy == "autogpt-policy"
    assert denied.value.code == "denied_by_rule"
    assert "delete:workspace" in str(denied.value)


def test_an_unknown_action_falls_to_the_default_deny(
    shared_gateway: Gateway, agent: AgentIdentity
) -> None:
    decision = client_of(shared_gateway, agent).check("execute:start_agent")
    assert not decision.allowed
    assert decision.code == "default_deny"


def test_rate_limit_is_a_policy_denial_with_retry_after(
    shared_gateway: Gateway, agent: AgentIdentity
) -> None:
    client = client_of(shared_gateway, agent)
    for index in range(30):  # the policy allows 30 checks a minute
        assert client.check("browse:web", f"https://example.com/{index}").allowed
    with pytest.raises(RateLimitError) as limited:
        client.enforce("browse:web", "https://example.com/one-more")
    assert isinstance(limited.value, PolicyDeniedError)
    assert limited.value.retry_after and limited.value.retry_after > 0
    assert "rate limit" in limited.value.reason.lower()


def test_a_bad_token_is_an_authentication_error(shared_gateway: Gateway) -> None:
    client = MeshGuardClient(gateway_url=shared_gateway.url, agent_token="not-a-token")
    with pytest.raises(AuthenticationError):
        client.check("read:workspace")


def test_a_revoked_agent_is_refused_at_its_next_request(
    shared_gateway: Gateway, agent: AgentIdentity
) -> None:
    client = client_of(shared_gateway, agent)
    assert client.check("read:workspace").allowed
    shared_gateway.revoke(agent)
    with pytest.raises(AuthenticationError):
        client.check("read:workspace")


def test_a_body_over_the_limit_is_never_an_allow(
    shared_gateway: Gateway, agent: AgentIdentity
) -> None:
    client = client_of(shared_gateway, agent)
    with pytest.raises(MeshGuardError) as refused:
        client.check("read:workspace", "x" * (70 * 1024))
    assert "413" in str(refused.value)


def test_govern_runs_the_block_only_when_allowed_and_records_it(
    shared_gateway: Gateway, agent: AgentIdentity
) -> None:
    trace = f"sdk-{uuid.uuid4()}"
    client = client_of(shared_gateway, agent, trace_id=trace)
    ran: List[str] = []
    with client.govern("write:workspace", "workspace/notes.txt") as decision:
        ran.append("write")
    assert decision.allowed
    with pytest.raises(PolicyDeniedError), client.govern("execute:shell", "rm -rf /"):
        ran.append("shell")
    assert ran == ["write"]
    events = shared_gateway.audit(traceId=trace)
    kinds = sorted((event_field(e, "kind"), event_field(e, "action")) for e in events)
    assert kinds == [
        ("check", "execute:shell"),
        ("check", "write:workspace"),
        ("record", "write:workspace"),
    ]
    record = next(e for e in events if event_field(e, "kind") == "record")
    assert event_field(record, "status") == "success"


def test_governed_decorator_checks_each_call_with_its_resource(
    shared_gateway: Gateway, agent: AgentIdentity
) -> None:
    trace = f"sdk-{uuid.uuid4()}"
    client = client_of(shared_gateway, agent, trace_id=trace)
    written: List[str] = []

    @governed("write:workspace", resource_arg="path", client=client)
    def save(path: str, text: str) -> int:
        written.append(path)
        return len(text)

    assert save("workspace/a.txt", "abc") == 3
    assert written == ["workspace/a.txt"]
    events = shared_gateway.audit(traceId=trace, kind="check")
    assert [event_field(e, "resource") for e in events] == ["workspace/a.txt"]


def test_governed_tool_runs_only_allowed_tools_and_names_its_action(
    shared_gateway: Gateway, agent: AgentIdentity
) -> None:
    client = client_of(shared_gateway, agent)

    @governed_tool("search:web", client=client)
    def search(query: str) -> str:
        return f"results for {query}"

    @governed_tool("execute:shell", client=client, on_deny=lambda denied, *_: f"refused: {denied}")
    def shell(command: str) -> str:
        raise AssertionError("a denied tool must not run")

    assert search("python") == "results for python"
    assert shell("ls").startswith("refused: ")
    # LangChain code written for 0.1.x reads the action back from the wrapped tool.
    assert getattr(search, "_meshguard_action", None) == "search:web"
    assert getattr(shell, "_meshguard_action", None) == "execute:shell"


def test_record_links_the_outcome_to_its_check(
    shared_gateway: Gateway, agent: AgentIdentity
) -> None:
    trace = f"sdk-{uuid.uuid4()}"
    client = client_of(shared_gateway, agent, trace_id=trace)
    decision = client.check("read:workspace", "workspace/notes.txt", context={"step": 1})
    audit_id = client.record(
        "read:workspace",
        "workspace/notes.txt",
        status="error",
        result="file not found",
        audit_id=decision.audit_id,
        duration_ms=3,
    )
    assert audit_id
    records = shared_gateway.audit(traceId=trace, kind="record")
    assert len(records) == 1
    assert event_field(records[0], "status") == "error"
    assert event_field(records[0], "result") == "file not found"


def test_proxy_forwards_only_what_is_allowed(tmp_path: Path) -> None:
    upstream = CannedAnswer(200, {"users": ["ada"]})
    with upstream as upstream_url:
        gateway = Gateway(
            meshguard_binary(), tmp_path / "gateway-data", env={"PROXY_TARGET": upstream_url}
        )
        gateway.start()
        try:
            gateway.apply_policy(AUTOGPT_POLICY)
            agent = gateway.create_agent()
            client = client_of(gateway, agent)
            answer = client.get("api/users", action="read:api/users")
            assert answer.json() == {"users": ["ada"]}
            with pytest.raises(PolicyDeniedError):
                client.post("api/run", action="execute:shell", json={"cmd": "ls"})
        finally:
            gateway.stop()
    assert [(seen["method"], seen["path"]) for seen in upstream.seen] == [("GET", "/api/users")]
    assert "Authorization" not in upstream.seen[0]  # the agent's token stays at the gateway


def test_admin_helpers(shared_gateway: Gateway, agent: AgentIdentity) -> None:
    admin = MeshGuardClient(gateway_url=shared_gateway.url, admin_token=shared_gateway.admin_token)
    names = {listed.name: listed for listed in admin.list_agents()}
    assert names[agent.name].id == agent.id
    assert names[agent.name].trust_tier == "verified"
    assert set(names[agent.name].tags) == {"autogpt", "autonomous"}
    created = admin.create_agent(f"sdk-{uuid.uuid4().hex[:8]}", "trusted", ["sdk"])
    assert created["token"]
    assert "autogpt-policy" in [policy.get("name") for policy in admin.list_policies()]
    admin.revoke_agent(agent.name)
    assert admin.get_agent(agent.name).status == "revoked"
    assert admin.get_audit_log(limit=5)
    with pytest.raises(AuthenticationError):
        MeshGuardClient(gateway_url=shared_gateway.url, admin_token="wrong").list_agents()


def test_list_helpers_follow_the_gateways_pages(
    private_gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The list helpers return every row, however many pages the gateway splits them into."""
    admin = MeshGuardClient(
        gateway_url=private_gateway.url, admin_token=private_gateway.admin_token
    )
    names = [f"paged-{n}" for n in range(5)]
    for name in reversed(names):
        admin.create_agent(name)
    monkeypatch.setattr(meshguard.admin, "_MAX_PAGE_SIZE", 2)
    assert [listed.name for listed in admin.list_agents()] == names
    # Each creation is audited: five events, read two at a time, newest first.
    events = admin.get_audit_log(limit=5, kind="admin")
    assert [event["resource"] for event in events] == names
    assert len(admin.get_audit_log(limit=3, kind="admin")) == 3


def test_health(shared_gateway: Gateway) -> None:
    client = MeshGuardClient(gateway_url=shared_gateway.url)
    assert client.health()["status"] == "healthy"
    assert client.is_healthy()


@pytest.fixture
def approvals_agent(shared_gateway: Gateway) -> AgentIdentity:
    shared_gateway.apply_policy(APPROVALS_POLICY)
    return shared_gateway.create_agent(prefix="mailer", tags="sdk-approvals")


def test_an_approval_is_requested_then_used_once_approved(
    shared_gateway: Gateway, approvals_agent: AgentIdentity
) -> None:
    client = client_of(shared_gateway, approvals_agent)
    admin = MeshGuardClient(gateway_url=shared_gateway.url, admin_token=shared_gateway.admin_token)
    with pytest.raises(ApprovalRequiredError) as pending:
        client.enforce("send:email", "ops@example.com")
    approval_id = pending.value.approval_id
    assert approval_id
    assert pending.value.decision and pending.value.decision.code == "approval_required"
    assert client.get_approval(approval_id).status == "pending"
    admin.approve(approval_id)
    assert client.wait_for_approval(approval_id, timeout=5).approved
    decision = client.check("send:email", "ops@example.com", approval_id=approval_id)
    assert decision.allowed
    assert decision.code == "allowed_with_approval"
    # single use: the next email needs a new approval
    again = client.check("send:email", "ops@example.com")
    assert again.requires_approval
    assert again.approval_id != approval_id


def test_enforce_waits_for_the_human_decision(
    shared_gateway: Gateway,
    approvals_agent: AgentIdentity,
    wait_until: Callable[..., Any],
) -> None:
    client = client_of(shared_gateway, approvals_agent)
    admin = MeshGuardClient(gateway_url=shared_gateway.url, admin_token=shared_gateway.admin_token)

    def mine() -> List[Any]:
        return [
            approval
            for approval in admin.list_approvals(status="pending")
            if approvals_agent.id in approval.values() or approvals_agent.name in approval.values()
        ]

    def approve_when_asked() -> None:
        for approval in wait_until(mine) or []:
            admin.approve(str(approval.get("id") or approval.get("approval_id")))

    human = threading.Thread(target=approve_when_asked)
    human.start()
    decision = client.enforce("send:email", "ceo@example.com", approval_wait=20)
    human.join(timeout=20)
    assert decision.allowed
    assert decision.code == "allowed_with_approval"


def test_a_denied_approval_stays_denied(
    shared_gateway: Gateway, approvals_agent: AgentIdentity
) -> None:
    client = client_of(shared_gateway, approvals_agent)
    admin = MeshGuardClient(gateway_url=shared_gateway.url, admin_token=shared_gateway.admin_token)
    first = client.check("send:email", "all@example.com")
    assert first.approval_id
    admin.deny_approval(first.approval_id, reason="not to everyone")
    approval = client.wait_for_approval(first.approval_id, timeout=5)
    assert approval.status == "denied"
    with pytest.raises(PolicyDeniedError) as denied:
        client.enforce("send:email", "all@example.com", approval_wait=2)
    assert denied.value.code == "approval_denied"
