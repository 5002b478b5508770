"""Fixtures of the CrewAI suite: the real gateway, and an agent under the suite's policy.

CrewAI reads its environment when it is first imported, by the tests, after this file: no
telemetry, no trace upload, no version check (nothing goes to the network), and its data dir,
which it creates at import, a temporary one removed when the process exits.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from gateway_process import AgentIdentity, Gateway
from meshguard import MeshGuardClient

POLICY = Path(__file__).parent / "policies" / "crewai-tests.yaml"

_crewai_storage = tempfile.mkdtemp(prefix="meshguard-crewai-")
# Registered before CrewAI is imported, so it runs after CrewAI's own exit handlers.
atexit.register(shutil.rmtree, _crewai_storage, ignore_errors=True)
os.environ.update(
    {
        "OTEL_SDK_DISABLED": "true",
        "CREWAI_DISABLE_TELEMETRY": "true",
        "CREWAI_DISABLE_TRACKING": "true",
        "CREWAI_TRACING_ENABLED": "false",
        "CREWAI_DISABLE_VERSION_CHECK": "true",
        "CREWAI_STORAGE_DIR": _crewai_storage,
    }
)


@pytest.fixture
def crew_agent(shared_gateway: Gateway) -> AgentIdentity:
    """A fresh agent under the suite's policy (its own approvals and rate limits)."""
    shared_gateway.apply_policy(POLICY)
    return shared_gateway.create_agent(prefix="crew", tags="crewai-tests")


@pytest.fixture
def client(shared_gateway: Gateway, crew_agent: AgentIdentity) -> Iterator[MeshGuardClient]:
    """The crew agent's SDK client."""
    with MeshGuardClient(gateway_url=shared_gateway.url, agent_token=crew_agent.token) as client:
        yield client
