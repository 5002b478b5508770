"""The SDK's trace ids as its tracing reports them, so that tests find a run's audit trail."""

from __future__ import annotations

from typing import Any, List

from agents.tracing import Span, Trace, TracingProcessor


class TraceRecorder(TracingProcessor):
    """Keeps the id of every trace the SDK starts, in order."""

    def __init__(self) -> None:
        self.trace_ids: List[str] = []

    def on_trace_start(self, trace: Trace) -> None:
        self.trace_ids.append(trace.trace_id)

    def on_trace_end(self, trace: Trace) -> None:
        pass

    def on_span_start(self, span: Span[Any]) -> None:
        pass

    def on_span_end(self, span: Span[Any]) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self) -> None:
        pass

    def only(self) -> str:
        """The id of the one trace started so far (a run and its resumes share it)."""
        [trace_id] = self.trace_ids
        return trace_id
