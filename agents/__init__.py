"""Policies that plug into the SOTOPIA environment, the conversation formatter, judges and the runner."""
import os as _os

# Importing litellm otherwise fetches its model cost map from the network.
_os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from .build import build_policy
from .formatter import ConversationFormat, ConversationTokenizer, agent_messages, parse_action
from .policy import Policy, TurnRequest, TurnResult

_LAZY = {  # heavy imports (torch, litellm) only when used
    "HFPolicy": "hf_policy", "LiteLLMPolicy": "litellm_policy", "LLMClient": "llm_client",
    "Completion": "llm_client", "LLMJudge": "judge", "LocalJudge": "judge", "ask_json": "judge",
    "score_candidates": "judge", "EpisodeJob": "runner", "run_episodes": "runner", "self_chat_jobs": "runner",
    "versus_jobs": "runner", "ScriptedOpenAIServer": "local_server",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'agents' has no attribute {name!r}")


__all__ = ["ConversationFormat", "ConversationTokenizer", "agent_messages", "parse_action",  # noqa: PLE0604
           "Policy", "TurnRequest", "TurnResult", "build_policy", *_LAZY]
