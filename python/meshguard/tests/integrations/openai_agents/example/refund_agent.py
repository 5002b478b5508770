"""An OpenAI Agents SDK agent whose tool calls MeshGuard governs: a refund waits for a human.

Run: `MESHGUARD_URL=http://localhost:3100 MESHGUARD_TOKEN=<agent token> python refund_agent.py`
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from agents import Agent, ModelResponse, Runner, Usage, function_tool, trace
from agents.items import TResponseOutputItem
from agents.models.interface import Model
from agents.testing import assistant_message, function_call
from agents.tracing import set_trace_processors

from meshguard import MeshGuardClient
from meshguard.integrations import ToolCallGovernor
from meshguard.integrations.openai_agents import AgentGuard


@function_tool
def lookup_order(order_id: str) -> str:
    """Finds an order by its id."""
    return f"order {order_id}: 2 items, 42.00 EUR, delivered"


@function_tool
def refund(order_id: str, amount: float) -> str:
    """Refunds an amount of an order."""
    return f"refunded {amount:.2f} EUR on order {order_id}"


class ScriptedModel(Model):
    """Stands for your model (a model name, OpenAIResponsesModel...) so that this runs offline."""

    def __init__(self, *turns: TResponseOutputItem) -> None:
        self.turns = list(turns)

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        return ModelResponse(output=[self.turns.pop(0)], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


def call(name: str, **arguments: Any) -> TResponseOutputItem:
    return function_call(name, arguments, call_id=f"call_{uuid.uuid4().hex}")


model = ScriptedModel(
    call("lookup_order", order_id="A-1001"),
    call("refund", order_id="A-1001", amount=42.0),
    assistant_message("I looked order A-1001 up and asked for its refund."),
)

client = MeshGuardClient()  # MESHGUARD_URL and MESHGUARD_TOKEN
guard = AgentGuard(ToolCallGovernor(client))
agent = guard.govern(
    Agent(
        name="support", instructions="Help with orders.", model=model, tools=[lookup_order, refund]
    )
)


async def main() -> None:
    with trace("refund") as workflow:  # one trace for the run and its resumes
        result = await Runner.run(agent, "Please refund order A-1001.")
        while result.interruptions:  # paused: a call waits for a human
            for request in guard.approvals(result.interruptions):
                print(f"waiting for a human: {request.approve}", flush=True)
                approval = await asyncio.to_thread(
                    client.wait_for_approval, request.approval_id, 600
                )
                print(f"approval {approval.approval_id}: {approval.status}", flush=True)
            state = result.to_state()
            guard.apply_approvals(state)  # decided calls go back to the gateway
            result = await Runner.run(agent, state)
    print(result.final_output)
    print(f"audit trail: meshguard audit trace {workflow.trace_id}")


if __name__ == "__main__":
    set_trace_processors([])  # no OpenAI account here: the SDK's traces are sent nowhere
    asyncio.run(main())
