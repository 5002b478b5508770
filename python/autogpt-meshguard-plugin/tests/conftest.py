"""Fixtures of the AutoGPT suites: AutoGPT's environment, and the docs page's ``gateway``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from gateway_process import AgentIdentity, Gateway

# AutoGPT reads its environment once, at import, into a singleton Config, and puts its workspace
# under the working directory of that moment: both are fixed before any test imports it.
AUTOGPT_ENV = {
    "OPENAI_API_KEY": "sk-offline-test",
    "MEMORY_BACKEND": "no_memory",
    # shell commands enabled, so that only MeshGuard stands between the agent and the shell
    "EXECUTE_LOCAL_COMMANDS": "True",
    "RESTRICT_TO_WORKSPACE": "True",
}


@pytest.fixture(scope="session", autouse=True)
def autogpt_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The working directory (and so the ``auto_gpt_workspace``) of in-process AutoGPT."""
    home = tmp_path_factory.mktemp("autogpt-home")
    previous = os.getcwd()
    saved = {key: os.environ.get(key) for key in AUTOGPT_ENV}
    os.environ.update(AUTOGPT_ENV)
    os.chdir(home)
    try:
        yield home
    finally:
        os.chdir(previous)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def workspace(autogpt_home: Path) -> Path:
    """AutoGPT's workspace, as its own ``WORKSPACE_PATH`` names it."""
    from autogpt.workspace import WORKSPACE_PATH

    return Path(WORKSPACE_PATH)


@pytest.fixture
def page_agent(
    shared_gateway: Gateway, agent: AgentIdentity, monkeypatch: pytest.MonkeyPatch
) -> AgentIdentity:
    """Configures the wrapper's ``gateway`` as the page says: MESHGUARD_URL and MESHGUARD_TOKEN."""
    from meshguard_autogpt import gateway

    monkeypatch.setenv("MESHGUARD_URL", shared_gateway.url)
    monkeypatch.setenv("MESHGUARD_TOKEN", agent.token)
    monkeypatch.delenv("MESHGUARD_TRACE_ID", raising=False)
    gateway.configure()
    return agent
