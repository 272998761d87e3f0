"""Any LiteLLM model (``gpt-4o``, ``openai/<name>`` + ``api_base``, ``hosted_vllm/...``,
``ollama/...``) as a SOTOPIA policy, through ``agents.llm_client.LLMClient`` (bounded
concurrency, retries, token and cost accounting)."""
from __future__ import annotations

from sotopia_env.errors import ConfigError

from .formatter import ConversationFormat, fit_messages, parse_action
from .llm_client import LLMClient
from .policy import Policy, TurnRequest, TurnResult


def _approx_tokens(messages: list[dict]) -> int:
    """A provider-independent token estimate that errs long (about 3 characters a token)."""
    return sum(len(m["content"]) // 3 + 4 for m in messages)


class LiteLLMPolicy(Policy):
    """A chat model behind an API. ``api_key`` (or the provider's usual environment variable) is
    passed to the client only, never recorded. ``max_context_tokens`` (None: no limit) drops the
    oldest turns of prompts estimated longer than that (about 3 characters a token)."""

    batched = False

    def __init__(self, model: str, temperature: float = 0.7, top_p: float = 1.0, max_new_tokens: int = 512, *,
                 api_base: str | None = None, api_key: str | None = None, max_concurrency: int = 8,
                 timeout: float = 60, max_retries: int = 5, max_context_tokens: int | None = None,
                 fmt: ConversationFormat | None = None, client: LLMClient | None = None, **client_settings):
        super().__init__()
        if temperature < 0 or not 0 < top_p <= 1 or max_new_tokens < 1:
            raise ConfigError(f"bad sampling settings for {model!r}: need temperature >= 0, 0 < top_p <= 1, "
                              f"max_new_tokens >= 1; got {temperature}, {top_p}, {max_new_tokens}")
        self.name = model
        self.client = client or LLMClient(model, api_base=api_base, api_key=api_key, max_concurrency=max_concurrency,
                                          timeout=timeout, max_retries=max_retries, **client_settings)
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens
        self.max_context_tokens = max_context_tokens
        self.fmt = fmt or ConversationFormat()
        self.sampling = {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens}
        if api_base:
            self.sampling["api_base"] = api_base

    async def aact(self, request: TurnRequest) -> TurnResult:
        budget = None if self.max_context_tokens is None else self.max_context_tokens - self.max_new_tokens
        messages, omitted = fit_messages(request.task, request.agent_index, request.turns, _approx_tokens, budget,
                                         fmt=request.fmt or self.fmt)
        temperature = self.temperature if request.temperature is None else request.temperature
        completion = await self.client.complete(messages, temperature=temperature, top_p=self.top_p,
                                                max_tokens=self.max_new_tokens)
        action_type, argument, fallback = parse_action(completion.text, (request.fmt or self.fmt).prompt_style)
        result = TurnResult(action_type=action_type, argument=argument, prompt_tokens=completion.prompt_tokens,
                            completion_tokens=completion.completion_tokens, fallback=fallback,
                            omitted_turns=omitted, cost=completion.cost, raw=completion.text,
                            retries=completion.attempts - 1)
        self._count([result])
        return result
