"""LangChain integration, API-compatible with the published 0.1.x ``meshguard.langchain``.

LangChain itself is imported only by ``create_governed_agent``; the wrappers work on any object
with ``run``/``arun`` and a ``name``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Optional

from .client import MeshGuardClient
from .exceptions import PolicyDeniedError


def governed_tool(
    action: str,
    client: Optional[MeshGuardClient] = None,
    on_deny: Optional[Callable[..., Any]] = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Runs the decorated tool only when ``action`` is allowed; ``on_deny`` handles denials."""

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            active = client or MeshGuardClient()
            try:
                decision = active.enforce(action)
            except PolicyDeniedError as denied:
                if on_deny:
                    return on_deny(denied, *args, **kwargs)
                raise
            if "meshguard_decision" in func.__code__.co_varnames:
                kwargs["meshguard_decision"] = decision
            return func(*args, **kwargs)

        wrapper.__dict__["_meshguard_action"] = action
        return wrapper

    return decorator


class GovernedTool:
    """An existing LangChain tool whose every run is checked as ``action`` first."""

    def __init__(
        self,
        tool: Any,
        action: str,
        client: Optional[MeshGuardClient] = None,
        on_deny: Optional[Callable[..., Any]] = None,
    ) -> None:
        self.tool = tool
        self.action = action
        self.client = client or MeshGuardClient()
        self.on_deny = on_deny
        self.name = getattr(tool, "name", tool.__class__.__name__)
        self.description = getattr(tool, "description", "")

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the tool when allowed."""
        try:
            self.client.enforce(self.action)
        except PolicyDeniedError as denied:
            if self.on_deny:
                return self.on_deny(denied, *args, **kwargs)
            raise
        return self.tool.run(*args, **kwargs)

    async def arun(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the tool asynchronously when allowed (the check itself is synchronous)."""
        try:
            self.client.enforce(self.action)
        except PolicyDeniedError as denied:
            if self.on_deny:
                return self.on_deny(denied, *args, **kwargs)
            raise
        return await self.tool.arun(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Same as ``run``: LangChain calls tools directly too."""
        return self.run(*args, **kwargs)


class GovernedToolkit:
    """Governs several tools at once, each under the action ``action_map`` gives its name."""

    def __init__(
        self,
        tools: List[Any],
        client: Optional[MeshGuardClient] = None,
        action_map: Optional[Dict[str, str]] = None,
        default_action: str = "execute:tool",
        on_deny: Optional[Callable[..., Any]] = None,
    ) -> None:
        self.tools = tools
        self.client = client or MeshGuardClient()
        self.action_map = action_map or {}
        self.default_action = default_action
        self.on_deny = on_deny

    def get_action(self, tool: Any) -> str:
        """The action checked for ``tool``."""
        name = getattr(tool, "name", tool.__class__.__name__)
        return self.action_map.get(name, self.default_action)

    def get_tools(self) -> List[GovernedTool]:
        """The governed versions of every tool."""
        return [
            GovernedTool(tool, self.get_action(tool), self.client, self.on_deny)
            for tool in self.tools
        ]


def create_governed_agent(
    llm: Any,
    tools: List[Any],
    client: Optional[MeshGuardClient] = None,
    action_map: Optional[Dict[str, str]] = None,
    agent_type: str = "zero-shot-react-description",
    **kwargs: Any,
) -> Any:
    """A LangChain agent whose tools are all governed (needs ``pip install langchain``)."""
    try:
        from langchain.agents import AgentType, initialize_agent
    except ImportError as missing:
        raise ImportError(
            "LangChain is required for this feature. Install it with: pip install langchain"
        ) from missing
    toolkit = GovernedToolkit(tools=tools, client=client, action_map=action_map)
    agent_types = {
        "zero-shot-react-description": AgentType.ZERO_SHOT_REACT_DESCRIPTION,
        "conversational-react-description": AgentType.CONVERSATIONAL_REACT_DESCRIPTION,
        "structured-chat-zero-shot-react-description": (
            AgentType.STRUCTURED_CHAT_ZERO_SHOT_REACT_DESCRIPTION
        ),
    }
    return initialize_agent(
        tools=toolkit.get_tools(),
        llm=llm,
        agent=agent_types.get(agent_type, AgentType.ZERO_SHOT_REACT_DESCRIPTION),
        **kwargs,
    )
