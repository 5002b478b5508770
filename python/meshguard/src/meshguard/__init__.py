"""MeshGuard Python SDK: governance for AI agents.

Ask the gateway before every action (``check``/``enforce``/``govern``/``@governed``), record what
happened (``record``), and wait for a human when a policy asks for one (``wait_for_approval``).
Only a 200 allow from the gateway lets an action run.
"""

from .client import GovernedContext, MeshGuardClient, denial_error
from .decision import Agent, Approval, PolicyDecision
from .exceptions import (
    ApprovalRequiredError,
    AuthenticationError,
    GatewayUnavailableError,
    MeshGuardError,
    PolicyDeniedError,
    RateLimitError,
)
from .governed import default_client, governed

__version__ = "0.2.0"
__all__ = [
    "Agent",
    "Approval",
    "ApprovalRequiredError",
    "AuthenticationError",
    "GatewayUnavailableError",
    "GovernedContext",
    "MeshGuardClient",
    "MeshGuardError",
    "PolicyDecision",
    "PolicyDeniedError",
    "RateLimitError",
    "default_client",
    "denial_error",
    "governed",
]
