"""Fixtures of the OpenAI Agents SDK adapter's tests: an agent, its guard, the SDK's traces."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from agents.tracing import set_trace_processors
from trace_recorder import TraceRecorder

from gateway_process import AgentIdentity, Gateway
from meshguard import MeshGuardClient
from meshguard.integrations import ToolCallGovernor
from meshguard.integrations.openai_agents import AgentGuard

POLICIES = Path(__file__).parent / "policies"


@pytest.fixture(autouse=True)
def traces() -> Iterator[TraceRecorder]:
    """The SDK's traces of this test; its default exporter (to OpenAI) is left out."""
    recorder = TraceRecorder()
    set_trace_processors([recorder])
    yield recorder
    set_trace_processors([])


@pytest.fixture
def tools_agent(shared_gateway: Gateway) -> AgentIdentity:
    """A fresh agent that the policy `openai-agents-tests` governs."""
    shared_gateway.apply_policy(POLICIES / "openai-agents-tests.yaml")
    return shared_gateway.create_agent(prefix="agents-sdk", tags="openai-agents-tests")


@pytest.fixture
def client(shared_gateway: Gateway, tools_agent: AgentIdentity) -> MeshGuardClient:
    """The agent's client."""
    return MeshGuardClient(gateway_url=shared_gateway.url, agent_token=tools_agent.token)


@pytest.fixture
def guard(client: MeshGuardClient) -> AgentGuard:
    """A guard with the default naming; hosted MCP calls wait at most 20 s for a human."""
    return AgentGuard(ToolCallGovernor(client), hosted_approval_wait=20)
