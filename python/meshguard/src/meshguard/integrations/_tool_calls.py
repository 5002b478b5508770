"""How a framework's tool call becomes a MeshGuard check, and how its outcome is recorded.

Shared by every framework adapter so that they all name calls alike (the MCP proxy's defaults,
SPEC section 10): action ``tool:<name>`` unless mapped, the resource from the call's ``path``,
``uri``, ``url``, ``file`` or ``filename`` argument, and the arguments in ``context.arguments``
(which also binds an approval to these exact arguments).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from ..client import MeshGuardClient
from ..decision import PolicyDecision
from ..exceptions import MeshGuardError

logger = logging.getLogger("meshguard.integrations")

#: The arguments read, in this order, for a call's resource when no argument is named.
DEFAULT_RESOURCE_ARGUMENTS: Tuple[str, ...] = ("path", "uri", "url", "file", "filename")

#: Longest tool result kept in the audit record (the output itself may be large or private).
MAX_RESULT_CHARS = 4096


@dataclass(frozen=True)
class ToolNaming:
    """How tool calls are named for the gateway.

    ``actions`` maps a tool name to the action checked for it (default ``<prefix><name>``);
    ``resource_arguments`` maps a tool name to the argument that holds its resource (default: the
    first string among ``DEFAULT_RESOURCE_ARGUMENTS``); ``context`` is added to every check.
    """

    actions: Mapping[str, str] = field(default_factory=dict)
    action_prefix: str = "tool:"
    resource_arguments: Mapping[str, str] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)

    def action(self, tool: str) -> str:
        """The action checked for a call of ``tool``."""
        return self.actions.get(tool) or f"{self.action_prefix}{tool}"

    def resource(self, tool: str, arguments: Any) -> str:
        """The resource: the named (or first default) argument holding a string, else ``*``."""
        if not isinstance(arguments, Mapping):
            return "*"
        named = self.resource_arguments.get(tool)
        value: Any = None
        if named is not None:
            value = arguments.get(named)
        else:
            for candidate in DEFAULT_RESOURCE_ARGUMENTS:
                if isinstance(arguments.get(candidate), str):
                    value = arguments[candidate]
                    break
        return value if isinstance(value, str) and value else "*"

    def context_for(self, tool: str, arguments: Any) -> Dict[str, Any]:
        """The check's context: the configured context, the tool's name and its arguments."""
        return {**self.context, "tool": tool, "arguments": _json_safe(arguments)}


def _json_safe(value: Any) -> Any:
    """``value`` as JSON the gateway accepts: containers kept, anything else as its string."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return str(value)


def denial_message(decision: PolicyDecision) -> str:
    """What a model is told when its tool call is not allowed: the gateway's code and reason."""
    code = decision.code or decision.decision
    reason = decision.reason or "not allowed by policy"
    if decision.requires_approval and decision.approval_id:
        return (
            f"MeshGuard: `{decision.action}` needs a human's approval "
            f"(approval {decision.approval_id}): {reason}"
        )
    return f"MeshGuard denied `{decision.action}` ({code}): {reason}"


@dataclass
class CheckedCall:
    """One tool call as the gateway answered it; ``record`` files its outcome once it ran."""

    governor: ToolCallGovernor
    tool: str
    action: str
    resource: str
    context: Dict[str, Any]
    decision: PolicyDecision
    trace_id: Optional[str] = None
    _started: float = field(default_factory=time.monotonic)
    _recorded: bool = False

    @property
    def allowed(self) -> bool:
        """True only when the gateway allowed the call."""
        return self.decision.allowed

    def start(self) -> None:
        """Marks the moment the tool starts running (for the recorded duration)."""
        self._started = time.monotonic()

    def record(self, status: str, result: Any = None) -> None:
        """Records ``status`` (``success`` or ``error``) linked to the check; never raises.

        The tool already ran: a lost record is logged, it must not hide the tool's own outcome.
        """
        if self._recorded:
            return
        self._recorded = True
        text = None if result is None else str(result)[:MAX_RESULT_CHARS]
        try:
            self.governor.client.record(
                self.action,
                self.resource,
                status=status,
                result=text,
                audit_id=self.decision.audit_id,
                duration_ms=(time.monotonic() - self._started) * 1000,
                context={"tool": self.tool},
                trace_id=self.trace_id,
            )
        except MeshGuardError as error:
            logger.warning("MeshGuard could not record %s: %s", self.action, error)


class ToolCallGovernor:
    """Checks tool calls with one client and one naming; the adapters' common core.

    ``check`` returns the gateway's decision whatever it is and raises only when the gateway
    cannot be asked (unreachable, 401, 5xx, a malformed answer): the adapters then refuse the
    call, so a tool never runs unchecked. With ``approval_wait`` seconds, a call that needs
    approval waits for the human and is checked again with the approval.
    """

    def __init__(
        self,
        client: Optional[MeshGuardClient] = None,
        naming: Optional[ToolNaming] = None,
        *,
        approval_wait: Optional[float] = None,
    ) -> None:
        self.client = client or MeshGuardClient()
        self.naming = naming or ToolNaming()
        self.approval_wait = approval_wait

    def check(
        self,
        tool: str,
        arguments: Any,
        *,
        approval_id: Optional[str] = None,
        trace_id: Optional[str] = None,
        approval_wait: Optional[float] = None,
    ) -> CheckedCall:
        """Asks the gateway about one call of ``tool`` with ``arguments``."""
        action = self.naming.action(tool)
        resource = self.naming.resource(tool, arguments)
        context = self.naming.context_for(tool, arguments)
        decision = self.client.check(
            action, resource, context, approval_id=approval_id, trace_id=trace_id
        )
        wait = self.approval_wait if approval_wait is None else approval_wait
        if not decision.allowed and decision.requires_approval and decision.approval_id and wait:
            approval = self.client.wait_for_approval(decision.approval_id, wait)
            if approval.approved:
                decision = self.client.check(
                    action,
                    resource,
                    context,
                    approval_id=approval.approval_id,
                    trace_id=trace_id,
                )
        return CheckedCall(self, tool, action, resource, context, decision, trace_id)
