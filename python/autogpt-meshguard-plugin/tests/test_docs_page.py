"""The tests printed on the AutoGPT docs page, as written; only imports and fixtures differ.

Where a page test would also pass for the wrong reason — its wrapper turns any exception into a
result, and the web commands have no network here — the lines after ``# real effect:`` assert
what really happened: the file written, the command not run, the audit events present.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway_process import AgentIdentity, Gateway, event_field
from meshguard_autogpt import (
    browse_website,
    execute_python_code,
    execute_shell,
    gateway,
    google_search,
    write_file,
)

pytestmark = pytest.mark.usefixtures("page_agent")


def test_allowed_action():
    """Test that allowed actions pass."""
    decision = gateway.check_permission("browse:web", "https://example.com")
    assert decision["allowed"] == True  # noqa: E712 - as printed on the page


def test_denied_action():
    """Test that shell execution is blocked."""
    decision = gateway.check_permission("execute:shell", "rm -rf /")
    assert decision["allowed"] == False  # noqa: E712 - as printed on the page
    assert "denied" in decision["reason"].lower()


def test_rate_limiting():
    """Test that rate limits are enforced."""
    # Make many requests quickly
    for i in range(50):
        gateway.check_permission("browse:web", f"https://example.com/{i}")

    # Next request should be rate limited
    decision = gateway.check_permission("browse:web", "https://example.com/final")
    assert decision["allowed"] == False  # noqa: E712 - as printed on the page
    assert "rate" in decision["reason"].lower()
    # real effect: the gateway's own code, not any failure containing "rate"
    assert decision["code"] == "rate_limited"


def test_full_workflow(shared_gateway: Gateway, page_agent: AgentIdentity, workspace: Path):
    """Test a complete AutoGPT workflow through MeshGuard."""
    import uuid

    # Set trace for this test
    trace_id = str(uuid.uuid4())
    gateway.set_trace(trace_id)

    # Simulate AutoGPT workflow
    results = []

    # 1. Web search (should succeed)
    result = google_search("Python tutorials")
    assert "blocked" not in str(result).lower()
    results.append(("search", result))

    # 2. Browse website (should succeed)
    result = browse_website("https://python.org")
    assert "blocked" not in str(result).lower()
    results.append(("browse", result))

    # 3. Write file (should succeed)
    result = write_file("workspace/notes.txt", "Some notes")
    assert "blocked" not in str(result).lower()
    results.append(("write", result))

    # 4. Execute Python (should succeed)
    result = execute_python_code("print('Hello')")
    assert "blocked" not in str(result).lower()
    results.append(("python", result))

    # 5. Execute shell (should be BLOCKED)
    result = execute_shell("ls -la")
    assert result["status"] == "blocked"
    results.append(("shell", result))

    print(f"\n🔍 View audit: meshguard audit trace {trace_id}")

    # real effect: the file is in AutoGPT's workspace with its content ...
    assert (workspace / "workspace" / "notes.txt").read_text() == "Some notes"
    # ... the Python code ran (AutoGPT runs it directly inside a container, else in Docker) ...
    from autogpt.commands.execute_code import we_are_running_in_a_docker_container

    if we_are_running_in_a_docker_container():
        assert results[3][1].strip() == "Hello"
    # ... a shell command that would leave a trace leaves none ...
    marker = workspace / "shell-ran.txt"
    assert execute_shell(f"touch {marker}")["status"] == "blocked"
    assert not marker.exists()
    # ... and the audit trail holds each step: the check, then the record of what ran.
    events = shared_gateway.audit(traceId=trace_id)
    checks = sorted(
        (event_field(e, "action"), event_field(e, "decision"))
        for e in events
        if event_field(e, "kind") == "check"
    )
    assert checks == [
        ("browse:web", "allow"),
        ("execute:python", "allow"),
        ("execute:shell", "deny"),
        ("execute:shell", "deny"),
        ("search:web", "allow"),
        ("write:workspace", "allow"),
    ]
    records = [e for e in events if event_field(e, "kind") == "record"]
    assert len(records) == 4
    statuses = {
        event_field(e, "action"): event_field(e, "status")
        for e in events
        if event_field(e, "kind") == "record"
    }
    # no network and no browser here: the web commands ran and failed, and say so in the audit
    assert statuses["search:web"] == "error"
    assert statuses["browse:web"] == "error"
    assert statuses["write:workspace"] == "success"
    write_check = next(
        e
        for e in events
        if event_field(e, "kind") == "check" and event_field(e, "action") == "write:workspace"
    )
    assert event_field(write_check, "resource") == "workspace/workspace/notes.txt"
