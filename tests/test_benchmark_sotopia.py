"""benchmarks.sotopia end to end against the scripted OpenAI-compatible server (agent,
partner and judge): interrupted and resumed runs, exactly-once episodes, tables that match
the stored scores; config validation; the embedded default path (slow)."""
import json
import math
import zlib
from collections import Counter

import pytest

from agents.local_server import ScriptedOpenAIServer
from benchmarks import results
from benchmarks.sotopia import SotopiaBenchConfig, job_plan, load_task_set, report, run_benchmark
from sotopia_env import EpisodeStore
from sotopia_env.errors import APIError, ConfigError
from sotopia_env.evaluation import DIMENSION_RANGES, DIMENSIONS

SCENARIOS = [
    {"pk": "env-bike", "codename": "bike", "scenario": "Two neighbours haggle over a used bike.",
     "agent_goals": ["Sell the bike for $200.", "Buy it for under $150."], "relationship": 2},
    {"pk": "env-chores", "codename": "chores", "scenario": "Two roommates split the chores.",
     "agent_goals": ["Avoid the bathroom.", "Get help with dishes."], "relationship": 3},
    {"pk": "env-loan", "codename": "loan", "scenario": "A friend asks for a loan.",
     "agent_goals": ["Borrow $500.", "Keep your savings."], "relationship": 3, "tags": ["hard"]},
]
PROFILES = [{"pk": f"p{i}", "first_name": n, "last_name": "Doe", "age": 30 + i}
            for i, n in enumerate(["Ann", "Ben", "Cleo", "Dan"])]
COMBOS = [{"pk": "t-bike", "env_id": "env-bike", "agent_ids": ["p0", "p1"]},
          {"pk": "t-chores", "env_id": "env-chores", "agent_ids": ["p2", "p3"]},
          {"pk": "t-loan", "env_id": "env-loan", "agent_ids": ["p1", "p2"], "tested_seat": 1}]


def write_task_files(tmp_path):
    paths = {}
    for name, rows in (("scenarios", SCENARIOS), ("profiles", PROFILES), ("combos", COMBOS)):
        paths[name] = tmp_path / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {k: str(v) for k, v in paths.items()}


def judge_answer(body) -> str:
    """Scores that differ per episode: derived from a checksum of the episode text."""
    text = body["messages"][-1]["content"]
    out = {}
    for a, key in enumerate(("agent_1_evaluation", "agent_2_evaluation")):
        out[key] = {}
        for j, d in enumerate(DIMENSIONS):
            low, high = DIMENSION_RANGES[d]
            out[key][d] = ["scripted", low + zlib.crc32(f"{text}|{a}|{j}".encode()) % (high - low + 1)]
    return json.dumps(out)


class Responder:
    """Agent and partner speak (a reply length that grows with the turn); the judge scores.
    After ``kill_after`` judge answers, every later request fails with 401 (a fatal error)."""

    def __init__(self, kill_after=None):
        self.kill_after = kill_after
        self.judged = 0
        self.server = None
        self.calls = Counter()

    def __call__(self, body) -> str:
        model = body["model"]
        self.calls[model] += 1
        if "judge" in model:
            self.judged += 1
            if self.kill_after is not None and self.judged >= self.kill_after:
                self.server.fault_queue.extend([401] * 1000)
            return judge_answer(body)
        n = sum(m["role"] == "assistant" for m in body["messages"])
        return json.dumps({"action_type": "speak", "argument": " ".join([model.split("-")[-1]] * (n + 2))})


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")


def config(srv, tmp_path, files, **overrides):
    base = dict(agent="openai/scripted-agent", agent_api_base=srv.base_url, partner="openai/scripted-partner",
                partner_api_base=srv.base_url, judge="openai/scripted-judge", judge_api_base=srv.base_url,
                tasks="files", limit=None, max_turns=4, concurrency=2, progress=False,
                output_dir=str(tmp_path / "run"), **files)
    base.update(overrides)
    return SotopiaBenchConfig(**base)


def hand_mean(records, column, subset):
    """The naive mean over episodes of the tested seats' scores, written out for the test."""
    values = []
    for r in records:
        seats = r.tags["agent_seats"]
        if subset == "hard":
            if r.task.tested_seat is None:
                continue
            seats = [s for s in seats if s == r.task.tested_seat]
            if not seats:
                continue
        per_seat = [r.evaluation.agents[s].overall if column == "overall" else r.evaluation.agents[s].scores[column]
                    for s in seats]
        values.append(sum(per_seat) / len(per_seat))
    return sum(values) / len(values), len(values)


