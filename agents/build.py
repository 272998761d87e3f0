"""``build_policy``: the policy for a model string (the factory sits above the policy classes, which
import only ``agents.policy``, so the imports point one way)."""
from __future__ import annotations

from .formatter import ConversationFormat
from .models import is_local_model
from .policy import Policy


def build_policy(model: str, **settings) -> Policy:
    """A policy for a model string: ``embedded``, ``hf:<id>`` or a local folder -> HFPolicy (a
    string that looks like a path but names no folder is a ConfigError, not a LiteLLM model:
    ``agents.models.is_local_model``); anything else is a LiteLLM model string (``gpt-4o``,
    ``openai/<name>`` with ``api_base=``, ``hosted_vllm/<name>``, ``ollama/<name>``) -> LiteLLMPolicy.
    ``prompt_style`` (``native`` or ``sotopia``) sets how the policy renders its prompts; other
    ``settings`` go to the constructor."""
    prompt_style = settings.pop("prompt_style", None)
    if prompt_style is not None:
        from sotopia_env.render import check_prompt_style

        settings["fmt"] = ConversationFormat(prompt_style=check_prompt_style(prompt_style))
    if is_local_model(model):
        from .hf_policy import HFPolicy

        return HFPolicy(model.removeprefix("hf:"), **settings)
    from .litellm_policy import LiteLLMPolicy

    return LiteLLMPolicy(model, **settings)
