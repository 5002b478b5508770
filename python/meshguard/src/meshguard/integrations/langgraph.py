"""MeshGuard for LangGraph: every tool call of a ``ToolNode`` is checked before it runs.

``ToolCallGuard`` is a ``wrap_tool_call`` for LangGraph's prebuilt ``ToolNode`` (and so for
``create_react_agent``); ``GovernedToolNode`` is a ``ToolNode`` with it built in. For each call:

- the gateway is asked first, the call named by ``ToolNaming`` (action ``tool:<name>``);
- allowed: the tool runs and its outcome is recorded, linked to the check;
- denied: the tool never runs; the model gets a ``ToolMessage`` saying why
  (``denial_message``) and the run goes on;
- a human must approve: the node calls LangGraph's ``interrupt`` with an ``ApprovalRequest``,
  so that a graph with a checkpointer pauses. Resumed (``Command(resume=...)``), the guard asks
  the gateway again: the tool runs only once the approval is ``approved`` (and then exactly
  once, the approval being single use), the model is told of a denial, and a call still pending
  pauses the graph again. The resume value is not read: only the gateway can approve;
- the gateway cannot be asked (unreachable, 5xx, 401 for a revoked agent): the tool does not
  run and the ``MeshGuardError`` propagates, so the run stops (fail closed) and, with a
  checkpointer, can be resumed once the gateway answers again.

LangGraph runs a node again from its start when it is resumed, so every call of the node is
checked again: with one task per tool call (``create_react_agent``'s default ``version="v2"``)
only the call that waited runs again.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Awaitable, Callable, Dict, Optional, Sequence, Tuple, TypedDict, Union

from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.errors import GraphBubbleUp
from langgraph.prebuilt import ToolNode
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command, Interrupt, interrupt

from ._tool_calls import CheckedCall, ToolCallGovernor, denial_message

__all__ = [
    "APPROVAL_REQUEST_KIND",
    "TRACE_ID_KEY",
    "ApprovalRequest",
    "GovernedToolNode",
    "ToolCallGuard",
    "resume_approvals",
    "trace_id_from_config",
]

#: The key of ``config["configurable"]`` read for the trace id of a run's checks and records.
TRACE_ID_KEY = "meshguard_trace_id"

#: ``ApprovalRequest["kind"]``: tells MeshGuard's interrupts from a graph's own.
APPROVAL_REQUEST_KIND = "meshguard_approval"

ToolOutcome = Union[ToolMessage, Command[Any]]
TraceIdSource = Callable[[RunnableConfig], Optional[str]]


class ApprovalRequest(TypedDict):
    """The value of the interrupt a call that needs a human raises: what to approve, and how."""

    kind: str
    approval_id: str
    tool: str
    tool_call_id: Optional[str]
    action: str
    resource: str
    arguments: Any
    policy: Optional[str]
    reason: Optional[str]
    approve: str


def trace_id_from_config(config: RunnableConfig) -> Optional[str]:
    """The trace id in ``config["configurable"]["meshguard_trace_id"]``, else none.

    With none, the client's own trace id is used (``MESHGUARD_TRACE_ID`` or one per client).
    """
    value = (config.get("configurable") or {}).get(TRACE_ID_KEY)
    return str(value) if value else None


class ToolCallGuard:
    """Checks, pauses for approval, runs and records each tool call of a ``ToolNode``.

    Pass ``wrap_tool_call`` and ``awrap_tool_call`` to ``ToolNode`` (or use
    ``GovernedToolNode``). ``trace_id`` reads the trace id of a call's check and record from the
    run's config (default: ``trace_id_from_config``).
    """

    def __init__(
        self,
        governor: Optional[ToolCallGovernor] = None,
        *,
        trace_id: TraceIdSource = trace_id_from_config,
    ) -> None:
        self.governor = governor or ToolCallGovernor()
        self.trace_id = trace_id

    def wrap_tool_call(
        self, request: ToolCallRequest, execute: Callable[[ToolCallRequest], ToolOutcome]
    ) -> ToolOutcome:
        """Runs the call only when the gateway allows it (``ToolNode``'s ``wrap_tool_call``)."""
        tool, arguments, trace = self._call_of(request)
        # The graph pauses instead of holding a thread while a human decides.
        call = self.governor.check(tool, arguments, trace_id=trace, approval_wait=0)
        while _needs_approval(call):
            approval_id = str(call.decision.approval_id)
            interrupt(_approval_request(call, request))
            # Resumed. Only the gateway approves: until it says so the graph pauses again.
            if self.governor.client.get_approval(approval_id).pending:
                continue
            call = self.governor.check(
                tool, arguments, approval_id=approval_id, trace_id=trace, approval_wait=0
            )
        if not call.allowed:
            return _refusal(call, request)
        call.start()
        try:
            outcome = execute(request)
        except GraphBubbleUp:
            # LangGraph's control flow, not the tool's failure: a tool that paused runs again
            # (checked again) when resumed, a handoff goes on in the parent graph.
            raise
        except BaseException as error:
            call.record("error", error)
            raise
        call.record(*_outcome_record(outcome))
        return outcome

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        execute: Callable[[ToolCallRequest], Awaitable[ToolOutcome]],
    ) -> ToolOutcome:
        """``wrap_tool_call`` for async runs; the gateway is asked off the event loop."""
        tool, arguments, trace = self._call_of(request)
        call = await asyncio.to_thread(
            self.governor.check, tool, arguments, trace_id=trace, approval_wait=0
        )
        while _needs_approval(call):
            approval_id = str(call.decision.approval_id)
            interrupt(_approval_request(call, request))
            approval = await asyncio.to_thread(self.governor.client.get_approval, approval_id)
            if approval.pending:
                continue
            call = await asyncio.to_thread(
                self.governor.check,
                tool,
                arguments,
                approval_id=approval_id,
                trace_id=trace,
                approval_wait=0,
            )
        if not call.allowed:
            return _refusal(call, request)
        call.start()
        try:
            outcome = await execute(request)
        except GraphBubbleUp:
            raise
        except BaseException as error:
            await asyncio.to_thread(call.record, "error", error)
            raise
        await asyncio.to_thread(call.record, *_outcome_record(outcome))
        return outcome

    def _call_of(self, request: ToolCallRequest) -> Tuple[str, Any, Optional[str]]:
        call = request.tool_call
        return call["name"], call["args"], self.trace_id(request.runtime.config)


