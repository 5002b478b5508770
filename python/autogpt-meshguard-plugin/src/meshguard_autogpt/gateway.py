"""The gateway object of the docs page, rebuilt to fail closed.

``check_permission`` allows only on a 200 (the page's version treated only a 403 as a denial, so a
401, 413 or 503 let everything through), and the configuration is read on first use instead of
exiting at import.
"""

from __future__ import annotations

import contextvars
import threading
import time
from typing import Any, Callable, Dict, Mapping, Optional

from meshguard import (
    AuthenticationError,
    GatewayUnavailableError,
    MeshGuardClient,
    MeshGuardError,
)
from meshguard.decision import Approval

# Set while a governed call runs: nested governed calls (a patched command calling another
# patched function) are part of the call already checked, and are not checked again.
_inside_governed: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "meshguard_inside_governed", default=False
)

RESULT_LIMIT = 4096
# An agent waits this long for a decision before the command is denied as unreachable.
CHECK_TIMEOUT = 10.0


class Blocked(Dict[str, Any]):
    """What a governed call returns instead of running: the page's ``{"status": "blocked", …}``.

    Its text is the sentence AutoGPT shows the agent, so a blocked command reads as
    "MeshGuard denied execute_shell: …" in the agent's history.
    """

    def __str__(self) -> str:
        return str(self.get("message") or self.get("reason"))


def inside_governed_call() -> bool:
    """True when the current call is already governed (see ``governing``)."""
    return _inside_governed.get()


class _Governing:
    def __enter__(self) -> None:
        self._token = _inside_governed.set(True)

    def __exit__(self, *args: object) -> None:
        _inside_governed.reset(self._token)


def governing() -> _Governing:
    """Marks the enclosed code as the body of a governed call."""
    return _Governing()


