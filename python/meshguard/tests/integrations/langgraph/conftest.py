"""Fixtures of the LangGraph adapter's tests: an agent under the tests' policy and its client."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway_process import AgentIdentity, Gateway
from meshguard import MeshGuardClient

POLICIES = Path(__file__).parent / "policies"


@pytest.fixture
def graph_agent(shared_gateway: Gateway) -> AgentIdentity:
    """A fresh agent that the policy `langgraph-tests` governs."""
    shared_gateway.apply_policy(POLICIES / "langgraph-tests.yaml")
    return shared_gateway.create_agent(prefix="graph", tags="langgraph-tests")


@pytest.fixture
def graph_client(shared_gateway: Gateway, graph_agent: AgentIdentity) -> MeshGuardClient:
    """The agent's client (its own trace id: the graph's runs name theirs)."""
    return MeshGuardClient(gateway_url=shared_gateway.url, agent_token=graph_agent.token)
