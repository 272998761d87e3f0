"""dry_run=true counts the calls a real run then makes, counted in requests to the scripted
OpenAI-compatible server: benchmarks.sotopia (fresh and resumed) and the whole sdpo.pairs pipeline.

The scripted agents never leave, so every episode lasts max_turns turns, and the judges answer
validly at once (no re-ask): the turn and judge counts, upper bounds in general, are exact here.
In the pipeline every collected seat scores goal 2 (negatives.goal_below=10.5: all are
negatives), the error turn is the agent's first message and every continuation scores goal 9
(every negative is kept): the upper bounds of the later stages are reached."""
import json
import re
from collections import Counter

import pytest

from agents.local_server import ScriptedOpenAIServer
from agents.stand_in import stand_in_answer
from benchmarks.sotopia import SotopiaBenchConfig, dry_run_report, run_benchmark
from benchmarks.sotopia import dry_run as benchmark_dry_run
from sdpo.pairs.config import PairsConfig
from sdpo.pairs.dry_run import dry_run as pairs_dry_run
from sdpo.pairs.pipeline import PairPipeline
from sotopia_env.episode import EpisodeStore
from sotopia_env.errors import ConfigError
from sotopia_env.evaluation import DIMENSION_RANGES

from .test_benchmark_sotopia import judge_answer, write_task_files


def planned(plan, **where) -> int:
    """Calls of the plan's rows matching ``where`` (model: the name after the provider)."""
    total = 0
    for row in plan.rows.values():
        fields = {"stage": row.stage, "role": row.role, "model": row.model.split("/")[-1]}
        if all(fields[k] == v for k, v in where.items()):
            total += row.calls
    return total


def served(srv, start: int = 0) -> Counter:
    return Counter(body["model"] for body in srv.requests[start:])


def speak(body) -> str:
    n = len(body["messages"])
    return json.dumps({"action_type": "speak", "argument": f"{body['model']} says {n} things"})


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    monkeypatch.setenv("SCRIPTED_API_KEY", "test-key")


def bench_config(srv, tmp_path, files, **overrides):
    base = dict(agent="openai/agent", agent_api_base=srv.base_url, partner="openai/partner",
                partner_api_base=srv.base_url, judge="openai/judge", judge_api_base=srv.base_url, tasks="files",
                limit=1, max_turns=4, concurrency=2, progress=False, output_dir=str(tmp_path / "run"), **files)
    base.update(overrides)
    return SotopiaBenchConfig(**base)


def test_benchmark_dry_run_counts_the_calls_of_a_real_and_a_resumed_run(tmp_path, api_key):
    files = write_task_files(tmp_path)
    with ScriptedOpenAIServer(lambda body: judge_answer(body) if body["model"] == "judge" else speak(body)) as srv:
        cfg = bench_config(srv, tmp_path, files)
        text = dry_run_report(cfg)
        assert len(srv.requests) == 0 and "| sotopia | partner | openai/partner | 4 |" in text
        out = tmp_path / "run"
        assert sorted(p.name for p in out.iterdir()) == ["dry_run.json"]   # no run.json: nothing refuses a run
        plan = benchmark_dry_run(cfg)
        run_benchmark(cfg)
        # one task, the agent in each seat: 2 episodes of 4 turns, 2 judge calls
        assert served(srv) == Counter(agent=planned(plan, model="agent"), partner=planned(plan, model="partner"),
                                      judge=planned(plan, model="judge")) == Counter(agent=4, partner=4, judge=2)
        assert plan.episodes["sotopia"] == {"to_play": 2, "to_rejudge": 0, "stored": 0}

        # resumed with more tasks: the stored episodes cost nothing
        more = bench_config(srv, tmp_path, files, limit=3)
        resumed = benchmark_dry_run(more)
        assert resumed.episodes["sotopia"] == {"to_play": 4, "to_rejudge": 0, "stored": 2}
        before = len(srv.requests)
        run_benchmark(more)
        assert served(srv, before) == Counter(agent=planned(resumed, model="agent"),
                                              partner=planned(resumed, model="partner"),
                                              judge=planned(resumed, model="judge"))
        assert benchmark_dry_run(more).totals().calls == 0
        # other settings in the same folder: refused as the real run refuses them
        with pytest.raises(ConfigError, match="max_turns"):
            benchmark_dry_run(bench_config(srv, tmp_path, files, max_turns=6))
    json_doc = json.loads((out / "dry_run.json").read_text())
    assert json_doc["totals"]["calls"] == 10 and json_doc["totals"]["unpriced"] == ["openai/agent", "openai/judge", "openai/partner"]


