"""The pipeline's judge stages over real HTTP (scripted OpenAI-compatible server), with resume
after a kill counted in server requests, and the offline end-to-end run on the embedded model."""
import json
import re

import pytest

from sdpo.pairs.config import PairsConfig, Stage
from sdpo.pairs.pipeline import PairPipeline, format_summary
from sdpo.pairs.stages import StageFile
from sotopia_env.episode import EpisodeStore

from .pairs_episodes import branch, episode

JUDGE = "openai/judge"


def texts(tag):
    return [f"{tag}: hi Ben", f"{tag}: hi Ana", f"{tag}: 200, final", f"{tag}: too much", f"{tag}: 190?", f"{tag}: no"]


def make_config(tmp_path, srv, **overrides):
    config = PairsConfig(out_dir=str(tmp_path / "run"), progress=False)
    config.models.judge = JUDGE
    config.models.api_base = srv.base_url
    config.models.api_key_env = "SCRIPTED_API_KEY"
    config.models.max_concurrency = 1
    for dotted, value in overrides.items():
        obj = config
        *path, last = dotted.split(".")
        for p in path:
            obj = getattr(obj, p)
        setattr(obj, last, value)
    config.__post_init__()
    return config


def store_sessions(config, sessions):
    store = EpisodeStore(f"{config.out_dir}/episodes.jsonl")
    for rec in sessions:
        rec.tags["run_key"] = f"collect/{rec.episode_id}"
        store.append(rec)


def marker(body):
    """The session tag ("A", "B", ...) of the first numbered message in a judge prompt."""
    match = re.search(r"\[0\] [^:]+: \{\"action_type\": \"speak\", \"argument\": \"(\w+):", body["messages"][0]["content"])
    return match.group(1)


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("SCRIPTED_API_KEY", "test-key")


def test_locate_stage_scripted_answers_reasks_skips_and_counts(tmp_path, api_key):
    from agents.local_server import ScriptedOpenAIServer

    # Seat 0 of each session is the negative (partner sessions, agent in seat 0).
    script = {"A": ['{"index": 2, "reason": "valid"}'],
              "B": ['{"index": 40}', '{"index": 4, "reason": "valid after out-of-range"}'],
              "C": ['{"index": 1}', '{"index": 3}', '{"index": 5}'],          # partner turns only: skipped
              "D": ["no json here", '{"index": 0, "reason": "valid after malformed"}']}
    queues = {k: list(v) for k, v in script.items()}
    with ScriptedOpenAIServer(lambda body: queues[marker(body)].pop(0)) as srv:
        config = make_config(tmp_path, srv)
        store_sessions(config, [episode(texts(t), goals=(3, 9), episode_id=t, interlocutor="partner", seats=(0,))
                                for t in "ABCD"])
        PairPipeline(config).locate()
        entries = StageFile(f"{config.out_dir}/locate.jsonl").entries()
        assert {k: (e["status"], e.get("index")) for k, e in entries.items()} == {
            "A:0": ("ok", 2), "B:0": ("ok", 4), "C:0": ("skipped", None), "D:0": ("ok", 0)}
        assert entries["C:0"]["reason"] == "invalid_answer" and entries["C:0"]["calls"] == 3
        assert len(srv.requests) == 1 + 2 + 3 + 2
        summary = PairPipeline(config).summary()
        assert summary["locate"]["ok"] == 3 and summary["locate"]["reasons"] == {"skipped:invalid_answer": 1}
        assert summary["calls"]["locate_judge_calls"] == 8
        # A second run finds everything finished: no request at all.
        PairPipeline(config).locate()
        assert len(srv.requests) == 8


