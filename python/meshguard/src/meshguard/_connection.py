"""One keep-alive HTTP connection to the gateway and the mapping of its failures to SDK errors.

Every call the SDK makes goes through ``_GatewayConnection._send``, so there is exactly one place
where a transport error or an unexpected status is turned into an exception, never into an allow.
"""

from __future__ import annotations

import os
import ssl
import uuid
from typing import Any, Dict, Mapping, Optional, Union

import httpx

from .exceptions import AuthenticationError, GatewayUnavailableError, MeshGuardError

DEFAULT_GATEWAY_URL = "http://localhost:3100"
USER_AGENT = "meshguard-python/0.2.0"


def _env(*names: str) -> Optional[str]:
    """The first non-empty environment variable among ``names``."""
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def error_message(response: httpx.Response) -> str:
    """The gateway's ``message`` (or ``reason``) for an error answer, else the raw text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or f"HTTP {response.status_code}"
    if isinstance(body, dict):
        for key in ("message", "reason", "error"):
            if body.get(key):
                return str(body[key])
    return response.text[:200]


def json_object(response: httpx.Response) -> Dict[str, Any]:
    """The response body as a JSON object, or a ``MeshGuardError`` naming what came instead."""
    try:
        body = response.json()
    except ValueError as exc:
        raise MeshGuardError(
            f"gateway answered {response.status_code} with a body that is not JSON"
        ) from exc
    if not isinstance(body, dict):
        raise MeshGuardError(
            f"gateway answered {response.status_code} with JSON that is not an object"
        )
    return body


class _GatewayConnection:
    """Configuration and transport shared by the agent and admin calls."""

    def __init__(
        self,
        gateway_url: Optional[str] = None,
        agent_token: Optional[str] = None,
        admin_token: Optional[str] = None,
        timeout: float = 30.0,
        trace_id: Optional[str] = None,
        ca_file: Optional[str] = None,
    ) -> None:
        self.gateway_url = (
            gateway_url or _env("MESHGUARD_URL", "MESHGUARD_GATEWAY_URL") or DEFAULT_GATEWAY_URL
        ).rstrip("/")
        self.agent_token = agent_token or _env("MESHGUARD_TOKEN", "MESHGUARD_AGENT_TOKEN")
        self.admin_token = admin_token or _env("MESHGUARD_ADMIN_TOKEN")
        self.timeout = timeout
        self.trace_id = trace_id or _env("MESHGUARD_TRACE_ID") or str(uuid.uuid4())
        # One pooled client: checks happen before every agent action, so the TCP (and TLS)
        # handshake must not be paid on each of them.
        # An https:// gateway's certificate is verified against the system's roots, or against
        # ``ca_file`` / ``MESHGUARD_CA_FILE`` (a private CA or a self-signed certificate).
        self.ca_file = ca_file or _env("MESHGUARD_CA_FILE")
        verify: Union[bool, ssl.SSLContext] = True
        if self.ca_file:
            verify = ssl.create_default_context(cafile=self.ca_file)
        self._client = httpx.Client(
            timeout=timeout, headers={"User-Agent": USER_AGENT}, verify=verify
        )

    def set_trace(self, trace_id: str) -> None:
        """Groups the following calls under ``trace_id`` in the audit trail."""
        self.trace_id = trace_id

    def _headers(self, include_auth: bool = True, trace_id: Optional[str] = None) -> Dict[str, str]:
        headers = {"X-MeshGuard-Trace-ID": trace_id or self.trace_id}
        if include_auth and self.agent_token:
            headers["Authorization"] = f"Bearer {self.agent_token}"
        return headers

    def _admin_headers(self) -> Dict[str, str]:
        if not self.admin_token:
            raise AuthenticationError("Admin token required for this operation")
        return {"X-Admin-Token": self.admin_token, "X-MeshGuard-Trace-ID": self.trace_id}

    def _send(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        json: Any = None,
        params: Optional[Mapping[str, Any]] = None,
        content: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> httpx.Response:
        """Sends one request; transport failures and timeouts become ``GatewayUnavailableError``."""
        try:
            return self._client.request(
                method,
                f"{self.gateway_url}{path}",
                headers=dict(headers),
                json=json,
                params=dict(params) if params else None,
                content=content,
                timeout=self.timeout if timeout is None else timeout,
            )
        except httpx.TimeoutException as exc:
            raise GatewayUnavailableError(
                f"MeshGuard gateway at {self.gateway_url} did not answer within the timeout"
            ) from exc
        except httpx.HTTPError as exc:
            raise GatewayUnavailableError(
                f"MeshGuard gateway at {self.gateway_url} is unreachable: {exc}"
            ) from exc

    def _raise_for_failure(self, response: httpx.Response) -> None:
        """Raises for statuses that are never a usable answer: 401, 5xx, and other 4xx."""
        status = response.status_code
        if status == 401:
            raise AuthenticationError(error_message(response) or "Invalid or expired token")
        if status in (502, 503, 504):
            raise GatewayUnavailableError(
                f"MeshGuard gateway cannot decide ({status}): {error_message(response)}"
            )
        if status >= 400:
            raise MeshGuardError(f"Request failed: {status} {error_message(response)}")

    def close(self) -> None:
        """Closes the pooled connections."""
        self._client.close()
