"""MeshGuard wrapper for classic AutoGPT: ``gateway``, ``governed`` and ``patch_autogpt()``.

``python -m meshguard_autogpt [AutoGPT options]`` patches AutoGPT and starts it. Nothing is read
from the environment at import: the gateway is configured on first use.
"""

from .commands import COMMAND_ACTIONS, GovernedCommand, governed_command
from .gateway import Blocked, MeshGuardGateway
from .patch import PatchReport, patch_autogpt
from .wrapper import (
    browse_website,
    execute_python_code,
    execute_shell,
    gateway,
    google_search,
    governed,
    read_file,
    write_file,
)

__all__ = [
    "COMMAND_ACTIONS",
    "Blocked",
    "GovernedCommand",
    "MeshGuardGateway",
    "PatchReport",
    "browse_website",
    "execute_python_code",
    "execute_shell",
    "gateway",
    "google_search",
    "governed",
    "governed_command",
    "patch_autogpt",
    "read_file",
    "write_file",
]
