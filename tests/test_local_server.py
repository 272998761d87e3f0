"""The scripted OpenAI-compatible server answers, records requests and serves queued faults."""
import json
import time

import httpx

from agents.local_server import ScriptedOpenAIServer


def _chat(srv, content="hi", timeout=5.0):
    return httpx.post(srv.base_url + "/chat/completions", timeout=timeout,
                      json={"model": "scripted", "messages": [{"role": "user", "content": content}]})


def test_answers_with_responder_and_usage():
    with ScriptedOpenAIServer(lambda body: "echo: " + body["messages"][-1]["content"]) as srv:
        r = _chat(srv, "one two three")
        assert r.status_code == 200
        data = r.json()
        assert data["choices"][0]["message"] == {"role": "assistant", "content": "echo: one two three"}
        assert data["usage"]["prompt_tokens"] == 3 and data["usage"]["completion_tokens"] == 4
        assert srv.requests[0]["messages"][0]["content"] == "one two three"
        models = httpx.get(srv.base_url + "/models").json()
        assert models["data"][0]["id"] == "scripted"


def test_fault_queue_is_consumed_in_order():
    with ScriptedOpenAIServer(retry_after=3) as srv:
        srv.fault_queue += [429, 500, 401, 400, "malformed", ("delay", 0.3)]
        r = _chat(srv)
        assert r.status_code == 429 and r.headers["retry-after"] == "3"
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        assert _chat(srv).status_code == 500
        assert _chat(srv).status_code == 401
        assert _chat(srv).status_code == 400
        r = _chat(srv)
        assert r.status_code == 200
        try:
            json.loads(r.text)
            parsed = True
        except json.JSONDecodeError:
            parsed = False
        assert not parsed
        t = time.perf_counter()
        assert _chat(srv).status_code == 200
        assert time.perf_counter() - t >= 0.3
        assert _chat(srv).status_code == 200  # queue empty: normal answers
        assert len(srv.requests) == 7 and srv.fault_queue == []


def test_fixed_delay_and_concurrent_requests():
    import concurrent.futures

    with ScriptedOpenAIServer(delay=0.3) as srv:
        t = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(lambda _: _chat(srv).status_code, range(4)))
        elapsed = time.perf_counter() - t
        assert codes == [200] * 4
        assert elapsed < 1.0  # served in parallel, not 4 x 0.3 s one after another
