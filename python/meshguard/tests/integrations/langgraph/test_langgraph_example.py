"""The example of docs/integrations/langgraph.md, run the way its reader runs it."""

from __future__ import annotations

from pathlib import Path

from framework_examples import run_refund_example
from gateway_process import REPO_ROOT, Gateway, assert_doc_shows

EXAMPLE = Path(__file__).parent / "example"
DOC = REPO_ROOT / "docs" / "integrations" / "langgraph.md"


def test_the_doc_shows_the_example_exactly_as_it_is_tested() -> None:
    assert_doc_shows(DOC, EXAMPLE, "refund_agent.py", "support-bot.yaml")


def test_the_example_pauses_the_refund_until_a_human_approves_it(
    shared_gateway: Gateway, tmp_path: Path
) -> None:
    run_refund_example(shared_gateway, EXAMPLE, tmp_path / "stderr.txt", trace_prefix="refund-")
