"""MeshGuardPlugin: every AutoGPT command is checked by MeshGuard before it runs.

How it blocks: an AutoGPT plugin cannot veto a command, only rewrite it in ``pre_command``. A denied
command is rewritten to ``meshguard_denied``, a command this plugin adds to the prompt in
``post_prompt`` whose only effect is to return the denial text, so the agent reads why
("MeshGuard denied execute_shell: …") and the denied command never executes. Rewriting to
``do_nothing`` would hide the reason from the agent; returning None crashes the agent loop.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple, TypeVar

from auto_gpt_plugin_template import AutoGPTPluginTemplate

from meshguard_autogpt.gateway import MeshGuardGateway
from meshguard_autogpt.governor import Admission, CommandGovernor


class PromptGenerator(Protocol):
    """The part of AutoGPT's ``PromptGenerator`` the plugin calls, positionally (post_prompt)."""

    def add_command(
        self,
        command_label: str,
        command_name: str,
        args: Dict[str, str],
        function: Callable[..., Any],
        /,
    ) -> None: ...


PromptGeneratorT = TypeVar("PromptGeneratorT", bound=PromptGenerator)

DENIAL_COMMAND = "meshguard_denied"


def report_denial(reason: str = "denied by MeshGuard") -> str:
    """The body of ``meshguard_denied``: hands the denial text back to the agent."""
    return reason


class MeshGuardPlugin(AutoGPTPluginTemplate):
    """Governance plugin for classic AutoGPT; load it with ``ALLOWLISTED_PLUGINS=MeshGuardPlugin``.

    Configuration (``MESHGUARD_URL``, ``MESHGUARD_TOKEN``, ``MESHGUARD_TRACE_ID``,
    ``MESHGUARD_APPROVAL_WAIT``) is read at the first command, so a missing token denies every
    command instead of stopping AutoGPT at start.
    """

    def __init__(self) -> None:
        super().__init__()
        self._name = "MeshGuardPlugin"
        self._version = "0.2.0"
        self._description = "MeshGuard governance: every command is checked before it runs"
        self.gateway = MeshGuardGateway()
        self.governor = CommandGovernor(self.gateway)
        self._pending: Optional[Admission] = None

    # --- the hooks MeshGuard uses ---

    def can_handle_post_prompt(self) -> bool:
        return True

    def post_prompt(self, prompt: PromptGeneratorT) -> PromptGeneratorT:
        """Adds ``meshguard_denied``, the command a denied command is rewritten to."""
        # Positional arguments: the signature of add_command changed across AutoGPT releases
        # but its first four parameters kept their order.
        prompt.add_command(
            "Report a MeshGuard policy denial (used by MeshGuard, do not call)",
            DENIAL_COMMAND,
            {"reason": "<reason>"},
            report_denial,
        )
        return prompt

    def can_handle_pre_command(self) -> bool:
        return True

    def pre_command(
        self, command_name: str, arguments: Dict[str, Any]
    ) -> Tuple[str, Dict[str, Any]]:
        """Checks the command; a refused one becomes ``meshguard_denied`` with the reason."""
        admission = self.governor.admit(command_name, arguments)
        self._pending = admission
        if admission is None or admission.allowed:
            if admission is not None:
                print(f"MeshGuard: allowed {command_name}", flush=True)
            return command_name, arguments
        refusal = admission.refusal()
        print(refusal, flush=True)
        return DENIAL_COMMAND, {"reason": str(refusal)}

    def can_handle_post_command(self) -> bool:
        return True

    def post_command(self, command_name: str, response: str) -> str:
        """Records the result of the command checked in ``pre_command``."""
        admission, self._pending = self._pending, None
        if admission is not None:
            self.governor.finish(admission, response)
        return response

    # --- hooks MeshGuard does not use (all are abstract in the template) ---

    def can_handle_on_response(self) -> bool:
        return False

    def on_response(self, response: str, *args: Any, **kwargs: Any) -> str:
        return response

    def can_handle_on_planning(self) -> bool:
        return False

    def on_planning(self, prompt: Any, messages: List[Any]) -> Optional[str]:
        return None

    def can_handle_post_planning(self) -> bool:
        return False

    def post_planning(self, response: Any) -> Any:
        return response

    def can_handle_pre_instruction(self) -> bool:
        return False

    def pre_instruction(self, messages: List[Any]) -> List[Any]:
        return messages

    def can_handle_on_instruction(self) -> bool:
        return False

    def on_instruction(self, messages: List[Any]) -> Optional[str]:
        return None

    def can_handle_post_instruction(self) -> bool:
        return False

    def post_instruction(self, response: str) -> str:
        return response

    def can_handle_chat_completion(
        self, messages: List[Any], model: Any, temperature: float, max_tokens: int
    ) -> bool:
        return False

    def handle_chat_completion(
        self, messages: List[Any], model: Any, temperature: float, max_tokens: int
    ) -> str:
        raise NotImplementedError("MeshGuardPlugin does not answer chat completions")
