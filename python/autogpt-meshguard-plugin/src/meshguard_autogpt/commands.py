"""Which MeshGuard action and resource an AutoGPT command is checked as.

The plugin and the wrapper both use this one mapping, so the same command on the same file is the
same request to the gateway whichever way MeshGuard is plugged in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

# Command name → action. The first block is the docs page's map (names of older AutoGPT
# releases, and what an LLM often calls them); the second holds the names `agpt` 0.2.x registers.
# Every route to a shell (`execute_shell`, `execute_shell_popen`) or to code execution
# (`execute_python_file`, `execute_python_code`) is here, so that none falls back to a generic
# action a policy might allow by accident.
COMMAND_ACTIONS: Dict[str, str] = {
    "browse_website": "browse:web",
    "read_file": "read:workspace",
    "write_file": "write:workspace",
    "execute_python_code": "execute:python",
    "execute_shell": "execute:shell",
    "google_search": "search:web",
    "send_email": "send:email",
    "delete_file": "delete:workspace",
    # agpt 0.2.x
    "write_to_file": "write:workspace",
    "create_file": "write:workspace",
    "append_to_file": "write:workspace",
    "download_file": "write:workspace",
    "search_files": "read:workspace",
    "read_audio_from_file": "read:workspace",
    "clone_repository": "write:workspace",
    "execute_python_file": "execute:python",
    "execute_shell_popen": "execute:shell",
    "google": "search:web",
    "search": "search:web",
    "get_text_summary": "browse:web",
    "get_hyperlinks": "browse:web",
    "send_tweet": "post:social",
}

# Commands whose resource is a path in AutoGPT's workspace, and the argument that names it.
PATH_ARGUMENTS: Dict[str, str] = {
    "read_file": "filename",
    "write_file": "filename",
    "write_to_file": "filename",
    "create_file": "filename",
    "append_to_file": "filename",
    "delete_file": "filename",
    "download_file": "filename",
    "read_audio_from_file": "filename",
    "execute_python_file": "filename",
    "search_files": "directory",
    "clone_repository": "clone_path",
}

# Arguments read as the resource for the other commands, first present wins.
RESOURCE_ARGUMENTS = ("command_line", "command", "url", "query", "tweet_text", "recipient")

# Commands that act on nothing outside the agent: AutoGPT's own "finish" and "wait" (checking
# them would only keep a denied agent from stopping), and the command the plugin answers
# denials with.
UNGOVERNED_COMMANDS = frozenset({"task_complete", "do_nothing", "meshguard_denied"})

# Argument values are sent as context for the audit trail, cut to this length so that a large
# `text` can never push a check over the gateway's body limit (which would deny it).
CONTEXT_VALUE_LIMIT = 256


@dataclass(frozen=True)
class GovernedCommand:
    """One AutoGPT command as the gateway sees it."""

    command: str
    action: str
    resource: str
    context: Dict[str, Any] = field(default_factory=dict)


def default_workspace() -> Path:
    """AutoGPT's workspace: its own ``WORKSPACE_PATH`` when AutoGPT is importable.

    ``agpt`` 0.2.x fixes the workspace at ``<cwd at import>/auto_gpt_workspace``; reading its
    constant keeps our resource identical to the file AutoGPT really touches.
    """
    try:
        from autogpt.workspace import WORKSPACE_PATH
    except ImportError:
        return Path(os.getcwd()) / "auto_gpt_workspace"
    return Path(WORKSPACE_PATH)


def workspace_resource(path: str, workspace: Path) -> Optional[str]:
    """``workspace/<path relative to the workspace>``, or None when ``path`` leaves the workspace.

    The path is resolved as AutoGPT resolves it (joined to the workspace, symlinks followed).
    """
    base = workspace.resolve()
    target = base.joinpath(path).resolve()
    try:
        relative = target.relative_to(base)
    except ValueError:
        return None
    text = relative.as_posix()
    return "workspace" if text == "." else f"workspace/{text}"


def governed_command(
    command_name: str, arguments: Mapping[str, Any], workspace: Optional[Path] = None
) -> GovernedCommand:
    """The action, resource and audit context for ``command_name`` called with ``arguments``.

    Unknown commands are checked as ``execute:<name>``, which a default-deny policy refuses. A
    file outside the workspace is checked as ``<verb>:system`` with its absolute path, so that a
    ``write:workspace/*`` allow never covers it.
    """
    name = str(command_name).strip().lower()
    action = COMMAND_ACTIONS.get(name, f"execute:{name}")
    resource = "*"
    path_argument = PATH_ARGUMENTS.get(name)
    if path_argument is not None and arguments.get(path_argument) is not None:
        root = workspace or default_workspace()
        raw_path = str(arguments[path_argument])
        inside = workspace_resource(raw_path, root)
        if inside is None:
            verb = action.split(":", 1)[0]
            action = f"{verb}:system"
            resource = root.resolve().joinpath(raw_path).resolve().as_posix()
        else:
            resource = inside
    else:
        for key in RESOURCE_ARGUMENTS:
            if arguments.get(key) is not None:
                resource = str(arguments[key])
                break
    context = {
        "autogpt_command": name,
        "arguments": {
            str(key): str(value)[:CONTEXT_VALUE_LIMIT] for key, value in arguments.items()
        },
    }
    return GovernedCommand(command=name, action=action, resource=resource, context=context)
