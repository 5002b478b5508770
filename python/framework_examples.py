"""The refund example that the LangGraph and OpenAI Agents SDK pages both show, run and judged
the same way for each framework: the same policy, the same tools, the same trail expected."""

from __future__ import annotations

from pathlib import Path

from gateway_process import ExampleRun, Gateway, event_field

LINE_TIMEOUT_SECONDS = 60.0


def run_refund_example(gateway: Gateway, example: Path, stderr: Path, trace_prefix: str) -> None:
    """Runs ``example/refund_agent.py`` under ``example/support-bot.yaml``: the order is looked
    up, the refund waits for a human, is approved with the CLI, then runs once; the printed
    trace holds exactly those steps."""
    gateway.apply_policy(example / "support-bot.yaml")
    agent = gateway.create_agent(prefix="support", tags="support-bot")
    with ExampleRun(
        example / "refund_agent.py", gateway, agent, stderr, LINE_TIMEOUT_SECONDS
    ) as run:
        waiting = run.next_line()
        assert waiting and waiting.startswith("waiting for a human: meshguard approval approve "), (
            stderr.read_text()
        )
        approval_id = waiting.rsplit(" ", 1)[1]
        # While it waits the order was looked up, and nothing refunded.
        records = gateway.audit(agentId=agent.id, kind="record")
        assert [event_field(e, "action") for e in records] == ["tool:lookup_order"]

        gateway.cli("approval", "approve", approval_id)
        rest = run.rest()

    assert rest[:2] == [
        f"approval {approval_id}: approved",
        "I looked order A-1001 up and asked for its refund.",
    ]
    assert rest[2].startswith(f"audit trail: meshguard audit trace {trace_prefix}")
    assert [
        (
            event_field(e, "kind"),
            event_field(e, "action"),
            event_field(e, "code") or event_field(e, "status"),
            event_field(e, "result"),
        )
        for e in gateway.trace(rest[2].rsplit(" ", 1)[1])
    ] == [
        ("check", "tool:lookup_order", "allowed", None),
        ("record", "tool:lookup_order", "success", "order A-1001: 2 items, 42.00 EUR, delivered"),
        ("check", "tool:refund", "approval_required", None),
        ("approval", "tool:refund", "approval_approved", None),
        ("check", "tool:refund", "allowed_with_approval", None),
        ("record", "tool:refund", "success", "refunded 42.00 EUR on order A-1001"),
    ]
