"""MeshGuardPlugin: how AutoGPT loads it (its own ``scan_plugins``), and its hooks against the
real gateway."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
import zipfile
from pathlib import Path
from typing import Any, Callable, List

import pytest

from gateway_process import AgentIdentity, Gateway, event_field
from meshguard import MeshGuardClient
from meshguard_autogpt_plugin import MeshGuardPlugin
from meshguard_autogpt_plugin.plugin import DENIAL_COMMAND

HERE = Path(__file__).parent
MAILER_POLICY = HERE / "policies" / "autogpt-approvals.yaml"

SCAN = """
from autogpt.config import Config
from autogpt.plugins import scan_plugins
plugins = scan_plugins(Config())
print("LOADED", [type(p).__name__ for p in plugins])
"""


def build_zip(plugins: Path) -> Path:
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "meshguard-autogpt-plugin"), "build-zip", str(plugins)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    return plugins / "meshguard-autogpt-plugin.zip"


def scan(tmp_path: Path, allowlist: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PLUGINS_DIR": str(tmp_path / "plugins"),
        "ALLOWLISTED_PLUGINS": allowlist,
        "OPENAI_API_KEY": "sk-offline-test",
    }
    return subprocess.run(
        [sys.executable, "-c", SCAN],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,  # AutoGPT asks on stdin about plugins it was not told to load
        timeout=120,
    )


def test_autogpt_loads_the_zip_with_the_class_name_allowlisted(tmp_path: Path) -> None:
    archive = build_zip(tmp_path / "plugins")
    with zipfile.ZipFile(archive) as opened:
        first_init = next(name for name in opened.namelist() if name.endswith("__init__.py"))
    assert first_init == "meshguard_autogpt_plugin/__init__.py"
    completed = scan(tmp_path, "MeshGuardPlugin")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "LOADED ['MeshGuardPlugin']" in completed.stdout
    # nothing of the plugin module but the plugin looked like a plugin: AutoGPT asked nothing
    assert "WARNNG" not in completed.stdout


def test_the_allowlist_value_of_the_old_page_does_not_load_it(tmp_path: Path) -> None:
    build_zip(tmp_path / "plugins")
    completed = scan(tmp_path, "autogpt-meshguard-plugin")
    assert "LOADED ['MeshGuardPlugin']" not in completed.stdout
    assert "Plugin MeshGuardPlugin found. But not in the allowlist" in completed.stdout


def new_plugin() -> MeshGuardPlugin:
    """A fresh plugin: AutoGPT's template makes every plugin class a singleton."""
    type(MeshGuardPlugin)._instances.pop(MeshGuardPlugin, None)
    return MeshGuardPlugin()


def plugin_for(gateway: Gateway, agent: AgentIdentity, trace: str) -> MeshGuardPlugin:
    plugin = new_plugin()
    plugin.gateway.configure(gateway.url, agent.token, trace_id=trace)
    return plugin


class Prompt:
    """Records ``add_command`` calls as AutoGPT's PromptGenerator (positional arguments)."""

    def __init__(self) -> None:
        self.commands: List[Any] = []

    def add_command(self, label: str, name: str, args: Any = None, function: Any = None) -> None:
        self.commands.append((label, name, args, function))


def test_allowed_commands_pass_unchanged_and_are_recorded(
    shared_gateway: Gateway, agent: AgentIdentity, workspace: Path
) -> None:
    trace = f"plugin-{uuid.uuid4()}"
    plugin = plugin_for(shared_gateway, agent, trace)
    arguments = {"filename": "notes.txt", "text": "hello"}
    assert plugin.pre_command("write_to_file", arguments) == ("write_to_file", arguments)
    plugin.post_command("write_to_file", "Command write_to_file returned: File written")
    events = shared_gateway.audit(traceId=trace)
    assert sorted(
        (event_field(e, "kind"), event_field(e, "action"), event_field(e, "resource"))
        for e in events
    ) == [
        ("check", "write:workspace", "workspace/notes.txt"),
        ("record", "write:workspace", "workspace/notes.txt"),
    ]


def test_a_denied_command_becomes_the_denial_the_agent_reads(
    shared_gateway: Gateway, agent: AgentIdentity
) -> None:
    plugin = plugin_for(shared_gateway, agent, f"plugin-{uuid.uuid4()}")
    prompt = plugin.post_prompt(Prompt())
    ((_, name, _, report),) = prompt.commands
    assert name == DENIAL_COMMAND
    command, arguments = plugin.pre_command("execute_shell", {"command_line": "rm -rf /"})
    assert command == DENIAL_COMMAND
    assert arguments["reason"].startswith("MeshGuard denied execute_shell: ")
    assert "denied" in arguments["reason"][len("MeshGuard denied execute_shell: ") :]
    # AutoGPT calls a prompt command with the argument values, positionally
    assert report(*arguments.values()) == arguments["reason"]


