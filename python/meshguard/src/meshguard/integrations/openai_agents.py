"""MeshGuard for the OpenAI Agents SDK: every tool call of an agent is checked before it runs.

``AgentGuard.govern(agent)`` returns a copy of an ``Agent`` (a ``GovernedAgent``) whose tool
calls go through the gateway, named by ``ToolNaming`` like in every MeshGuard adapter:

- **function tools** (``@function_tool``, agents as tools) and the tools of the agent's **local
  MCP servers** (``MCPServerStdio``, ``MCPServerStreamableHttp``, ...) are checked when the SDK
  asks whether a call needs approval (``needs_approval``), before any of it runs. Allowed: the
  tool runs and its outcome is recorded, linked to the check. Denied: the tool never runs and the
  model reads ``denial_message(decision)`` as its output. A human must approve: the run stops
  with the call among ``result.interruptions``, the SDK's own human-in-the-loop pause;
  ``apply_approvals`` hands the calls a human has decided on back to the run, and the gateway,
  asked again as the call is about to run, lets it run only with the approval (once: an approval
  is single use). Resuming can never approve anything: only the gateway can.
- **hosted MCP tools** (``HostedMCPTool``, called by OpenAI's servers) are checked in the SDK's
  ``on_approval_request``; a call that needs a human waits there up to ``hosted_approval_wait``
  seconds, as ``meshguard mcp run`` does, since the SDK's answer to a hosted request is final.
- the gateway cannot be asked (unreachable, 5xx, 401 for a revoked agent): the tool does not run
  and the run raises ``ToolCallCheckFailed`` (fail closed).

MCP tools are named as ``meshguard mcp run --server S`` names them (action ``mcp:S/T``, context
``{"server", "tool", "arguments"}``), so one policy governs an MCP tool whichever way it is
reached. Checks and records carry the run's trace id, the SDK's own (``trace_<hex>``, the id its
tracing shows), so that ``meshguard audit trace <id>`` shows a run, pauses and resumes included.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import inspect
import json
import threading
from dataclasses import dataclass, field
from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    Generic,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
    cast,
)

from agents import (
    Agent,
    FunctionTool,
    Handoff,
    HostedMCPTool,
    MCPToolApprovalFunctionResult,
    MCPToolApprovalRequest,
    RunContextWrapper,
    RunState,
    Tool,
    ToolApprovalItem,
)
from agents.exceptions import AgentsException
from agents.tool import ToolOriginType, ToolOutputText, get_function_tool_origin
from agents.tool_context import ToolContext
from agents.tracing import get_current_trace
from agents.tracing.traces import NoOpTrace
from openai.types.responses.tool_param import Mcp

from ..decision import Approval
from ..exceptions import MeshGuardError
from ._tool_calls import CheckedCall, ToolCallGovernor, ToolNaming, denial_message

__all__ = [
    "DEFAULT_HOSTED_APPROVAL_WAIT",
    "AgentGuard",
    "ApprovalRequest",
    "GovernedAgent",
    "ToolCallCheckFailed",
    "current_trace_id",
    "mcp_naming",
]

#: Seconds a hosted MCP call that needs a human waits for one (``meshguard mcp run``'s default).
DEFAULT_HOSTED_APPROVAL_WAIT = 120.0

#: The approval policy that makes OpenAI ask the SDK before every call of a hosted MCP server.
_EVERY_HOSTED_CALL = "always"

#: Calls remembered between their check and their run; a call forgotten is only checked again.
_MAX_REMEMBERED_CALLS = 1024

#: Marks a governed copy with its guard, so that governing it again changes nothing.
_GOVERNED_BY = "_meshguard_guard"

#: Set by the SDK on a call's context when its default error handler turned an exception into
#: the message the model reads; the tool failed though it returned.
_SDK_HANDLED_FAILURE = "_function_tool_default_failure_handled"

TContext = TypeVar("TContext")
Remembered = TypeVar("Remembered")
TraceIdSource = Callable[[RunContextWrapper[Any]], Optional[str]]
ToolInvoker = Callable[[ToolContext[Any], str], Awaitable[Any]]
ApprovalPolicy = Callable[[RunContextWrapper[Any], Dict[str, Any], str], Awaitable[bool]]


class ToolCallCheckFailed(AgentsException, MeshGuardError):
    """The gateway could not be asked about a tool call, so the call was not made (fail closed).

    Raised out of ``Runner.run``; ``error`` is the client's (``AuthenticationError`` for a revoked
    agent, ``GatewayUnavailableError``, ...). An ``AgentsException``, so that the SDK lets it
    through as it is, and a ``MeshGuardError``, so that ``except MeshGuardError`` catches it.
    """

    def __init__(self, action: str, error: MeshGuardError) -> None:
        super().__init__(f"MeshGuard could not check `{action}`, so it was not called: {error}")
        self.action = action
        self.error = error

    def __reduce__(self) -> Tuple[Any, Tuple[str, MeshGuardError]]:
        # Copies and pickles are built from the arguments, not from the message.
        return (type(self), (self.action, self.error))


@dataclass(frozen=True)
class ApprovalRequest:
    """A paused tool call that waits for a human: what to approve, and how."""

    approval_id: str
    tool: str
    call_id: str
    action: str
    resource: str
    arguments: Any
    policy: Optional[str]
    reason: Optional[str]
    approve: str
    item: ToolApprovalItem = field(repr=False, compare=False)


def current_trace_id(context: RunContextWrapper[Any]) -> Optional[str]:
    """The SDK's trace id of the running workflow; none when its tracing is disabled.

    With none, the client's own trace id is used (``MESHGUARD_TRACE_ID`` or one per client).
    """
    trace = get_current_trace()
    if trace is None or isinstance(trace, NoOpTrace):
        return None
    return trace.trace_id


def mcp_naming(naming: ToolNaming, server: str) -> ToolNaming:
    """``naming`` for the tools of MCP server ``server``: ``meshguard mcp run``'s names.

    The action is ``mcp:<server>/<tool>`` unless ``naming.actions`` maps the tool, and the context
    names the server, as the MCP proxy's checks do (SPEC section 10).
    """
    return dataclasses.replace(
        naming,
        action_prefix=f"mcp:{server}/",
        context={**naming.context, "server": server},
    )


class AgentGuard:
    """Puts the tool calls of agents under the gateway (see the module's docstring).

    ``governor`` holds the client and the naming (default: a client from the environment and
    ``ToolNaming()``); ``trace_id`` reads a call's trace id from the run's context (default: the
    SDK's own, ``current_trace_id``). The guard remembers, in memory, which paused calls wait for
    MeshGuard approvals.
    """

    def __init__(
        self,
        governor: Optional[ToolCallGovernor] = None,
        *,
        trace_id: TraceIdSource = current_trace_id,
        hosted_approval_wait: float = DEFAULT_HOSTED_APPROVAL_WAIT,
    ) -> None:
        self.governor = governor or ToolCallGovernor()
        self.trace_id = trace_id
        self.hosted_approval_wait = hosted_approval_wait
        self._mcp_governors: Dict[str, ToolCallGovernor] = {}
        # call id → the arguments checked and the answer, from the check to the run of the call.
        self._decided: _RecentCalls[Tuple[Any, CheckedCall]] = _RecentCalls()
        # call id → the check that paused the call for a human.
        self._paused: _RecentCalls[CheckedCall] = _RecentCalls()

    # --- agents and tools ---

    def govern(
        self, agent: Agent[TContext], *, allow_ungoverned: bool = False
    ) -> GovernedAgent[TContext]:
        """A copy of ``agent`` whose tool calls are checked, and of the agents it hands off to.

        Tools MeshGuard cannot check (hosted web or file search, computer, shell, apply-patch,
        custom tools) and ``Handoff`` objects to ungoverned agents raise ``TypeError``, unless
        ``allow_ungoverned`` keeps them as they are.
        """
        return self._govern_agent(agent, allow_ungoverned, {})

    def govern_tool(self, tool: FunctionTool) -> FunctionTool:
        """A copy of ``tool`` whose every call is checked first (named after ``tool.name``)."""
        return self._governed_function(tool, self.governor, tool.name)

    def govern_mcp_tool(self, tool: FunctionTool) -> FunctionTool:
        """``govern_tool`` for a tool the SDK made from a local MCP server: named ``mcp:S/T``."""
        origin = get_function_tool_origin(tool)
        if origin is None or origin.type != ToolOriginType.MCP or not origin.mcp_server_name:
            return self.govern_tool(tool)
        # The MCP tool's own name: the SDK may prefix the name the model sees with the server's.
        binding = getattr(tool, "_mcp_tool_binding", None)
        name = binding[1] if isinstance(binding, tuple) and len(binding) > 1 else tool.name
        return self._governed_function(tool, self._mcp_governor(origin.mcp_server_name), str(name))

    def govern_hosted_mcp(self, tool: HostedMCPTool) -> HostedMCPTool:
        """A copy of ``tool`` whose every call is checked in ``on_approval_request``.

        OpenAI asks the SDK only about the calls the server's ``require_approval`` names, so the
        copy asks for every call; a callback of the tool's own still decides after an allow.
        """
        governor = self._mcp_governor(tool.tool_config["server_label"])
        own = tool.on_approval_request

        async def on_approval_request(
            request: MCPToolApprovalRequest,
        ) -> MCPToolApprovalFunctionResult:
            call = await self._check(
                governor,
                request.data.name,
                _parsed(request.data.arguments),
                request.ctx_wrapper,
                approval_wait=self.hosted_approval_wait,
            )
            if not call.allowed:
                return {"approve": False, "reason": denial_message(call.decision)}
            if own is None:
                return {"approve": True}
            answer = own(request)
            return await answer if inspect.isawaitable(answer) else answer

        config = cast(Mcp, {**tool.tool_config, "require_approval": _EVERY_HOSTED_CALL})
        return dataclasses.replace(
            tool, tool_config=config, on_approval_request=on_approval_request
        )

    # --- approvals ---

    def approvals(self, interruptions: Sequence[ToolApprovalItem]) -> List[ApprovalRequest]:
        """The MeshGuard approvals among a run's ``interruptions``, in their order.

        Other interruptions (a tool's own ``needs_approval``) are the application's to decide.
        """
        requests: List[ApprovalRequest] = []
        for item in interruptions:
            call = self._paused.get(item.call_id or "")
            if call is None or not call.decision.approval_id:
                continue
            approval_id = call.decision.approval_id
            requests.append(
                ApprovalRequest(
                    approval_id=approval_id,
                    tool=call.tool,
                    call_id=item.call_id or "",
                    action=call.action,
                    resource=call.resource,
                    arguments=call.context.get("arguments"),
                    policy=call.decision.policy,
                    reason=call.decision.reason,
                    approve=f"meshguard approval approve {approval_id}",
                    item=item,
                )
            )
        return requests

    def apply_approvals(self, state: RunState[Any, Any]) -> List[Approval]:
        """Hands the paused calls a human has decided on back to ``state``; returns their approvals.

        A decided call is approved in the SDK's sense (``state.approve``): it goes on to the
        gateway, whose answer as the call is about to run decides (approved: it runs, once;
        denied or expired: the model is told). A call still pending stays paused: resuming the
        run pauses it again. Asks the gateway (``GET`` of each approval; no check is charged).
        """
        approvals: List[Approval] = []
        for request in self.approvals(state.get_interruptions()):
            approval = self.governor.client.get_approval(request.approval_id)
            approvals.append(approval)
            if not approval.pending:
                state.approve(request.item)
        return approvals

    # --- the checks ---

    def _govern_agent(
        self,
        agent: Agent[TContext],
        allow_ungoverned: bool,
        governed: Dict[int, GovernedAgent[Any]],
    ) -> GovernedAgent[TContext]:
        if isinstance(agent, GovernedAgent):
            if agent.meshguard is not self:
                raise TypeError(f"agent `{agent.name}` is governed by another AgentGuard")
            return agent
        if type(agent) is not Agent:
            raise TypeError(
                f"agent `{agent.name}` is a `{type(agent).__name__}`: AgentGuard.govern copies "
                "plain `Agent`s; govern a subclass's tools with govern_tool and govern_mcp_tool "
                "(and keep it as a handoff with allow_ungoverned=True)"
            )
        known = governed.get(id(agent))
        if known is not None:
            return known
        values = {
            option.name: getattr(agent, option.name)
            for option in dataclasses.fields(agent)
            if option.init
        }
        values["tools"] = [
            self._governed_tool(agent, tool, allow_ungoverned) for tool in agent.tools
        ]
        copy_of_agent: GovernedAgent[TContext] = GovernedAgent(**values, meshguard=self)
        # Registered before its handoffs are governed: agents may hand off to each other.
        governed[id(agent)] = copy_of_agent
        copy_of_agent.handoffs = [
            self._governed_handoff(agent, target, allow_ungoverned, governed)
            for target in agent.handoffs
        ]
        return copy_of_agent

    def _governed_tool(self, agent: Agent[Any], tool: Tool, allow_ungoverned: bool) -> Tool:
        if isinstance(tool, FunctionTool):
            return self.govern_tool(tool)
        if isinstance(tool, HostedMCPTool):
            return self.govern_hosted_mcp(tool)
        if allow_ungoverned:
            return tool
        raise TypeError(
            f"MeshGuard cannot check tool `{tool.name}` ({type(tool).__name__}) of agent "
            f"`{agent.name}`: only function tools and MCP tools are checked; remove it, or pass "
            "allow_ungoverned=True to keep it unchecked"
        )

    def _governed_handoff(
        self,
        agent: Agent[Any],
        target: Any,
        allow_ungoverned: bool,
        governed: Dict[int, GovernedAgent[Any]],
    ) -> Any:
        if type(target) is Agent or isinstance(target, GovernedAgent):
            return self._govern_agent(target, allow_ungoverned, governed)
        if allow_ungoverned:
            return target
        if isinstance(target, Handoff):
            # The SDK keeps a weak reference to the agent of ``handoff(agent)``.
            reference = getattr(target, "_agent_ref", None)
            handed_to = reference() if callable(reference) else None
            if isinstance(handed_to, GovernedAgent) and handed_to.meshguard is self:
                return target
        name = target.agent_name if isinstance(target, Handoff) else getattr(target, "name", "?")
        raise TypeError(
            f"agent `{agent.name}` hands off to `{name}`, which this guard does not govern: "
            "hand off to the plain `Agent` or to handoff(guard.govern(agent)), or pass "
            "allow_ungoverned=True"
        )

    def _mcp_governor(self, server: str) -> ToolCallGovernor:
        governor = self._mcp_governors.get(server)
        if governor is None:
            governor = ToolCallGovernor(
                self.governor.client,
                mcp_naming(self.governor.naming, server),
                approval_wait=self.governor.approval_wait,
            )
            self._mcp_governors[server] = governor
        return governor

    def _governed_function(
        self, tool: FunctionTool, governor: ToolCallGovernor, name: str
    ) -> FunctionTool:
        if getattr(tool, _GOVERNED_BY, None) is self:
            return tool
        governed = copy.copy(tool)  # the copy's invoker reports failures as the copy's own
        inner = governed.on_invoke_tool
        governed.needs_approval = self._approval_policy(governor, name, tool.needs_approval)
        governed.on_invoke_tool = self._invoker(governor, name, inner)
        setattr(governed, _GOVERNED_BY, self)
        return governed

    def _approval_policy(
        self,
        governor: ToolCallGovernor,
        name: str,
        own: Union[bool, ApprovalPolicy],
    ) -> ApprovalPolicy:
        """The tool's ``needs_approval``: the call's check, before anything of the call runs."""

        async def needs_approval(
            context: RunContextWrapper[Any], arguments: Dict[str, Any], call_id: str
        ) -> bool:
            call = await self._check(governor, name, arguments, context)
            self._decided.pop(call_id)
            if _waits_for_human(call):
                self._paused.put(call_id, call)
                return True
            self._paused.pop(call_id)
            if call.allowed and await _own_approval(own, context, arguments, call_id):
                # The application's own approval: its call is checked again when it runs.
                return True
            self._decided.put(call_id, (arguments, call))
            return False

        return needs_approval

    def _invoker(self, governor: ToolCallGovernor, name: str, inner: ToolInvoker) -> ToolInvoker:
        """The tool's ``on_invoke_tool``: runs the call only when the gateway allowed it."""

        async def invoke(context: ToolContext[Any], arguments: str) -> Any:
            call = self._take_decided(context.tool_call_id, arguments)
            if call is None:
                # No answer from just before: the run resumed after a pause, or the SDK was told
                # to approve the call. The gateway decides now (an approval is used only here).
                paused = self._paused.pop(context.tool_call_id)
                call = await self._check(
                    governor,
                    name,
                    _parsed(arguments),
                    context,
                    approval_id=paused.decision.approval_id if paused else None,
                )
            if not call.allowed:
                return denial_message(call.decision)
            call.start()
            try:
                output = await inner(context, arguments)
            except BaseException as error:
                await asyncio.to_thread(call.record, "error", error)
                raise
            status = "error" if _failure_reported(context) else "success"
            await asyncio.to_thread(call.record, status, _text_of(output))
            return output

        return invoke

    def _take_decided(self, call_id: str, arguments: str) -> Optional[CheckedCall]:
        decided = self._decided.pop(call_id)
        if decided is None:
            return None
        checked_arguments, call = decided
        # The answer holds only for the arguments that were checked.
        return call if checked_arguments == _parsed(arguments) else None

    async def _check(
        self,
        governor: ToolCallGovernor,
        name: str,
        arguments: Any,
        context: RunContextWrapper[Any],
        *,
        approval_id: Optional[str] = None,
        approval_wait: float = 0,
    ) -> CheckedCall:
        """One check, off the event loop; a gateway that cannot answer stops the run."""
        trace = self.trace_id(context)
        try:
            return await asyncio.to_thread(
                governor.check,
                name,
                arguments,
                approval_id=approval_id,
                trace_id=trace,
                approval_wait=approval_wait,
            )
        except MeshGuardError as error:
            raise ToolCallCheckFailed(governor.naming.action(name), error) from error


class _RecentCalls(Generic[Remembered]):
    """Values by tool call id, the newest ``_MAX_REMEMBERED_CALLS`` kept; safe across threads.

    A call whose check is never followed by its run (another guardrail refused it, the run was
    cancelled) would otherwise stay forever.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: Dict[str, Remembered] = {}

    def put(self, call_id: str, value: Remembered) -> None:
        with self._lock:
            self._values.pop(call_id, None)
            self._values[call_id] = value
            while len(self._values) > _MAX_REMEMBERED_CALLS:
                self._values.pop(next(iter(self._values)))

    def get(self, call_id: str) -> Optional[Remembered]:
        with self._lock:
            return self._values.get(call_id)

    def pop(self, call_id: str) -> Optional[Remembered]:
        with self._lock:
            return self._values.pop(call_id, None)


@dataclass
class GovernedAgent(Agent[TContext]):
    """An ``Agent`` whose tool calls are checked, made by ``AgentGuard.govern``.

    The tools of its MCP servers are listed anew on every turn; each is governed as it is listed.
    """

    meshguard: AgentGuard = field(kw_only=True, repr=False, compare=False)

    async def get_mcp_tools(self, run_context: RunContextWrapper[TContext]) -> List[Tool]:
        """The MCP servers' tools, each governed (named ``mcp:<server>/<tool>``)."""
        tools: List[Tool] = []
        for tool in await super().get_mcp_tools(run_context):
            if not isinstance(tool, FunctionTool):
                raise TypeError(f"MeshGuard cannot check MCP tool `{tool.name}`")
            tools.append(self.meshguard.govern_mcp_tool(tool))
        return tools


def _failure_reported(context: ToolContext[Any]) -> bool:
    return bool(getattr(context, _SDK_HANDLED_FAILURE, False))


def _text_of(output: Any) -> Any:
    """What the model reads of a tool's output, for the record: the text of text parts."""
    if isinstance(output, (list, tuple)):
        return "\n".join(str(_text_of(part)) for part in output)
    if isinstance(output, Mapping) and output.get("type") == "text":
        return output.get("text")
    return output.text if isinstance(output, ToolOutputText) else output


def _waits_for_human(call: CheckedCall) -> bool:
    return not call.allowed and call.decision.requires_approval and bool(call.decision.approval_id)


def _parsed(arguments: Optional[str]) -> Any:
    """A call's arguments as the model sent them: JSON when they parse, else the raw text."""
    if not arguments:
        return {}
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


async def _own_approval(
    own: Union[bool, ApprovalPolicy],
    context: RunContextWrapper[Any],
    arguments: Dict[str, Any],
    call_id: str,
) -> bool:
    if isinstance(own, bool):
        return own
    answer = own(context, arguments, call_id)
    return bool(await answer if inspect.isawaitable(answer) else answer)
