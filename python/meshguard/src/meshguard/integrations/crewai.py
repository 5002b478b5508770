"""CrewAI under MeshGuard: every tool call of a crew is checked before it runs, then recorded.

CrewAI (``crewai`` 1.x) runs its global before/after tool-call hooks around every tool call its
agents make, on both of its paths (ReAct text and native function calling), whatever the tool:
the crew's own tools, delegation, MCP tools. ``MeshGuardToolHooks`` registers one of each:

- before a call: ``ToolCallGovernor.check`` under the run's trace id (CrewAI's execution id, one
  per kickoff). A call that needs a human waits up to ``approval_wait`` seconds for
  ``meshguard approval approve`` and, once approved, runs once. Anything but an allow blocks the
  call (the hook returns ``False``);
- after a call: a blocked call's result, which CrewAI words "Tool execution blocked by hook", is
  replaced by MeshGuard's reason so that the model reads why; a call that ran is recorded,
  linked to its check.

CrewAI runs the tool when a hook raises, so the before hook never raises: a gateway it cannot
ask (unreachable, agent revoked, 5xx) blocks the call like a denial (fail closed).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Dict, Optional, Type, Union

from crewai.execution import get_execution_uuid
from crewai.hooks import (
    ToolCallHookContext,
    register_after_tool_call_hook,
    register_before_tool_call_hook,
    unregister_after_tool_call_hook,
    unregister_before_tool_call_hook,
)
from crewai.tools.tool_failure import ToolFailure

from ._tool_calls import CheckedCall, ToolCallGovernor, denial_message

__all__ = ["DEFAULT_APPROVAL_WAIT", "MeshGuardToolHooks"]

logger = logging.getLogger("meshguard.integrations")

#: Seconds a call that needs approval waits for a human (as ``meshguard mcp run`` does).
DEFAULT_APPROVAL_WAIT = 120.0


@dataclass
class _PendingCall:
    """A call between its two hooks: the allowed call to record, or what the model is told."""

    # Kept alive so that its id, the key of this entry, cannot be reused meanwhile.
    arguments: Dict[str, Any]
    outcome: Union[CheckedCall, str]


class MeshGuardToolHooks:
    """CrewAI tool-call hooks that put every tool call under the gateway's policies.

    ``install()`` registers them for every crew and agent of the process (CrewAI's hooks are
    global); ``uninstall()`` or the end of a ``with`` block removes them. Install them after
    your own before-hooks, so that MeshGuard checks the arguments those hooks leave.
    """

    def __init__(
        self,
        governor: Optional[ToolCallGovernor] = None,
        *,
        approval_wait: Optional[float] = None,
    ) -> None:
        self.governor = governor or ToolCallGovernor()
        # CrewAI cannot pause a run and resume it later: a call that needs a human waits in the
        # hook. Given here, else the governor's, else DEFAULT_APPROVAL_WAIT; 0 does not wait.
        if approval_wait is None:
            approval_wait = self.governor.approval_wait
        self.approval_wait = DEFAULT_APPROVAL_WAIT if approval_wait is None else approval_wait
        self._lock = threading.Lock()
        # CrewAI hands the same arguments dict to both hooks of one call, and a new one to each
        # call: its id pairs a call's after-hook with its before-hook, parallel calls included.
        self._pending: Dict[int, _PendingCall] = {}
        self._installed = False

    def install(self) -> MeshGuardToolHooks:
        """Registers both hooks with CrewAI (once); returns ``self``."""
        if not self._installed:
            register_before_tool_call_hook(self.before_tool_call)
            register_after_tool_call_hook(self.after_tool_call)
            self._installed = True
        return self

    def uninstall(self) -> None:
        """Removes both hooks: tool calls are no longer checked."""
        unregister_before_tool_call_hook(self.before_tool_call)
        unregister_after_tool_call_hook(self.after_tool_call)
        self._installed = False

    def __enter__(self) -> MeshGuardToolHooks:
        return self.install()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.uninstall()

    def before_tool_call(self, context: ToolCallHookContext) -> Optional[bool]:
        """Checks the call; ``False`` (CrewAI's "block") unless the gateway allowed it."""
        try:
            call = self.governor.check(
                context.tool_name,
                context.tool_input,
                trace_id=get_execution_uuid(),
                approval_wait=self.approval_wait,
            )
        except Exception as error:  # noqa: BLE001 - CrewAI would run the tool if this raised
            action = self.governor.naming.action(context.tool_name)
            logger.warning("MeshGuard could not check %s: %s", action, error)
            self._remember(
                context, f"MeshGuard could not check `{action}`, so it was not called: {error}"
            )
            return False
        if not call.allowed:
            self._remember(context, denial_message(call.decision))
            return False
        self._remember(context, call)
        call.start()
        return None

    def after_tool_call(self, context: ToolCallHookContext) -> Optional[str]:
        """Tells the model why a refused call did not run; records one that ran."""
        with self._lock:
            pending = self._pending.pop(id(context.tool_input), None)
        if pending is None:
            return None  # blocked by another hook before MeshGuard was asked
        if isinstance(pending.outcome, str):
            return pending.outcome
        raw = context.raw_tool_result
        # CrewAI's own rule: a tool failed only when it returned a ToolFailure (an exception it
        # caught reaches the hooks as text, which is recorded as the result).
        if isinstance(raw, ToolFailure):
            pending.outcome.record("error", raw.as_agent_message())
        else:
            pending.outcome.record("success", context.tool_result)
        return None

    def _remember(self, context: ToolCallHookContext, outcome: Union[CheckedCall, str]) -> None:
        with self._lock:
            self._pending[id(context.tool_input)] = _PendingCall(context.tool_input, outcome)