def test_an_unreachable_gateway_denies_every_command() -> None:
    plugin = new_plugin()
    plugin.gateway.configure("http://127.0.0.1:9", "token", timeout=2)
    command, arguments = plugin.pre_command("read_file", {"filename": "notes.txt"})
    assert command == DENIAL_COMMAND
    assert "unreachable" in arguments["reason"]


def test_a_missing_token_denies_instead_of_stopping_autogpt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MESHGUARD_TOKEN", raising=False)
    monkeypatch.delenv("MESHGUARD_AGENT_TOKEN", raising=False)
    plugin = new_plugin()  # the old page raised here, which stopped AutoGPT at start
    command, arguments = plugin.pre_command("read_file", {"filename": "notes.txt"})
    assert command == DENIAL_COMMAND
    assert "MESHGUARD_TOKEN" in arguments["reason"]


def test_task_complete_is_never_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESHGUARD_TOKEN", raising=False)
    plugin = new_plugin()
    assert plugin.pre_command("task_complete", {"reason": "done"}) == (
        "task_complete",
        {"reason": "done"},
    )


@pytest.fixture
def mailer(shared_gateway: Gateway) -> AgentIdentity:
    shared_gateway.apply_policy(MAILER_POLICY)
    return shared_gateway.create_agent(prefix="mailer", tags="autogpt-mailer")


def test_approval_required_reports_the_approval_id(
    shared_gateway: Gateway, mailer: AgentIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MESHGUARD_APPROVAL_WAIT", raising=False)
    plugin = plugin_for(shared_gateway, mailer, f"plugin-{uuid.uuid4()}")
    command, arguments = plugin.pre_command("send_email", {"recipient": "ops@example.com"})
    assert command == DENIAL_COMMAND
    assert "requires human approval for send_email (approval id " in arguments["reason"]


def test_approval_wait_lets_the_command_run_once_approved(
    shared_gateway: Gateway,
    mailer: AgentIdentity,
    monkeypatch: pytest.MonkeyPatch,
    wait_until: Callable[..., Any],
) -> None:
    monkeypatch.setenv("MESHGUARD_APPROVAL_WAIT", "30")
    plugin = plugin_for(shared_gateway, mailer, f"plugin-{uuid.uuid4()}")
    admin = MeshGuardClient(gateway_url=shared_gateway.url, admin_token=shared_gateway.admin_token)

    def approve_when_asked() -> None:
        def mine() -> List[Any]:
            return [
                a
                for a in admin.list_approvals(status="pending")
                if mailer.id in a.values() or mailer.name in a.values()
            ]

        for approval in wait_until(mine) or []:
            admin.approve(str(approval.get("id") or approval.get("approval_id")))

    human = threading.Thread(target=approve_when_asked)
    human.start()
    arguments = {"recipient": "ops@example.com"}
    assert plugin.pre_command("send_email", arguments) == ("send_email", arguments)
    human.join(timeout=30)


def test_the_zip_works_where_the_sdk_is_not_installed(tmp_path: Path) -> None:
    """Only the template and httpx on the path (python -S: no site-packages): the zip suffices."""
    import shutil

    import abstract_singleton
    import auto_gpt_plugin_template
    import certifi
    import h11
    import httpcore
    import httpx
    import idna
    import sniffio

    lib = tmp_path / "lib"
    for module in (
        auto_gpt_plugin_template,
        abstract_singleton,
        httpx,
        httpcore,
        h11,
        sniffio,
        idna,
        certifi,
    ):
        source = Path(str(module.__file__)).parent
        shutil.copytree(source, lib / source.name)
    archive = build_zip(tmp_path / "plugins")
    probe = (
        f"import sys; sys.path[:0] = [{str(lib)!r}]\n"
        "from zipimport import zipimporter\n"
        f"module = zipimporter({str(archive)!r}).load_module('meshguard_autogpt_plugin')\n"
        "import meshguard\n"
        "print(meshguard.__file__)\n"
        "print(module.MeshGuardPlugin().pre_command('read_file', {'filename': 'a'})[0])\n"
    )
    completed = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", "")},
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0].startswith(str(archive))
    assert lines[-1] == DENIAL_COMMAND  # no token configured: denied, not crashed
