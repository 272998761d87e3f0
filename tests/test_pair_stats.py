"""Pair statistics (sdpo.pairs.stats): the report of a pair file, and the one the pipeline's summary
stage writes into a run folder from its stage ledgers (why negatives gave no pair)."""
import subprocess
import sys

import pytest

from sdpo.pairs.config import PairsConfig, Stage
from sdpo.pairs.pipeline import PairPipeline
from sdpo.pairs.stages import StageFile
from sdpo.pairs.stats import kind_stats, write_report
from sotopia_env.episode import EpisodeStore

from .pair_fixtures import make_pair
from .pairs_episodes import branch, episode

PNG = b"\x89PNG"


def test_report_of_pairs_counts_error_turns_and_segment_lengths(tmp_path):
    # agent 0 speaks at even turns: 0, 2 and 4 history turns hold 0, 1 and 2 of its turns
    sdpo = [make_pair("a", n_history=0, seg=1), make_pair("b", n_history=2, seg=3),
            make_pair("c", n_history=4, seg=3, rejected_seg=1), make_pair("d", n_history=4, seg=2)]
    eto = [make_pair("e", n_history=0, seg=4, kind="eto")]
    stats = kind_stats(sdpo)
    assert stats["error_turns"] == {0: 1, 1: 1, 2: 2}
    assert stats["turns"] == {"chosen": [1, 3, 3, 2], "rejected": [1, 3, 1, 2]} and stats["tokens"] is None
    assert kind_stats(eto)["error_turns"] == {}       # sessions from scratch part at no error turn

    report = write_report(tmp_path, {"sdpo": sdpo, "eto": eto}, title="t",
                          reasons={"sdpo": {"pairs": 4, "sample_not_better": 2, "not_located": 1}}, negatives=7)
    text = report.read_text()
    assert "| sdpo | 4 |" in text and "| eto | 1 |" in text
    assert "7 negatives selected" in text
    assert "| sdpo | pair | 4 |" in text and "| sdpo | no pair: sample_not_better | 2 |" in text
    assert "| sdpo | no pair: not_located | 1 |" in text
    assert "| 2 | 2 | 50 % |" in text and "| 0 | 1 | 25 % |" in text
    assert "| chosen | 2.25 / 2.5 / 1–3 | not counted |" in text
    assert "| rejected | 1.75 / 1.5 / 1–3 | not counted |" in text
    assert "| 3 | 2 | 1 |" in text                 # two chosen and one rejected segment of 3 turns
    assert (tmp_path / "pair_stats.png").read_bytes()[:4] == PNG and "(pair_stats.png)" in text

    # no pairs: the report says so and no (stale) plot is left
    empty = write_report(tmp_path, {"sdpo": []}, title="t").read_text()
    assert "| sdpo | 0 |" in empty and not (tmp_path / "pair_stats.png").exists()


@pytest.mark.slow
def test_target_tokens_are_the_tokens_fit_trains_on(tmp_path, embedded_tokenizer):
    from agents.formatter import ConversationTokenizer
    from sdpo.tokenize import tokenize_pair

    pairs = [make_pair("a", seg=1, words=2), make_pair("b", seg=2, words=12)]
    text = write_report(tmp_path, {"sdpo": pairs}, title="t", tokenizer=embedded_tokenizer).read_text()
    conv = ConversationTokenizer(embedded_tokenizer)
    chosen = sorted(tokenize_pair(conv, p).chosen.n_targets for p in pairs)
    assert chosen[0] < chosen[1]
    assert f"| chosen | 1.50 / 1.5 / 1–2 | {sum(chosen) / 2:.2f} / {sum(chosen) / 2:g} / {chosen[0]}–{chosen[1]} |" in text


def make_run(tmp_path) -> PairsConfig:
    """A run folder as the stages leave it: three negatives (seat 0 of partner sessions); A located
    and kept, B located but its positive not better, C never located."""
    config = PairsConfig(out_dir=str(tmp_path / "run"), progress=False)
    config.models.agent = "openai/agent"          # an API agent: no tokenizer to load
    config.segment.method = "fixed"
    config.segment.fixed = [2, 2]
    config.__post_init__()
    texts = ["hi", "hello", "200, final", "too much", "190?", "no", "bye", "bye"]
    store, branches = EpisodeStore(tmp_path / "run" / "episodes.jsonl"), EpisodeStore(tmp_path / "run" / "branches.jsonl")
    for tag in "ABC":
        neg = episode(texts, goals=(3, 9), episode_id=tag, interlocutor="partner", seats=(0,))
        neg.tags["run_key"] = f"collect/{tag}"
        store.append(neg)
    branches.append(branch(neg, 2, ["130?", "110", "120", "deal", "bye", "bye"], goals=(8, 6), episode_id="posA"))
    locate, sample = StageFile(tmp_path / "run" / "locate.jsonl"), StageFile(tmp_path / "run" / "sample.jsonl")
    for tag in "AB":
        locate.append({"key": f"{tag}:0", "status": "ok", "index": 2})
    sample.append({"key": "A:0", "status": "kept", "positive": "posA", "branch_turn": 2, "candidates": []})
    sample.append({"key": "B:0", "status": "dropped", "reason": "not_better", "candidates": []})
    return config


def test_summary_stage_reports_the_run_and_why_negatives_gave_no_pair(tmp_path):
    config = make_run(tmp_path)
    out = tmp_path / "run"
    summary = PairPipeline(config).run(Stage.summary)
    assert summary["negatives"]["negatives"] == 3
    text = (out / "summary.md").read_text()
    assert "3 negatives selected" in text
    assert "| sdpo | 1 | – |" in text                 # the ledgers give one pair; no pair file written yet
    assert "| sdpo | no pair: sample_not_better | 1 |" in text and "| sdpo | no pair: not_located | 1 |" in text
    assert "| 1 | 1 | 100 % |" in text                 # error at message 2 = the agent's second turn
    assert "| chosen | 2.00 / 2 / 2–2 | not counted |" in text and "API model" in text
    assert (out / "pair_stats.png").read_bytes()[:4] == PNG

    PairPipeline(config).run(Stage.write)
    assert "| sdpo | 1 | 1 |" in (out / "summary.md").read_text()


def test_command_line_summary_stage_and_pair_stats(tmp_path):
    make_run(tmp_path)
    run = subprocess.run([sys.executable, "-m", "sdpo.pairs", f"out_dir={tmp_path / 'run'}", "stage=summary",
                          "models.agent=openai/agent", "segment.method=fixed", "segment.fixed=[2,2]"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "| sdpo | 1 | – |" in (tmp_path / "run" / "summary.md").read_text()
    bad = subprocess.run([sys.executable, "-m", "benchmarks.pair_stats", str(tmp_path / "run"), "--out",
                          str(tmp_path / "o")], capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2 and "stage=summary" in bad.stderr and "Traceback" not in bad.stderr