def test_interrupted_versus_run_resumes_exactly_once(tmp_path, api_key):
    files = write_task_files(tmp_path)
    responder = Responder(kill_after=2)
    with ScriptedOpenAIServer(responder) as srv:
        responder.server = srv
        cfg = config(srv, tmp_path, files)
        plan = job_plan(cfg, load_task_set(cfg))
        # 2 ordinary tasks x 2 seats; the hard task in both seats too (not tasks=hard)
        assert len(plan) == 6
        with pytest.raises(APIError):
            run_benchmark(cfg)
        store = EpisodeStore(tmp_path / "run" / "episodes.jsonl")
        first = store.records()
        assert 1 <= len(first) < 6
        played_before = {r.tags["run_key"] for r in first}
        # resume: the server works again
        responder.kill_after = None
        srv.fault_queue.clear()
        agent_calls_before = responder.calls["scripted-agent"] + responder.calls["scripted-partner"]
        outcome = run_benchmark(cfg)
        agent_calls = responder.calls["scripted-agent"] + responder.calls["scripted-partner"] - agent_calls_before
    records = store.records()
    evaluated = [r for r in records if r.evaluated]
    # every episode exactly once evaluated; no stored episode was played again
    assert Counter(r.tags["run_key"] for r in evaluated) == Counter(key for _, _, key in plan)
    replayed = [r for r in records if r.tags["run_key"] in played_before and not r.tags.get("rejudged")]
    assert len(replayed) == len(played_before)
    fresh = [r for r in evaluated if r.tags["run_key"] not in played_before]
    assert agent_calls == sum(len(r.turns) for r in fresh)  # turns of the new episodes only
    assert outcome.ran == 6 - len({r.tags["run_key"] for r in first if r.evaluated})

    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    rows = {(s["model"], s["role"], s["subset"], s["seat"]): s for s in doc["summaries"]}
    for subset, n_expected in (("all", 6), ("hard", 1)):
        row = rows[("openai/scripted-agent", "agent", subset, "all")]
        assert row["n_episodes"] == n_expected
        for column in ("goal", "relationship", "overall"):
            mean, n = hand_mean(evaluated, column, subset)
            assert n == n_expected
            assert row["columns"][column]["mean"] == pytest.approx(mean)
            assert f"{mean:.2f}" in outcome.table
    # the interval, from the same stored goal scores by hand
    goals = [sum(r.evaluation.agents[s].scores["goal"] for s in r.tags["agent_seats"]) for r in evaluated]
    sd = math.sqrt(sum((g - sum(goals) / 6) ** 2 for g in goals) / 5)
    assert rows[("openai/scripted-agent", "agent", "all", "all")]["columns"]["goal"]["half_width"] == \
        pytest.approx(2.570582 * sd / math.sqrt(6), rel=1e-5)
    assert ("openai/scripted-partner", "partner", "all", "all") in rows
    assert doc["counts"]["evaluated"] == 6 and doc["counts"]["unevaluated"] == 0
    for name in ("results.md", "scores.png", "output_length.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0
    lengths = doc["output_length_per_turn"]["openai/scripted-agent"]
    assert lengths == [2.0, 3.0]  # the scripted reply grows by one word a turn
    text = report(outcome)
    assert "results.md" in text and "scores.png" in text and "cost: $" in text


def test_self_chat_and_hard_seats(tmp_path, api_key):
    files = write_task_files(tmp_path)
    with ScriptedOpenAIServer(Responder()) as srv:
        cfg = config(srv, tmp_path, files, partner="self", limit=2)
        assert [k for _, _, k in job_plan(cfg, load_task_set(cfg))] == \
            ["sotopia|t-bike|self-chat", "sotopia|t-chores|self-chat"]
        outcome = run_benchmark(cfg)
        assert outcome.ran == 2
        again = run_benchmark(cfg)  # everything stored: nothing played, same table
        assert again.ran == 0 and again.table == outcome.table
        # another turn limit in the same folder is refused
        with pytest.raises(ConfigError, match="max_turns"):
            run_benchmark(config(srv, tmp_path, files, partner="self", limit=2, max_turns=6))
    hard_cfg = SotopiaBenchConfig(tasks="hard", partner="gpt-4o", limit=None)
    plan = job_plan(hard_cfg, load_task_set(hard_cfg))
    assert len(plan) == len(load_task_set(hard_cfg))  # one episode a hard task, in its tested seat
    assert all(seats == [task.tested_seat] for task, seats, _ in plan)


def test_config_validation_and_hydra_compose(tmp_path):
    from hydra import compose, initialize
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    with pytest.raises(ConfigError, match="allowed: bc, align, test, hard, all, files"):
        SotopiaBenchConfig(tasks="train")
    with pytest.raises(ConfigError, match="scenarios=<path>"):
        SotopiaBenchConfig(tasks="files")
    with pytest.raises(ConfigError, match="limit"):
        SotopiaBenchConfig(limit=0)
    ConfigStore.instance().store(name="sotopia_bench", node=SotopiaBenchConfig)
    with initialize(version_base="1.3", config_path=None):
        cfg = OmegaConf.to_object(compose("sotopia_bench", overrides=["max_turns=10", "tasks=hard", "partner=gpt-4o"]))
    assert isinstance(cfg, SotopiaBenchConfig) and cfg.max_turns == 10 and cfg.tasks.value == "hard"
    assert cfg.temperature == 0.7 and cfg.output_dir.endswith("embedded__gpt-4o__local__hard")
    defaults = SotopiaBenchConfig()
    assert (defaults.agent, defaults.partner, defaults.judge, defaults.limit) == ("embedded", "self", "local", 3)


@pytest.mark.slow
def test_embedded_default_path(tmp_path):
    """The README's main job on a tiny budget: embedded model, self-chat, local judge."""
    cfg = SotopiaBenchConfig(limit=1, max_turns=1, max_new_tokens=8, output_dir=str(tmp_path / "run"), progress=False)
    outcome = run_benchmark(cfg)
    assert outcome.ran == 1
    doc = outcome.doc
    assert doc["counts"]["evaluated"] == 1
    row = next(s for s in results.summaries_from_document(doc) if s.subset == "all" and s.seat == "all")
    assert row.model == "embedded" and row.n_episodes == 1
    assert (tmp_path / "run" / "scores.png").exists()


def test_api_concurrency_bound_holds(api_key):
    """The concurrency bound is a lower bound on wall time: 5 episodes of 2 turns at C = 2 need
    ceil(5 / 2) = 3 rounds of 2 delayed calls."""
    from benchmarks.api_concurrency import measure

    r = measure(episodes=5, concurrency=2, delay=0.1, turns=2)
    assert r["requests"] == 10
    assert r["bound_seconds"] == pytest.approx(0.6)
    assert r["wall_seconds"] >= r["bound_seconds"] and 0 < r["ratio"] <= 1


def test_judge_failure_is_unevaluated_then_rejudged_without_replay(tmp_path, api_key):
    files = write_task_files(tmp_path)

    class BrokenJudge(Responder):
        broken = True

        def __call__(self, body):
            if "judge" in body["model"] and self.broken:
                self.calls[body["model"]] += 1
                return "I cannot score this."
            return super().__call__(body)

    responder = BrokenJudge()
    with ScriptedOpenAIServer(responder) as srv:
        cfg = config(srv, tmp_path, files, partner="self", limit=2)
        first = run_benchmark(cfg)
        assert first.doc["counts"]["evaluated"] == 0 and first.doc["counts"]["unevaluated"] == 2
        assert first.table.count("\n") == 1 and first.doc["summaries"] == []  # header only: nothing scored, no 0
        assert "run the same command again" in report(first)
        # per model: the judge was asked again twice per episode, then failed both
        assert first.doc["usage"]["reliability"] == {
            "openai/scripted-agent": {"retries": 0, "reasks": 0, "failures": 0},
            "llm:openai/scripted-judge": {"retries": 0, "reasks": 4, "failures": 2}}
        assert "reliability llm:openai/scripted-judge: 0 retries, 4 re-asks, 2 failures" in report(first)
        responder.broken = False
        agent_calls = responder.calls["scripted-agent"]
        second = run_benchmark(cfg)
        assert responder.calls["scripted-agent"] == agent_calls  # judged again, not replayed
    assert second.doc["counts"] == {"stored": 4, "evaluated": 2, "unevaluated": 0, "unevaluated_run_keys": []}
    stored = EpisodeStore(tmp_path / "run" / "episodes.jsonl").records()
    assert [r.tags.get("rejudged", False) for r in stored] == [False, False, True, True]


@pytest.mark.slow
def test_main_job_reproduces_with_a_fixed_seed(tmp_path):
    """The same command twice gives the same conversations and the same table. Every turn samples
    from a generator seeded from the run seed, the episode and the turn, so a run with another
    concurrency (other turns in each generation batch) draws the same numbers; its logits differ
    only by fp32 batching noise (~1e-5), which can flip a late token, so there the first turns
    are compared (before per-turn seeds they differed from the first token)."""
    from benchmarks.sotopia import SotopiaBenchConfig, run_benchmark
    from sotopia_env import EpisodeStore

    def play(name, concurrency):
        cfg = SotopiaBenchConfig(limit=2, max_turns=3, max_new_tokens=12, seed=3, concurrency=concurrency,
                                 output_dir=str(tmp_path / name), progress=False)
        outcome = run_benchmark(cfg)
        turns = {r.tags["run_key"]: [(t.action_type, t.argument) for t in r.turns]
                 for r in EpisodeStore(tmp_path / name / "episodes.jsonl")}
        return turns, outcome.table

    first, table = play("a", 8)
    again, table_again = play("b", 8)
    alone, _ = play("c", 1)
    assert len(first) == 2 and all(first.values())
    assert first == again and table == table_again
    assert {k: v[0] for k, v in alone.items()} == {k: v[0] for k, v in first.items()}