def test_dry_run_prices_api_models_from_litellms_cost_map(tmp_path):
    cfg = SotopiaBenchConfig(partner="gpt-4o", judge="gpt-4o", limit=1, max_turns=2, output_dir=str(tmp_path / "r"))
    plan = benchmark_dry_run(cfg)     # no API key is needed: nothing is called
    rows = {(r.role, r.model): r for r in plan.rows.values()}
    partner = rows[("partner", "gpt-4o")]
    assert rows[("agent", "embedded")].price == 0.0
    import litellm

    prompt, completion = litellm.cost_per_token(model="gpt-4o", prompt_tokens=partner.prompt_tokens,
                                                completion_tokens=partner.completion_tokens)
    assert partner.price == pytest.approx(prompt + completion) and partner.price > 0
    assert partner.completion_cap == partner.calls * 1024 and partner.completion_tokens == partner.calls * 128


def evaluation(goal: int) -> str:
    block = {d: ["scripted", max(lo, min(hi, 0))] for d, (lo, hi) in DIMENSION_RANGES.items()}
    block["goal"] = ["scripted", goal]
    return json.dumps({"agent_1_evaluation": block, "agent_2_evaluation": block})


class PipelineResponder:
    """Collected sessions score goal 2 (the first ``collected`` evaluations), later ones goal 9; the
    error turn is the agent's first message; segments come from the stand-in; actions never repeat."""

    def __init__(self, collected: int):
        self.collected = collected
        self.evaluations = 0
        self.actions = 0

    def __call__(self, body) -> str:
        text = "\n".join(str(m.get("content", "")) for m in body["messages"])
        if '"agent_1_evaluation"' in text:
            self.evaluations += 1
            return evaluation(2 if self.evaluations <= self.collected else 9)
        if '"end_index"' in text:
            return stand_in_answer(body)
        if '{"index"' in text:
            first = re.findall(r"numbers ((?:\d+, )*\d+)\.", text)[-1].split(", ")[0]
            return json.dumps({"index": int(first), "reason": "scripted"})
        self.actions += 1
        return json.dumps({"action_type": "speak", "argument": f"{body['model']} offer {self.actions}"})


def test_pipeline_dry_run_counts_every_stages_calls_of_the_real_run(tmp_path, api_key):
    responder = PipelineResponder(collected=3)   # 1 task: 1 self-chat + 2 partner sessions
    with ScriptedOpenAIServer(responder) as srv:
        config = PairsConfig(out_dir=str(tmp_path / "pairs"), progress=False)
        m = config.models
        m.agent, m.partner, m.judge = "openai/agent", "openai/partner", "openai/judge"
        m.api_base, m.api_key_env, m.max_concurrency = srv.base_url, "SCRIPTED_API_KEY", 1
        config.collect.max_tasks, config.collect.interlocutors, config.collect.max_turns = 1, ["self", "partner"], 4
        config.negatives.goal_below = 10.5
        config.sample.n, config.scratch.n = 2, 1
        config.write.kinds = ["sdpo", "eto"]
        config.__post_init__()
        plan = pairs_dry_run(config)
        assert len(srv.requests) == 0 and not (tmp_path / "pairs").exists()
        summary = PairPipeline(config).run()
        counts = served(srv)
    # 4 negatives (self-chat: both seats; partner sessions: the agent's seat), each located, sampled
    # twice from its error turn, given a segment and sampled once from the start
    assert summary["negatives"]["negatives"] == 4 and summary["sample"]["kept"] == 4
    assert plan.episodes == {"collect": {"to_play": 3, "to_rejudge": 0, "stored": 0},
                             "sample": {"to_play": 8, "to_rejudge": 0, "stored": 0},
                             "scratch": {"to_play": 4, "to_rejudge": 0, "stored": 0}}
    calls = summary["calls"]
    for stage in ("collect", "sample", "scratch", "locate", "segment"):
        assert calls[f"{stage}_judge_calls"] == planned(plan, stage=stage, model="judge"), stage
    stores = {"collect": "episodes.jsonl", "sample": "branches.jsonl", "scratch": "scratch_episodes.jsonl"}
    for stage, name in stores.items():
        records = EpisodeStore(tmp_path / "pairs" / name).records()
        for model in ("agent", "partner"):
            played = sum(1 for r in records for t in r.turns[r.branch_turn or 0:]
                         if r.models[t.agent_index] == f"openai/{model}")
            assert played == planned(plan, stage=stage, model=model), (stage, model)
    assert counts == Counter(agent=planned(plan, model="agent"), partner=planned(plan, model="partner"),
                             judge=planned(plan, model="judge"))
    # the finished run: a resumed run would call nothing
    assert pairs_dry_run(config).totals().calls == 0
