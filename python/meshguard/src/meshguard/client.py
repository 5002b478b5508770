"""The MeshGuard client: ask before acting, record what happened, wait for humans.

Only a 200 answer whose body says ``"allowed": true`` is an allow. A 403 is a decision (deny or
require approval) returned as a ``PolicyDecision``; anything else — a transport error, a timeout, a
401, a 413, a 5xx, a body that is not a decision — raises, so that no failure reads as an allow.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from types import TracebackType
from typing import Any, Callable, Dict, Mapping, Optional, Type, TypeVar, cast
from urllib.parse import quote

import httpx

from ._connection import error_message, json_object
from .admin import AdminCalls
from .decision import Agent, Approval, PolicyDecision
from .exceptions import (
    ApprovalRequiredError,
    GatewayUnavailableError,
    MeshGuardError,
    PolicyDeniedError,
    RateLimitError,
)

logger = logging.getLogger("meshguard")

# 0.1.x code imports these from meshguard.client.
__all__ = ["Agent", "GovernedContext", "MeshGuardClient", "PolicyDecision", "denial_error"]

F = TypeVar("F", bound=Callable[..., Any])

# The gateway long-polls an approval for at most this long per request (SPEC section 2).
MAX_APPROVAL_POLL_SECONDS = 60


def _retry_after(response: httpx.Response) -> Optional[float]:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class MeshGuardClient(AdminCalls):
    """Client for the MeshGuard gateway (a superset of the published 0.1.x ``MeshGuardClient``).

    Configuration not given as arguments is read from ``MESHGUARD_URL`` (else
    ``MESHGUARD_GATEWAY_URL``), ``MESHGUARD_TOKEN`` (else ``MESHGUARD_AGENT_TOKEN``),
    ``MESHGUARD_ADMIN_TOKEN`` and ``MESHGUARD_TRACE_ID``.
    """

    # --- decisions ---

    def check(
        self,
        action: str,
        resource: Optional[str] = None,
        context: Optional[Mapping[str, Any]] = None,
        *,
        approval_id: Optional[str] = None,
        trace_id: Optional[str] = None,
    ) -> PolicyDecision:
        """Asks whether ``action`` on ``resource`` is allowed now.

        Returns the decision for a 200 or a 403; raises ``AuthenticationError`` (401),
        ``GatewayUnavailableError`` (unreachable, timeout, 5xx) or ``MeshGuardError`` otherwise.
        ``trace_id`` files this one check under another trace than the client's (a framework
        run's own trace id, when one client serves several runs).
        """
        body: Dict[str, Any] = {
            "action": action,
            "resource": resource or "*",
            "context": dict(context or {}),
        }
        if approval_id:
            body["approval_id"] = approval_id
        response = self._send(
            "POST", "/proxy/governance/check", headers=self._headers(trace_id=trace_id), json=body
        )
        return self._decision(response, action, trace_id or self.trace_id)

    def _decision(self, response: httpx.Response, action: str, trace_id: str) -> PolicyDecision:
        status = response.status_code
        if status == 200:
            body = json_object(response)
            # A 200 from something that is not a MeshGuard decision (a misrouted URL, a
            # captive portal) must not read as an allow.
            if body.get("allowed") is not True:
                raise MeshGuardError('gateway answered 200 without `"allowed": true`')
            return PolicyDecision.from_body(body, allowed=True, action=action, trace_id=trace_id)
        if status in (403, 429):
            try:
                body = json_object(response)
            except MeshGuardError:
                body = {"reason": error_message(response)}
            if status == 429:
                body.setdefault("code", "rate_limited")
            if body.get("retry_after_seconds") is None:
                body["retry_after_seconds"] = _retry_after(response)
            return PolicyDecision.from_body(body, allowed=False, action=action, trace_id=trace_id)
        self._raise_for_failure(response)
        raise MeshGuardError(f"gateway answered an unexpected status {status}")

    def enforce(
        self,
        action: str,
        resource: Optional[str] = None,
        context: Optional[Mapping[str, Any]] = None,
        *,
        approval_wait: Optional[float] = None,
    ) -> PolicyDecision:
        """Returns the decision when allowed, else raises a ``PolicyDeniedError``.

        With ``approval_wait`` seconds, an action that needs a human waits for the decision and,
        when approved, is checked again with that approval; otherwise it raises
        ``ApprovalRequiredError`` carrying the approval id.
        """
        decision = self.check(action, resource, context)
        if (
            not decision.allowed
            and decision.requires_approval
            and decision.approval_id
            and approval_wait
        ):
            approval = self.wait_for_approval(decision.approval_id, approval_wait)
            if approval.approved:
                decision = self.check(action, resource, context, approval_id=approval.approval_id)
        if decision.allowed:
            return decision
        raise denial_error(decision)

    def govern(
        self,
        action: str,
        resource: Optional[str] = None,
        context: Optional[Mapping[str, Any]] = None,
        *,
        approval_wait: Optional[float] = None,
    ) -> GovernedContext:
        """A block (``with``) or function (decorator) that runs only when allowed, then recorded."""
        return GovernedContext(self, action, resource, context, approval_wait=approval_wait)

    def record(
        self,
        action: str,
        resource: Optional[str] = None,
        *,
        status: str = "success",
        result: Optional[str] = None,
        audit_id: Optional[str] = None,
        duration_ms: Optional[float] = None,
        context: Optional[Mapping[str, Any]] = None,
        trace_id: Optional[str] = None,
    ) -> Optional[str]:
        """Records the outcome of an action in the audit trail; returns the event's audit id.

        ``audit_id`` links the record to the check it follows (``PolicyDecision.audit_id``); it
        must be one of this agent's checks. Past the agent's record budget the gateway answers
        429, raised as ``RateLimitError`` with ``retry_after``.
        """
        body: Dict[str, Any] = {"action": action, "resource": resource or "*", "status": status}
        if result is not None:
            body["result"] = result
        if audit_id is not None:
            body["audit_id"] = audit_id
        if duration_ms is not None:
            body["duration_ms"] = int(duration_ms)
        if context:
            body["context"] = dict(context)
        response = self._send(
            "POST",
            "/proxy/governance/record",
            headers=self._headers(trace_id=trace_id),
            json=body,
        )
        if response.status_code == 429:
            raise RateLimitError(
                action, reason=error_message(response), retry_after=_retry_after(response)
            )
        if response.status_code not in (200, 201):
            self._raise_for_failure(response)
            raise MeshGuardError(f"record answered an unexpected status {response.status_code}")
        answer = json_object(response) if response.content else {}
        audit = answer.get("audit_id")
        return None if audit is None else str(audit)

    def get_approval(self, approval_id: str, *, wait: float = 0) -> Approval:
        """The state of one of this agent's approvals, long-polled up to ``wait`` seconds."""
        wait_seconds = max(0, min(MAX_APPROVAL_POLL_SECONDS, math.ceil(wait)))
        response = self._send(
            "GET",
            f"/proxy/governance/approvals/{quote(approval_id, safe='')}",
            headers=self._headers(),
            params={"wait": wait_seconds} if wait_seconds else None,
            timeout=self.timeout + wait_seconds,
        )
        if response.status_code == 404:
            raise MeshGuardError(f"approval `{approval_id}` is unknown to this agent")
        if response.status_code != 200:
            self._raise_for_failure(response)
            raise MeshGuardError(f"approval answered an unexpected status {response.status_code}")
        return Approval.from_body(approval_id, json_object(response))

    def wait_for_approval(self, approval_id: str, timeout: float = 300.0) -> Approval:
        """Waits up to ``timeout`` seconds for a human to decide; returns the last known state.

        The result is ``pending`` when nobody decided in time: check ``Approval.approved``.
        """
        deadline = time.monotonic() + timeout
        approval = self.get_approval(approval_id)
        while approval.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            approval = self.get_approval(approval_id, wait=remaining)
        return approval

    # --- proxy ---

    def request(
        self,
        method: str,
        path: str,
        action: str,
        *,
        resource: Optional[str] = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Sends a request through the gateway's proxy (``/proxy/<path>``).

        The gateway decides on the real call (the method and the canonical path, e.g.
        ``write:github/repos/acme/app/issues``); ``action`` is sent as ``X-MeshGuard-Action``, a
        claim that may only narrow: both must be allowed.

        Raises on a denial (``PolicyDeniedError``, ``RateLimitError``) as on any other failure.
        """
        headers = dict(kwargs.pop("headers", None) or {})
        headers.update(self._headers())
        headers["X-MeshGuard-Action"] = action
        if resource:
            headers["X-MeshGuard-Resource"] = resource
        try:
            response = self._client.request(
                method, f"{self.gateway_url}/proxy/{path.lstrip('/')}", headers=headers, **kwargs
            )
        except httpx.HTTPError as exc:
            raise GatewayUnavailableError(
                f"MeshGuard gateway at {self.gateway_url}: {exc}"
            ) from exc
        if response.status_code in (403, 429):
            raise denial_error(self._decision(response, action, self.trace_id))
        self._raise_for_failure(response)
        return response

    def get(self, path: str, action: str, **kwargs: Any) -> httpx.Response:
        """GET through the proxy."""
        return self.request("GET", path, action, **kwargs)

    def post(self, path: str, action: str, **kwargs: Any) -> httpx.Response:
        """POST through the proxy."""
        return self.request("POST", path, action, **kwargs)

    def put(self, path: str, action: str, **kwargs: Any) -> httpx.Response:
        """PUT through the proxy."""
        return self.request("PUT", path, action, **kwargs)

    def delete(self, path: str, action: str, **kwargs: Any) -> httpx.Response:
        """DELETE through the proxy."""
        return self.request("DELETE", path, action, **kwargs)

    # --- health ---

    def health(self) -> Dict[str, Any]:
        """The gateway's health report (``status`` is ``healthy`` when it can decide)."""
        response = self._send("GET", "/health", headers={})
        return json_object(response)

    def is_healthy(self) -> bool:
        """True only when the gateway answers and reports itself healthy."""
        try:
            return self.health().get("status") == "healthy"
        except MeshGuardError:
            return False

    def __enter__(self) -> MeshGuardClient:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()


def denial_error(decision: PolicyDecision) -> PolicyDeniedError:
    """The exception that tells a caller why ``decision`` is not an allow."""
    if decision.requires_approval or decision.decision == "require_approval":
        return ApprovalRequiredError(
            decision.action, decision.policy, decision.rule, decision.reason, decision=decision
        )
    if decision.code == "rate_limited":
        return RateLimitError(
            decision.action,
            decision.policy,
            decision.rule,
            decision.reason,
            decision=decision,
            retry_after=decision.retry_after_seconds,
        )
    return PolicyDeniedError(
        decision.action, decision.policy, decision.rule, decision.reason, decision=decision
    )


class GovernedContext:
    """Runs a block or a function only when allowed, and records its outcome afterwards.

    As a context manager it yields the allow decision; as a decorator each call is checked.
    """

    def __init__(
        self,
        client: MeshGuardClient,
        action: str,
        resource: Optional[str] = None,
        context: Optional[Mapping[str, Any]] = None,
        *,
        approval_wait: Optional[float] = None,
    ) -> None:
        self.client = client
        self.action = action
        self.resource = resource
        self.context = context
        self.approval_wait = approval_wait
        self.decision: Optional[PolicyDecision] = None
        self.result: Optional[str] = None
        self._started = 0.0

    def __enter__(self) -> PolicyDecision:
        self.decision = self.client.enforce(
            self.action, self.resource, self.context, approval_wait=self.approval_wait
        )
        self._started = time.monotonic()
        return self.decision

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        failed = exc is not None
        try:
            self.client.record(
                self.action,
                self.resource,
                status="error" if failed else "success",
                result=str(exc) if failed else self.result,
                audit_id=self.decision.audit_id if self.decision else None,
                duration_ms=(time.monotonic() - self._started) * 1000,
                context=self.context,
            )
        except MeshGuardError as record_error:
            # The action already ran; losing its record must not hide the action's own outcome.
            logger.warning("MeshGuard could not record %s: %s", self.action, record_error)

    def run(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Calls ``func`` under a fresh copy of this block (one check and one record per call)."""
        block = GovernedContext(
            self.client, self.action, self.resource, self.context, approval_wait=self.approval_wait
        )
        with block:
            value = func(*args, **kwargs)
            block.result = str(value)[:4096]
            return value

    def __call__(self, func: F) -> F:
        """Decorator form: each call of ``func`` is checked and recorded on its own."""

        @functools.wraps(func)
        def governed_call(*args: Any, **kwargs: Any) -> Any:
            return self.run(func, *args, **kwargs)

        return cast(F, governed_call)
