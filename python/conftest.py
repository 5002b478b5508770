"""Fixtures shared by every Python suite: the real gateway (see gateway_process.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from gateway_process import AUTOGPT_POLICY, AgentIdentity, Gateway, meshguard_binary


@pytest.fixture(scope="session")
def shared_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway per test process with the docs page's policy; tests get their own agents."""
    gateway = Gateway(meshguard_binary(), tmp_path_factory.mktemp("gateway") / "data")
    gateway.start()
    try:
        gateway.apply_policy(AUTOGPT_POLICY)
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def private_gateway(tmp_path: Path) -> Iterator[Gateway]:
    """A gateway of this test alone, for tests that stop it or change its policies."""
    gateway = Gateway(meshguard_binary(), tmp_path / "gateway-data")
    gateway.start()
    try:
        gateway.apply_policy(AUTOGPT_POLICY)
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def agent(shared_gateway: Gateway) -> AgentIdentity:
    """A fresh agent with the page's trust and tags (so rate limits are this test's alone)."""
    return shared_gateway.create_agent()


@pytest.fixture
def wait_until() -> Callable[..., Any]:
    """Polls ``predicate`` until it returns something truthy (bounded), and returns it."""

    def poll(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value or time.monotonic() > deadline:
                return value
            time.sleep(interval)

    return poll
