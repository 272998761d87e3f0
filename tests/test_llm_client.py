"""LLMClient over real HTTP against the scripted server: retries, back-off, fail-fast, accounting."""
import asyncio
import time

import pytest

from agents.llm_client import LLMClient
from agents.local_server import ScriptedOpenAIServer
from sotopia_env.errors import APIError

MSG = [{"role": "user", "content": "Say hi"}]


def _client(srv, **kw):
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("timeout", 5)
    return LLMClient("openai/scripted", api_base=srv.base_url, api_key="sk-secret-test-key", **kw)


def test_plain_completion_and_accounting():
    with ScriptedOpenAIServer(lambda body: "hello there friend") as srv:
        client = _client(srv)
        c = client.complete_sync(MSG, temperature=0.0, max_tokens=20)
        assert c.text == "hello there friend"
        assert (c.prompt_tokens, c.completion_tokens, c.attempts) == (2, 3, 1)
        assert c.cost == 0.0  # a local model has no price
        body = srv.requests[0]
        assert body["temperature"] == 0.0 and body["max_tokens"] == 20 and body["model"] == "scripted"
        assert client.usage["prompt_tokens"] == 2 and client.usage["requests"] == 1


@pytest.mark.parametrize("fault", [429, 500, "malformed"])
def test_retries_then_succeeds(fault):
    with ScriptedOpenAIServer(lambda body: "ok") as srv:
        srv.fault_queue += [fault, fault]
        c = _client(srv).complete_sync(MSG)
        assert c.text == "ok" and c.attempts == 3
        assert len(srv.requests) == 3


def test_timeout_is_retried():
    with ScriptedOpenAIServer(lambda body: "late but fine") as srv:
        srv.fault_queue.append(("delay", 2.0))
        t = time.perf_counter()
        c = _client(srv, timeout=0.5).complete_sync(MSG)
        assert c.text == "late but fine" and c.attempts == 2
        assert time.perf_counter() - t < 1.9  # the first attempt was abandoned at the client timeout


def test_retry_after_is_honoured():
    with ScriptedOpenAIServer(lambda body: "ok", retry_after=1) as srv:
        srv.fault_queue.append(429)
        t = time.perf_counter()
        c = _client(srv, backoff_base=0.001).complete_sync(MSG)
        assert c.attempts == 2
        assert time.perf_counter() - t >= 1.0  # waited the server's 1 s, not the 1 ms back-off


@pytest.mark.parametrize("fault,name", [(401, "AuthenticationError"), (400, "BadRequestError")])
def test_fail_fast_without_retry(fault, name):
    with ScriptedOpenAIServer() as srv:
        srv.fault_queue.append(fault)
        client = _client(srv)
        with pytest.raises(APIError) as info:
            client.complete_sync(MSG)
        assert len(srv.requests) == 1  # exactly one request: no retry
        assert name in str(info.value) and "not retried" in str(info.value)
        assert info.value.attempts == 1
        assert "sk-secret-test-key" not in str(info.value)


def test_gives_up_after_last_retry_with_attempt_count():
    with ScriptedOpenAIServer() as srv:
        srv.fault_queue += [500] * 10
        with pytest.raises(APIError) as info:
            _client(srv, max_retries=2).complete_sync(MSG)
        assert info.value.attempts == 3 and "after 3 attempts" in str(info.value)
        assert len(srv.requests) == 3


def test_key_not_in_repr_or_description():
    client = LLMClient("gpt-4o", api_key="sk-never-show-me")
    assert "sk-never-show-me" not in repr(client)
    assert "sk-never-show-me" not in str(client.describe())


def test_concurrency_is_bounded():
    with ScriptedOpenAIServer(lambda body: "ok", delay=0.2) as srv:
        client = _client(srv, max_concurrency=2)

        async def run():
            return await asyncio.gather(*(client.complete(MSG) for _ in range(4)))

        t = time.perf_counter()
        results = asyncio.run(run())
        elapsed = time.perf_counter() - t
        assert [r.text for r in results] == ["ok"] * 4
        assert elapsed >= 0.4  # 4 requests through 2 slots take two rounds of 0.2 s
