"""An async chat client for any LiteLLM model string, with bounded concurrency, retries and
token/cost accounting.

Model strings are LiteLLM's: ``gpt-4o``, ``openai/<name>`` with ``api_base`` (any
OpenAI-compatible server), ``hosted_vllm/<name>``, ``ollama/<name>``... tenacity is the only
retry layer (LiteLLM's and the OpenAI SDK's own retries are switched off): rate limits,
timeouts, connection errors and 5xx answers are retried with exponential back-off and jitter,
honouring ``Retry-After``. Every other error is fatal (``FatalAPIError``: a refused key, no access,
no such model, a request that can never fit): it fails at once, naming the model and where its key
comes from, and stops the run. ``is_retryable`` is the one place that tells the two apart. API keys
come from the argument or the provider's environment variable and are never written anywhere:
error texts go through ``sotopia_env.redaction``.
"""
from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from sotopia_env.errors import APIError, ConfigError, FatalAPIError
from sotopia_env.redaction import install_log_redaction, is_secret_name, redact, register_secret

litellm.suppress_debug_info = True  # no "Give Feedback" banner on every handled exception
install_log_redaction()  # LiteLLM logs failed requests, and a provider's error text may quote the key


async def drain_logging(timeout: float = 10.0) -> None:
    """Let LiteLLM's background logging queue finish before the event loop closes: some LiteLLM
    releases (1.80, which the sotopia extra installs) hang in ``asyncio.run``'s shutdown when
    success handlers are still queued. Bounded by ``timeout``; a no-op where there is no queue."""
    try:
        from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER
    except ImportError:
        return
    queue = getattr(GLOBAL_LOGGING_WORKER, "_queue", None)
    if queue is None:
        return
    try:
        await asyncio.wait_for(queue.join(), timeout)
    except (asyncio.TimeoutError, RuntimeError):  # RuntimeError: the queue belongs to another loop
        pass


# Exceptions worth another try: the server may answer next time.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = tuple(
    e for e in (getattr(litellm, name, None) for name in (
        "RateLimitError", "Timeout", "APIConnectionError", "InternalServerError", "ServiceUnavailableError",
        "BadGatewayError")) if isinstance(e, type))
# Exceptions no retry can fix: the request or the credentials are wrong (checked first: some are
# subclasses of retryable ones).
FATAL_ERRORS: tuple[type[BaseException], ...] = tuple(
    e for e in (getattr(litellm, name, None) for name in (
        "AuthenticationError", "BadRequestError", "PermissionDeniedError", "NotFoundError",
        "ContextWindowExceededError", "ContentPolicyViolationError", "UnprocessableEntityError"))
    if isinstance(e, type))


def is_retryable(error: BaseException) -> bool:
    """The one classification of API errors. True for errors a later attempt may not meet (rate
    limits, timeouts, lost connections, 5xx): retried with back-off. False for every other error:
    fatal, since the same request fails the same way however often it is sent (401 refused key,
    403 no access, 404 no such model, 400/422 a request that can never fit, and errors LiteLLM
    does not classify)."""
    if isinstance(error, FATAL_ERRORS):
        return False
    if isinstance(error, RETRYABLE_ERRORS):
        return True
    status = getattr(error, "status_code", None)
    return isinstance(status, int) and (status >= 500 or status in (408, 429))


def key_source(model: str, api_base: str | None = None) -> str:
    """Where LiteLLM reads the key of ``model``: its environment variable(s) (OPENAI_API_KEY for
    gpt-4o and openai/<name>), by name only."""
    try:
        provider = litellm.get_llm_provider(model, api_base=api_base)[1]
    except Exception:  # noqa: BLE001 - LiteLLM raises BadRequestError for an unknown provider
        return "the provider's key variable"
    try:  # names only the keys that are not set
        missing = litellm.validate_environment(model=model).get("missing_keys") or []
    except Exception:  # noqa: BLE001 - providers LiteLLM cannot validate
        missing = []
    names = [k for k in missing if is_secret_name(k)]
    if not names:  # set: the environment's key variables of this provider (OPENAI_API_KEY for openai)
        stem = provider.replace("_", "").upper()
        names = sorted(k for k in os.environ
                       if is_secret_name(k) and k.replace("_", "").upper().startswith(stem))
    return " or ".join(names or [f"{provider.upper()}_API_KEY"])


