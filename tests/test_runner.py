"""The episode runner: concurrent episodes over real HTTP, resume, re-judging, fail-fast, batching,
branches, and an offline end-to-end run on the embedded model."""
import json

import pytest

from agents.judge import LLMJudge, LocalJudge
from agents.litellm_policy import LiteLLMPolicy
from agents.local_server import ScriptedOpenAIServer
from agents.runner import EpisodeJob, run_episodes, self_chat_jobs, versus_jobs
from benchmarks.results import reliability_summary
from sotopia_env import builtin_tasks
from sotopia_env.episode import EpisodeStore
from sotopia_env.errors import APIError, FatalAPIError
from tests.factories import RENT, make_task
from tests.test_judge import sotopia_answer


def responder(judge_answer=None):
    """Agents say something numbered; the judge (recognised by its system prompt) answers JSON."""
    counter = iter(range(10**6))

    def answer(body):
        if "impartial evaluator" in body["messages"][0]["content"]:
            return json.dumps(judge_answer if judge_answer is not None else sotopia_answer({(1, "goal"): 7}))
        return json.dumps({"action_type": "speak", "argument": f"line {next(counter)}"})

    return answer


def api_policy(srv, name="openai/agent", **kw):
    return LiteLLMPolicy(name, api_base=srv.base_url, api_key="sk-runner-secret", backoff_base=0.01, timeout=5,
                         max_new_tokens=32, **kw)


def api_judge(srv):
    return LLMJudge("openai/judge", api_base=srv.base_url, api_key="sk-runner-secret", backoff_base=0.01,
                    timeout=5, max_reasks=1)


TASKS = builtin_tasks("test")[:4]


def test_run_records_every_episode_once_then_resumes_without_requests(tmp_path):
    store = EpisodeStore(tmp_path / "episodes.jsonl")
    with ScriptedOpenAIServer(responder()) as srv:
        srv.fault_queue += [429, 500, ("delay", 0.3)]
        policy = api_policy(srv)
        jobs = self_chat_jobs(TASKS, policy, max_turns=4)
        records = run_episodes(jobs, store, api_judge(srv), concurrency=3, progress=False)
        assert len(records) == 4
        stored = store.records()
        assert sorted(r.tags["run_key"] for r in stored) == sorted(j.run_key for j in jobs)  # each exactly once
        for r in stored:
            assert r.evaluated and r.evaluation.agents[0].scores["goal"] == 7.0
            assert len(r.turns) == 4 and r.termination == "max_turns"
            assert all(t.completion_tokens > 0 and not t.fallback for t in r.turns)
            assert r.usage["seats"][0]["turns"] == 2 and r.usage["judge"]["calls"] == 1
            assert r.models == ["openai/agent", "openai/agent"] and r.sampling[0]["temperature"] == 0.7
        assert "sk-runner-secret" not in (tmp_path / "episodes.jsonl").read_text()
        assert srv.faults_served.count(None) == len(srv.requests) - 3  # the faults were met and retried
        n = len(srv.requests)
        assert run_episodes(jobs, store, api_judge(srv), progress=False) == []
        assert len(srv.requests) == n and len(store) == 4  # nothing replayed, nothing re-stored


def test_unevaluated_episodes_are_rejudged_not_replayed(tmp_path):
    store = EpisodeStore(tmp_path / "episodes.jsonl")
    with ScriptedOpenAIServer(responder(judge_answer=sotopia_answer({(2, "secret"): 5}))) as srv:
        jobs = self_chat_jobs(TASKS[:2], api_policy(srv), max_turns=2)
        run_episodes(jobs, store, api_judge(srv), progress=False)
        assert len(store) == 2 and not any(r.evaluated for r in store)
        assert "out of range" in store.records()[0].evaluation.error
        assert store.done_keys() == set()
    with ScriptedOpenAIServer(responder()) as srv:
        records = run_episodes(jobs, store, api_judge(srv), progress=False)
        assert len(records) == 2 and all(r.evaluated and r.tags["rejudged"] for r in records)
        assert all("impartial evaluator" in body["messages"][0]["content"] for body in srv.requests)  # judge only
        assert store.done_keys() == {j.run_key for j in jobs}
        first = {r.episode_id for r in store.records()[:2]}
        assert first == {r.episode_id for r in records}  # the same episodes, now judged


