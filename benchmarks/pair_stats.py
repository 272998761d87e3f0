"""Statistics of pair files: pairs per kind, where the error turn falls, segment lengths.

    python -m benchmarks.pair_stats sdpo/data/demo_pairs.jsonl --out runs/pair_stats [--tokenizer embedded]

Writes ``summary.md`` and ``pair_stats.png`` into ``--out`` (the report of ``sdpo.pairs.stats``,
the one the pair pipeline writes into its run folder after every run; there it also says why
negatives gave no pair, which a bare pair file cannot tell). With ``--tokenizer`` the segments are
also counted in target tokens, as ``sdpo.fit`` tokenizes them.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from sotopia_env.errors import ConfigError


def main(argv: Sequence[str] | None = None) -> Path:
    from sdpo.pairs.stats import write_report
    from sdpo.pairs_schema import read_pairs

    parser = argparse.ArgumentParser(prog="python -m benchmarks.pair_stats", description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", nargs="+", help="pair files (JSONL, sdpo/PAIRS.md); their pairs are grouped by kind")
    parser.add_argument("--out", required=True, help="folder for summary.md and pair_stats.png")
    parser.add_argument("--tokenizer", help="also count target tokens with this model's tokenizer (embedded, a "
                                            "Hugging Face id, a local folder or an sdpo.fit checkpoint)")
    parser.add_argument("--max-length", type=int, default=4096, help="token limit per side, as sdpo.fit's max_length")
    args = parser.parse_args(argv)
    for path in args.pairs:
        if Path(path).is_dir():
            raise ConfigError(f"{path} is a folder; give pair files (a pair run's folder gets its summary.md from "
                              f"python -m sdpo.pairs out_dir={path} stage=summary)")
    if args.max_length < 1:
        raise ConfigError(f"--max-length must be >= 1, got {args.max_length}")
    tokenizer = None
    if args.tokenizer:
        from agents.models import check_model_source, load_tokenizer

        check_model_source(args.tokenizer, option="--tokenizer")
    by_kind: dict[str, list] = {}
    for path in args.pairs:
        for pair in read_pairs(path):
            by_kind.setdefault(pair.kind, []).append(pair)
    if args.tokenizer:
        tokenizer = load_tokenizer(args.tokenizer.removeprefix("hf:"))
    notes = [] if tokenizer is not None else ["Target tokens are not counted (give --tokenizer to count them)."]
    report = write_report(args.out, by_kind, title=f"Pairs of {', '.join(args.pairs)}", tokenizer=tokenizer,
                          notes=notes, max_length=args.max_length)
    print(report.read_text(encoding="utf-8"))
    print(f"report: {report}")
    return report


if __name__ == "__main__":
    from sotopia_env.cli import main_guard

    main_guard(main)
