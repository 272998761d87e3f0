"""Where the pipeline's sessions come from: SOTOPIA task files (the task options shared with
benchmarks.sotopia), selection by id and tag, an imported SOTOPIA episode log; and the
behavioural-cloning records written from expert sessions, which sdpo.fit's SFT preset trains on."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sdpo.pairs.config import PairsConfig, Stage
from sdpo.pairs.pipeline import PairPipeline, check_inputs
from sdpo.pairs_schema import read_pairs
from sotopia_env.episode import EpisodeStore
from sotopia_env.errors import ConfigError, DataError

from .test_loader import COMBOS, PROFILES, SCENARIOS, sotopia_episode, write_jsonl
from .test_pairs_pipeline import evaluation_json

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def task_files(tmp_path):
    """SOTOPIA-format files: env1 (combos c1, c2) and env2 tagged "negotiation" (combo c3)."""
    scenarios = [SCENARIOS[0], {**SCENARIOS[1], "tag": "negotiation"}]
    return {"collect.tasks": "files",
            "collect.scenarios": str(write_jsonl(tmp_path / "scenarios.jsonl", scenarios)),
            "collect.profiles": str(write_jsonl(tmp_path / "profiles.jsonl", PROFILES)),
            "collect.combos": str(write_jsonl(tmp_path / "combos.jsonl", COMBOS))}


def make_config(tmp_path, base_url=None, **options):
    config = PairsConfig(out_dir=str(tmp_path / "run"), progress=False)
    if base_url is not None:
        config.models.agent, config.models.partner, config.models.judge = "openai/agent", "openai/partner", \
            "openai/judge"
        config.models.api_base = base_url
        config.models.api_key_env = "SCRIPTED_API_KEY"
        config.models.max_concurrency = 1
    for dotted, value in options.items():
        group, name = dotted.split(".")
        setattr(getattr(config, group), name, value)
    config.__post_init__()
    return config


def responder(body):
    """Agents say a line; the judge scores goal 8 for both seats, except seat 1 (Omar) of task c1:
    goal 3."""
    if body["model"] == "judge":
        text = " ".join(m["content"] for m in body["messages"])
        high = json.loads(evaluation_json(8, 1))["agent_1_evaluation"]
        low = json.loads(evaluation_json(3, 1))["agent_1_evaluation"]
        return json.dumps({"agent_1_evaluation": high, "agent_2_evaluation": low if "Omar" in text else high})
    return json.dumps({"action_type": "speak", "argument": f"{body['model']} speaks"})


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("SCRIPTED_API_KEY", "test-key")


def test_collect_plays_sotopia_task_files_selected_by_id_and_by_tag(tmp_path, task_files, api_key):
    from agents.local_server import ScriptedOpenAIServer

    with ScriptedOpenAIServer(responder) as srv:
        config = make_config(tmp_path, srv.base_url, **task_files, **{"collect.task_ids": ["c1", "shared_car"],
                                                                      "collect.max_turns": 2})
        check_inputs(config)
        PairPipeline(config).run(Stage.collect)
        records = EpisodeStore(tmp_path / "run" / "episodes.jsonl").records()
        # c1 by its combo pk, c3 by its scenario's codename; c2 is not played
        assert sorted(r.task.pk for r in records) == ["c1", "c3"] and all(r.evaluated for r in records)
        assert {r.task.pk: r.task.agent_names for r in records}["c3"] == ["Pia Sato", "Nora Quinn"]
        assert len(srv.requests) == 2 * (2 + 1)     # two sessions of two turns, each judged once
    tagged = make_config(tmp_path, **task_files, **{"collect.task_tags": ["negotiation"]})
    assert [t.pk for t in PairPipeline(tagged).tasks()] == ["c3"]
    builtin = make_config(tmp_path, **{"collect.tasks": "test", "collect.task_tags": ["hard"],
                                       "collect.max_tasks": None})
    assert builtin.collect.load_tasks() and all("hard" in t.scenario.tags for t in PairPipeline(builtin).tasks())
    with pytest.raises(ConfigError, match=r"collect.task_ids: unknown task or scenario 'c9'; close matches: c3, c2, c1"):
        make_config(tmp_path, **task_files, **{"collect.task_ids": ["c9"]}).collect.load_tasks()
    with pytest.raises(ConfigError, match=r"collect.tasks=files needs collect.combos=<path>"):
        make_config(tmp_path, **{k: v for k, v in task_files.items() if k != "collect.combos"})


def test_a_bad_task_file_is_one_line_naming_file_line_and_field(tmp_path, task_files):
    bad = write_jsonl(tmp_path / "bad_profiles.jsonl", [PROFILES[0], {**PROFILES[1], "age": "fifty"}])
    options = [f"{k}={v}" for k, v in {**task_files, "collect.profiles": str(bad)}.items()]
    proc = subprocess.run([sys.executable, "-m", "sdpo.pairs", f"out_dir={tmp_path / 'out'}", "stage=collect",
                           *options], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert re.fullmatch(r"error: \S*bad_profiles.jsonl line 2: field 'age': expected int[^\n]*\n", proc.stderr)
    assert not (tmp_path / "out").exists()


def test_sft_records_from_expert_sessions_keep_the_experts_seats_with_goal_at_least_7(tmp_path, task_files,
                                                                                       api_key):
    from agents.local_server import ScriptedOpenAIServer

    with ScriptedOpenAIServer(responder) as srv:
        config = make_config(tmp_path, srv.base_url, **task_files,
                             **{"collect.task_ids": ["c1", "c3"], "collect.max_turns": 2,
                                "collect.interlocutors": ["self", "partner"], "write.kinds": ["sft"]})
        config.models.agent = "openai/expert"
        summary = PairPipeline(config).run()
        # 2 tasks x (self-chat + the expert in each seat against the partner): 6 sessions, each 2 turns
        # and one judge call; writing sft records asks nothing more (no error location, no sampling)
        assert len(srv.requests) == 6 * 3 and summary["locate"]["items"] == 0
    records = read_pairs(tmp_path / "run" / "pairs_sft.jsonl")
    kept = sorted((r.task.pk, r.provenance["interlocutor"], r.agent_index) for r in records)
    # c1: seat 1 scores 3, so only seat 0 (self-chat, and the expert's seat-0 session); c3: every expert seat
    assert kept == [("c1", "partner", 0), ("c1", "self", 0), ("c3", "partner", 0), ("c3", "partner", 1),
                    ("c3", "self", 0), ("c3", "self", 1)]
    for r in records:
        assert r.kind == "sft" and r.rejected is None and r.scores["chosen"]["goal"] >= 7
        assert r.provenance["model"] == "openai/expert" and r.history == []
        assert r.segment["chosen"] == (0, sum(t.agent_index == r.agent_index for t in r.chosen) - 1)
    counts = summary["pairs"]["sft"]
    assert counts == {"pairs": 6, "below_min_goal": 2}


@pytest.fixture
def episode_log(tmp_path):
    """SOTOPIA's episode log: gpt-4 (goal 8) vs gpt-3.5 (goal 3), then gpt-4 vs gpt-4 (goals 3 and 8)."""
    first = sotopia_episode()
    swapped = sotopia_episode(episode_id="01H7VFHNV13MHN97GAH73E3KM9",
                              experiment_model_name_pairs=["gpt-4", "gpt-4", "gpt-4"],
                              raw_rewards=list(reversed(first["raw_rewards"])),
                              rewards=list(reversed(first["rewards"])))
    return write_jsonl(tmp_path / "sotopia_episodes.jsonl", [first, swapped])


