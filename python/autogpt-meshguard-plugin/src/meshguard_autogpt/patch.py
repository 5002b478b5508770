"""``patch_autogpt()``: govern the commands the running AutoGPT really executes.

Replacing a module attribute (what the docs page did) does not change what the agent runs: AutoGPT
registers each command's function in a ``CommandRegistry`` when it imports the module, and its
agent loop calls ``execute_command`` imported by name. So three places are patched:

1. ``autogpt.agent.agent.execute_command`` — the name the agent loop calls for every command,
   registry or not (the one choke point of the loop);
2. ``Command.__call__`` — every registered command, whoever calls it;
3. the command functions of the ``autogpt.commands`` modules — direct callers.

A command is checked once: a governed call marks its body, and nested governed calls pass.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Tuple

from .commands import UNGOVERNED_COMMANDS, governed_command
from .gateway import MeshGuardGateway, governing, inside_governed_call
from .governor import CommandGovernor
from .wrapper import gateway as default_gateway

COMMAND_MODULES = (
    "autogpt.commands.analyze_code",
    "autogpt.commands.audio_text",
    "autogpt.commands.execute_code",
    "autogpt.commands.file_operations",
    "autogpt.commands.git_operations",
    "autogpt.commands.google_search",
    "autogpt.commands.image_gen",
    "autogpt.commands.improve_code",
    "autogpt.commands.twitter",
    "autogpt.commands.web_selenium",
    "autogpt.commands.write_tests",
    "autogpt.app",
)
COMMAND_MARK = "auto_gpt_command"
PATCH_MARK = "__meshguard_governed__"

_originals: Dict[Tuple[str, str], Callable[..., Any]] = {}


@dataclass
class PatchReport:
    """What ``patch_autogpt`` governs, and the command modules it could not import."""

    functions: List[str] = field(default_factory=list)
    skipped_modules: Dict[str, str] = field(default_factory=dict)
    agent_loop: bool = False
    registry: bool = False


def original(module: str, name: str) -> Callable[..., Any]:
    """AutoGPT's own function ``module.name``, never the governed replacement."""
    found = _originals.get((module, name))
    if found is not None:
        return found
    function: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return function


def _run_command(
    governor: CommandGovernor, name: str, arguments: Mapping[str, Any], run: Callable[[], Any]
) -> Any:
    """Checks ``name``, runs it when allowed, records the result; refusal text otherwise."""
    if inside_governed_call() or str(name).strip().lower() in UNGOVERNED_COMMANDS:
        return run()
    admission = governor.admit(name, arguments)
    if admission is None:
        return run()
    if not admission.allowed:
        refusal = admission.refusal()
        print(refusal, flush=True)
        governor.finish(admission, refusal)
        return str(refusal)
    print(f"MeshGuard: allowed {name}", flush=True)
    with governing():
        try:
            result = run()
        except Exception as error:
            governor.finish(admission, f"Error: {error}")
            raise
    governor.finish(admission, result)
    return result


def _patch_agent_loop(governor: CommandGovernor) -> bool:
    agent_module = importlib.import_module("autogpt.agent.agent")
    current = agent_module.execute_command
    if getattr(current, PATCH_MARK, False):
        return True

    @functools.wraps(current)
    def governed_execute_command(
        command_registry: Any, command_name: str, arguments: Any, prompt: Any
    ) -> Any:
        args = arguments if isinstance(arguments, Mapping) else {}
        return _run_command(
            governor,
            command_name,
            args,
            lambda: current(command_registry, command_name, arguments, prompt),
        )

    setattr(governed_execute_command, PATCH_MARK, True)
    setattr(agent_module, "execute_command", governed_execute_command)  # noqa: B010
    return True


def _patch_registry(governor: CommandGovernor) -> bool:
    command_module = importlib.import_module("autogpt.commands.command")
    command_class = command_module.Command
    current = command_class.__call__
    if getattr(current, PATCH_MARK, False):
        return True

    @functools.wraps(current)
    def governed_call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _run_command(governor, self.name, kwargs, lambda: current(self, *args, **kwargs))

    setattr(governed_call, PATCH_MARK, True)
    command_class.__call__ = governed_call
    return True


def _patch_module(module_name: str, governor: CommandGovernor, report: PatchReport) -> None:
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - AutoGPT skips such modules too
        report.skipped_modules[module_name] = f"{type(error).__name__}: {error}"
        return
    for attribute in dir(module):
        function = getattr(module, attribute)
        if not getattr(function, COMMAND_MARK, False) or getattr(function, PATCH_MARK, False):
            continue
        implementation = getattr(getattr(function, "command", None), "method", function)
        if getattr(implementation, "__module__", module_name) != module_name:
            continue  # imported from another command module: patched there
        command_name = function.command.name if hasattr(function, "command") else attribute
        _originals[(module_name, attribute)] = function
        setattr(module, attribute, _governed_function(governor, command_name, function))
        report.functions.append(f"{module_name}.{attribute}")


def _patch_module_functions(governor: CommandGovernor, report: PatchReport) -> None:
    """Patches the command modules already imported, and each other one when AutoGPT imports it.

    Importing them all now would freeze settings AutoGPT reads from its command line at import
    (``--allow-downloads`` enables ``download_file``), so the rest waits for ``import_commands``.
    """
    for module_name in COMMAND_MODULES:
        if module_name in sys.modules:
            _patch_module(module_name, governor, report)
    registry_class = importlib.import_module("autogpt.commands.command").CommandRegistry
    current = registry_class.import_commands
    if getattr(current, PATCH_MARK, False):
        return

    @functools.wraps(current)
    def import_and_govern(self: Any, module_name: str) -> None:
        current(self, module_name)
        _patch_module(module_name, governor, report)

    setattr(import_and_govern, PATCH_MARK, True)
    registry_class.import_commands = import_and_govern


def _governed_function(
    governor: CommandGovernor, command_name: str, function: Callable[..., Any]
) -> Callable[..., Any]:
    try:
        # AutoGPT's @command decorator keeps the undecorated function at .command.method.
        command: Any = getattr(function, "command", None)
        signature = inspect.signature(command.method)
    except (AttributeError, TypeError, ValueError):
        signature = inspect.signature(function)

    @functools.wraps(function)
    def governed_function(*args: Any, **kwargs: Any) -> Any:
        try:
            arguments = dict(signature.bind_partial(*args, **kwargs).arguments)
        except TypeError:
            arguments = dict(kwargs)
        return _run_command(governor, command_name, arguments, lambda: function(*args, **kwargs))

    setattr(governed_function, PATCH_MARK, True)
    return governed_function


def patch_autogpt(via: MeshGuardGateway | None = None) -> PatchReport:
    """Puts every command of the running AutoGPT under MeshGuard; safe to call more than once.

    Call it after the environment is set and the working directory chosen (AutoGPT reads both
    at import), before the agent loop starts.
    """
    governor = CommandGovernor(via or default_gateway)
    report = PatchReport()
    report.agent_loop = _patch_agent_loop(governor)
    report.registry = _patch_registry(governor)
    _patch_module_functions(governor, report)
    print(
        "MeshGuard: AutoGPT commands patched (agent loop, command registry, commands)", flush=True
    )
    return report


__all__ = ["PatchReport", "governed_command", "original", "patch_autogpt"]
