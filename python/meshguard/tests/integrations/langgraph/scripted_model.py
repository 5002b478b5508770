"""A chat model that answers from a script and keeps every conversation it was shown.

It stands for the LLM so that the real LangGraph runs with no network: each turn returns the next
canned ``AIMessage`` (tool calls included), and ``seen`` holds the messages of each turn, so a
test can assert what the model was told.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatResult
from pydantic import Field


class ScriptedChatModel(GenericFakeChatModel):
    seen: List[List[BaseMessage]] = Field(default_factory=list)

    def _generate(
        self,
        messages: List[BaseMessage],
        stop: Optional[List[str]] = None,
        run_manager: Optional[CallbackManagerForLLMRun] = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.seen.append(list(messages))
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self

    def tool_results(self) -> List[ToolMessage]:
        """The tool messages of the last conversation the model was shown, in order."""
        return [m for m in self.seen[-1] if isinstance(m, ToolMessage)]


def script(*turns: List[Dict[str, Any]] | str) -> ScriptedChatModel:
    """A model whose turns are tool calls (``[{"name", "args"}, …]``) or a final answer."""
    messages: List[AIMessage] = []
    for number, turn in enumerate(turns):
        if isinstance(turn, str):
            messages.append(AIMessage(content=turn))
            continue
        calls = [
            {"name": call["name"], "args": call["args"], "id": f"call-{number}-{index}"}
            for index, call in enumerate(turn)
        ]
        messages.append(AIMessage(content="", tool_calls=calls))
    return ScriptedChatModel(messages=iter(messages))
