"""Pair files to and from other tools' formats.

    python -m sdpo.pairs.convert from-authors sdpo_data.json --kind sdpo --out runs/pairs/sdpo.jsonl
    python -m sdpo.pairs.convert to-authors runs/pairs/sdpo.jsonl --out sdpo_data.json
    python -m sdpo.pairs.convert to-trl runs/pairs/sdpo.jsonl --out sdpo_trl.jsonl

``from-authors`` reads a training file of the SDPO authors' release (their SFT, ETO, DMPO or
SDPO data: ShareGPT conversations, rejected and chosen matched by position) into a pair file;
``to-authors`` writes a pair file in that layout (``sdpo.pairs.authors_layout``). ``to-trl``
writes TRL's conversational preference dataset (``prompt`` / ``chosen`` / ``rejected`` message
lists, JSONL) for ``datasets.load_dataset("json", ...)`` and TRL's ``DPOTrainer``
(``sdpo.pairs.trl_export``). Every input is read and converted before anything is written; a
record that cannot be converted stops the command with one line naming the file, the line and
the field (exit code 2).
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from sdpo.pairs_schema import PAIR_KINDS, PairRecord, read_pairs
from sotopia_env.episode import read_jsonl, rewrite_jsonl

from .authors_layout import authors_records, read_authors_file, write_authors_file
from .trl_export import trl_records
from .write import write_pair_file


def _pairs_with_lines(path: str) -> tuple[list[PairRecord], list[int]]:
    """A pair file's records (validated) and the line each one is on."""
    pairs = read_pairs(path)
    return pairs, [line for line, _ in read_jsonl(path)]


def from_authors(source: str, kind: str, out: str) -> str:
    pairs = read_authors_file(source, kind)
    write_pair_file(out, pairs)
    return f"{len(pairs)} {kind} record(s) from {source} -> {out}"


def to_authors(source: str, out: str) -> str:
    pairs, lines = _pairs_with_lines(source)
    records = authors_records(pairs, path=source, lines=lines)
    write_authors_file(out, records)
    return f"{len(pairs)} pair(s) from {source} -> {len(records)} conversation record(s) in {out}"


def to_trl(source: str, out: str) -> str:
    pairs, lines = _pairs_with_lines(source)
    records = trl_records(pairs, path=source, lines=lines)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    rewrite_jsonl(out, records)
    return f"{len(records)} preference example(s) from {source} -> {out}"


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m sdpo.pairs.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    authors_in = commands.add_parser("from-authors", help="an SDPO authors' training file -> a pair file")
    authors_in.add_argument("source", help="the authors' JSON file (a list of {\"conversations\": [...]} records)")
    authors_in.add_argument("--kind", required=True, choices=PAIR_KINDS,
                            help="what the file holds (sft / preferred_sft: one session per record; the others: "
                                 "rejected then chosen)")
    authors_in.add_argument("--out", required=True, help="the pair file to write (JSONL)")
    authors_out = commands.add_parser("to-authors", help="a pair file -> the SDPO authors' training-file layout")
    authors_out.add_argument("source", help="a pair file (JSONL)")
    authors_out.add_argument("--out", required=True, help="the JSON file to write")
    trl = commands.add_parser("to-trl", help="a pair file -> TRL's conversational preference dataset (JSONL)")
    trl.add_argument("source", help="a pair file (JSONL) of a preference kind (not sft / preferred_sft)")
    trl.add_argument("--out", required=True, help="the JSONL file to write")
    args = parser.parse_args(argv)
    if args.command == "from-authors":
        summary = from_authors(args.source, args.kind, args.out)
    elif args.command == "to-authors":
        summary = to_authors(args.source, args.out)
    else:
        summary = to_trl(args.source, args.out)
    print(summary)
    return summary


if __name__ == "__main__":
    from sotopia_env.cli import main_guard

    main_guard(main)
