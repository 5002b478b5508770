"""The values the gateway answers with: decisions, agents, approvals."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional


def _opt_str(body: Mapping[str, Any], key: str) -> Optional[str]:
    value = body.get(key)
    return None if value is None else str(value)


@dataclass
class PolicyDecision:
    """A gateway decision with its reasons; ``allowed`` is true only for a 200 allow.

    The first seven fields are those of the published 0.1.x SDK, in the same order.
    """

    allowed: bool
    action: str
    decision: str
    policy: Optional[str] = None
    rule: Optional[str] = None
    reason: Optional[str] = None
    trace_id: Optional[str] = None
    code: Optional[str] = None
    resource: Optional[str] = None
    requires_approval: bool = False
    approval_id: Optional[str] = None
    retry_after_seconds: Optional[float] = None
    enforced: bool = True
    audit_id: Optional[str] = None

    @classmethod
    def from_body(
        cls, body: Mapping[str, Any], *, allowed: bool, action: str, trace_id: Optional[str]
    ) -> PolicyDecision:
        """Reads the check response body of SPEC section 2; ``allowed`` comes from the status."""
        retry = body.get("retry_after_seconds")
        return cls(
            allowed=allowed,
            action=str(body.get("action") or action),
            decision=str(body.get("decision") or ("allow" if allowed else "deny")),
            policy=_opt_str(body, "policy"),
            rule=_opt_str(body, "rule"),
            reason=_opt_str(body, "reason") or _opt_str(body, "message"),
            trace_id=_opt_str(body, "trace_id") or trace_id,
            code=_opt_str(body, "code"),
            resource=_opt_str(body, "resource"),
            requires_approval=bool(body.get("requires_approval", False)),
            approval_id=_opt_str(body, "approval_id"),
            retry_after_seconds=float(retry) if isinstance(retry, (int, float)) else None,
            enforced=bool(body.get("enforced", True)),
            audit_id=_opt_str(body, "audit_id"),
        )


@dataclass
class Agent:
    """An agent identity as the admin API lists it (fields of 0.1.x first)."""

    id: str
    name: str
    trust_tier: str
    tags: List[str] = field(default_factory=list)
    org_id: Optional[str] = None
    status: Optional[str] = None
    description: Optional[str] = None
    created_at: Optional[str] = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Agent:
        """Reads one entry of ``GET /admin/agents``."""
        return cls(
            id=str(body["id"]),
            name=str(body["name"]),
            trust_tier=str(body.get("trustTier", "")),
            tags=[str(tag) for tag in body.get("tags") or []],
            org_id=_opt_str(body, "orgId"),
            status=_opt_str(body, "status"),
            description=_opt_str(body, "description"),
            created_at=_opt_str(body, "createdAt"),
        )


@dataclass
class Approval:
    """The state of one human approval, as ``GET /proxy/governance/approvals/{id}`` reports it."""

    approval_id: str
    status: str
    decided_by: Optional[str] = None
    reason: Optional[str] = None

    @property
    def approved(self) -> bool:
        """True only when a human approved and the approval is still usable."""
        return self.status == "approved"

    @property
    def pending(self) -> bool:
        """True while no human has decided and the approval has not expired."""
        return self.status == "pending"

    @classmethod
    def from_body(cls, approval_id: str, body: Dict[str, Any]) -> Approval:
        """Reads the approval body; an absent status is read as ``pending`` (never as approved)."""
        return cls(
            approval_id=str(body.get("approval_id") or approval_id),
            status=str(body.get("status") or "pending"),
            decided_by=_opt_str(body, "decided_by"),
            reason=_opt_str(body, "reason"),
        )
