"""Pair statistics: what a pair file holds, as a Markdown report and one PNG.

Written by the pipeline's summary stage to ``<out_dir>/summary.md`` and ``<out_dir>/pair_stats.png``
(``python -m sdpo.pairs out_dir=RUN stage=summary`` rewrites them for a run folder), and by
``python -m benchmarks.pair_stats PAIRS.jsonl --out DIR`` for a bare pair file. The report gives:

* the pairs of each kind;
* where the error turn falls: the trained agent's own turn number (0 = its first turn) at which
  the two sides part, i.e. its turns in the shared history (``PairRecord.history_agent_turns``),
  for the kinds that branch at an error turn (sdpo, dpo);
* segment lengths of each side in the trained agent's turns and, when a tokenizer is given, in
  target tokens (the tokens ``sdpo.fit`` trains on, counted by ``sdpo.tokenize``);
* with a run's counts: how many negatives became a pair of each kind and why the others did not
  (the reasons ``sdpo.pairs.write.build_pairs`` counts from the stage ledgers).
"""
from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from sdpo.pairs_schema import PairRecord

ERROR_TURN_KINDS = ("sdpo", "dpo")
"""Kinds whose sides part at the located error turn (ETO/DMPO sessions start from scratch)."""

REPORT_FILE = "summary.md"
PLOT_FILE = "pair_stats.png"


def segment_length(pair: PairRecord, side: str) -> int:
    """Length of ``side``'s segment in the trained agent's turns."""
    first, last = pair.segment[side]
    return last - first + 1


def kind_stats(pairs: Sequence[PairRecord], tokenized: Mapping[str, object] | None = None) -> dict:
    """Statistics of pairs of one kind: ``error_turns`` (Counter of the agent turn number where the
    sides part; empty for kinds without an error turn), ``turns`` and ``tokens`` per side (lists,
    one value per pair; ``tokens`` None without ``tokenized``, a pair_id -> TokenizedPair map)."""
    error_turns = Counter(p.history_agent_turns for p in pairs if p.kind in ERROR_TURN_KINDS)
    sides = ("chosen", "rejected") if any(p.rejected is not None for p in pairs) else ("chosen",)
    turns = {side: [segment_length(p, side) for p in pairs if p.segment.get(side)] for side in sides}
    tokens = None
    if tokenized is not None:
        tokens = {side: [getattr(tokenized[p.pair_id], side).n_targets for p in pairs
                         if p.pair_id in tokenized and getattr(tokenized[p.pair_id], side) is not None]
                  for side in sides}
    return {"pairs": len(pairs), "error_turns": error_turns, "turns": turns, "tokens": tokens,
            "skipped_by_tokenizer": (sum(1 for p in pairs if p.pair_id not in tokenized)
                                     if tokenized is not None else 0)}


def tokenize_for_stats(pairs: Sequence[PairRecord], tokenizer, max_length: int = 4096) -> dict[str, object]:
    """pair_id -> TokenizedPair, as ``sdpo.fit`` tokenizes them (pairs that do not fit are left out)."""
    from agents.formatter import ConversationTokenizer
    from sdpo.tokenize import tokenize_pairs

    tokenized, _ = tokenize_pairs(ConversationTokenizer(tokenizer), pairs, max_length)
    return {tp.pair_id: tp for tp in tokenized}


def _describe(values: Sequence[int]) -> str:
    if not values:
        return "–"
    return (f"{statistics.fmean(values):.2f} / {statistics.median(values):g} / {min(values)}–{max(values)}")


def _histogram_rows(counter: Counter) -> list[str]:
    total = sum(counter.values())
    return [f"| {k} | {counter[k]} | {100 * counter[k] / total:.0f} % |" for k in sorted(counter)]