def test_sft_records_from_an_imported_sotopia_log_train_with_the_sft_preset(tmp_path, episode_log, tiny_llama,
                                                                            embedded_tokenizer):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from sdpo.fit import fit

    config = make_config(tmp_path, **{"collect.episodes": str(episode_log), "write.kinds": ["sft"],
                                      "write.sft_models": ["gpt-4"]})
    check_inputs(config)                       # no model is checked: nothing is played or judged
    summary = PairPipeline(config).run()
    assert summary["episodes"]["sessions"] == 2 and summary["pairs"]["sft"]["other_model"] == 1
    records = read_pairs(tmp_path / "run" / "pairs_sft.jsonl")
    assert [(r.provenance["episode"][-1], r.agent_index, r.provenance["model"]) for r in records] == \
        [("8", 0, "gpt-4"), ("9", 1, "gpt-4")]
    assert records[0].provenance["interlocutor"] == "partner" and records[1].provenance["interlocutor"] == "self"
    assert [t.argument for t in records[0].chosen if t.agent_index == 0][0] == "Hi Omar, my sink leaks."
    # a rerun imports nothing twice
    PairPipeline(config).run()
    assert len(EpisodeStore(tmp_path / "run" / "episodes.jsonl")) == 2

    model_dir = tmp_path / "tiny"
    tiny_llama.save_pretrained(model_dir)
    embedded_tokenizer.save_pretrained(model_dir)
    with initialize_config_dir(config_dir=str(ROOT / "sdpo" / "conf"), version_base=None):
        cfg = OmegaConf.to_object(compose("fit", overrides=[
            "loss=sft", "+preset=llama31_8b_sft", f"model={model_dir}", f"data={tmp_path / 'run' / 'pairs_sft.jsonl'}",
            f"output_dir={tmp_path / 'fit'}", "max_steps=1", "batch_size=2", "progress=false",
            # accelerate's state is one per process: an earlier test's Accelerator fixed its mixed
            # precision, so the preset's bf16 is left to the subprocess runs of sdpo.fit
            "bf16=false"]))
    assert (cfg.lr, cfg.dropout, cfg.warmup_ratio) == (1e-5, 0.2, 0.05)
    result = fit(cfg)
    assert result.step == 1 and result.history[0]["loss"] > 0
    assert (tmp_path / "fit" / "checkpoints" / "step-000001").is_dir()


