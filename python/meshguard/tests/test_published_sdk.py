"""MeshGuard's published SDK (``meshguard==0.1.2`` from PyPI, unmodified, in its own virtualenv)
works against our gateway: each call of its API runs in that interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any, Dict

import pytest

from gateway_process import REPO_ROOT, AgentIdentity, Gateway


def published_python() -> str:
    configured = os.environ.get("MESHGUARD_SDK012_PYTHON")
    python = Path(configured) if configured else REPO_ROOT / ".venv-sdk012" / "bin" / "python"
    if not python.is_file():
        pytest.fail(f"no virtualenv with meshguard==0.1.2 at {python}: run scripts/test-python.sh")
    return str(python)


def run_published(gateway: Gateway, code: str, agent_token: str = "") -> Any:
    """Runs ``code`` with the published SDK; it prints one JSON value, returned here."""
    prelude = (
        "import json, meshguard\n"
        "from meshguard import MeshGuardClient, PolicyDeniedError, RateLimitError\n"
        "assert meshguard.__file__.find('site-packages') > 0, meshguard.__file__\n"
        "client = MeshGuardClient()\n"
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        # the published SDK's own variable names
        "MESHGUARD_GATEWAY_URL": gateway.url,
        "MESHGUARD_AGENT_TOKEN": agent_token,
        "MESHGUARD_ADMIN_TOKEN": gateway.admin_token,
    }
    completed = subprocess.run(
        [published_python(), "-c", prelude + code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_check(shared_gateway: Gateway, agent: AgentIdentity) -> None:
    result = run_published(
        shared_gateway,
        "a = client.check('read:workspace', 'workspace/notes.txt')\n"
        "d = client.check('execute:shell', 'ls')\n"
        "print(json.dumps([a.allowed, a.decision, a.policy, d.allowed, d.decision, d.policy,"
        " d.rule, d.reason]))",
        agent.token,
    )
    assert result[:3] == [True, "allow", "autogpt-policy"]
    assert result[3:6] == [False, "deny", "autogpt-policy"]
    assert result[6]
    assert "denied" in result[7]


def test_enforce(shared_gateway: Gateway, agent: AgentIdentity) -> None:
    result = run_published(
        shared_gateway,
        "ok = client.enforce('search:web').allowed\n"
        "try:\n"
        "    client.enforce('delete:workspace', 'notes.txt')\n"
        "    denied = None\n"
        "except PolicyDeniedError as e:\n"
        "    denied = [e.action, e.policy, e.reason]\n"
        "print(json.dumps([ok, denied]))",
        agent.token,
    )
    assert result[0] is True
    assert result[1][0] == "delete:workspace"
    assert result[1][1] == "autogpt-policy"


def test_rate_limit_is_reported_as_the_published_sdk_expects(
    shared_gateway: Gateway, agent: AgentIdentity
) -> None:
    result = run_published(
        shared_gateway,
        "for i in range(30):\n"
        "    assert client.check('browse:web', f'https://example.com/{i}').allowed\n"
        "try:\n"
        "    d = client.check('browse:web', 'https://example.com/x')\n"
        "    out = ['decision', d.allowed]\n"
        "except RateLimitError as e:\n"
        "    out = ['RateLimitError', str(e)]\n"
        "print(json.dumps(out))",
        agent.token,
    )
    assert result[0] == "RateLimitError"


def test_govern(shared_gateway: Gateway, agent: AgentIdentity) -> None:
    result = run_published(
        shared_gateway,
        "ran = []\n"
        "with client.govern('write:workspace', 'workspace/a.txt') as d:\n"
        "    ran.append(d.allowed)\n"
        "try:\n"
        "    with client.govern('execute:shell'):\n"
        "        ran.append('shell')\n"
        "except PolicyDeniedError:\n"
        "    ran.append('denied')\n"
        "print(json.dumps(ran))",
        agent.token,
    )
    assert result == [True, "denied"]


def test_health(shared_gateway: Gateway) -> None:
    result = run_published(
        shared_gateway, "print(json.dumps([client.health()['status'], client.is_healthy()]))"
    )
    assert result == ["healthy", True]


def test_list_agents(shared_gateway: Gateway, agent: AgentIdentity) -> None:
    result = run_published(
        shared_gateway,
        "print(json.dumps([[a.id, a.name, a.trust_tier, a.tags] for a in client.list_agents()]))",
    )
    assert [agent.id, agent.name, "verified", ["autogpt", "autonomous"]] in [
        [row[0], row[1], row[2], sorted(row[3])] for row in result
    ]


def test_create_agent(shared_gateway: Gateway) -> None:
    name = f"published-{uuid.uuid4().hex[:8]}"
    created: Dict[str, Any] = run_published(
        shared_gateway,
        f"print(json.dumps(client.create_agent('{name}', 'trusted', ['autogpt'])))",
    )
    agent = created.get("agent", created)
    assert agent["name"] == name
    assert agent["trustTier"] == "trusted"
    token = created["token"]
    # the token it returned works for checks
    result = run_published(
        shared_gateway, "print(json.dumps(client.check('read:workspace').allowed))", token
    )
    assert result is True


def test_revoke_agent(shared_gateway: Gateway, agent: AgentIdentity) -> None:
    run_published(shared_gateway, f"client.revoke_agent('{agent.id}')\nprint('null')")
    result = run_published(
        shared_gateway,
        "from meshguard import AuthenticationError\n"
        "try:\n"
        "    client.check('read:workspace')\n"
        "    out = 'allowed'\n"
        "except AuthenticationError:\n"
        "    out = 'AuthenticationError'\n"
        "print(json.dumps(out))",
        agent.token,
    )
    assert result == "AuthenticationError"


def test_list_policies(shared_gateway: Gateway) -> None:
    result = run_published(shared_gateway, "print(json.dumps(client.list_policies()))")
    assert "autogpt-policy" in [policy["name"] for policy in result]


def test_get_audit_log(shared_gateway: Gateway, agent: AgentIdentity) -> None:
    run_published(
        shared_gateway, "client.check('execute:shell', 'whoami')\nprint('null')", agent.token
    )
    result = run_published(
        shared_gateway, "print(json.dumps(client.get_audit_log(limit=20, decision='deny')))"
    )
    assert result
    assert all(entry.get("decision") == "deny" for entry in result)
    assert "execute:shell" in [entry.get("action") for entry in result]