class GovernedToolNode(ToolNode):
    """A ``ToolNode`` whose every call goes through a ``ToolCallGuard``.

    ``options`` are ``ToolNode``'s (``name``, ``handle_tool_errors``, ``messages_key``…); to
    combine MeshGuard with a wrapper of your own, call ``ToolCallGuard`` from it instead.
    """

    def __init__(
        self,
        tools: Sequence[Any],
        governor: Optional[ToolCallGovernor] = None,
        *,
        trace_id: TraceIdSource = trace_id_from_config,
        **options: Any,
    ) -> None:
        self.guard = ToolCallGuard(governor, trace_id=trace_id)
        super().__init__(
            tools,
            wrap_tool_call=self.guard.wrap_tool_call,
            awrap_tool_call=self.guard.awrap_tool_call,
            **options,
        )


def resume_approvals(interrupts: Sequence[Interrupt[Any]]) -> Command[Any]:
    """The ``Command`` that resumes every MeshGuard approval among ``interrupts``.

    Each is resumed with its approval id (the id only names what the caller expects; the
    gateway decides). Needed when several calls wait at once: LangGraph then wants each
    interrupt named.
    """
    return Command(
        resume={
            pending.id: pending.value["approval_id"]
            for pending in interrupts
            if isinstance(pending.value, dict)
            and pending.value.get("kind") == APPROVAL_REQUEST_KIND
        }
    )


def _needs_approval(call: CheckedCall) -> bool:
    return not call.allowed and call.decision.requires_approval and bool(call.decision.approval_id)


def _approval_request(call: CheckedCall, request: ToolCallRequest) -> ApprovalRequest:
    approval_id = str(call.decision.approval_id)
    return ApprovalRequest(
        kind=APPROVAL_REQUEST_KIND,
        approval_id=approval_id,
        tool=call.tool,
        tool_call_id=request.tool_call.get("id"),
        action=call.action,
        resource=call.resource,
        arguments=call.context.get("arguments"),
        policy=call.decision.policy,
        reason=call.decision.reason,
        approve=f"meshguard approval approve {approval_id}",
    )


def _refusal(call: CheckedCall, request: ToolCallRequest) -> ToolMessage:
    """What the model reads instead of the tool's output; the decision rides as the artifact."""
    decision: Dict[str, Any] = dataclasses.asdict(call.decision)
    return ToolMessage(
        content=denial_message(call.decision),
        name=call.tool,
        tool_call_id=request.tool_call.get("id") or "",
        status="error",
        artifact={"meshguard": decision},
    )


def _outcome_record(outcome: ToolOutcome) -> Tuple[str, Any]:
    """The status and result recorded for what the tool returned."""
    if isinstance(outcome, ToolMessage):
        return ("error" if outcome.status == "error" else "success"), outcome.content
    return "success", outcome
