"""Adapters that put the tool calls of agent frameworks under MeshGuard.

Each adapter lives in its own module and imports its framework only there, so ``meshguard``
itself never depends on a framework:

- ``meshguard.integrations.openai_agents``: the OpenAI Agents SDK (``openai-agents``);
- ``meshguard.integrations.langgraph``: LangGraph and LangChain tools (``langgraph``);
- ``meshguard.integrations.crewai``: CrewAI crews, through CrewAI's tool-call hooks (``crewai``).

All of them name a call the way ``meshguard mcp run`` does (``ToolNaming``) and check, run and
record it through one ``ToolCallGovernor``, so that one policy governs a tool whichever
framework calls it.
"""

from ._tool_calls import (
    DEFAULT_RESOURCE_ARGUMENTS,
    CheckedCall,
    ToolCallGovernor,
    ToolNaming,
    denial_message,
)

__all__ = [
    "DEFAULT_RESOURCE_ARGUMENTS",
    "CheckedCall",
    "ToolCallGovernor",
    "ToolNaming",
    "denial_message",
]
