"""Answers the real gateway gives rarely (store down, a misrouted URL, a dead socket): none of
them may ever read as an allow. A canned HTTP answer stands for the rare status; the statuses
the real gateway produces on demand (401, 403, 413) are tested against it in test_client.py.
"""

from __future__ import annotations

import socket
from typing import Any, Iterator, Tuple

import pytest

from canned_answer import CannedAnswer
from meshguard import (
    AuthenticationError,
    GatewayUnavailableError,
    MeshGuardClient,
    MeshGuardError,
    PolicyDeniedError,
)

UNAVAILABLE = {
    "allowed": False,
    "decision": "deny",
    "code": "unavailable",
    "reason": "the store cannot be reached",
}


def client_for(url: str, timeout: float = 5.0) -> MeshGuardClient:
    return MeshGuardClient(gateway_url=url, agent_token="token", timeout=timeout)


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (503, UNAVAILABLE, GatewayUnavailableError),
        (502, b"<html>bad gateway</html>", GatewayUnavailableError),
        (500, {"error": "internal", "message": "internal error"}, MeshGuardError),
        (413, {"error": "payload_too_large", "message": "body over 65536 bytes"}, MeshGuardError),
        (400, {"error": "bad_request", "message": "action: expected a string"}, MeshGuardError),
        (401, {"error": "unauthorized", "message": "agent revoked"}, AuthenticationError),
        (200, {"status": "ok"}, MeshGuardError),  # a 200 that is not a decision
        (200, b"<html>welcome</html>", MeshGuardError),
        (204, b"", MeshGuardError),
        (302, b"", MeshGuardError),
    ],
)
def test_no_other_answer_than_a_200_allow_lets_an_action_run(
    status: int, body: Any, error: type
) -> None:
    ran = []
    with CannedAnswer(status, body) as url:
        client = client_for(url)
        with pytest.raises(error):
            client.check("write:workspace", "workspace/notes.txt")
        with pytest.raises(MeshGuardError):
            client.enforce("write:workspace", "workspace/notes.txt")
        with pytest.raises(MeshGuardError), client.govern("write:workspace"):
            ran.append("block")
    assert ran == []


def test_a_200_that_says_not_allowed_is_not_an_allow() -> None:
    with CannedAnswer(200, {**UNAVAILABLE, "allowed": False}) as url:
        with pytest.raises(MeshGuardError):
            client_for(url).check("write:workspace")


def test_a_429_from_the_header_check_is_a_rate_limit_denial() -> None:
    body = {"allowed": False, "decision": "deny", "code": "rate_limited", "reason": "rate limit"}
    with CannedAnswer(429, body, {"Retry-After": "7"}) as url:
        decision = client_for(url).check("browse:web")
    assert not decision.allowed
    assert decision.code == "rate_limited"


def test_a_record_over_the_agents_budget_is_a_rate_limit_with_retry_after() -> None:
    from meshguard import RateLimitError

    body = {
        "error": "rate_limited",
        "code": "rate_limited",
        "message": "this agent's budget of 600 records per minute is spent; retry in 7 s",
        "retry_after_seconds": 7,
    }
    with CannedAnswer(429, body, {"Retry-After": "7"}) as url:
        with pytest.raises(RateLimitError) as raised:
            client_for(url).record("browse:web")
    assert raised.value.retry_after == 7
    assert "records per minute" in str(raised.value)


@pytest.fixture
def silent_socket() -> Iterator[Tuple[str, socket.socket]]:
    """A listening socket that never answers: connections are accepted by the kernel only."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", listener
    finally:
        listener.close()


def test_a_gateway_that_never_answers_times_out_into_a_denial(
    silent_socket: Tuple[str, socket.socket],
) -> None:
    client = client_for(silent_socket[0], timeout=0.5)
    with pytest.raises(GatewayUnavailableError, match="did not answer"):
        client.check("execute:python")


def test_an_unreachable_gateway_is_an_error_never_an_allow() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    client = client_for(dead)
    with pytest.raises(GatewayUnavailableError, match="unreachable"):
        client.check("read:workspace")
    assert client.is_healthy() is False
    with pytest.raises(PolicyDeniedError.__mro__[1]):  # MeshGuardError
        client.record("read:workspace")


def test_every_denial_is_caught_by_policy_denied_error() -> None:
    from meshguard import ApprovalRequiredError, RateLimitError

    assert issubclass(ApprovalRequiredError, PolicyDeniedError)
    assert issubclass(RateLimitError, PolicyDeniedError)
    assert issubclass(GatewayUnavailableError, MeshGuardError)
    assert not issubclass(GatewayUnavailableError, PolicyDeniedError)


def test_configuration_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESHGUARD_URL", raising=False)
    monkeypatch.setenv("MESHGUARD_GATEWAY_URL", "http://127.0.0.1:1/")
    monkeypatch.setenv("MESHGUARD_AGENT_TOKEN", "old-name")
    monkeypatch.setenv("MESHGUARD_TRACE_ID", "trace-from-env")
    client = MeshGuardClient()
    assert (client.gateway_url, client.agent_token, client.trace_id) == (
        "http://127.0.0.1:1",
        "old-name",
        "trace-from-env",
    )
    monkeypatch.setenv("MESHGUARD_URL", "http://127.0.0.1:2")
    monkeypatch.setenv("MESHGUARD_TOKEN", "new-name")
    client = MeshGuardClient()
    assert (client.gateway_url, client.agent_token) == ("http://127.0.0.1:2", "new-name")
    monkeypatch.delenv("MESHGUARD_URL")
    monkeypatch.delenv("MESHGUARD_GATEWAY_URL")
    assert MeshGuardClient().gateway_url == "http://localhost:3100"
