"""A CrewAI crew whose tool calls MeshGuard governs: reads pass, deletes are denied, emails wait.

Run with the agent's token: MESHGUARD_URL=http://localhost:3100 MESHGUARD_TOKEN=... python
release_crew.py; approve the email with `meshguard approval approve <id>` (see `approval list`).
"""

import uuid
from typing import Any, Dict, List

from crewai import Agent, BaseLLM, Crew, Task
from crewai.execution import clear_execution_uuid, set_execution_uuid
from crewai.tools import tool

from meshguard.integrations import ToolCallGovernor, ToolNaming
from meshguard.integrations.crewai import MeshGuardToolHooks

FILES = {"workspace/notes.txt": "Version 2.1 ships on Friday."}
SENT: List[Dict[str, str]] = []


@tool("read_file")
def read_file(path: str) -> str:
    """Reads a file of the team's workspace."""
    return FILES[path]


@tool("delete_file")
def delete_file(path: str) -> str:
    """Deletes a file of the team's workspace."""
    del FILES[path]
    return f"deleted {path}"


@tool("send_email")
def send_email(to: str, body: str) -> str:
    """Sends an email."""
    SENT.append({"to": to, "body": body})
    return f"sent to {to}"


class ScriptedLLM(BaseLLM):
    """Stands in for your model so that the example runs offline: pass any `llm=` instead."""

    replies: List[str]

    def call(self, messages: Any, *args: Any, **kwargs: Any) -> str:
        return self.replies.pop(0)


llm = ScriptedLLM(
    model="scripted",
    replies=[
        'Thought: Read.\nAction: read_file\nAction Input: {"path": "workspace/notes.txt"}',
        'Thought: Tidy up.\nAction: delete_file\nAction Input: {"path": "workspace/notes.txt"}',
        "Thought: Tell the team.\nAction: send_email\n"
        'Action Input: {"to": "team@example.com", "body": "Version 2.1 ships on Friday."}',
        "Thought: Done.\nFinal Answer: The team knows that 2.1 ships on Friday.",
    ],
)
clerk = Agent(
    role="Release clerk",
    goal="Tell the team when the release ships",
    backstory="Reads the release notes and keeps the team informed.",
    llm=llm,
    tools=[read_file, delete_file, send_email],
)
task = Task(
    description="Read workspace/notes.txt, delete it, and email its news to the team.",
    expected_output="One line saying what the team was told",
    agent=clerk,
)
crew = Crew(agents=[clerk], tasks=[task])

# The client comes from MESHGUARD_URL and MESHGUARD_TOKEN; deleting is a `delete:` action for
# the policy, whatever the tool is called.
governor = ToolCallGovernor(naming=ToolNaming(actions={"delete_file": "delete:workspace"}))
run_id = f"release-{uuid.uuid4()}"
token = set_execution_uuid(run_id)  # CrewAI's id of this run: MeshGuard's trace id too
try:
    with MeshGuardToolHooks(governor, approval_wait=600):
        result = crew.kickoff()
finally:
    clear_execution_uuid(token)

print(result)
print("files left:", sorted(FILES))
print("emails sent:", len(SENT))
print("audit trail: meshguard audit trace", run_id)
