"""Per-turn log-prob gap of several checkpoints on the same pairs (the SDPO paper's Figure 9 analysis).

    python -m benchmarks.prob_gap embedded runs/fit_dpo runs/fit_sdpo --labels BC DPO SDPO \\
        --pairs runs/pairs/pairs_sdpo.jsonl --out runs/prob_gap

For each checkpoint (the base model, an ``sdpo.fit`` output folder or one of its
``checkpoints/step-N``, full weights or a LoRA adapter) and each pair, the log-prob of each
trained-agent turn of the chosen segment minus that of the rejected segment's turn at the same
position (turn 0 = the error turn), averaged over the pairs that have that position on both sides.
The paper's question: does DPO, trained on the error turn alone, move the later turns' gap, and does
SDPO raise it across the segment? Log-probs are ``sdpo.fit``'s own (``sdpo.tokenize`` +
``sdpo.reference.turn_logps``, adapter on); ``sdpo.fit`` logs the same gap per training step on its
batches as ``logps/gap_turn_<t>`` in metrics.jsonl.

Writes ``prob_gap.md`` (one row per checkpoint, one column per turn position, pairs counted in
parentheses), ``prob_gap.png`` (one line per checkpoint) and ``prob_gap.json`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from sotopia_env.errors import ConfigError, DataError


@dataclass
class GapRow:
    """One checkpoint's gaps: ``gaps[j]`` the mean chosen-minus-rejected log-prob (nats) at segment
    turn j over the ``counts[j]`` pairs that have turn j on both sides; ``pairs`` the pairs that fit
    ``max_length`` (the others are skipped as ``sdpo.fit`` skips them)."""

    label: str
    checkpoint: str
    pairs: int
    gaps: list[float]
    counts: list[int]


def turn_gaps(model, tokenizer, pairs, *, label: str, checkpoint: str, batch_size: int = 2, max_length: int = 4096,
              device=None, progress: bool = True) -> GapRow:
    """The per-turn gaps of ``model`` (with its ``tokenizer``) on ``pairs`` (PairRecords)."""
    import torch

    from agents.formatter import ConversationTokenizer
    from sdpo.losses import per_turn_logp_gaps
    from sdpo.reference import reference_batch, turn_logps
    from sdpo.tokenize import tokenize_pairs

    tokenized, _ = tokenize_pairs(ConversationTokenizer(tokenizer), pairs, max_length)
    if not tokenized:
        return GapRow(label, checkpoint, 0, [], [])
    logps = turn_logps(model, tokenized, batch_size=batch_size, pad_id=tokenizer.pad_token_id, device=device,
                       progress=progress, desc=f"log-probs {label}")
    ids = [tp.pair_id for tp in tokenized]
    chosen_len = torch.tensor([len(logps[i][0]) for i in ids])
    rejected_len = torch.tensor([len(logps[i][1]) for i in ids])
    chosen, rejected = reference_batch(logps, ids, int(chosen_len.max()), int(rejected_len.max()))
    chosen_mask = torch.arange(chosen.shape[1])[None, :] < chosen_len[:, None]
    rejected_mask = torch.arange(rejected.shape[1])[None, :] < rejected_len[:, None]
    gaps = per_turn_logp_gaps(chosen, rejected, chosen_mask, rejected_mask)
    width = gaps.numel()
    counts = (chosen_mask[:, :width] & rejected_mask[:, :width]).sum(0)
    return GapRow(label, checkpoint, len(ids), gaps.tolist(), counts.tolist())


def gap_table(rows: Sequence[GapRow], digits: int = 3) -> str:
    """Markdown: one row per checkpoint, one column per segment turn (cell: mean gap (pairs))."""
    width = max((len(r.gaps) for r in rows), default=0)
    header = ["checkpoint", "pairs"] + [f"turn {j}" for j in range(width)]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * width]
    for r in rows:
        cells = [r.label, str(r.pairs)]
        for j in range(width):
            if j < len(r.gaps) and r.counts[j] and not math.isnan(r.gaps[j]):
                cells.append(f"{r.gaps[j]:+.{digits}f} ({r.counts[j]})")
            else:
                cells.append("–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_gaps(rows: Sequence[GapRow], path: str | Path) -> Path:
    """One line per checkpoint: mean gap against the segment turn (0 = the error turn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from benchmarks.plots import save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        points = [(j, g) for j, (g, n) in enumerate(zip(r.gaps, r.counts)) if n and not math.isnan(g)]
        if points:
            ax.plot([j for j, _ in points], [g for _, g in points], marker="o", label=r.label)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("segment turn (0 = error turn)")
    ax.set_ylabel("log p(chosen) − log p(rejected), nats")
    ax.set_title("chosen-minus-rejected log-prob per turn")
    ax.legend()
    return save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> list[GapRow]:
    from agents.models import check_model_source
    from sdpo.fit import DEMO_PAIRS
    from sdpo.pairs_schema import SFT_KINDS, read_pairs

    parser = argparse.ArgumentParser(prog="python -m benchmarks.prob_gap", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="models to compare: embedded, a Hugging Face id, a model "
                                                       "folder, an sdpo.fit output folder or checkpoint")
    parser.add_argument("--labels", nargs="+", help="one name per checkpoint for the table and plot (default: "
                                                    "the checkpoints as given)")
    parser.add_argument("--pairs", default=DEMO_PAIRS, help="pair file (default: the shipped demo pairs); "
                                                            "kinds with a rejected side only")
    parser.add_argument("--out", required=True, help="folder for prob_gap.md, prob_gap.png and prob_gap.json")
    parser.add_argument("--batch-size", type=int, default=2, help="pairs per forward pass")
    parser.add_argument("--max-length", type=int, default=4096, help="token limit per side, as sdpo.fit's max_length")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA if present)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    labels = args.labels or list(args.checkpoints)
    if len(labels) != len(args.checkpoints):
        raise ConfigError(f"--labels gives {len(labels)} names for {len(args.checkpoints)} checkpoints; give one each")
    for name, value in (("--batch-size", args.batch_size), ("--max-length", args.max_length)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    pairs = read_pairs(args.pairs)
    if not pairs:
        raise DataError("holds no pairs", path=args.pairs)
    one_sided = [p.pair_id for p in pairs if p.kind in SFT_KINDS]
    if one_sided:
        raise DataError(f"{len(one_sided)} pair(s) have no rejected side (e.g. {one_sided[0]!r}, kind "
                        f"{SFT_KINDS}); a gap needs both sides", path=args.pairs, field="rejected")
    for checkpoint in args.checkpoints:   # all of them before the first is loaded
        check_model_source(checkpoint, option="checkpoints")

    from agents.models import load_model, load_tokenizer

    rows = []
    for label, checkpoint in zip(labels, args.checkpoints):
        model = load_model(checkpoint, device=args.device, option="checkpoints")
        tokenizer = load_tokenizer(checkpoint, option="checkpoints")
        device = next(model.parameters()).device
        rows.append(turn_gaps(model, tokenizer, pairs, label=label, checkpoint=checkpoint, batch_size=args.batch_size,
                              max_length=args.max_length, device=device, progress=not args.no_progress))
        del model      # one checkpoint in memory at a time
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = gap_table(rows)
    note = (f"Pairs: {args.pairs}. Cell: mean chosen-minus-rejected log-prob (nats) of the trained agent's turn at "
            "that segment position (0 = the error turn), over the pairs (in parentheses) that have it on both sides.")
    (out / "prob_gap.md").write_text(f"# Per-turn log-prob gap\n\n{note}\n\n{table}\n\n![gap per turn](prob_gap.png)\n",
                                     encoding="utf-8")
    plot_gaps(rows, out / "prob_gap.png")
    (out / "prob_gap.json").write_text(json.dumps({"pairs": args.pairs, "rows": [
        {**asdict(r), "gaps": [None if math.isnan(g) else g for g in r.gaps]} for r in rows]}, indent=2),
                                       encoding="utf-8")
    print(table)
    print(f"report: {out / 'prob_gap.md'}")
    return rows


if __name__ == "__main__":
    from sotopia_env.cli import main_guard

    main_guard(main)
