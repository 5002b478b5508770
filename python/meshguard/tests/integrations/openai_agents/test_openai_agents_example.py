"""The example of docs/integrations/openai-agents.md, run the way its reader runs it."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import List, Optional

from gateway_process import REPO_ROOT, Gateway, event_field

EXAMPLE = Path(__file__).parent / "example"
DOC = REPO_ROOT / "docs" / "integrations" / "openai-agents.md"
LINE_TIMEOUT_SECONDS = 60.0


def test_the_doc_shows_the_example_exactly_as_it_is_tested() -> None:
    doc = DOC.read_text(encoding="utf-8")
    for name in ("refund_agent.py", "support-bot.yaml"):
        assert (EXAMPLE / name).read_text(encoding="utf-8") in doc, f"{name} differs from the doc"


def test_the_example_pauses_the_refund_until_a_human_approves_it(
    shared_gateway: Gateway, tmp_path: Path
) -> None:
    shared_gateway.apply_policy(EXAMPLE / "support-bot.yaml")
    agent = shared_gateway.create_agent(prefix="support", tags="support-bot")
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "w", encoding="utf-8") as errors:
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLE / "refund_agent.py")],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env={**os.environ, "MESHGUARD_URL": shared_gateway.url, "MESHGUARD_TOKEN": agent.token},
        )
    lines: queue.Queue[Optional[str]] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()

    def next_line() -> Optional[str]:
        return lines.get(timeout=LINE_TIMEOUT_SECONDS)

    try:
        waiting = next_line()
        assert waiting and waiting.startswith("waiting for a human: meshguard approval approve "), (
            stderr.read_text()
        )
        approval_id = waiting.rsplit(" ", 1)[1]
        # While it waits the order was looked up, and nothing refunded.
        records = shared_gateway.audit(agentId=agent.id, kind="record")
        assert [event_field(e, "action") for e in records] == ["tool:lookup_order"]

        shared_gateway.cli("approval", "approve", approval_id)

        rest: List[str] = []
        while (line := next_line()) is not None:
            rest.append(line)
        assert process.wait(timeout=LINE_TIMEOUT_SECONDS) == 0, stderr.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert rest[:2] == [
        f"approval {approval_id}: approved",
        "I looked order A-1001 up and asked for its refund.",
    ]
    assert rest[2].startswith("audit trail: meshguard audit trace trace_")
    trace = rest[2].rsplit(" ", 1)[1]
    events = json.loads(shared_gateway.cli("audit", "trace", trace, "--json").stdout)
    events = events.get("entries", events) if isinstance(events, dict) else events
    assert [
        (
            event_field(e, "kind"),
            event_field(e, "action"),
            event_field(e, "code") or event_field(e, "status"),
            event_field(e, "result"),
        )
        for e in events
    ] == [
        ("check", "tool:lookup_order", "allowed", None),
        ("record", "tool:lookup_order", "success", "order A-1001: 2 items, 42.00 EUR, delivered"),
        ("check", "tool:refund", "approval_required", None),
        ("approval", "tool:refund", "approval_approved", None),
        ("check", "tool:refund", "allowed_with_approval", None),
        ("record", "tool:refund", "success", "refunded 42.00 EUR on order A-1001"),
    ]
