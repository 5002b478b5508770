"""The real classic AutoGPT agent loop (agpt 0.2.2) against the real gateway, governed by the
plugin (loaded from its zip in AutoGPT's plugins folder) or by the wrapper
(``python -m meshguard_autogpt``). Only the LLM is scripted (scripted_autogpt.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from gateway_process import AgentIdentity, Gateway, event_field

HERE = Path(__file__).parent
RUN_TIMEOUT_SECONDS = 180.0
ENTRIES = {"plugin": "autogpt", "wrapper": "meshguard_autogpt"}


@dataclass
class AutoGPTRun:
    """One AutoGPT process in its own directory (workspace, plugins, sync files)."""

    home: Path
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def workspace(self) -> Path:
        return self.home / "auto_gpt_workspace"

    @property
    def sync(self) -> Path:
        return self.home / "sync"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def reach(self, gate: str) -> None:
        """Waits until the agent is about to ask the LLM for the step behind ``gate``."""
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        while not (self.sync / f"at-{gate}").exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"AutoGPT never reached gate {gate}:\n{self.output()[-4000:]}")
            time.sleep(0.05)

    def release(self, gate: str) -> None:
        (self.sync / f"go-{gate}").write_text("", encoding="utf-8")

    def finish(self) -> None:
        try:
            code = self.process.wait(timeout=RUN_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"AutoGPT did not finish:\n{self.output()[-4000:]}")
        assert code == 0, self.output()[-4000:]

    def prompts(self) -> List[str]:
        """What the agent was told: the messages of every LLM call, joined per call."""
        path = self.sync / "prompts.jsonl"
        return ["\n".join(json.loads(line)) for line in path.read_text().splitlines()]


@pytest.fixture
def run_autogpt(tmp_path: Path) -> Iterator[Any]:
    started: List[AutoGPTRun] = []

    def start(
        entry: str, gateway: Gateway, agent: AgentIdentity, trace: str, steps: List[Dict[str, Any]]
    ) -> AutoGPTRun:
        home = tmp_path / f"autogpt-{entry}"
        (home / "sync").mkdir(parents=True)
        (home / "plugins").mkdir()
        (home / "ai_settings.yaml").write_text(
            "ai_name: Scribe\nai_role: keeps notes\nai_goals:\n- keep notes\n", encoding="utf-8"
        )
        script = home / "script.json"
        script.write_text(json.dumps({"sync_dir": str(home / "sync"), "steps": steps}))
        env = {
            **os.environ,
            "OPENAI_API_KEY": "sk-offline-test",
            "MEMORY_BACKEND": "no_memory",
            "EXECUTE_LOCAL_COMMANDS": "True",  # only MeshGuard stands between agent and shell
            "RESTRICT_TO_WORKSPACE": "True",
            "PLUGINS_DIR": str(home / "plugins"),
            "MESHGUARD_URL": gateway.url,
            "MESHGUARD_TOKEN": agent.token,
            "MESHGUARD_TRACE_ID": trace,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        if entry == "plugin":
            build = Path(sys.executable).parent / "meshguard-autogpt-plugin"
            subprocess.run(
                [str(build), "build-zip", str(home / "plugins")],
                check=True,
                capture_output=True,
                timeout=60,
            )
            env["ALLOWLISTED_PLUGINS"] = "MeshGuardPlugin"
        log = home / "autogpt.log"
        with open(log, "wb") as output:
            process = subprocess.Popen(
                [
                    sys.executable,
                    str(HERE / "scripted_autogpt.py"),
                    ENTRIES[entry],
                    str(script),
                    "--",
                    *("--continuous", "--continuous-limit", str(len(steps)), "--skip-news"),
                    *("--ai-settings", "ai_settings.yaml", "--skip-reprompt"),
                ],
                cwd=home,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        run = AutoGPTRun(home=home, process=process, log=log)
        started.append(run)
        return run

    yield start
    for run in started:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait(timeout=10)


def command(name: str, gate: str | None = None, **args: str) -> Dict[str, Any]:
    step: Dict[str, Any] = {"command": {"name": name, "args": args}}
    if gate:
        step["gate"] = gate
    return step


def steps_of(events: List[Dict[str, Any]]) -> List[tuple]:
    """(kind, action, decision or status) of each audit event, in trail order."""
    ordered = sorted(events, key=lambda e: int(event_field(e, "seq") or 0))
    return [
        (
            event_field(e, "kind"),
            event_field(e, "action"),
            event_field(e, "decision") if event_field(e, "kind") == "check" else None,
            event_field(e, "status") if event_field(e, "kind") == "record" else None,
        )
        for e in ordered
    ]


@pytest.mark.parametrize("entry", ["plugin", "wrapper"])
def test_agent_loop_is_governed_and_revocation_stops_it(
    entry: str, private_gateway: Gateway, run_autogpt: Any
) -> None:
    agent = private_gateway.create_agent()
    trace = f"e2e-{entry}-{uuid.uuid4()}"
    marker = private_gateway.data_dir.parent / f"shell-ran-{entry}"
    run = run_autogpt(
        entry,
        private_gateway,
        agent,
        trace,
        [
            command("write_to_file", filename="notes.txt", text="governed notes"),
            command("execute_shell", command_line=f"touch {marker}"),
            command("read_file", filename="notes.txt"),
            command("write_to_file", gate="revoked", filename="after.txt", text="too late"),
            command("read_file", filename="notes.txt"),
        ],
    )
    run.reach("revoked")
    private_gateway.revoke(agent)
    run.release("revoked")
    run.finish()

    # the allowed write really wrote; the shell never ran; nothing ran after the revocation
    assert (run.workspace / "notes.txt").read_text() == "governed notes"
    assert not marker.exists()
    assert not (run.workspace / "after.txt").exists()
    prompts = run.prompts()
    assert "MeshGuard denied execute_shell: " in prompts[2]
    assert "governed notes" in prompts[3]  # the agent read its file back
    assert "MeshGuard denied write_to_file: " in prompts[4]

    # Refusals of a revoked agent are written as one event per agent and minute, at the latest
    # when the gateway shuts down: a restart makes that event visible now.
    private_gateway.stop()
    private_gateway.start()
    events = private_gateway.audit(traceId=trace)
    assert steps_of(events) == [
        ("check", "write:workspace", "allow", None),
        ("record", "write:workspace", None, "success"),
        ("check", "execute:shell", "deny", None),
        ("record", "execute:shell", None, "blocked"),
        ("check", "read:workspace", "allow", None),
        ("record", "read:workspace", None, "success"),
        # revoked: the later checks are refused (401) and audited by the gateway as one denial
        # holding the first of them and their count (with no record: the gateway would refuse
        # that too)
        ("check", "write:workspace", "deny", None),
    ]
    checks = sorted(
        (e for e in events if event_field(e, "kind") == "check"),
        key=lambda e: int(event_field(e, "seq")),
    )
    assert [event_field(e, "resource") for e in checks[:3]] == [
        "workspace/notes.txt",
        f"touch {marker}",
        "workspace/notes.txt",
    ]
    assert {event_field(e, "code") for e in checks[3:]} == {"unauthorized"}
    assert checks[3]["context"]["count"] == 2


@pytest.mark.parametrize("entry", ["plugin", "wrapper"])
def test_agent_loop_fails_closed_when_the_gateway_stops(
    entry: str, private_gateway: Gateway, run_autogpt: Any
) -> None:
    agent = private_gateway.create_agent()
    trace = f"e2e-{entry}-{uuid.uuid4()}"
    marker = private_gateway.data_dir.parent / f"shell-ran-{entry}"
    run = run_autogpt(
        entry,
        private_gateway,
        agent,
        trace,
        [
            command("write_to_file", filename="before.txt", text="while the gateway ran"),
            command("write_to_file", gate="stopped", filename="after.txt", text="unguarded"),
            command("execute_python_file", filename="before.txt"),
            command("execute_shell_popen", command_line=f"touch {marker}"),
            command("read_file", filename="before.txt"),
        ],
    )
    run.reach("stopped")
    private_gateway.stop()
    run.release("stopped")
    run.finish()

    assert (run.workspace / "before.txt").read_text() == "while the gateway ran"
    assert not (run.workspace / "after.txt").exists()
    time.sleep(0.5)  # a popen'd shell would have run by now
    assert not marker.exists()
    prompts = run.prompts()
    for step, name in (
        (2, "write_to_file"),
        (3, "execute_python_file"),
        (4, "execute_shell_popen"),
    ):
        assert f"MeshGuard denied {name}: " in prompts[step]
        assert "unreachable" in prompts[step]

    private_gateway.start()  # same data dir: the trail survived the stop
    assert steps_of(private_gateway.audit(traceId=trace)) == [
        ("check", "write:workspace", "allow", None),
        ("record", "write:workspace", None, "success"),
    ]
