"""Judges: SOTOPIA-shaped JSON validation and re-asks over real HTTP, and the local expected-score judge."""
import asyncio
import json
import math

import pytest
import torch

from agents.judge import LLMJudge, LocalJudge, ask_json, branch_logprobs, parse_evaluation, score_candidates
from agents.llm_client import LLMClient
from agents.local_server import ScriptedOpenAIServer
from sotopia_env.episode import EpisodeRecord
from sotopia_env.errors import DataError, FatalAPIError, JudgeError
from sotopia_env.evaluation import DIMENSION_RANGES, DIMENSIONS
from tests.factories import RENT, make_task, make_turns


def sotopia_answer(overrides=None):
    """A valid answer in SOTOPIA v0.1.4's shape; ``overrides`` {(agent 1|2, dim): score}."""
    overrides = overrides or {}
    return {f"agent_{a}_evaluation": {d: [f"why {d}", overrides.get((a, d), DIMENSION_RANGES[d][1] // 2)]
                                      for d in DIMENSIONS} for a in (1, 2)}


def record():
    task = make_task(**RENT)
    return EpisodeRecord(task=task, turns=make_turns(task, 4))


def test_parse_evaluation_accepts_sotopia_shape_and_rejects_bad_scores():
    agents = parse_evaluation(sotopia_answer({(1, "goal"): 8, (2, "relationship"): -3}))
    assert agents[0].scores["goal"] == 8.0 and agents[1].scores["relationship"] == -3.0
    assert agents[0].reasoning["goal"] == "why goal"
    obj = sotopia_answer()
    obj["agent_2_evaluation"]["secret"] = {"reasoning": "kept", "score": -1}  # object form accepted
    assert parse_evaluation(obj)[1].scores["secret"] == -1.0
    with pytest.raises(DataError, match="out of range; allowed: -10 to 0"):
        parse_evaluation(sotopia_answer({(1, "secret"): 3}))
    with pytest.raises(DataError, match="must be an integer"):
        parse_evaluation(sotopia_answer({(2, "goal"): 7.5}))
    bad = sotopia_answer()
    del bad["agent_1_evaluation"]["knowledge"]
    with pytest.raises(DataError, match='"agent_1_evaluation"."knowledge"'):
        parse_evaluation(bad)
    with pytest.raises(DataError, match="agent_2_evaluation"):
        parse_evaluation({"agent_1_evaluation": sotopia_answer()["agent_1_evaluation"]})


def _judge(srv, **kw):
    client = LLMClient("openai/judge", api_base=srv.base_url, api_key="k", backoff_base=0.01, timeout=5)
    return LLMJudge("openai/judge", client=client, **kw)


def test_llm_judge_valid_answer_at_temperature_zero():
    with ScriptedOpenAIServer(lambda body: "```json\n" + json.dumps(sotopia_answer({(1, "goal"): 9})) + "\n```") as srv:
        ev, usage = __import__("asyncio").run(_judge(srv).aevaluate_with_usage(record()))
        assert ev.evaluated and ev.agents[0].scores["goal"] == 9.0 and ev.judge == "llm:openai/judge"
        assert srv.requests[0]["temperature"] == 0.0 and usage["calls"] == 1 and usage["prompt_tokens"] > 0
        prompt = srv.requests[0]["messages"][-1]["content"]
        for needle in ("Mia Chen", "Leo Park", "Get a one-week delay", "keep a good tenant", "agent_2_evaluation",
                       "Could I pay the rent next Friday?", "financial_and_material_benefits"):
            assert needle in prompt


def test_llm_judge_reasks_after_malformed_json_and_server_errors():
    answers = iter(["Sure! Here is my evaluation: {agent_1: oops}", json.dumps(sotopia_answer())])
    with ScriptedOpenAIServer(lambda body: next(answers)) as srv:
        srv.fault_queue.append(500)  # retried by the client, not a re-ask
        ev, usage = asyncio.run(_judge(srv).aevaluate_with_usage(record()))
        assert ev.evaluated
        assert len(srv.requests) == 3
        assert (usage["calls"], usage["retries"], usage["reasks"]) == (2, 1, 1)
        reask = srv.requests[2]["messages"]
        assert reask[-2]["role"] == "assistant" and "oops" in reask[-2]["content"]
        assert "not valid JSON" in reask[-1]["content"]


def test_llm_judge_out_of_range_is_reasked_then_marked_unevaluated():
    bad = json.dumps(sotopia_answer({(2, "goal"): 11}))
    with ScriptedOpenAIServer(lambda body: bad) as srv:
        ev = _judge(srv, max_reasks=2).evaluate(record())
        assert not ev.evaluated and ev.agents is None
        assert "out of range" in ev.error and "0 to 10" in ev.error
        assert len(srv.requests) == 3  # first ask + 2 re-asks, then give up
        assert "score 11 is out of range" in srv.requests[1]["messages"][-1]["content"]


def test_llm_judge_auth_failure_is_fatal_not_unevaluated():
    """A refused key would leave every episode unevaluated (and paid for): it stops the run instead."""
    with ScriptedOpenAIServer() as srv:
        srv.fault_queue.append(401)
        with pytest.raises(FatalAPIError, match="AuthenticationError") as info:
            _judge(srv).evaluate(record())
        assert info.value.model == "openai/judge" and len(srv.requests) == 1


def test_ask_json_feeds_validator_message_back():
    def validate(obj):
        if obj.get("index") not in (1, 3):
            raise DataError(f"index must be one of 1, 3 (the agent's turns), got {obj.get('index')}")
        return obj["index"]

    answers = iter(['{"index": 2, "reason": "x"}', '{"index": 3, "reason": "y"}'])
    with ScriptedOpenAIServer(lambda body: next(answers)) as srv:
        client = LLMClient("openai/j", api_base=srv.base_url, api_key="k", backoff_base=0.01)
        assert __import__("asyncio").run(ask_json(client, [{"role": "user", "content": "q"}], validate, 1)) == 3
        assert "index must be one of 1, 3" in srv.requests[1]["messages"][-1]["content"]
    with ScriptedOpenAIServer(lambda body: '{"index": 2}') as srv:
        client = LLMClient("openai/j", api_base=srv.base_url, api_key="k", backoff_base=0.01)
        with pytest.raises(JudgeError, match="after 1 re-ask"):
            __import__("asyncio").run(ask_json(client, [{"role": "user", "content": "q"}], validate, 1))


def _naive_logprob(model, prefix, continuation):
    ids = list(prefix) + list(continuation)
    with torch.no_grad():
        logp = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    return sum(logp[t - 1, ids[t]].item() for t in range(len(prefix), len(ids)))


def test_branch_logprobs_equal_full_forward(tiny_llama):
    prefix = [3, 4, 5, 6, 7]
    questions = [[8, 9, 10], [11], []]
    candidates = [[[12, 13], [14]], [[15, 16, 17]], [[18], [19, 20]]]
    got = branch_logprobs(tiny_llama, prefix, questions, candidates)
    for j, q in enumerate(questions):
        for k, c in enumerate(candidates[j]):
            assert got[j][k] == pytest.approx(_naive_logprob(tiny_llama, prefix + q, c), abs=1e-4)


def test_score_candidates_appends_end_of_turn(tiny_llama, embedded_tokenizer):
    messages = [{"role": "user", "content": "Pick a number from 0 to 10."}]
    got = score_candidates(tiny_llama, embedded_tokenizer, messages, ["1", "10"])
    text = embedded_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt = embedded_tokenizer(text, add_special_tokens=False)["input_ids"]
    for cand, value in zip(["1", "10"], got):
        ids = embedded_tokenizer(cand, add_special_tokens=False)["input_ids"] + [embedded_tokenizer.eos_token_id]
        assert value == pytest.approx(_naive_logprob(tiny_llama, prompt, ids), abs=1e-4)


def test_local_judge_expected_score(tiny_llama, embedded_tokenizer):
    judge = LocalJudge(model=tiny_llama, tokenizer=embedded_tokenizer)
    rec = record()
    ev = judge.evaluate(rec)
    assert ev.evaluated and len(ev.agents) == 2
    for a in ev.agents:
        for d in DIMENSIONS:
            low, high = DIMENSION_RANGES[d]
            assert low <= a.scores[d] <= high
    # agent 2's goal score is the expected value of the answer distribution, computed naively here
    prefix, questions, keys = judge._prompt_pieces(rec)
    j = keys.index((1, "goal"))
    values = list(range(11))
    lps = [_naive_logprob(tiny_llama, prefix + questions[j],
                          embedded_tokenizer(str(v), add_special_tokens=False)["input_ids"]
                          + [embedded_tokenizer.eos_token_id]) for v in values]
    weights = [math.exp(x - max(lps)) for x in lps]
    expected = sum(v * w for v, w in zip(values, weights)) / sum(weights)
    assert ev.agents[1].scores["goal"] == pytest.approx(expected, abs=1e-3)
    assert "expected score" in ev.agents[1].reasoning["goal"]
    assert "Leo Park" in embedded_tokenizer.decode(questions[j])