def report_markdown(stats: Mapping[str, dict], *, title: str, reasons: Mapping[str, Mapping[str, int]] | None = None,
                    negatives: int | None = None, on_disk: Mapping[str, int | None] | None = None,
                    plot: str | None = None, notes: Sequence[str] = ()) -> str:
    """The report (see the module doc). ``stats``: kind -> ``kind_stats``; ``reasons``: kind -> the
    write stage's counts (``pairs`` and why other negatives gave none); ``negatives``: how many
    negatives the run selected; ``on_disk``: kind -> pairs in its file now (None: no file)."""
    lines = [f"# {title}", ""]
    lines += list(notes) + ([""] if notes else [])
    header = "| kind | pairs |" + (" in the pair file |" if on_disk is not None else "")
    lines += ["## Pairs per kind", "", header, "|---|---:|" + ("---:|" if on_disk is not None else "")]
    for kind, s in stats.items():
        row = f"| {kind} | {s['pairs']} |"
        if on_disk is not None:
            row += f" {'–' if on_disk.get(kind) is None else on_disk[kind]} |"
        lines.append(row)
    if reasons:
        lines += ["", "## Negatives to pairs", ""]
        if negatives is not None:
            lines += [f"{negatives} negatives selected. For each kind, how many became a pair and why the others "
                      "did not (from the stage ledgers):", ""]
        lines += ["| kind | outcome | negatives |", "|---|---|---:|"]
        for kind, counts in reasons.items():
            lines.append(f"| {kind} | pair | {counts.get('pairs', 0)} |")
            for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
                if reason != "pairs":
                    lines.append(f"| {kind} | no pair: {reason[:100]} | {n} |")
    for kind, s in stats.items():
        if not s["pairs"]:
            continue
        lines += ["", f"## {kind}", ""]
        if s["error_turns"]:
            lines += ["Error turn: the trained agent's own turn (0 = its first) where the two sides part.", "",
                      "| error turn | pairs | share |", "|---:|---:|---:|", *_histogram_rows(s["error_turns"]), ""]
        lines += ["Segment length per side: mean / median / min–max.", "",
                  "| side | agent turns | target tokens |", "|---|---:|---:|"]
        for side, values in s["turns"].items():
            tokens = _describe(s["tokens"][side]) if s["tokens"] is not None else "not counted"
            lines.append(f"| {side} | {_describe(values)} | {tokens} |")
        sides = list(s["turns"])
        lengths = sorted({n for side in sides for n in s["turns"][side]})
        lines += ["", "| segment length (agent turns) | " + " | ".join(sides) + " |",
                  "|---:|" + "---:|" * len(sides)]
        for n in lengths:
            lines.append(f"| {n} | " + " | ".join(str(s["turns"][side].count(n)) for side in sides) + " |")
        if s["skipped_by_tokenizer"]:
            lines += ["", f"{s['skipped_by_tokenizer']} pair(s) do not fit max_length and have no token counts."]
    if plot:
        lines += ["", f"![error turns and segment lengths]({plot})"]
    return "\n".join(lines) + "\n"


def plot_pair_stats(stats: Mapping[str, dict], path: str | Path) -> Path | None:
    """One PNG: the error-turn histogram of each kind that has one, and the segment lengths (agent
    turns; target tokens when counted) of the chosen and rejected sides of the first kind with
    pairs. None (nothing drawn) when no kind has pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy
    from matplotlib.ticker import MaxNLocator

    with_pairs = {k: s for k, s in stats.items() if s["pairs"]}
    if not with_pairs:
        return None
    main_kind, main = next(iter(with_pairs.items()))
    panels = 3 if main["tokens"] is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))

    def grouped_bars(ax, series: Mapping[str, Counter]):
        keys = sorted({k for c in series.values() for k in c})
        width = 0.8 / max(len(series), 1)
        for i, (name, counter) in enumerate(series.items()):
            ax.bar([k + (i - (len(series) - 1) / 2) * width for k in keys], [counter.get(k, 0) for k in keys],
                   width=width, label=name)
        if len(keys) <= 20:
            ax.set_xticks(keys)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(min(keys) - 0.6, max(keys) + 0.6)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("pairs")
        if len(series) > 1:
            ax.legend()

    errors = {k: s["error_turns"] for k, s in with_pairs.items() if s["error_turns"]}
    if errors:
        grouped_bars(axes[0], errors)
    else:
        axes[0].text(0.5, 0.5, "no kind with an error turn", ha="center", va="center", transform=axes[0].transAxes)
    axes[0].set_title("error turn")
    axes[0].set_xlabel("trained agent's turn (0 = first)")
    grouped_bars(axes[1], {side: Counter(v) for side, v in main["turns"].items()})
    axes[1].set_title(f"{main_kind}: segment length")
    axes[1].set_xlabel("agent turns")
    if panels == 3:
        everything = [v for values in main["tokens"].values() for v in values]
        bins = numpy.histogram_bin_edges(everything, bins=min(20, max(len(set(everything)), 1)))
        for side, values in main["tokens"].items():
            axes[2].hist(values, bins=bins, alpha=0.6, label=side)
        axes[2].set_title(f"{main_kind}: segment length")
        axes[2].set_xlabel("target tokens")
        axes[2].set_ylabel("pairs")
        axes[2].yaxis.set_major_locator(MaxNLocator(integer=True))
        axes[2].legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(out_dir: str | Path, pairs_by_kind: Mapping[str, Sequence[PairRecord]], *, title: str,
                 tokenizer=None, reasons: Mapping[str, Mapping[str, int]] | None = None, negatives: int | None = None,
                 on_disk: Mapping[str, int | None] | None = None, notes: Sequence[str] = (),
                 max_length: int = 4096) -> Path:
    """Write ``summary.md`` and ``pair_stats.png`` into ``out_dir``; returns the Markdown file's path.
    With ``tokenizer``, segments are counted in target tokens too (``max_length`` as in ``sdpo.fit``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = {}
    for kind, pairs in pairs_by_kind.items():
        tokenized = tokenize_for_stats(pairs, tokenizer, max_length) if tokenizer is not None and pairs else None
        stats[kind] = kind_stats(pairs, tokenized)
    png = plot_pair_stats(stats, out_dir / PLOT_FILE)
    if png is None and (out_dir / PLOT_FILE).exists():
        (out_dir / PLOT_FILE).unlink()      # a stale plot of earlier pairs would contradict the report
    text = report_markdown(stats, title=title, reasons=reasons, negatives=negatives, on_disk=on_disk,
                           plot=PLOT_FILE if png else None, notes=notes)
    path = out_dir / REPORT_FILE
    path.write_text(text, encoding="utf-8")
    return path
