"""The per-command decision both the plugin and the wrapper make: check before, record after."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

from .commands import UNGOVERNED_COMMANDS, GovernedCommand, governed_command
from .gateway import Blocked, MeshGuardGateway, blocked

APPROVAL_WAIT_ENV = "MESHGUARD_APPROVAL_WAIT"
NO_DECISION_CODES = frozenset({"unauthorized", "unavailable"})


def approval_wait_from_env() -> Optional[float]:
    """Seconds to wait for a human decision (``MESHGUARD_APPROVAL_WAIT``); None: do not wait."""
    raw = os.environ.get(APPROVAL_WAIT_ENV, "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return None
    return seconds if seconds > 0 else None


@dataclass
class Admission:
    """The gateway's answer for one command, kept until its result is recorded."""

    command: GovernedCommand
    decision: Dict[str, Any]
    started: float = field(default_factory=time.monotonic)

    @property
    def allowed(self) -> bool:
        """True only for a 200 allow."""
        return bool(self.decision.get("allowed"))

    def refusal(self) -> Blocked:
        """What the agent is told instead of running the command."""
        return blocked(self.command.command, self.command.action, self.decision)


class CommandGovernor:
    """Decides AutoGPT commands with MeshGuard and records their results."""

    def __init__(
        self,
        gateway: MeshGuardGateway,
        workspace: Optional[Callable[[], Path]] = None,
    ) -> None:
        self.gateway = gateway
        self._workspace = workspace

    def admit(self, command_name: str, arguments: Mapping[str, Any]) -> Optional[Admission]:
        """Checks one command; None for the commands that touch nothing (``task_complete``…)."""
        if str(command_name).strip().lower() in UNGOVERNED_COMMANDS:
            return None
        args = arguments if isinstance(arguments, Mapping) else {}
        command = governed_command(
            command_name, args, self._workspace() if self._workspace else None
        )
        decision = self.gateway.decide(
            command.action, command.resource, command.context, approval_wait_from_env()
        )
        return Admission(command=command, decision=decision)

    def finish(self, admission: Admission, result: Any) -> None:
        """Records the command's result (``blocked`` when it was refused), best effort.

        Nothing is sent when the gateway gave no decision (token refused, gateway unreachable):
        it would refuse the record for the same reason.
        """
        if admission.decision.get("code") in NO_DECISION_CODES:
            return
        text = str(result)
        if not admission.allowed:
            status = "blocked"
        elif "returned: Error" in text[:200] or text.startswith("Error"):
            status = "error"
        else:
            status = "success"
        self.gateway.record(
            admission.command.action,
            admission.command.resource,
            status,
            text,
            audit_id=admission.decision.get("audit_id"),
            duration_ms=(time.monotonic() - admission.started) * 1000,
            context={"autogpt_command": admission.command.command},
        )