def retry_after_seconds(error: BaseException | None) -> float | None:
    """The server's ``Retry-After`` (seconds) carried by an error, if any."""
    if error is None:
        return None
    headers = getattr(error, "litellm_response_headers", None)
    if headers is None:
        response = getattr(error, "response", None)
        headers = getattr(response, "headers", None)
    if not headers:
        return None
    value = headers.get("retry-after") or headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:  # an HTTP date: not worth parsing, fall back to back-off
        return None


@dataclass
class Completion:
    """One chat completion: the assistant text and its accounting."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    """US dollars by LiteLLM's price table; 0 when the model's price is unknown (local servers)."""
    attempts: int = 1
    latency: float = 0.0


class LLMClient:
    """Async chat completions for one LiteLLM model.

    ``max_concurrency`` bounds the requests in flight (per event loop); ``timeout`` is the
    per-request limit in seconds; ``max_retries`` retries follow the first attempt, waiting
    ``backoff_base * 2**k`` seconds (capped at ``backoff_max``) with full jitter, or the
    server's ``Retry-After`` when it sends one.
    """

    def __init__(self, model: str, *, api_base: str | None = None, api_key: str | None = None,
                 max_concurrency: int = 8, timeout: float = 60, max_retries: int = 5,
                 backoff_base: float = 1.0, backoff_max: float = 60.0):
        self.model = model
        self.api_base = api_base
        self.__api_key = api_key  # name-mangled and kept out of repr/records on purpose
        register_secret(api_key)  # and masked wherever a provider's error text quotes it
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._semaphores: dict[int, asyncio.Semaphore] = {}
        self.usage = {"requests": 0, "attempts": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0}

    def __repr__(self) -> str:
        return (f"LLMClient(model={self.model!r}, api_base={self.api_base!r}, "
                f"max_concurrency={self.max_concurrency}, timeout={self.timeout}, max_retries={self.max_retries})")

    def check(self, role: str = "model") -> None:
        """``check_model`` for this client's model, endpoint and key (no paid call)."""
        check_model(self.model, api_base=self.api_base, api_key=self.__api_key, role=role)

    def describe(self) -> dict:
        """Settings safe to store with a record (no key)."""
        return {"model": self.model, "api_base": self.api_base, "timeout": self.timeout,
                "max_retries": self.max_retries, "max_concurrency": self.max_concurrency}

    def _semaphore(self) -> asyncio.Semaphore:
        # A semaphore belongs to one event loop; sync wrappers may run several loops in turn.
        loop = asyncio.get_running_loop()
        sem = self._semaphores.get(id(loop))
        if sem is None:
            sem = self._semaphores[id(loop)] = asyncio.Semaphore(self.max_concurrency)
        return sem

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        server = retry_after_seconds(error)
        if server is not None:
            return min(server, self.backoff_max)
        cap = min(self.backoff_max, self.backoff_base * 2 ** (state.attempt_number - 1))
        return random.uniform(0, cap)  # full jitter: spreads retries of many concurrent episodes

    async def complete(self, messages: list[dict], *, temperature: float = 0.7, top_p: float = 1.0,
                       max_tokens: int = 512, **extra) -> Completion:
        """One chat completion with retries. Raises APIError (with the attempt count) when the
        error cannot be retried or the retries are used up."""
        kwargs = dict(model=self.model, messages=messages, temperature=temperature, top_p=top_p,
                      max_tokens=max_tokens, timeout=self.timeout, num_retries=0, max_retries=0, **extra)
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self.__api_key:
            kwargs["api_key"] = self.__api_key
        attempts = 0
        start = time.perf_counter()
        retrying = AsyncRetrying(stop=stop_after_attempt(self.max_retries + 1), wait=self._wait,
                                 retry=retry_if_exception(is_retryable), reraise=True)
        try:
            async with self._semaphore():
                async for attempt in retrying:
                    with attempt:
                        attempts += 1
                        self.usage["attempts"] += 1
                        response = await litellm.acompletion(**kwargs)
        except Exception as e:
            if is_retryable(e):
                raise APIError(f"{self.model}: gave up on {type(e).__name__}: {_short(e)}",
                               attempts=attempts) from e
            source = "the api_key given in code" if self.__api_key else key_source(self.model, self.api_base)
            status = getattr(e, "status_code", None)
            http = f" (HTTP {status})" if status else ""
            raise FatalAPIError(f"{self.model}: {type(e).__name__}{http}, not retried (check the model name, "
                                f"its api_base and its key, read from {source}): {_short(e)}",
                                model=self.model, key_source=source, attempts=attempts) from e
        text = response.choices[0].message.content or ""
        usage = getattr(response, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        cost = completion_cost(response)
        self.usage["requests"] += 1
        self.usage["prompt_tokens"] += prompt_tokens
        self.usage["completion_tokens"] += completion_tokens
        self.usage["cost"] += cost
        return Completion(text=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost=cost,
                          attempts=attempts, latency=time.perf_counter() - start)

    def complete_sync(self, messages: list[dict], **kwargs) -> Completion:
        """``complete`` from synchronous code (not from inside a running event loop)."""
        return asyncio.run(self.complete(messages, **kwargs))


def check_model(model: str, *, api_base: str | None = None, api_key: str | None = None, role: str = "model",
                timeout: float = 5.0) -> None:
    """Fail before the first episode, without a paid call, when ``model`` cannot work: LiteLLM does
    not know its provider, its API key variable is not set (and no ``api_key`` is given), or its
    ``api_base`` does not answer (``GET <api_base>/models``; any HTTP answer counts as reachable).
    Raises ConfigError naming the role (agent, partner, judge), the model and the fix."""
    import urllib.error
    import urllib.request

    try:
        litellm.get_llm_provider(model, api_base=api_base)
    except Exception as e:  # noqa: BLE001 - LiteLLM raises BadRequestError for an unknown provider
        raise ConfigError(f"{role} {model!r} is not a model LiteLLM knows ({_short(e, 120)}); use a "
                          f"LiteLLM model string such as gpt-4o, openai/<name> with an api_base, hosted_vllm/<name> "
                          f"or ollama/<name>, or a local model (embedded, hf:<id>, a folder)") from None
    if not api_key:
        try:
            missing = litellm.validate_environment(model=model, api_base=api_base).get("missing_keys") or []
        except Exception:  # noqa: BLE001 - providers LiteLLM cannot validate are left to the first call
            missing = []
        missing = [k for k in missing if not (k.endswith("_API_BASE") and api_base)]
        if missing:
            raise ConfigError(f"{role} {model!r} needs {' and '.join(missing)} in the environment (the key is read "
                              f"from there and never written anywhere); set it, or choose a local model")
    if api_base:
        request = urllib.request.Request(api_base.rstrip("/") + "/models", method="GET")
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                pass
        except urllib.error.HTTPError:
            pass  # the server answered: reachable (it may want a key for this route)
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ConfigError(f"{role} {model!r}: api_base {api_base} does not answer ({reason}); start the "
                              f"server or fix the address") from None


def completion_cost(response) -> float:
    """Cost in US dollars by LiteLLM's local price table, 0.0 for models it does not price."""
    try:
        return float(litellm.completion_cost(completion_response=response) or 0.0)
    except Exception:  # noqa: BLE001 - LiteLLM raises assorted types for unpriced (e.g. local) models
        return 0.0


def _short(error: BaseException, limit: int = 300) -> str:
    text = redact(" ".join(str(error).split()))  # a provider may echo the key; masked before a cut splits it
    return text if len(text) <= limit else text[:limit] + "..."
