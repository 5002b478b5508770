"""``governed`` and the governed AutoGPT commands of the docs page's wrapper.

The page's functions keep their names and signatures, but call the commands AutoGPT really has
(``write_file`` → ``write_to_file``, ``execute_python_code`` → ``execute_python_file`` on a snippet
file), and send the same action and resource as the plugin for the same file.
"""

from __future__ import annotations

import functools
import inspect
import uuid
from typing import Any, Callable, Dict, Optional, TypeVar, cast

from .commands import default_workspace, workspace_resource
from .gateway import MeshGuardGateway

F = TypeVar("F", bound=Callable[..., Any])

gateway = MeshGuardGateway()


def _resource(action: str, value: Any) -> str:
    """Workspace actions send ``workspace/<relative path>``, like the plugin; others the value."""
    text = str(value)
    if action.split(":", 1)[-1] == "workspace":
        inside = workspace_resource(text, default_workspace())
        if inside is not None:
            return inside
    return text


def governed(
    action: str,
    resource_key: Optional[str] = None,
    *,
    context: Optional[Dict[str, Any]] = None,
    approval_wait: Optional[float] = None,
    via: Optional[MeshGuardGateway] = None,
) -> Callable[[F], F]:
    """Runs the decorated function only when MeshGuard allows ``action``, then records it.

    The resource is the argument named ``resource_key`` (by keyword or position). A denial returns
    ``{"status": "blocked", "action", "reason", …}`` — ``"approval_required"`` with its
    ``approval_id`` when a human must decide — and the function does not run. With
    ``approval_wait`` seconds the call waits for that human and runs once approved.
    """

    def decorator(func: F) -> F:
        signature = inspect.signature(func)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            resource = "*"
            if resource_key:
                bound = signature.bind_partial(*args, **kwargs)
                if resource_key in bound.arguments:
                    resource = _resource(action, bound.arguments[resource_key])
            return (via or gateway).execute(
                action,
                resource,
                lambda: func(*args, **kwargs),
                context=context,
                approval_wait=approval_wait,
                label=func.__name__,
            )

        return cast(F, wrapper)

    return decorator


def _real(module: str, name: str) -> Callable[..., Any]:
    """AutoGPT's own implementation, even after ``patch_autogpt`` replaced the module attribute."""
    from .patch import original

    return original(module, name)


@governed("browse:web", "url")
def browse_website(url: str, question: str = "") -> str:
    """Browse a website (governed)."""
    return str(_real("autogpt.commands.web_selenium", "browse_website")(url, question))


@governed("read:workspace", "filename")
def read_file(filename: str) -> str:
    """Read a file of the workspace (governed)."""
    return str(_real("autogpt.commands.file_operations", "read_file")(filename))


@governed("write:workspace", "filename")
def write_file(filename: str, contents: str) -> str:
    """Write a file of the workspace (governed); AutoGPT's command is ``write_to_file``."""
    return str(_real("autogpt.commands.file_operations", "write_to_file")(filename, contents))


@governed("execute:python")
def execute_python_code(code: str) -> str:
    """Run Python code (governed) the way AutoGPT runs code: as a file of the workspace."""
    workspace = default_workspace()
    snippet = workspace / ".meshguard" / f"snippet-{uuid.uuid4().hex}.py"
    snippet.parent.mkdir(parents=True, exist_ok=True)
    snippet.write_text(code, encoding="utf-8")
    try:
        relative = snippet.relative_to(workspace).as_posix()
        return str(_real("autogpt.commands.execute_code", "execute_python_file")(relative))
    finally:
        snippet.unlink(missing_ok=True)


@governed("execute:shell", "command")
def execute_shell(command: str) -> str:
    """Run a shell command (governed); AutoGPT's argument is ``command_line``."""
    return str(_real("autogpt.commands.execute_code", "execute_shell")(command))


@governed("search:web", "query")
def google_search(query: str, num_results: int = 8) -> str:
    """Search the web (governed); AutoGPT's command is ``google``."""
    return str(_real("autogpt.commands.google_search", "google_search")(query, num_results))
