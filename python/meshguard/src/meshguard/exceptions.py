"""Exceptions raised by the MeshGuard SDK.

The hierarchy keeps the names of MeshGuard's published 0.1.x SDK and adds finer classes under them,
so that code written as ``except PolicyDeniedError`` still catches every denial (rule, rate limit,
pending approval) and ``except MeshGuardError`` still catches everything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from .decision import PolicyDecision


class MeshGuardError(Exception):
    """Base of every SDK error: no error ever means an action is allowed."""


class AuthenticationError(MeshGuardError):
    """The gateway refused the credentials (401): token missing, expired, or the agent revoked."""


class GatewayUnavailableError(MeshGuardError):
    """The gateway could not be reached, timed out, or said it cannot decide (5xx).

    Raised instead of returning a decision so that an outage can never be mistaken for an allow.
    """


class PolicyDeniedError(MeshGuardError):
    """The gateway denied the action; ``decision`` holds the gateway's full answer when known."""

    def __init__(
        self,
        action: str,
        policy: Optional[str] = None,
        rule: Optional[str] = None,
        reason: Optional[str] = None,
        *,
        decision: Optional[PolicyDecision] = None,
    ) -> None:
        self.action = action
        self.policy = policy
        self.rule = rule
        self.reason = reason or "Access denied by policy"
        self.decision = decision
        message = f"Action '{action}' denied"
        if policy:
            message += f" by policy '{policy}'"
        if rule:
            message += f" (rule: {rule})"
        message += f": {self.reason}"
        super().__init__(message)

    @property
    def code(self) -> Optional[str]:
        """The gateway's machine code (``denied_by_rule``, ``rate_limited``, …), when known."""
        return self.decision.code if self.decision else None


class ApprovalRequiredError(PolicyDeniedError):
    """A human must approve the action first; ``approval_id`` names the pending approval."""

    @property
    def approval_id(self) -> Optional[str]:
        """The approval to wait for (``MeshGuardClient.wait_for_approval``) or to show a human."""
        return self.decision.approval_id if self.decision else None


class RateLimitError(PolicyDeniedError):
    """A rate limit of the agent's policies is exhausted; retry after ``retry_after`` seconds."""

    def __init__(
        self,
        action: str = "unknown",
        policy: Optional[str] = None,
        rule: Optional[str] = None,
        reason: Optional[str] = None,
        *,
        decision: Optional[PolicyDecision] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(action, policy, rule, reason or "Rate limit exceeded", decision=decision)
        self.retry_after = retry_after
