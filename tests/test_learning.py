"""The rules judge (agents.rules_judge), its place in sdpo.pairs and benchmarks.sotopia, and the
end-to-end learning check (benchmarks.learning).

The end-to-end test plays, trains and evaluates the embedded model: minutes on a 2-core CPU, so it
runs only with ``SOTOPIA_LEARNING_TEST=1`` (it is outside the suite's 15-minute budget)."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents.rules_judge import RulesJudge, is_rules_judge, rule_of
from sdpo.pairs.locate import locate_one
from sdpo.pairs.segment import select_one
from sotopia_env.episode import EpisodeRecord, Turn
from sotopia_env.errors import ConfigError
from sotopia_env.evaluation import Evaluator
from tests.factories import make_task

TASK = make_task()  # Ana (seat 0) and Ben (seat 1)
ROOT = Path(__file__).resolve().parents[1]


def record(*lines: tuple[int, str], action: str = "speak") -> EpisodeRecord:
    turns = [Turn(turn=i, agent_index=seat, speaker=TASK.profiles[seat].name, action_type=action, argument=text)
             for i, (seat, text) in enumerate(lines)]
    return EpisodeRecord(task=TASK, turns=turns, tags={"agent_seats": [0, 1]})


def test_goal_is_the_rule_whole_word_case_sensitive():
    judge = RulesJudge("rules")
    assert isinstance(judge, Evaluator) and judge.name == "rules:partner_name"
    rec = record((0, "Hello there, how are you today?"), (1, "Fine, thanks Ana."), (0, "Good to hear it, Ben!"),
                 (1, "Annabel told me about the bike."))
    ev = judge.evaluate(rec)
    assert [a.scores["goal"] for a in ev.agents] == [10.0, 10.0]
    assert "[2]" in ev.agents[0].reasoning["goal"]
    # "Benjamin" and "ben" are not "Ben"; "Annabel" is not "Ana"
    rec = record((0, "Hi Benjamin, nice bike."), (1, "Thanks, Annabel!"), (0, "ben, wait."))
    assert [a.scores["goal"] for a in judge.evaluate(rec).agents] == [0.0, 0.0]


def test_believability_counts_speech_and_other_dimensions_are_zero():
    rec = record((0, "Hi Ben, welcome here."), (1, "ok"), (0, "Hi Ben, welcome here."), (1, '{"a": 1} and more'))
    ev = RulesJudge().evaluate(rec)
    # seat 0: its second turn repeats the first; seat 1: one word, then JSON braces
    assert ev.agents[0].scores["believability"] == 5.0 and ev.agents[1].scores["believability"] == 0.0
    for agent in ev.agents:
        assert {d for d, s in agent.scores.items() if s != 0} <= {"goal", "believability"}
    assert RulesJudge().evaluate(record((0, "Hi Ben, a nod."), action="non-verbal communication")
                                 ).agents[0].scores["believability"] == 0.0


def test_error_turn_and_segment_by_the_rule():
    judge = RulesJudge()
    negative = record((0, "Hello."), (1, "Hi Ana."), (0, "Nice weather."), (1, "Yes."))
    assert judge.error_turn(negative, 0)["index"] == 0
    assert judge.error_turn(negative, 1)["index"] == 3   # seat 1 named Ana at 1; its first miss is 3
    positive = record((0, "Hello."), (1, "Hi Ana."), (0, "Good to see you, Ben."), (1, "Yes.")).turns
    seg = judge.segment(negative, positive, 0, 0)
    assert (seg["start_index"], seg["end_index"]) == (0, 2)   # up to the first turn that names Ben
    seg = judge.segment(negative, positive[:2], 0, 0)
    assert seg["end_index"] == 0                              # none names him: the error turn alone


def test_the_pipeline_asks_the_rules_not_a_model():
    judge = RulesJudge()
    negative = record((0, "Hello."), (1, "Hi Ana."), (0, "Nice weather."), (1, "Yes."))
    entry = asyncio.run(locate_one(negative, 0, rules=judge))
    assert entry["status"] == "ok" and entry["index"] == 0 and entry["judge"] == "rules:partner_name"
    assert entry["calls"] == 0
    positive = record((0, "Hello Ben."), (1, "Hi Ana."), (0, "Bye."), (1, "Yes.")).turns
    entry = asyncio.run(select_one(negative, positive, 0, 0, rules=judge))
    assert entry["status"] == "ok" and (entry["start_index"], entry["end_index"]) == (0, 0)


def test_model_strings_and_config_errors():
    assert is_rules_judge("rules") and is_rules_judge("rules:partner_name")
    assert not is_rules_judge("gpt-4o") and not is_rules_judge("rulesy")
    assert rule_of("rules") == "partner_name"
    with pytest.raises(ConfigError, match="unknown rule 'price'; allowed: rules:partner_name"):
        rule_of("rules:price", option="models.judge")

    from benchmarks.learning import LearningConfig
    from benchmarks.sotopia import SotopiaBenchConfig, build_judge, check_models

    cfg = SotopiaBenchConfig(judge="rules", agent="embedded")
    check_models(cfg)
    assert isinstance(build_judge(cfg), RulesJudge)
    with pytest.raises(ConfigError, match="unknown rule"):
        check_models(SotopiaBenchConfig(judge="rules:nope"))
    with pytest.raises(ConfigError, match="methods: 'ppo' is not allowed"):
        LearningConfig(methods=["ppo"])
    with pytest.raises(ConfigError, match="needs a rules judge"):
        LearningConfig(judge="gpt-4o")


def test_learning_tasks_hold_out_scenarios_and_names():
    from benchmarks.learning import DATA_DIR
    from sotopia_env.task_source import TaskSource

    def load(tag):
        return TaskSource(tasks="files", scenarios=str(DATA_DIR / "scenarios.jsonl"),
                          profiles=str(DATA_DIR / "profiles.jsonl"), combos=str(DATA_DIR / "combos.jsonl"),
                          task_tags=[tag]).load_tasks()

    train, heldout = load("train"), load("heldout")
    assert len(train) == 24 and len(heldout) == 32
    assert not {t.scenario.pk for t in train} & {t.scenario.pk for t in heldout}
    names = lambda tasks: {p.first_name for t in tasks for p in t.profiles}  # noqa: E731
    assert not names(train) & names(heldout)
    # the goal each seat reads is the rule
    assert all("first name" in g for t in train + heldout for g in t.scenario.agent_goals)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SOTOPIA_LEARNING_TEST") != "1",
                    reason="minutes on a CPU: set SOTOPIA_LEARNING_TEST=1 to run the end-to-end learning check")
def test_sdpo_training_raises_the_held_out_goal(tmp_path):
    """The whole loop through its commands, SDPO only, at the measured run's training scale, evaluated
    on half the held-out tasks; the trained agent's goal must beat the base's by MARGIN."""
    out = tmp_path / "learning"
    command = [sys.executable, "-m", "benchmarks.learning", f"out_dir={out}", "methods=[sdpo]", "eval_tasks=16",
               "progress=false"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=5400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    doc = json.loads((out / "learning.json").read_text())
    assert doc["pairs"]["sdpo"] > 0
    _check_sdpo_pairs(out / "pairs" / "pairs_sdpo.jsonl")
    base, sdpo = (doc["models"][m]["columns"]["goal"]["mean"] for m in ("base", "sdpo"))
    assert sdpo - base >= MARGIN, doc["models"]


MARGIN = 2.0
"""Goal points (0-10) the SDPO-trained agent must gain over the base on the first 16 held-out tasks:
about 1.6 standard errors of the difference of two 16-episode means at the spread measured on the
32 held-out tasks, and half the gain measured there (benchmarks/RESULTS.md)."""


def segment_texts(conv, pair) -> dict[str, list[str]]:
    """The text of each side's loss-masked tokens, one string per segment turn."""
    from sdpo.tokenize import NO_TURN, tokenize_pair

    tokenized = tokenize_pair(conv, pair)
    out = {}
    for side in ("chosen", "rejected"):
        t = getattr(tokenized, side)
        # a target at position i is predicted from i-1: the token itself is input_ids[i]
        out[side] = [conv.tokenizer.decode([tok for tok, k in zip(t.input_ids, t.turn_index) if k == turn])
                     for turn in range(t.n_turns)]
        assert all(k == NO_TURN or 0 <= k < t.n_turns for k in t.turn_index)
    return out


