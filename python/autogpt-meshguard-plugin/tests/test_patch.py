"""``patch_autogpt()`` governs what AutoGPT really runs: commands called through a
``CommandRegistry`` (registered when AutoGPT imports them), the agent loop's ``execute_command``
and the module functions — each checked exactly once. Runs in a fresh interpreter, since
the patch changes AutoGPT's classes for the whole process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from gateway_process import AgentIdentity, Gateway, event_field

PROBE = """
import importlib.util, json, sys, types
if importlib.util.find_spec("spacy") is None:  # imported by autogpt.app, used for web pages only
    sys.modules["spacy"] = types.ModuleType("spacy")
from meshguard_autogpt import patch_autogpt, gateway

report = patch_autogpt()
from autogpt.commands.command import CommandRegistry
from autogpt.agent import agent as loop
import autogpt.commands.file_operations as file_operations

registry = CommandRegistry()
for module in ("autogpt.commands.file_operations", "autogpt.commands.execute_code"):
    registry.import_commands(module)
out = {
    "registry_write": str(registry.call("write_to_file", filename="registry.txt", text="r")),
    "module_write": str(file_operations.write_to_file("module.txt", "m")),
    "loop_append": str(loop.execute_command(
        registry, "append_to_file", {"filename": "module.txt", "text": "+"}, None)),
    "registry_shell": str(registry.call("execute_shell", command_line="touch registry-shell")),
    "loop_popen": str(loop.execute_command(
        registry, "execute_shell_popen", {"command_line": "touch loop-popen"}, None)),
    "functions": report.functions,
}
print(json.dumps(out))
"""


def test_patch_governs_registry_loop_and_module_functions_once_each(
    shared_gateway: Gateway, agent: AgentIdentity, tmp_path: Path
) -> None:
    trace = f"patch-{uuid.uuid4()}"
    env = {
        **os.environ,
        "OPENAI_API_KEY": "sk-offline-test",
        "MEMORY_BACKEND": "no_memory",
        "EXECUTE_LOCAL_COMMANDS": "True",
        "MESHGUARD_URL": shared_gateway.url,
        "MESHGUARD_TOKEN": agent.token,
        "MESHGUARD_TRACE_ID": trace,
    }
    completed = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    out = json.loads(completed.stdout.strip().splitlines()[-1])
    workspace = tmp_path / "auto_gpt_workspace"

    assert (workspace / "registry.txt").read_text() == "r"
    assert (workspace / "module.txt").read_text() == "m+"
    assert out["registry_shell"].startswith("MeshGuard denied execute_shell: ")
    assert out["loop_popen"].startswith("MeshGuard denied execute_shell_popen: ")
    assert not (workspace / "registry-shell").exists()
    assert not (workspace / "loop-popen").exists()
    assert "autogpt.commands.file_operations.write_to_file" in out["functions"]
    assert "autogpt.commands.execute_code.execute_shell" in out["functions"]

    checks = shared_gateway.audit(traceId=trace, kind="check")
    # one check per call, although each allowed call passed through two patched layers
    assert sorted(
        (event_field(e, "action"), event_field(e, "resource"), event_field(e, "decision"))
        for e in checks
    ) == [
        ("execute:shell", "touch loop-popen", "deny"),
        ("execute:shell", "touch registry-shell", "deny"),
        ("write:workspace", "workspace/module.txt", "allow"),
        ("write:workspace", "workspace/module.txt", "allow"),
        ("write:workspace", "workspace/registry.txt", "allow"),
    ]
