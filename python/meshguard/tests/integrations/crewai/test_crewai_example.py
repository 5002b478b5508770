"""The example of docs/integrations/crewai.md, run the way its reader runs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, List

from gateway_process import REPO_ROOT, ExampleRun, Gateway, assert_doc_shows, event_field

EXAMPLE = Path(__file__).parent / "example"
DOC = REPO_ROOT / "docs" / "integrations" / "crewai.md"
RUN_TIMEOUT_SECONDS = 120.0


def test_the_doc_shows_the_example_exactly_as_it_is_tested() -> None:
    assert_doc_shows(DOC, EXAMPLE, "release_crew.py", "release-crew.yaml")


def test_the_example_reads_is_refused_the_delete_and_emails_once_approved(
    shared_gateway: Gateway, tmp_path: Path, wait_until: Callable[..., Any]
) -> None:
    shared_gateway.apply_policy(EXAMPLE / "release-crew.yaml")
    agent = shared_gateway.create_agent(prefix="release", tags="release-crew")

    def pending() -> List[Dict[str, Any]]:
        listed = json.loads(shared_gateway.cli("approval", "list", "--json").stdout)
        return [a for a in listed["approvals"] if a.get("agentId") == agent.id]

    with ExampleRun(
        EXAMPLE / "release_crew.py",
        shared_gateway,
        agent,
        tmp_path / "stderr.txt",
        RUN_TIMEOUT_SECONDS,
    ) as run:
        # The operator's view: the crew waits on an email, with its arguments.
        approvals = wait_until(lambda: not run.running() or pending(), timeout=60)
        assert approvals is not True, f"the example ended first:\n{run.stderr.read_text()}"
        assert approvals, "the example never asked for an approval"
        assert approvals[0]["action"] == "tool:send_email"
        assert approvals[0]["arguments"]["value"] == {
            "to": "team@example.com",
            "body": "Version 2.1 ships on Friday.",
        }
        assert run.running()  # still waiting for the human
        shared_gateway.cli("approval", "approve", str(approvals[0]["id"]))
        lines = run.rest()

    assert lines[:3] == [
        "The team knows that 2.1 ships on Friday.",
        "files left: ['workspace/notes.txt']",  # the delete never ran
        "emails sent: 1",  # approved, sent once
    ]
    assert lines[3].startswith("audit trail: meshguard audit trace release-")
    events = shared_gateway.trace(lines[3].rsplit(" ", 1)[1])
    assert [
        (event_field(e, "kind"), event_field(e, "action"), event_field(e, "code")) for e in events
    ] == [
        ("check", "tool:read_file", "allowed"),
        ("record", "tool:read_file", None),
        ("check", "delete:workspace", "denied_by_rule"),
        ("check", "tool:send_email", "approval_required"),
        ("approval", "tool:send_email", "approval_approved"),
        ("check", "tool:send_email", "allowed_with_approval"),
        ("record", "tool:send_email", None),
    ]
