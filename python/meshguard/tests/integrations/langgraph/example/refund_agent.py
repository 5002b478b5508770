"""A LangGraph agent whose tool calls MeshGuard governs: a refund waits for a human.

Run: `MESHGUARD_URL=http://localhost:3100 MESHGUARD_TOKEN=<agent token> python refund_agent.py`
"""

from __future__ import annotations

import uuid
from typing import Any, Dict, List, Union

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Send

from meshguard import MeshGuardClient
from meshguard.integrations import ToolCallGovernor
from meshguard.integrations.langgraph import GovernedToolNode, resume_approvals


@tool
def lookup_order(order_id: str) -> str:
    """Finds an order by its id."""
    return f"order {order_id}: 2 items, 42.00 EUR, delivered"


@tool
def refund(order_id: str, amount: float) -> str:
    """Refunds an amount of an order."""
    return f"refunded {amount:.2f} EUR on order {order_id}"


class ScriptedModel(GenericFakeChatModel):
    """Stands for your chat model (ChatOpenAI, ChatAnthropic, ...) so that this runs offline."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedModel:
        return self


def call(name: str, **args: Any) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": uuid.uuid4().hex}])


model = ScriptedModel(
    messages=iter(
        [
            call("lookup_order", order_id="A-1001"),
            call("refund", order_id="A-1001", amount=42.0),
            AIMessage("I looked order A-1001 up and asked for its refund."),
        ]
    )
).bind_tools([lookup_order, refund])

client = MeshGuardClient()  # MESHGUARD_URL and MESHGUARD_TOKEN
tools = GovernedToolNode([lookup_order, refund], ToolCallGovernor(client))


def agent(state: MessagesState) -> Dict[str, List[Any]]:
    return {"messages": [model.invoke(state["messages"])]}


def route(state: MessagesState) -> Union[List[Send], str]:
    """One task per tool call: when a paused run resumes, only the call that waited runs again."""
    last = state["messages"][-1]
    calls = last.tool_calls if isinstance(last, AIMessage) else []
    return [Send("tools", [call]) for call in calls] or END


graph = StateGraph(MessagesState)
graph.add_node("agent", agent)
graph.add_node("tools", tools)
graph.add_edge(START, "agent")
graph.add_conditional_edges("agent", route, ["tools", END])
graph.add_edge("tools", "agent")
app = graph.compile(checkpointer=InMemorySaver())  # a pause needs a checkpointer


def main() -> None:
    run = f"refund-{uuid.uuid4()}"
    # One thread for the conversation; its checks and records filed under one trace.
    config: RunnableConfig = {"configurable": {"thread_id": run, "meshguard_trace_id": run}}
    result = app.invoke({"messages": [("user", "Please refund order A-1001.")]}, config)
    while "__interrupt__" in result:  # paused: a call waits for a human
        for paused in result["__interrupt__"]:
            print(f"waiting for a human: {paused.value['approve']}", flush=True)
            approval = client.wait_for_approval(paused.value["approval_id"], timeout=600)
            print(f"approval {approval.approval_id}: {approval.status}", flush=True)
        result = app.invoke(resume_approvals(result["__interrupt__"]), config)
    print(result["messages"][-1].content)
    print(f"audit trail: meshguard audit trace {run}")


if __name__ == "__main__":
    main()
