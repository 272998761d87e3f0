"""benchmarks.prob_gap: the per-turn chosen-minus-rejected log-prob gap of checkpoints on the same
pairs, on the shipped demo pairs with the tiny random Llama and a 1-step sdpo.fit checkpoint."""
import json
from pathlib import Path

import pytest
import torch

from benchmarks import prob_gap
from sdpo.fit import DEMO_PAIRS, FitConfig, fit
from sotopia_env.errors import ConfigError, DataError

from .pair_fixtures import make_pair


@pytest.mark.slow
def test_gap_per_turn_of_base_and_trained_checkpoint(tmp_path, tiny_dir, tiny_llama, embedded_tokenizer):
    from sdpo.pairs_schema import read_pairs

    demo = tmp_path / "demo4.jsonl"      # the first 4 shipped demo pairs: segments of 2 and 1 turns
    demo.write_text("".join(Path(DEMO_PAIRS).read_text().splitlines(keepends=True)[:4]))
    # one small SDPO step on these pairs raises what the loss raises: the segment's summed gap
    fit(FitConfig(model=tiny_dir, data=str(demo), output_dir=str(tmp_path / "sdpo"), batch_size=4,
                  micro_batch_size=4, max_steps=1, lr=1e-3, progress=False))
    rows = prob_gap.main([tiny_dir, str(tmp_path / "sdpo"), "--labels", "base", "SDPO 1 step", "--pairs", str(demo),
                          "--batch-size", "4", "--out", str(tmp_path / "gap"), "--no-progress"])
    base, trained = rows
    pairs = read_pairs(demo)
    # every pair has turn 0; those whose segments hold 2 agent turns have turn 1 too
    assert base.pairs == trained.pairs == len(pairs)
    assert base.counts == [len(pairs), sum(p.segment["chosen"][1] > p.segment["chosen"][0] for p in pairs)]

    def segment_gap(row):   # mean over pairs of the summed per-turn gaps of the segment
        return sum(g * n for g, n in zip(row.gaps, row.counts)) / row.pairs

    assert segment_gap(trained) > segment_gap(base)

    # the base row is the mean over pairs of chosen minus rejected turn-0 log-probs
    from agents.formatter import ConversationTokenizer
    from sdpo.model_forward import pack_pairs, pair_logps
    from sdpo.tokenize import tokenize_pair

    conv = ConversationTokenizer(embedded_tokenizer)
    alone = []
    with torch.no_grad():
        for p in pairs:   # each pair alone, chosen and rejected as two unshared rows
            lp = pair_logps(tiny_llama, pack_pairs([tokenize_pair(conv, p)], prefix_sharing=False,
                                                   pad_id=embedded_tokenizer.pad_token_id))
            alone.append(float(lp.chosen[0, 0] - lp.rejected[0, 0]))
    assert base.gaps[0] == pytest.approx(sum(alone) / len(alone), abs=1e-3)

    text = (tmp_path / "gap" / "prob_gap.md").read_text()
    assert "| checkpoint | pairs | turn 0 | turn 1 |" in text
    assert f"| base | {len(pairs)} | {base.gaps[0]:+.3f} ({len(pairs)}) |" in text
    assert (tmp_path / "gap" / "prob_gap.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "gap" / "prob_gap.json").read_text())
    assert [r["label"] for r in saved["rows"]] == ["base", "SDPO 1 step"]


def test_bad_input_is_refused_before_loading(tmp_path, tiny_dir):
    with pytest.raises(ConfigError, match="--labels gives 1 names for 2 checkpoints"):
        prob_gap.main([tiny_dir, tiny_dir, "--labels", "a", "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="checkpoints"):
        prob_gap.main([str(tmp_path / "missing"), "--out", str(tmp_path)])
    from sdpo.pairs.write import write_pair_file

    write_pair_file(tmp_path / "sft.jsonl", [make_pair("s", kind="sft")])
    with pytest.raises(DataError, match="no rejected side"):
        prob_gap.main([tiny_dir, "--pairs", str(tmp_path / "sft.jsonl"), "--out", str(tmp_path)])
    assert not Path(tmp_path / "prob_gap.md").exists()