def test_a_bad_episode_log_names_file_line_and_field(tmp_path, episode_log):
    lines = episode_log.read_text().splitlines()
    broken = json.loads(lines[1])
    del broken["social_goals"]
    episode_log.write_text(lines[0] + "\n" + json.dumps(broken) + "\n")
    config = make_config(tmp_path, **{"collect.episodes": str(episode_log), "write.kinds": ["sft"]})
    with pytest.raises(DataError, match=r"sotopia_episodes.jsonl line 2: field 'social_goals'"):
        check_inputs(config)
    assert not (tmp_path / "run").exists()


def test_benchmark_takes_the_same_task_options(tmp_path, task_files):
    from benchmarks.sotopia import SotopiaBenchConfig, load_task_set
    from sotopia_env.task_source import TaskSource

    options = {k.removeprefix("collect."): v for k, v in task_files.items()}
    cfg = SotopiaBenchConfig(limit=None, output_dir=str(tmp_path / "bench"), task_ids=["leaky_sink"], **options)
    assert isinstance(cfg, TaskSource) and isinstance(PairsConfig().collect, TaskSource)
    assert [t.pk for t in load_task_set(cfg)] == ["c1", "c2"]
    cfg = SotopiaBenchConfig(limit=None, output_dir=str(tmp_path / "bench"), task_tags=["negotiation"], **options)
    assert [t.pk for t in load_task_set(cfg)] == ["c3"]
    with pytest.raises(ConfigError, match=r"^tasks=files task_tags=\['nowhere'\] selects no task$"):
        load_task_set(SotopiaBenchConfig(output_dir=str(tmp_path / "bench"), task_tags=["nowhere"], **options))
    with pytest.raises(ConfigError, match=r"^combos is read only with tasks=files \(now tasks=test\)$"):
        SotopiaBenchConfig(combos=task_files["collect.combos"])