def test_auth_failure_stops_the_run_after_one_request(tmp_path):
    store = EpisodeStore(tmp_path / "episodes.jsonl")
    with ScriptedOpenAIServer(responder()) as srv:
        srv.fault_queue.append(401)
        jobs = self_chat_jobs(TASKS[:3], api_policy(srv), max_turns=2)
        with pytest.raises(APIError, match="AuthenticationError"):
            run_episodes(jobs, store, api_judge(srv), concurrency=1, progress=False)
        assert len(srv.requests) == 1 and len(store) == 0


def test_judge_refusing_the_key_stops_the_run_and_keeps_the_store(tmp_path, monkeypatch):
    """The judge's key (OPENAI_API_KEY, from the environment) is refused on the second episode: the
    run stops there with one error naming the judge model and the variable; the first episode stays
    stored and judged, the second (played, paid for) stays stored unevaluated, the third is never
    played. A resumed run only judges the second and plays the third."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-runner-env-key-0123456789")
    store = EpisodeStore(tmp_path / "episodes.jsonl")
    with ScriptedOpenAIServer(responder()) as srv:
        srv.fault_queue += [None] * 5 + [401]  # episode 1: agent, agent, judge; episode 2: agent, agent, judge
        judge = LLMJudge("openai/judge", api_base=srv.base_url, backoff_base=0.01, timeout=5)
        jobs = self_chat_jobs(TASKS[:3], api_policy(srv), max_turns=2)
        with pytest.raises(FatalAPIError) as info:
            run_episodes(jobs, store, judge, concurrency=1, progress=False)
        message = str(info.value)
        assert "openai/judge" in message and "OPENAI_API_KEY" in message and "AuthenticationError" in message
        assert "sk-runner-env-key-0123456789" not in message
        assert info.value.model == "openai/judge" and info.value.key_source == "OPENAI_API_KEY"
        assert len(srv.requests) == 6  # not one request of the third episode
        stored = store.records()
        assert [r.tags["run_key"] for r in stored] == [jobs[0].run_key, jobs[1].run_key]
        assert stored[0].evaluated and not stored[1].evaluated and "AuthenticationError" in stored[1].evaluation.error
        records = run_episodes(jobs, store, judge, concurrency=1, progress=False)
        assert len(srv.requests) == 6 + 1 + 3  # judge the second; play and judge the third
        assert {r.tags["run_key"] for r in records} == {jobs[1].run_key, jobs[2].run_key}
        assert store.done_keys() == {j.run_key for j in jobs}


@pytest.mark.parametrize("fault,name", [(404, "NotFoundError"), (403, "HTTP 403")])
def test_partner_refused_stops_the_run_before_the_next_episode(tmp_path, monkeypatch, fault, name):
    """The partner's model is not found (404) or not allowed (403): the run stops at that request."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-runner-env-key-0123456789")
    store = EpisodeStore(tmp_path / "episodes.jsonl")
    with ScriptedOpenAIServer(responder()) as srv:
        agent = LiteLLMPolicy("openai/agent", api_base=srv.base_url, backoff_base=0.01, timeout=5, max_new_tokens=32)
        partner = LiteLLMPolicy("openai/partner", api_base=srv.base_url, backoff_base=0.01, timeout=5,
                                max_new_tokens=32)
        jobs = versus_jobs(TASKS[:2], agent, partner, max_turns=2)
        # episode 1 (agent in seat 0): agent, partner, judge; episode 2 opens with the partner: refused
        srv.fault_queue += [None] * 3 + [fault]
        with pytest.raises(FatalAPIError, match=name) as info:
            run_episodes(jobs, store, api_judge(srv), concurrency=1, progress=False)
        assert srv.requests[3]["model"] == "partner" and len(srv.requests) == 4  # no retry, no later episode
        assert "openai/partner" in str(info.value) and "OPENAI_API_KEY" in str(info.value)
        assert [r.tags["run_key"] for r in store.records()] == [jobs[0].run_key] and store.records()[0].evaluated