def test_the_loss_mask_covers_the_segment_the_rule_chose():
    """What SDPO trains on is what the rule rewarded: the masked tokens of the chosen side are the
    positive's segment turns (the last one naming the partner), those of the rejected side the
    negative's, and nothing else."""
    from agents.formatter import ConversationTokenizer
    from agents.models import load_tokenizer
    from sdpo.pairs.variants import sdpo_pair, segment_length_from_end

    judge = RulesJudge()
    negative = record((0, "Hello."), (1, "Hi Ana."), (0, "Nice weather."), (1, "Yes."))
    positive = record((0, "Hello there."), (1, "Hi Ana."), (0, "Good to see you, Ben."), (1, "Yes."))
    for rec in (negative, positive):
        rec.evaluation = judge.evaluate(rec)
    error = judge.error_turn(negative, 0)["index"]
    end = judge.segment(negative, positive.turns, 0, error)["end_index"]
    n = segment_length_from_end(positive, 0, error, end)
    pair = sdpo_pair(negative, positive, 0, error, chosen_len=n, rejected_len=n, pair_id="p")
    texts = segment_texts(ConversationTokenizer(load_tokenizer("embedded")), pair)
    assert len(texts["chosen"]) == len(texts["rejected"]) == 2
    assert "Hello there." in texts["chosen"][0] and "Good to see you, Ben." in texts["chosen"][1]
    assert "Hello." in texts["rejected"][0] and "Nice weather." in texts["rejected"][1]
    assert not any("Hi Ana" in t for side in texts.values() for t in side)   # the partner's turn is context


def _check_sdpo_pairs(path: Path) -> None:
    """Every SDPO pair of the run trains what the rule rewards: the chosen side's last masked turn
    names the partner, no masked turn of the rejected side does."""
    from agents.formatter import ConversationTokenizer
    from agents.models import load_tokenizer
    from sdpo.pairs_schema import read_pairs

    conv = ConversationTokenizer(load_tokenizer("embedded"))
    for pair in read_pairs(path):
        partner = pair.task.profiles[1 - pair.agent_index].first_name
        texts = segment_texts(conv, pair)
        assert partner in texts["chosen"][-1], (pair.pair_id, texts)
        assert not any(partner in t for t in texts["rejected"]), (pair.pair_id, texts)
