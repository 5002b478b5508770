"""A real CrewAI crew whose model is a script: offline, and it keeps what the model was told.

The model is a ``BaseLLM`` in CrewAI's ``llm=`` slot that answers from a list (ReAct text, or
OpenAI-style tool calls for CrewAI's native function-calling path) and keeps every prompt it is
sent, so that a test reads exactly what the model was told about each tool call. The suite's
conftest has set CrewAI's environment (offline) before the tests import this.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from crewai import Agent, BaseLLM, Crew, Task
from crewai.execution import get_execution_uuid
from crewai.tools import BaseTool, tool
from crewai.tools.tool_failure import ToolFailure
from pydantic import Field


class ScriptedModel(BaseLLM):
    """Answers from ``replies`` in order; keeps each prompt and the run (execution id) it was in.

    A reply is ReAct text, or with ``function_calling`` a list of OpenAI-style tool calls. When
    the script runs out it gives a final answer, so a crew always ends.
    """

    replies: List[Any] = Field(default_factory=list)
    function_calling: bool = False
    prompts: List[List[Dict[str, Any]]] = Field(default_factory=list)
    runs: List[Optional[str]] = Field(default_factory=list)

    def supports_function_calling(self) -> bool:
        return self.function_calling

    def call(
        self,
        messages: Any,
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
    ) -> Any:
        # CrewAI keeps appending to the same list: copy it as it is now.
        if isinstance(messages, str):
            self.prompts.append([{"role": "user", "content": messages}])
        else:
            self.prompts.append(copy.deepcopy(list(messages)))
        self.runs.append(get_execution_uuid())
        if not self.replies:
            return "Thought: the script is over.\nFinal Answer: done"
        return self.replies.pop(0)

    def tool_result_in(self, prompt: int) -> str:
        """What prompt number ``prompt`` tells the model its last tool call returned."""
        messages = self.prompts[prompt]
        last = messages[-1]
        if last.get("role") == "tool":  # native function calling
            return str(last["content"])
        assistant = next(m for m in reversed(messages) if m.get("role") == "assistant")
        text = str(assistant["content"])  # ReAct: the call, then "Observation: <result>"
        assert "\nObservation: " in text, f"no tool result in prompt {prompt}: {text!r}"
        return text.rsplit("\nObservation: ", 1)[1]


def react_call(tool_name: str, arguments: str) -> str:
    """A ReAct reply calling ``tool_name`` with ``arguments`` (JSON text)."""
    return f"Thought: I use {tool_name}.\nAction: {tool_name}\nAction Input: {arguments}"


FINAL_ANSWER = "Thought: I know the answer.\nFinal Answer: done"


@dataclass
class Workspace:
    """The tools a crew is given; ``calls`` is every tool that really ran, with its arguments."""

    calls: List[Tuple[str, Dict[str, Any]]] = field(default_factory=list)
    files: Dict[str, str] = field(
        default_factory=lambda: {"workspace/notes.txt": "Ship on Friday."}
    )

    def tools(self) -> List[BaseTool]:
        """read_file, delete_file, send_email, fetch_report and check_disk over this workspace."""

        @tool("read_file")
        def read_file(path: str) -> str:
            """Reads a file of the workspace."""
            self.calls.append(("read_file", {"path": path}))
            return self.files[path]

        @tool("delete_file")
        def delete_file(path: str) -> str:
            """Deletes a file of the workspace."""
            self.calls.append(("delete_file", {"path": path}))
            del self.files[path]
            return f"deleted {path}"

        @tool("send_email")
        def send_email(to: str, body: str) -> str:
            """Sends an email."""
            self.calls.append(("send_email", {"to": to, "body": body}))
            return f"sent to {to}"

        @tool("fetch_report")
        def fetch_report(report: str) -> str:
            """Fetches a report by its name."""
            self.calls.append(("fetch_report", {"report": report}))
            return f"report {report}: revenue up"

        @tool("check_disk")
        def check_disk(path: str) -> Any:
            """Checks a disk; it reports a failure the CrewAI way."""
            self.calls.append(("check_disk", {"path": path}))
            return ToolFailure(message=f"disk at {path} is unreadable")

        return [read_file, delete_file, send_email, fetch_report, check_disk]


def crew_of(model: ScriptedModel, workspace: Workspace) -> Crew:
    """A one-agent, one-task crew over ``workspace``'s tools, run by ``model``."""
    clerk = Agent(
        role="Clerk",
        goal="Look after the team's workspace",
        backstory="A careful clerk.",
        llm=model,
        tools=workspace.tools(),
        max_iter=8,
    )
    task = Task(description="Do what the script says.", expected_output="A report", agent=clerk)
    return Crew(agents=[clerk], tasks=[task])
