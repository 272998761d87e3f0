"""Error location: validation of the judge's JSON, bounded re-asks over real HTTP, skip and count,
API failure left retryable, and the offline log-probability fallback."""
import asyncio
import json

import pytest

from agents.llm_client import LLMClient
from agents.local_server import ScriptedOpenAIServer
from sdpo.pairs.locate import InvalidAnswer, LocalTurnScorer, locate_one, validate_error_turn
from sotopia_env.errors import FatalAPIError

from .pairs_episodes import episode

TEXTS = ["Hi Ben, want my bike?", "Maybe. How much?", "200 dollars, final.", "Too much, bye.", "Fine, 150?", "No."]


def scripted(answers):
    """A responder that returns the next scripted answer on each call."""
    queue = list(answers)
    return lambda body: queue.pop(0)


def run_locate(answers, *, seat=0, max_reasks=2, faults=()):
    record = episode(TEXTS, goals=(3, 5))
    with ScriptedOpenAIServer(scripted(answers)) as srv:
        srv.fault_queue += list(faults)
        client = LLMClient("openai/judge", api_base=srv.base_url, api_key="test", max_retries=1,
                           backoff_base=0.01)
        entry = asyncio.run(locate_one(record, seat, client=client, max_reasks=max_reasks))
        return entry, srv.requests


def test_validate_error_turn_accepts_agent_turn_and_rejects_the_rest():
    record = episode(TEXTS)
    assert validate_error_turn('Sure: ```json\n{"index": 2, "reason": "too greedy"}\n```', record, 0) == {
        "index": 2, "reason": "too greedy"}
    for text, problem in [('{"index": 9}', "out of range"), ('{"index": 3, "reason": "x"}', "Ben Okafor's"),
                          ('{"index": "two"}', "integer"), ("index 2", "no JSON"), ('{"index": 2,}', "not valid JSON"),
                          ('{"index": true}', "integer")]:
        with pytest.raises(InvalidAnswer, match=problem):
            validate_error_turn(text, record, 0)
    assert validate_error_turn('{"index": "3"}', record, 1)["index"] == 3


def test_valid_answer_first_time_makes_one_call():
    entry, requests = run_locate(['{"index": 2, "reason": "a take-it-or-leave-it price"}'])
    assert entry["status"] == "ok" and entry["index"] == 2 and entry["calls"] == 1
    assert len(requests) == 1
    prompt = requests[0]["messages"][0]["content"]
    assert "[2] Ana Reyes:" in prompt and "numbers 0, 2, 4" in prompt


def test_invalid_answers_are_reasked_with_the_problem_then_accepted():
    entry, requests = run_locate(['{"index": 17}', '{"index": 3, "reason": "x"}', '{"index": 4, "reason": "late"}'])
    assert entry["status"] == "ok" and entry["index"] == 4 and entry["calls"] == 3
    assert len(entry["problems"]) == 2 and "out of range" in entry["problems"][0]
    # The re-ask shows the judge its own answer and what was wrong with it.
    reask = requests[1]["messages"]
    assert reask[1] == {"role": "assistant", "content": '{"index": 17}'}
    assert "out of range" in reask[2]["content"]
    assert "Ben Okafor's" in requests[2]["messages"][-1]["content"]


def test_still_invalid_after_max_reasks_is_skipped_and_counted():
    entry, requests = run_locate(["not json", '{"index": 1}', "{'index': 2}", '{"index": 0}'], max_reasks=2)
    assert entry["status"] == "skipped" and entry["reason"] == "invalid_answer"
    assert entry["calls"] == 3 and len(requests) == 3          # bounded: 1 ask + 2 re-asks
    assert len(entry["answers"]) == 3


def test_api_failure_is_recorded_as_retryable_error_not_as_a_skip():
    entry, _ = run_locate(['{"index": 2}'], faults=[500, 500])  # the client's one retry used up
    assert entry["status"] == "error" and "api_error" in entry["reason"]


def test_refused_key_stops_instead_of_being_recorded():
    with pytest.raises(FatalAPIError, match="AuthenticationError"):
        run_locate(['{"index": 2}'], faults=[401])


def test_local_fallback_picks_an_agent_turn_by_log_probability(tiny_llama, embedded_tokenizer):
    record = episode(TEXTS)
    scorer = LocalTurnScorer(tiny_llama, embedded_tokenizer)
    entry = asyncio.run(locate_one(record, 1, scorer=scorer))
    assert entry["status"] == "ok" and entry["index"] in (1, 3, 5)
    scores = entry["option_scores"]
    assert set(scores) == {"1", "3", "5"}
    assert scores[str(entry["index"])] == max(scores.values())
    assert json.dumps(entry)  # the stage entry is plain JSON