def test_locate_resumes_after_a_kill_without_repeating_finished_calls(tmp_path, api_key, monkeypatch):
    from agents.local_server import ScriptedOpenAIServer

    with ScriptedOpenAIServer(lambda body: '{"index": 2, "reason": "ok"}') as srv:
        config = make_config(tmp_path, srv)
        store_sessions(config, [episode(texts(t), goals=(3, 9), episode_id=t, interlocutor="partner", seats=(0,))
                                for t in "ABCDE"])
        real_append = StageFile.append
        appended = []

        def dying_append(self, entry):
            if len(appended) == 2:
                raise KeyboardInterrupt("killed")  # the process dies while recording the third item
            appended.append(entry["key"])
            real_append(self, entry)

        monkeypatch.setattr(StageFile, "append", dying_append)
        with pytest.raises(KeyboardInterrupt):
            PairPipeline(config).locate()
        assert len(srv.requests) == 3
        monkeypatch.setattr(StageFile, "append", real_append)
        PairPipeline(config).locate()
        # 3 calls before the kill (the third unrecorded) + 3 after: the 2 finished ones are not asked again.
        assert len(srv.requests) == 6
        assert len(StageFile(f"{config.out_dir}/locate.jsonl").final()) == 5


def test_segment_stage_validates_and_write_uses_the_judges_segment(tmp_path, api_key):
    from agents.local_server import ScriptedOpenAIServer

    sessions, branches, answers = [], [], {}
    for t, answer in (("A", ['{"start_index": 2, "end_index": 4, "reason": "meets halfway"}']),
                      ("B", ['{"start_index": 3, "end_index": 4}', '{"start_index": 2, "end_index": 5}',
                             '{"start_index": 2, "end_index": 2, "reason": "one turn"}']),
                      ("C", ["{", "{", "{"])):
        neg = episode(texts(t), goals=(3, 9), episode_id=t, interlocutor="partner", seats=(0,))
        sessions.append(neg)
        branches.append(branch(neg, 2, [f"{t}: 130?", f"{t}: 110", f"{t}: 120", f"{t}: deal"], goals=(8, 8),
                               episode_id=f"pos{t}"))
        answers[t] = answer
    with ScriptedOpenAIServer(lambda body: answers[marker(body)].pop(0)) as srv:
        config = make_config(tmp_path, srv)
        store_sessions(config, sessions)
        pipeline = PairPipeline(config)
        for neg, pos in zip(sessions, branches):
            pipeline.ledgers["locate"].append({"key": f"{neg.episode_id}:0", "status": "ok", "index": 2})
            pipeline.ledgers["sample"].append({"key": f"{neg.episode_id}:0", "status": "kept", "branch_turn": 2,
                                               "positive": pos.episode_id, "candidates": []})
            pipeline.branches.append(pos)
        pipeline.segment()
        entries = pipeline.ledgers["segment"].entries()
        assert entries["A:0"]["end_index"] == 4 and entries["B:0"]["end_index"] == 2
        assert entries["B:0"]["problems"][0].startswith("start_index must be 2")
        assert entries["C:0"]["status"] == "skipped" and len(srv.requests) == 1 + 3 + 3
        counts = pipeline.write()
        assert counts["sdpo"]["pairs"] == 2 and counts["sdpo"]["segment_invalid_answer"] == 1
        lines = open(f"{config.out_dir}/pairs_sdpo.jsonl").read().splitlines()  # noqa: SIM115 - read at once
        pairs = {p["pair_id"]: p for p in map(json.loads, lines)}
        assert pairs["sdpo:A:0"]["segment"] == {"chosen": [1, 2], "rejected": [1, 2]}
        assert pairs["sdpo:B:0"]["segment"] == {"chosen": [1, 1], "rejected": [1, 1]}
        assert [t["argument"] for t in pairs["sdpo:B:0"]["chosen"]] == ["B: 130?"]


