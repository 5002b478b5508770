"""Admin API calls (``/admin``, admin token): agents, policies, audit trail, approvals."""

from __future__ import annotations

from typing import Any, Dict, List, Optional
from urllib.parse import quote

from ._connection import _GatewayConnection, json_object
from .decision import Agent

# The largest page the gateway serves: listings are read in pages of this size.
_MAX_PAGE_SIZE = 1000


class AdminCalls(_GatewayConnection):
    """The admin helpers of ``MeshGuardClient``; every one needs the admin token."""

    def _admin(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Optional[Dict[str, Any]] = None,
        content: Optional[str] = None,
        content_type: Optional[str] = None,
    ) -> Dict[str, Any]:
        headers = self._admin_headers()
        if content_type:
            headers["Content-Type"] = content_type
        response = self._send(
            method, f"/admin{path}", headers=headers, json=json, params=params, content=content
        )
        self._raise_for_failure(response)
        return json_object(response) if response.content else {}

    def _listing(
        self,
        path: str,
        key: str,
        params: Optional[Dict[str, Any]] = None,
        cap: Optional[int] = None,
    ) -> List[Dict[str, Any]]:
        """The rows under ``key`` of a paged listing, following ``nextCursor`` to its end (or
        until ``cap`` rows), so that nothing is cut off at one page."""
        query: Dict[str, Any] = dict(params or {})
        rows: List[Dict[str, Any]] = []
        while True:
            size = _MAX_PAGE_SIZE if cap is None else min(_MAX_PAGE_SIZE, cap - len(rows))
            if size <= 0:
                return rows
            query["limit"] = size
            body = self._admin("GET", path, params=query)
            rows.extend(body.get(key, []))
            cursor = body.get("nextCursor")
            if not cursor or cursor == query.get("cursor"):
                return rows
            query["cursor"] = cursor

    # --- agents ---

    def list_agents(self) -> List[Agent]:
        """Every registered agent, revoked ones included."""
        return [Agent.from_body(entry) for entry in self._listing("/agents", "agents")]

    def create_agent(
        self,
        name: str,
        trust_tier: str = "verified",
        tags: Optional[List[str]] = None,
        *,
        description: Optional[str] = None,
        ttl_seconds: Optional[int] = None,
    ) -> Dict[str, Any]:
        """Registers an agent; the answer holds its ``token``, shown only this once."""
        payload: Dict[str, Any] = {"name": name, "trustTier": trust_tier, "tags": tags or []}
        if description is not None:
            payload["description"] = description
        if ttl_seconds is not None:
            payload["ttlSeconds"] = ttl_seconds
        return self._admin("POST", "/agents", json=payload)

    def get_agent(self, agent: str) -> Agent:
        """One agent by id or name."""
        return Agent.from_body(self._admin("GET", f"/agents/{quote(agent, safe='')}"))

    def revoke_agent(self, agent_id: str) -> None:
        """Revokes an agent: its next request is refused with 401 (kept for ``restore_agent``)."""
        self._admin("DELETE", f"/agents/{quote(agent_id, safe='')}")

    def restore_agent(self, agent: str) -> Dict[str, Any]:
        """Lifts a revocation; the agent's existing tokens work again."""
        return self._admin("POST", f"/agents/{quote(agent, safe='')}/restore")

    def issue_token(self, agent: str, *, rotate: bool = False) -> str:
        """A new token for ``agent``; ``rotate`` revokes every older one."""
        params = {"rotate": "true"} if rotate else None
        body = self._admin("POST", f"/agents/{quote(agent, safe='')}/token", params=params)
        return str(body["token"])

    # --- policies ---

    def list_policies(self) -> List[Dict[str, Any]]:
        """Every policy in force, ordered by name."""
        return self._listing("/policies", "policies")

    def get_policy(self, name: str) -> Dict[str, Any]:
        """One policy by name."""
        return self._admin("GET", f"/policies/{quote(name, safe='')}")

    def apply_policy(self, document: str) -> Dict[str, Any]:
        """Creates or replaces the policy named in ``document`` (YAML or JSON text)."""
        return self._admin("POST", "/policies", content=document, content_type="application/yaml")

    def delete_policy(self, name: str) -> None:
        """Removes a policy applied through the API."""
        self._admin("DELETE", f"/policies/{quote(name, safe='')}")

    # --- audit ---

    def get_audit_log(
        self,
        limit: int = 50,
        decision: Optional[str] = None,
        *,
        agent_id: Optional[str] = None,
        action: Optional[str] = None,
        trace_id: Optional[str] = None,
        kind: Optional[str] = None,
    ) -> List[Dict[str, Any]]:
        """Up to ``limit`` audit events, newest first as the gateway orders them, filtered as
        asked; a ``limit`` above the gateway's page size is read over several pages."""
        params: Dict[str, Any] = {}
        for key, value in (
            ("decision", decision),
            ("agentId", agent_id),
            ("action", action),
            ("traceId", trace_id),
            ("kind", kind),
        ):
            if value is not None:
                params[key] = value
        return self._listing("/audit", "entries", params, cap=limit)

    # --- approvals ---

    def list_approvals(self, status: Optional[str] = None) -> List[Dict[str, Any]]:
        """Approvals, e.g. ``status="pending"`` for those waiting on a human."""
        params = {"status": status} if status else None
        return self._listing("/approvals", "approvals", params)

    def approve(self, approval_id: str) -> Dict[str, Any]:
        """Approves a pending approval (single use by the agent that asked)."""
        return self._admin("POST", f"/approvals/{quote(approval_id, safe='')}/approve")

    def deny_approval(self, approval_id: str, reason: Optional[str] = None) -> Dict[str, Any]:
        """Denies a pending approval; the agent's retries are denied until it times out."""
        payload = {"reason": reason} if reason else {}
        return self._admin("POST", f"/approvals/{quote(approval_id, safe='')}/deny", json=payload)