class MeshGuardGateway:
    """Checks and records actions for AutoGPT; every failure to get a 200 allow is a denial."""

    def __init__(self, client: Optional[MeshGuardClient] = None) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._trace_id: Optional[str] = None

    @property
    def client(self) -> MeshGuardClient:
        """The SDK client, created from ``MESHGUARD_URL``/``MESHGUARD_TOKEN``/… on first use."""
        with self._lock:
            if self._client is None:
                self._client = MeshGuardClient(trace_id=self._trace_id, timeout=CHECK_TIMEOUT)
            return self._client

    def configure(
        self,
        gateway_url: Optional[str] = None,
        agent_token: Optional[str] = None,
        trace_id: Optional[str] = None,
        timeout: float = CHECK_TIMEOUT,
    ) -> None:
        """Replaces the client; values not given are read from the environment again."""
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = MeshGuardClient(
                gateway_url=gateway_url, agent_token=agent_token, trace_id=trace_id, timeout=timeout
            )

    def set_trace(self, trace_id: str) -> None:
        """Groups the following checks and records under ``trace_id``."""
        self._trace_id = trace_id
        self.client.set_trace(trace_id)

    @property
    def trace_id(self) -> str:
        """The trace id every check and record is sent with."""
        return self.client.trace_id

    def check_permission(
        self,
        action: str,
        resource: str = "*",
        context: Optional[Mapping[str, Any]] = None,
        approval_id: Optional[str] = None,
    ) -> Dict[str, Any]:
        """The decision as a dict: ``allowed`` is true only for a 200 allow from the gateway.

        Besides the page's ``allowed`` and ``reason`` it carries the gateway's ``decision``,
        ``code``, ``policy``, ``rule``, ``requires_approval``, ``approval_id``,
        ``retry_after_seconds`` and ``audit_id``.
        """
        if not self.client.agent_token:
            return _failure("MESHGUARD_TOKEN is not set: every action is denied", "unauthorized")
        try:
            decision = self.client.check(action, resource, context, approval_id=approval_id)
        except MeshGuardError as error:
            return _failure(str(error), _code_of(error))
        return {
            "allowed": decision.allowed,
            "reason": decision.reason,
            "decision": decision.decision,
            "code": decision.code,
            "action": decision.action,
            "resource": decision.resource,
            "policy": decision.policy,
            "rule": decision.rule,
            "requires_approval": decision.requires_approval,
            "approval_id": decision.approval_id,
            "retry_after_seconds": decision.retry_after_seconds,
            "audit_id": decision.audit_id,
            "trace_id": decision.trace_id,
        }

    def wait_for_approval(self, approval_id: str, timeout: float) -> Optional[Approval]:
        """Waits for a human decision; None when the gateway could not be asked."""
        try:
            return self.client.wait_for_approval(approval_id, timeout)
        except MeshGuardError:
            return None

    def decide(
        self,
        action: str,
        resource: str = "*",
        context: Optional[Mapping[str, Any]] = None,
        approval_wait: Optional[float] = None,
    ) -> Dict[str, Any]:
        """``check_permission``, and with ``approval_wait`` the wait for a human and re-check."""
        decision = self.check_permission(action, resource, context)
        approval_id = decision.get("approval_id")
        if decision["allowed"] or not decision.get("requires_approval") or not approval_id:
            return decision
        if not approval_wait:
            return decision
        approval = self.wait_for_approval(str(approval_id), approval_wait)
        if approval is None or not approval.approved:
            state = approval.status if approval else "unknown"
            decision["reason"] = f"{decision.get('reason')} (approval {approval_id}: {state})"
            return decision
        return self.check_permission(action, resource, context, approval_id=approval.approval_id)

    def record(
        self,
        action: str,
        resource: str,
        status: str,
        result: Any,
        audit_id: Optional[str] = None,
        duration_ms: Optional[float] = None,
        context: Optional[Mapping[str, Any]] = None,
    ) -> bool:
        """Records an outcome; False (never an exception) when it could not be recorded."""
        try:
            self.client.record(
                action,
                resource,
                status=status,
                result=str(result)[:RESULT_LIMIT],
                audit_id=audit_id,
                duration_ms=duration_ms,
                context=context,
            )
        except MeshGuardError:
            return False
        return True

    def execute(
        self,
        action: str,
        resource: str,
        executor: Callable[[], Any],
        context: Optional[Mapping[str, Any]] = None,
        approval_wait: Optional[float] = None,
        label: Optional[str] = None,
    ) -> Any:
        """Runs ``executor`` only when allowed and records its outcome.

        A denial returns a ``Blocked`` dict (``status`` ``blocked`` or ``approval_required``)
        and ``executor`` is not called. An exception from ``executor`` becomes an
        ``"Error: …"`` result, recorded with status ``error``, as AutoGPT reports command errors.
        """
        if inside_governed_call():
            return executor()
        decision = self.decide(action, resource, context, approval_wait)
        if not decision["allowed"]:
            return blocked(label or action, action, decision)
        started = time.monotonic()
        with governing():
            try:
                result = executor()
                status = "error" if str(result).startswith("Error") else "success"
            except Exception as error:  # noqa: BLE001 - AutoGPT reports command errors as text
                result = f"Error: {error}"
                status = "error"
        self.record(
            action,
            resource,
            status,
            result,
            audit_id=decision.get("audit_id"),
            duration_ms=(time.monotonic() - started) * 1000,
            context=context,
        )
        return result


def blocked(label: str, action: str, decision: Mapping[str, Any]) -> Blocked:
    """The ``Blocked`` answer for a decision that is not an allow."""
    reason = str(decision.get("reason") or "denied by MeshGuard")
    approval_id = decision.get("approval_id")
    if decision.get("requires_approval") and approval_id:
        message = (
            f"MeshGuard requires human approval for {label} (approval id {approval_id}): "
            f"{reason}. An operator can run `meshguard approval approve {approval_id}`; "
            "then retry the command."
        )
        status = "approval_required"
    else:
        message = f"MeshGuard denied {label}: {reason}"
        status = "blocked"
    return Blocked(
        status=status,
        action=action,
        reason=reason,
        message=message,
        code=decision.get("code"),
        approval_id=approval_id,
        requires_approval=bool(decision.get("requires_approval")),
        retry_after_seconds=decision.get("retry_after_seconds"),
    )


def _failure(reason: str, code: str) -> Dict[str, Any]:
    return {
        "allowed": False,
        "reason": reason,
        "decision": "deny",
        "code": code,
        "requires_approval": False,
        "approval_id": None,
        "retry_after_seconds": None,
        "audit_id": None,
    }


def _code_of(error: MeshGuardError) -> str:
    if isinstance(error, AuthenticationError):
        return "unauthorized"
    if isinstance(error, GatewayUnavailableError):
        return "unavailable"
    return "error"