def test_sampling_seats_temperatures_and_out_of_distribution_positives(tmp_path, api_key):
    from agents.local_server import ScriptedOpenAIServer

    with ScriptedOpenAIServer() as srv:
        config = make_config(tmp_path, srv, **{"models.agent": "openai/agent", "models.partner": "openai/partner"})
        pipeline = PairPipeline(config)
        (first, second), temps = pipeline._sampling_seats(1, "partner")
        assert (first.name, second.name, temps) == ("openai/partner", "openai/agent", (0.7, 1.0))
        (first, second), temps = pipeline._sampling_seats(0, "self")
        assert (first.name, second.name, temps) == ("openai/agent", "openai/agent", (1.0, 0.7))
        assert first is second  # one policy object per model
        config.models.positive_model = "openai/other"
        (first, second), temps = pipeline._sampling_seats(0, "self")
        assert (first.name, second.name, temps) == ("openai/other", "openai/agent", (1.0, 0.7))
        assert len(srv.requests) == 0


class Killed(BaseException):
    """A kill in the middle of a stage (not an Exception: nothing on the way may catch it)."""


def evaluation_json(goal, relationship):
    from sotopia_env.evaluation import DIMENSION_RANGES

    block = {d: ["scripted", max(lo, min(hi, 5))] for d, (lo, hi) in DIMENSION_RANGES.items()}
    return json.dumps({"agent_1_evaluation": {**block, "goal": ["g", goal], "relationship": ["r", relationship]},
                       "agent_2_evaluation": block})


def sampling_server(judge_goals):
    """Agents answer a JSON action; the episode judge scores seat 0 by the session's tag."""
    counter = iter(range(10 ** 6))

    def respond(body):
        if body["model"] == "judge":
            match = re.search(r"(\w+): hi Ben", body["messages"][-1]["content"] if len(body["messages"]) < 3
                              else body["messages"][1]["content"])
            answer = judge_goals[match.group(1) if match else "from_start"]
            return answer.pop(0) if isinstance(answer, list) else answer
        return json.dumps({"action_type": "speak", "argument": f"{body['model']} offer {next(counter)}"})

    return respond


def test_sample_stage_keeps_or_drops_and_resumes_after_a_kill(tmp_path, api_key, monkeypatch):
    from agents.local_server import ScriptedOpenAIServer

    judge = {"A": evaluation_json(8, 0), "B": evaluation_json(3, 0)}   # negatives: goal 3, relationship 0
    with ScriptedOpenAIServer(sampling_server(judge)) as srv:
        config = make_config(tmp_path, srv, **{"models.agent": "openai/agent", "models.partner": "openai/partner",
                                                "sample.n": 2, "collect.max_turns": 6})
        store_sessions(config, [episode(texts(t), goals=(3, 9), episode_id=t, interlocutor="partner", seats=(0,))
                                for t in "AB"])
        ledger = StageFile(f"{config.out_dir}/locate.jsonl")
        for t in "AB":
            ledger.append({"key": f"{t}:0", "status": "ok", "index": 2})
        real_append = EpisodeStore.append
        stored = []

        def dying_append(self, record):
            if len(stored) == 3:
                raise Killed()
            stored.append(record.tags["run_key"])
            real_append(self, record)

        monkeypatch.setattr(EpisodeStore, "append", dying_append)
        with pytest.raises(Killed):
            PairPipeline(config).sample()
        first_run = len(srv.requests)
        monkeypatch.setattr(EpisodeStore, "append", real_append)
        PairPipeline(config).sample()
        branches = EpisodeStore(f"{config.out_dir}/branches.jsonl").records()
        assert len(branches) == 4
        # Only the unstored continuation is played again: its turns and one judge call.
        replayed = [b for b in branches if b.tags["run_key"] not in stored]
        assert len(replayed) == 1
        assert len(srv.requests) - first_run == len(replayed[0].turns) - 2 + 1
        for b in branches:   # a branch starts from the negative's history, trained seat at temperature 1.0
            assert [t.argument for t in b.turns[:2]] == texts(b.tags["negative"][0])[:2]
            assert b.branch_turn == 2 and b.sampling[0]["temperature"] == 1.0 and b.sampling[1]["temperature"] == 0.7
            assert b.models == ["openai/agent", "openai/partner"]
        decisions = StageFile(f"{config.out_dir}/sample.jsonl").final()
        assert decisions["A:0"]["status"] == "kept" and decisions["A:0"]["positive"] in {b.episode_id for b in branches}
        assert decisions["B:0"]["status"] == "dropped" and decisions["B:0"]["reason"] == "not_better"
        before = len(srv.requests)
        PairPipeline(config).sample()
        assert len(srv.requests) == before


