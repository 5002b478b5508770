"""Runs the real classic AutoGPT (``python -m autogpt`` or ``python -m meshguard_autogpt``) with a
scripted stand-in for the LLM, so the agent loop runs without network or API key.

Usage: ``python scripted_autogpt.py autogpt|meshguard_autogpt SCRIPT.json -- AUTOGPT ARGS``,
from the run directory (AutoGPT reads its environment and working directory at import).

The script is a JSON list of steps ``{"command": {"name", "args"}, "gate": "name"?}``. Before a
step with a gate, the stand-in writes ``<sync>/at-<gate>`` and waits for ``<sync>/go-<gate>``, so
the test can act (revoke the agent, stop the gateway) between two commands. Every prompt the
stand-in receives is appended to ``<sync>/prompts.jsonl``: it shows what the agent was told.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import runpy
import sys
import time
import types
from pathlib import Path
from typing import Any, Dict, List

GATE_TIMEOUT_SECONDS = 60.0

# Draft-07 schema of AutoGPT's reply format; the agpt 0.2.2 wheel does not ship the file its
# validate_json() opens relative to the working directory.
REPLY_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "thoughts": {"type": "object"},
        "command": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "args": {"type": "object"}},
            "required": ["name", "args"],
        },
    },
    "required": ["thoughts", "command"],
}


def install_reply_schema() -> None:
    schema = Path("autogpt/json_utils/llm_response_format_1.json")
    schema.parent.mkdir(parents=True, exist_ok=True)
    schema.write_text(json.dumps(REPLY_SCHEMA), encoding="utf-8")


# Optional packages of AutoGPT's command modules that the pinned set leaves out (they need the
# network or a browser). AutoGPT's command line imports every command module, so each missing one
# is replaced by a placeholder whose functions fail when called, as they would offline.
ABSENT_PACKAGES = ("spacy", "duckduckgo_search", "PIL", "tweepy", "webdriver_manager")


class _AbsentModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        # AutoGPT probes module attributes for its command marker: a placeholder is no command.
        if name.startswith("__") or name in ("auto_gpt_command", "command"):
            raise AttributeError(name)

        def unavailable(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"{self.__name__}.{name} is not installed here")

        return unavailable


class _AbsentFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname.split(".")[0] in ABSENT_PACKAGES:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> types.ModuleType:
        module = _AbsentModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def install_offline_stand_ins(steps: List[Dict[str, Any]], sync: Path) -> None:
    missing = [name for name in ABSENT_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        sys.meta_path.append(_AbsentFinder())

    import autogpt.chat
    import autogpt.token_counter

    def approximate_tokens(messages: Any, model: str = "") -> int:
        return sum(len(str(message)) // 4 + 4 for message in messages)

    def approximate_string_tokens(text: str, model_name: str = "") -> int:
        return len(text) // 4

    # tiktoken downloads its encodings on first use: count approximately instead.
    autogpt.token_counter.count_message_tokens = approximate_tokens
    autogpt.token_counter.count_string_tokens = approximate_string_tokens

    remaining = list(steps)

    def scripted_chat_completion(messages: Any, *args: Any, **kwargs: Any) -> str:
        with open(sync / "prompts.jsonl", "a", encoding="utf-8") as log:
            log.write(json.dumps([message.get("content", "") for message in messages]) + "\n")
        step = remaining.pop(0) if remaining else {"command": {"name": "do_nothing", "args": {}}}
        gate = step.get("gate")
        if gate:
            (sync / f"at-{gate}").write_text("", encoding="utf-8")
            deadline = time.monotonic() + GATE_TIMEOUT_SECONDS
            while not (sync / f"go-{gate}").exists():
                if time.monotonic() > deadline:
                    raise SystemExit(f"gate {gate} was never opened")
                time.sleep(0.05)
        reply = {
            "thoughts": {
                "text": "scripted step",
                "reasoning": "the test script says so",
                "plan": "- follow the script",
                "criticism": "",
                "speak": "",
            },
            "command": step["command"],
        }
        return json.dumps(reply)

    autogpt.chat.create_chat_completion = scripted_chat_completion


def main() -> None:
    separator = sys.argv.index("--")
    entry, script = sys.argv[1], Path(sys.argv[2])
    autogpt_args = sys.argv[separator + 1 :]
    plan = json.loads(script.read_text(encoding="utf-8"))
    sync = Path(plan["sync_dir"])
    install_reply_schema()
    install_offline_stand_ins(plan["steps"], sync)
    sys.argv = [entry, *autogpt_args]
    runpy.run_module(entry, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
