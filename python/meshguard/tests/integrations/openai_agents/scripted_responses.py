"""A model that answers from a script and keeps every input it was shown.

It stands for the LLM so that the real Agents SDK runs with no network and no OpenAI key: each
turn returns the next canned output (tool calls, hosted MCP approval requests, a final message),
and ``seen`` holds each turn's input, so a test can assert what the model was told.
"""

from __future__ import annotations

import copy
import uuid
from collections import deque
from typing import Any, AsyncIterator, Dict, List, Optional, Sequence, Union

from agents import Handoff, ModelResponse, ModelSettings, Tool, Usage
from agents.agent_output import AgentOutputSchemaBase
from agents.items import TResponseInputItem, TResponseOutputItem, TResponseStreamEvent
from agents.models.interface import Model, ModelTracing
from agents.testing import assistant_message, function_call
from openai.types.responses.response_output_item import McpApprovalRequest
from openai.types.responses.response_prompt_param import ResponsePromptParam


class ScriptedModel(Model):
    def __init__(self, *turns: Sequence[TResponseOutputItem]) -> None:
        self.turns = deque(list(turn) for turn in turns)
        self.seen: List[List[Dict[str, Any]]] = []

    async def get_response(
        self,
        system_instructions: Optional[str],
        input: Union[str, List[TResponseInputItem]],
        model_settings: ModelSettings,
        tools: List[Tool],
        output_schema: Optional[AgentOutputSchemaBase],
        handoffs: List[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: Optional[str],
        conversation_id: Optional[str],
        prompt: Optional[ResponsePromptParam],
    ) -> ModelResponse:
        shown = [{"role": "user", "content": input}] if isinstance(input, str) else input
        self.seen.append(copy.deepcopy([dict(item) for item in shown]))
        if not self.turns:
            raise AssertionError("the model was asked for more turns than scripted")
        return ModelResponse(output=self.turns.popleft(), usage=Usage(), response_id=None)

    def stream_response(
        self,
        system_instructions: Optional[str],
        input: Union[str, List[TResponseInputItem]],
        model_settings: ModelSettings,
        tools: List[Tool],
        output_schema: Optional[AgentOutputSchemaBase],
        handoffs: List[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: Optional[str],
        conversation_id: Optional[str],
        prompt: Optional[ResponsePromptParam],
    ) -> AsyncIterator[TResponseStreamEvent]:
        raise NotImplementedError("the tests run without streaming")

    def told(self) -> Dict[str, Any]:
        """The tool outputs of the last input the model was shown, by call id."""
        return {
            item["call_id"]: item["output"]
            for item in self.seen[-1]
            if item.get("type") == "function_call_output"
        }

    def hosted_answers(self) -> Dict[str, Dict[str, Any]]:
        """The answers to hosted MCP approval requests in the last input, by request id."""
        return {
            item["approval_request_id"]: item
            for item in self.seen[-1]
            if item.get("type") == "mcp_approval_response"
        }


def call(name: str, **arguments: Any) -> TResponseOutputItem:
    """A function tool call with a call id of its own (call ids are unique, as OpenAI's are)."""
    return function_call(name, arguments, call_id=f"call_{uuid.uuid4().hex}")


def say(text: str) -> TResponseOutputItem:
    """The model's final answer."""
    return assistant_message(text)


def hosted(server: str, tool: str, arguments: str) -> McpApprovalRequest:
    """OpenAI asking whether a hosted MCP server's tool may be called."""
    return McpApprovalRequest(
        id=f"mcpr_{uuid.uuid4().hex}",
        arguments=arguments,
        name=tool,
        server_label=server,
        type="mcp_approval_request",
    )