def test_unjudged_candidate_is_retried_on_the_next_run_judge_only(tmp_path, api_key):
    from agents.local_server import ScriptedOpenAIServer

    judge = {"A": ["{", "{", "{", evaluation_json(9, 1)]}   # first episode's judge fails after 2 re-asks
    with ScriptedOpenAIServer(sampling_server(judge)) as srv:
        config = make_config(tmp_path, srv, **{"models.agent": "openai/agent", "models.partner": "openai/partner",
                                                "sample.n": 1, "collect.max_turns": 4})
        store_sessions(config, [episode(texts("A"), goals=(3, 9), episode_id="A", interlocutor="partner",
                                        seats=(0,))])
        StageFile(f"{config.out_dir}/locate.jsonl").append({"key": "A:0", "status": "ok", "index": 2})
        PairPipeline(config).sample()
        assert StageFile(f"{config.out_dir}/sample.jsonl").entries()["A:0"]["status"] == "error"
        before = len(srv.requests)
        summary = PairPipeline(config).run(Stage.sample)
        assert len(srv.requests) == before + 1          # judged again, not replayed
        assert StageFile(f"{config.out_dir}/sample.jsonl").entries()["A:0"]["status"] == "kept"
        assert summary["sample"]["kept"] == 1 and summary["calls"]["sample_judge_calls"] == 4



def test_eto_dmpo_sessions_sampled_from_the_start_for_kept_negatives(tmp_path, api_key):
    from agents.local_server import ScriptedOpenAIServer
    from sdpo.pairs_schema import read_pairs

    judge = {"A": evaluation_json(8, 0), "B": evaluation_json(1, 0),
             "from_start": [evaluation_json(5, 0), evaluation_json(9, 0)]}
    with ScriptedOpenAIServer(sampling_server(judge)) as srv:
        config = make_config(tmp_path, srv, **{"models.agent": "openai/agent", "models.partner": "openai/partner",
                                                "sample.n": 1, "scratch.n": 2, "collect.max_turns": 4,
                                                "write.kinds": ["eto", "dmpo", "sdpo"], "segment.method": "fixed"})
        config.__post_init__()
        store_sessions(config, [episode(texts(t), goals=(3, 9), episode_id=t, interlocutor="partner", seats=(0,))
                                for t in "AB"])
        for t in "AB":
            StageFile(f"{config.out_dir}/locate.jsonl").append({"key": f"{t}:0", "status": "ok", "index": 2})
        summary = PairPipeline(config).run(Stage.sample)
        pipeline = PairPipeline(config)
        pipeline.segment()                    # fixed lengths: no judge call
        requests = len(srv.requests)
        pipeline.scratch()
        # Only A was kept, so only A gets sessions from the start: 2 sessions of 4 turns, each judged.
        assert len(srv.requests) - requests == 2 * (4 + 1)
        counts = pipeline.write()
        assert counts["eto"]["pairs"] == counts["dmpo"]["pairs"] == 1 and counts["eto"]["not_sampled_from_start"] == 1
        (eto,) = read_pairs(f"{config.out_dir}/pairs_eto.jsonl")
        assert eto.history == [] and eto.scores["chosen"]["goal"] == 9.0 and len(eto.rejected) == 6
        assert eto.provenance["from_start"] and eto.segment == {"chosen": (0, 1), "rejected": (0, 2)}
        (sdpo,) = read_pairs(f"{config.out_dir}/pairs_sdpo.jsonl")
        assert sdpo.provenance["segment_source"] == "fixed [3,3]" and summary["sample"]["dropped"] == 1