def test_rate_limit_burst_is_retried_and_counted(tmp_path):
    """A burst of 429s is waited out (the run completes); the retries, and the judge's re-ask after an
    invalid answer, are counted per model in the records."""
    answers = iter([json.dumps(sotopia_answer({(1, "goal"): 11}))])  # the first judge answer is out of range
    plain = responder()

    def answer(body):
        if "impartial evaluator" in body["messages"][0]["content"]:
            return next(answers, plain(body))
        return plain(body)

    store = EpisodeStore(tmp_path / "episodes.jsonl")
    with ScriptedOpenAIServer(answer) as srv:
        srv.fault_queue += [429] * 4
        records = run_episodes(self_chat_jobs(TASKS[:2], api_policy(srv), max_turns=2), store, api_judge(srv),
                               concurrency=1, progress=False)
    assert len(records) == 2 and all(r.evaluated for r in store)
    assert srv.faults_served[:5] == [429] * 4 + [None]  # one request, retried four times
    assert reliability_summary(store.records()) == {
        "openai/agent": {"retries": 4, "reasks": 0, "failures": 0},
        "llm:openai/judge": {"retries": 0, "reasks": 1, "failures": 0}}


def test_branch_job_with_seat_temperatures(tmp_path):
    store = EpisodeStore(tmp_path / "episodes.jsonl")
    with ScriptedOpenAIServer(responder()) as srv:
        parent = run_episodes(self_chat_jobs(TASKS[:1], api_policy(srv), max_turns=4), store, None,
                              progress=False)[0]
        before = len(srv.requests)
        job = EpisodeJob(task=parent.task, policies=(api_policy(srv), api_policy(srv)), run_key="branch-1",
                         history=parent.turns[:2], parent_episode_id=parent.episode_id, branch_turn=2, max_turns=4,
                         temperatures=(1.0, 0.7), seed=5)
        branch = run_episodes([job], store, None, progress=False)[0]
        assert [t.to_dict() for t in branch.turns[:2]] == [t.to_dict() for t in parent.turns[:2]]
        assert branch.turns[2].argument != parent.turns[2].argument and len(branch.turns) == 4
        assert (branch.parent_episode_id, branch.branch_turn, branch.seed) == (parent.episode_id, 2, 5)
        assert [b["temperature"] for b in srv.requests[before:]] == [1.0, 0.7]  # seat 0 then seat 1
        assert [s["temperature"] for s in branch.sampling] == [1.0, 0.7]


def test_job_builders_swap_seats():
    a, b = LiteLLMPolicy("openai/a"), LiteLLMPolicy("openai/b")
    jobs = versus_jobs(TASKS[:2], a, b)
    assert [(j.task.pk, j.policies[0].name, j.tags["agent_seats"]) for j in jobs] == [
        (TASKS[0].pk, "openai/a", [0]), (TASKS[0].pk, "openai/b", [1]),
        (TASKS[1].pk, "openai/a", [0]), (TASKS[1].pk, "openai/b", [1])]
    assert len({j.run_key for j in jobs}) == 4
    assert all(j.policies == (a, a) for j in self_chat_jobs(TASKS[:2], a))


def test_local_policy_turns_are_batched_across_episodes(tiny_llama, embedded_tokenizer):
    from agents.hf_policy import HFPolicy

    policy = HFPolicy(model=tiny_llama, tokenizer=embedded_tokenizer, temperature=0.0, max_new_tokens=3)
    records = run_episodes(self_chat_jobs(TASKS[:3], policy, max_turns=3), None, None, concurrency=3,
                           progress=False)
    assert len(records) == 3 and all(len(r.turns) == 3 for r in records)
    assert policy.stats["turns"] == 9 and policy.stats["batches"] == 3  # one batch per turn round
    assert all(r.tags["fallbacks"] == sum(t.fallback for t in r.turns) for r in records)


@pytest.mark.slow
def test_offline_end_to_end_embedded_agents_and_local_judge(tmp_path, embedded_model, embedded_tokenizer):
    from agents.hf_policy import HFPolicy

    store = EpisodeStore(tmp_path / "episodes.jsonl")
    policy = HFPolicy(model=embedded_model, tokenizer=embedded_tokenizer, temperature=0.7, max_new_tokens=6, seed=0)
    judge = LocalJudge(model=embedded_model, tokenizer=embedded_tokenizer)
    run_episodes(self_chat_jobs([make_task(**RENT)], policy, max_turns=2), store, judge, progress=False)
    [rec] = store.records()
    assert rec.evaluated and rec.evaluation.judge.startswith("local:") and len(rec.turns) == 2
    assert all(0 <= a.scores["goal"] <= 10 for a in rec.evaluation.agents)
    assert rec.turns[0].prompt_tokens > 100 and 1 <= rec.turns[0].completion_tokens <= 6
