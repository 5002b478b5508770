"""The real ``meshguard`` binary on a free port, driven through its CLI, for every Python suite.

Each gateway runs with its own temporary data dir; agents are created and the example policy
applied with the CLI, exactly as a user would. Nothing here fakes the gateway.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Dict, List, Optional, Type

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
AUTOGPT_POLICY = REPO_ROOT / "examples" / "policies" / "autogpt.yaml"
START_TIMEOUT_SECONDS = 30.0
CLI_TIMEOUT_SECONDS = 30.0


def meshguard_binary() -> Path:
    """The gateway binary under test: ``MESHGUARD_BIN``, else ``target/debug/meshguard``."""
    configured = os.environ.get("MESHGUARD_BIN")
    binary = Path(configured) if configured else REPO_ROOT / "target" / "debug" / "meshguard"
    if not binary.is_file():
        pytest.fail(
            f"the meshguard binary is missing at {binary}: run `cargo build -p meshguard` "
            "(scripts/test-python.sh does)",
            pytrace=False,
        )
    return binary


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class AgentIdentity:
    """An agent created for one test, with its token (shown once by the CLI)."""

    name: str
    id: str
    token: str


class Gateway:
    """One ``meshguard serve`` process with its data dir, driven through the real CLI."""

    def __init__(self, binary: Path, data_dir: Path, env: Optional[Dict[str, str]] = None) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.env = env or {}
        self.port = 0
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.log_path = data_dir.parent / f"{data_dir.name}-gateway.log"

    @property
    def url(self) -> str:
        """Base URL of the running gateway."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_token(self) -> str:
        """The admin token the gateway wrote on first start."""
        return (self.data_dir / "admin.token").read_text(encoding="utf-8").strip()

    def start(self) -> None:
        """Starts the gateway on a free port and waits until ``/health`` answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        last_error = "not started"
        for _ in range(3):  # a port taken between probe and bind: try another one
            self.port = free_port()
            log = open(self.log_path, "ab")
            self.process = subprocess.Popen(
                [
                    str(self.binary),
                    "--data-dir",
                    str(self.data_dir),
                    "serve",
                    "--addr",
                    f"127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "MESHGUARD_HOME": str(self.data_dir),
                    "RUST_LOG": "warn",
                    **self.env,
                },
            )
            log.close()
            deadline = time.monotonic() + START_TIMEOUT_SECONDS
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                        return
                except httpx.HTTPError as error:
                    last_error = str(error)
                time.sleep(0.1)
            self.stop()
        pytest.fail(f"meshguard serve did not become healthy ({last_error}):\n{self.log_tail()}")

    def stop(self) -> None:
        """Stops the gateway (SIGTERM, then SIGKILL after 10 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the gateway's log, for failure messages."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Runs ``meshguard --url … --data-dir … ARGS`` against this gateway."""
        completed = subprocess.run(
            [str(self.binary), "--url", self.url, "--data-dir", str(self.data_dir), *args],
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_SECONDS,
            env={**os.environ, "MESHGUARD_HOME": str(self.data_dir), "NO_COLOR": "1"},
        )
        if check and completed.returncode != 0:
            raise AssertionError(
                f"meshguard {' '.join(args)} exited {completed.returncode}:\n"
                f"{completed.stdout}\n{completed.stderr}"
            )
        return completed

    def apply_policy(self, path: Path) -> None:
        """``meshguard policy apply PATH``."""
        self.cli("policy", "apply", str(path))

    def create_agent(
        self, prefix: str = "autogpt", trust: str = "verified", tags: str = "autogpt,autonomous"
    ) -> AgentIdentity:
        """``meshguard agent create NAME --trust … --tags … --json`` with a unique name."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        out = self.cli("agent", "create", name, "--trust", trust, "--tags", tags, "--json")
        created = json.loads(out.stdout)
        agent = created.get("agent", created)
        return AgentIdentity(name=name, id=str(agent["id"]), token=str(created["token"]))

    def revoke(self, agent: AgentIdentity) -> None:
        """``meshguard agent revoke NAME``."""
        self.cli("agent", "revoke", agent.name)

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A raw admin API call with the admin token."""
        headers = {"X-Admin-Token": self.admin_token, **kwargs.pop("headers", {})}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=10, **kwargs)

    def trace(self, trace_id: str) -> List[Dict[str, Any]]:
        """``meshguard audit trace TRACE_ID --json``: the trace's events, oldest first."""
        listed = json.loads(self.cli("audit", "trace", trace_id, "--json").stdout)
        events = listed.get("entries", listed) if isinstance(listed, dict) else listed
        return sorted(events, key=lambda event: int(event_field(event, "seq")))

    def audit(self, **filters: Any) -> List[Dict[str, Any]]:
        """``GET /admin/audit`` with the given filters (e.g. ``traceId``), every page."""
        entries: List[Dict[str, Any]] = []
        params: Dict[str, Any] = {"limit": 500, **filters}
        for _ in range(50):
            response = self.admin("GET", "/admin/audit", params=params)
            assert response.status_code == 200, response.text
            body = response.json()
            entries.extend(body.get("entries", []))
            cursor = body.get("nextCursor")
            if not cursor:
                break
            params["cursor"] = cursor
        return entries


def event_field(event: Dict[str, Any], name: str) -> Any:
    """An audit event's field by its SPEC name (snake_case), accepting the camelCase spelling."""
    if name in event:
        return event[name]
    parts = name.split("_")
    return event.get(parts[0] + "".join(part.title() for part in parts[1:]))


def assert_doc_shows(doc: Path, example: Path, *names: str) -> None:
    """Each named file of an example directory appears verbatim in its docs page."""
    text = doc.read_text(encoding="utf-8")
    for name in names:
        shown = (example / name).read_text(encoding="utf-8")
        assert shown in text, f"{example / name} differs from what {doc} shows"


class ExampleRun:
    """A docs example run as its reader runs it (``python example.py``) as ``agent``, with its
    standard output read line by line; killed on leaving the ``with`` block if still running."""

    def __init__(
        self, script: Path, gateway: Gateway, agent: AgentIdentity, stderr: Path, timeout: float
    ) -> None:
        self.timeout = timeout
        self.stderr = stderr
        with open(stderr, "w", encoding="utf-8") as errors:
            self.process = subprocess.Popen(
                [sys.executable, str(script)],
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                env={**os.environ, "MESHGUARD_URL": gateway.url, "MESHGUARD_TOKEN": agent.token},
            )
        self._lines: queue.Queue[Optional[str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def next_line(self) -> Optional[str]:
        """The next line printed (``None`` at the end), waiting at most the run's timeout."""
        return self._lines.get(timeout=self.timeout)

    def running(self) -> bool:
        """Whether the example has not ended yet."""
        return self.process.poll() is None

    def rest(self) -> List[str]:
        """Every line still to come; asserts the example then exits with status 0."""
        lines: List[str] = []
        while (line := self.next_line()) is not None:
            lines.append(line)
        assert self.process.wait(timeout=self.timeout) == 0, self.stderr.read_text()
        return lines

    def __enter__(self) -> ExampleRun:
        return self

    def __exit__(
        self,
        kind: Optional[Type[BaseException]],
        error: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