@pytest.mark.slow
def test_offline_end_to_end_collect_pairs_fit(tmp_path, embedded_model, embedded_tokenizer):
    """collect -> negatives -> locate -> sample -> segment -> write -> a few sdpo.fit steps, all on the
    embedded model (agent, partner, judge), on 2 built-in align tasks; then a rerun makes no model call."""
    from sdpo.fit import FitConfig, fit
    from sdpo.pairs_schema import read_pairs

    config = PairsConfig(out_dir=str(tmp_path / "run"), progress=False, device="cpu")
    config.collect.max_tasks = 2
    config.collect.interlocutors = ["self"]
    config.collect.max_turns = 3
    config.models.max_new_tokens = 12
    config.sample.n = 2
    config.negatives.goal_below = 10.5       # every judged seat is a negative: enough pairs to train on
    config.write.kinds = ["sdpo", "dpo", "preferred_sft"]
    pipeline = PairPipeline(config)
    pipeline._local["embedded"] = (embedded_model, embedded_tokenizer)   # the session's copy, not a reload
    summary = pipeline.run()
    assert summary["episodes"]["sessions"] == 2 and summary["negatives"]["negatives"] == 4
    assert summary["locate"]["items"] == summary["negatives"]["negatives"]
    assert summary["calls"]["locate_local_scorings"] == summary["negatives"]["negatives"]
    kept = summary["sample"].get("kept", 0)
    assert summary["pairs"]["sdpo"]["pairs"] == summary["segment"].get("ok", 0) <= kept
    assert summary["pairs"]["dpo"]["pairs"] == kept
    pairs = read_pairs(tmp_path / "run" / "pairs_sdpo.jsonl")
    print(format_summary(summary))
    assert pairs, "no positive beat its negative: nothing to train on"
    for pair in pairs:
        chosen, rejected = pair.scores["chosen"], pair.scores["rejected"]   # the paper's keep rule
        assert chosen["goal"] > rejected["goal"] or chosen["relationship"] > rejected["relationship"]
        assert pair.segment["chosen"][1] - pair.segment["chosen"][0] == pair.segment["rejected"][1] - pair.segment["rejected"][0]
        assert pair.chosen[0].argument != pair.rejected[0].argument or pair.chosen[0].action_type != pair.rejected[0].action_type

    # A rerun of every stage finds the work done: no episode is played or judged again.
    sizes = {f: (tmp_path / "run" / f).stat().st_size for f in ("episodes.jsonl", "branches.jsonl", "locate.jsonl")}
    rerun = PairPipeline(config)
    rerun._local["embedded"] = (embedded_model, embedded_tokenizer)
    assert rerun.run() == summary
    assert sizes == {f: (tmp_path / "run" / f).stat().st_size for f in sizes}

    result = fit(FitConfig(model="embedded", data=str(tmp_path / "run" / "pairs_sdpo.jsonl"),
                           output_dir=str(tmp_path / "fit"), batch_size=1, micro_batch_size=1, max_steps=2,
                           lora=True, lr=1e-3, progress=False))
    assert result.step == 2 and result.history[0]["loss"] == pytest.approx(0.6931, abs=1e-3)


def test_command_line_runs_a_stage_and_rejects_bad_options(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "cli"
    ok = subprocess.run([sys.executable, "-m", "sdpo.pairs", f"out_dir={out}", "stage=write", "progress=true"],
                        capture_output=True, text=True, timeout=120, check=False)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "negatives" in ok.stdout and (out / "summary.json").exists() and (out / "pairs_sdpo.jsonl").exists()
    assert "api_key" not in (out / "config.yaml").read_text().replace("api_key_env", "")
    bad = subprocess.run([sys.executable, "-m", "sdpo.pairs", f"out_dir={out}", "negatives.rule=median"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode != 0 and "negatives.rule" in bad.stderr and "authors" in bad.stderr
