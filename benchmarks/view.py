"""See what happened: one static HTML report of episodes, branches, pairs and benchmark results.

    python -m benchmarks.view runs/sotopia/embedded__self__local__test runs/pairs --out report.html

It reads only files (the top of the data flow), any mix of:

* episode stores (``episodes.jsonl``, ``branches.jsonl``, ``scratch_episodes.jsonl``, a benchmark's
  store): a table that sorts and filters, and each episode as a conversation with both
  backgrounds as each seat saw them and the judge's scores and reasoning;
* branches (episodes with a ``parent_episode_id``): each parent with its continuations from the
  branch turn, the shared history once, the kept continuation (from the ``sdpo.pairs`` ledgers
  ``sample.jsonl`` / ``scratch.jsonl`` or a pair's provenance) marked;
* pair files (``pairs_*.jsonl``): history once, chosen and rejected side by side, the error turn
  and the segment highlighted, the judge's reasons;
* benchmark result folders (``results.json``): the results table and the folder's PNG plots.

A folder is searched recursively; a file is recognised by its first record, so renamed files
work too. The page is one file that opens from disk: CSS, JavaScript, data and plots (as data
URIs) inline, nothing fetched (its Content-Security-Policy forbids it). Long lists are paged.
Text from models and data files never reaches the page as markup: the data sits in a
``<script type="application/json">`` block with ``<``, ``>`` and ``&`` written as ``\\u003c``...,
and the page builds every element with ``textContent``.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import results as bench_results
from sdpo.pairs_schema import PAIR_KINDS, PairRecord, read_pairs
from sotopia_env.builtin import SPLITS
from sotopia_env.episode import EpisodeRecord, EpisodeStore, Turn, read_jsonl
from sotopia_env.errors import ConfigError
from sotopia_env.evaluation import DIMENSIONS
from sotopia_env.profiles import Task
from sotopia_env.render import background

ASSETS = Path(__file__).with_name("view_assets")
FILE_KINDS = ("episodes", "pairs", "ledger", "results")
"""What a file can be: an episode store, a pair file, a stage ledger of ``sdpo.pairs``, a results.json."""
PNG_PREFIX = "data:image/png;base64,"


@dataclass
class Sources:
    """Everything read from the given paths, each file once."""

    episodes: list[tuple[str, EpisodeRecord]] = field(default_factory=list)
    pairs: list[tuple[str, PairRecord]] = field(default_factory=list)
    kept: set[str] = field(default_factory=set)
    """Episode ids of continuations kept as positives."""
    results: list[Path] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)
    """One ``{"path", "kind", "records"}`` per file read, in reading order."""


# --- Reading ---------------------------------------------------------------------------------

def file_kind(path: Path) -> str | None:
    """Which of ``FILE_KINDS`` a file holds, from its first record; ``"empty"`` for a JSONL file
    with no record; None for anything else."""
    if path.suffix == ".json":
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return "results" if isinstance(doc, dict) and isinstance(doc.get("summaries"), list) else None
    if path.suffix != ".jsonl":
        return None
    first = next(iter(read_jsonl(path)), None)
    if first is None:
        return "empty"
    keys = set(first[1])
    if {"pair_id", "kind", "chosen"} <= keys:
        return "pairs"
    if {"episode_id", "task", "turns"} <= keys:
        return "episodes"
    if {"key", "status"} <= keys:
        return "ledger"
    return None


def candidate_files(path: Path) -> list[Path]:
    """The files a path stands for: itself, or a folder's JSONL files and results.json files."""
    if path.is_dir():
        return sorted([*path.rglob("*.jsonl"), *path.rglob("results.json")])
    return [path]


def read_sources(paths: Sequence[str]) -> Sources:
    """Read every file the paths stand for. A path that does not exist, or a file given by name
    that is none of ``FILE_KINDS``, is a ConfigError; unknown files inside a folder are skipped."""
    sources, seen = Sources(), set()
    for name in paths:
        path = Path(name)
        if not path.exists():
            raise ConfigError(f"{name}: no such file or folder (give episode stores, pair files or result folders)")
        for file in candidate_files(path):
            kind = file_kind(file)
            if kind is None and file == path:
                raise ConfigError(f"{name}: not an episode store, pair file, stage ledger or results.json")
            if kind in (None, "empty") or file.resolve() in seen:
                continue
            seen.add(file.resolve())
            sources.files.append({"path": str(file), "kind": kind, "records": _read_file(sources, file, kind)})
    if not (sources.episodes or sources.pairs or sources.results):
        raise ConfigError(f"found no episodes, pairs or results in {', '.join(paths)}")
    return sources


def _read_file(sources: Sources, file: Path, kind: str) -> int:
    """Add one file's records to ``sources``; returns how many it held."""
    if kind == "episodes":
        records = list(EpisodeStore(file))
        sources.episodes += [(str(file), r) for r in records]
        return len(records)
    if kind == "pairs":
        pairs = read_pairs(file)
        sources.pairs += [(str(file), p) for p in pairs]
        sources.kept |= {p.provenance["positive_episode"] for p in pairs
                         if isinstance(p.provenance.get("positive_episode"), str)}
        return len(pairs)
    if kind == "ledger":
        entries = [obj for _, obj in read_jsonl(file)]
        sources.kept |= {e["positive"] for e in entries if e.get("status") == "kept" and isinstance(e.get("positive"), str)}
        return len(entries)
    sources.results.append(file)
    return 1


# --- The page's data -------------------------------------------------------------------------

class TaskTable:
    """Tasks shared by many episodes and pairs, stored once in the page and referred to by index."""

    def __init__(self):
        self.rows: list[dict] = []
        self._index: dict[str, int] = {}

    def add(self, task: Task) -> int:
        key = json.dumps(task.to_dict(), sort_keys=True)
        if key not in self._index:
            self._index[key] = len(self.rows)
            self.rows.append(task_entry(task))
        return self._index[key]


def split_of(task: Task) -> str:
    """The task's built-in split(s) from its scenario's tags (``""`` when it names none)."""
    return ",".join(t for t in task.scenario.tags if t in SPLITS)


def task_entry(task: Task) -> dict:
    """A task as the page shows it: names, scenario, goals and what each seat saw before turn 0."""
    return {"pk": task.pk, "codename": task.scenario.codename, "scenario": task.scenario.scenario,
            "split": split_of(task), "names": task.agent_names, "relationship": task.scenario.relationship.name,
            "backgrounds": [background(task, seat) for seat in (0, 1)]}


def turn_row(turn: Turn) -> list:
    """A turn as a compact row: turn, seat, speaker, action type, text, prompt and completion tokens."""
    return [turn.turn, turn.agent_index, turn.speaker, turn.action_type, turn.argument, turn.prompt_tokens,
            turn.completion_tokens]


def episode_entry(source: str, record: EpisodeRecord, task: int, kept: set[str]) -> dict:
    """One episode for the page (scores and reasoning per seat in ``DIMENSIONS`` order)."""
    ev = record.evaluation
    agents = ev.agents if ev is not None and ev.evaluated else None
    return {"id": record.episode_id, "src": source, "t": task, "models": list(record.models),
            "term": record.termination, "seats": record.agent_seats(), "seed": record.seed,
            "parent": record.parent_episode_id,
            "bt": (record.branch_turn or 0) if record.parent_episode_id else None,
            "kept": record.episode_id in kept, "turns": [turn_row(t) for t in record.turns],
            "scores": [[a.scores[d] for d in DIMENSIONS] for a in agents] if agents else None,
            "reasoning": [[a.reasoning.get(d, "") for d in DIMENSIONS] for a in agents] if agents else None,
            "judge": ev.judge if ev else "", "comment": ev.comment if ev else "",
            "error": (ev.error or "") if ev else "not judged"}


def branch_trees(episodes: Sequence[dict]) -> list[dict]:
    """Each parent with its continuations grouped by branch turn: ``{"parent": id, "index": its
    position in ``episodes`` or None when its store was not given, "forks": [{"turn", "children"}]}``."""
    index = {e["id"]: i for i, e in enumerate(episodes)}
    trees: dict[str, dict[int, list[int]]] = {}
    for i, e in enumerate(episodes):
        if e["parent"] is not None:
            trees.setdefault(e["parent"], {}).setdefault(e["bt"], []).append(i)
    return [{"parent": parent, "index": index.get(parent),
             "forks": [{"turn": turn, "children": forks[turn]} for turn in sorted(forks)]}
            for parent, forks in trees.items()]


def pair_entry(source: str, pair: PairRecord, task: int) -> dict:
    """One pair for the page: turns, segment spans, scores and the judge's reasons."""
    prov = pair.provenance
    error = prov.get("error_turn") if isinstance(prov.get("error_turn"), dict) else {}
    segment = prov.get("segment") if isinstance(prov.get("segment"), dict) else {}
    spans = {side: list(span) if span else None for side, span in pair.segment.items()}
    return {"id": pair.pair_id, "kind": pair.kind, "src": source, "t": task, "seat": pair.agent_index,
            "history": [turn_row(t) for t in pair.history], "chosen": [turn_row(t) for t in pair.chosen],
            "rejected": None if pair.rejected is None else [turn_row(t) for t in pair.rejected],
            "segment": spans, "seglen": {side: (s[1] - s[0] + 1) if s else None for side, s in spans.items()},
            "error_turn": pair.history_agent_turns, "scores": pair.scores,
            "error_reason": str(error.get("reason") or ""), "segment_reason": str(segment.get("reason") or ""),
            "segment_source": str(prov.get("segment_source") or ""),
            "model": str(prov.get("trained_seat_model") or "")}


def png_uri(path: Path) -> str:
    return PNG_PREFIX + base64.b64encode(path.read_bytes()).decode("ascii")


def results_entry(path: Path) -> dict:
    """A results.json as the page shows it: the table of ``benchmarks.results`` and the folder's plots."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    summaries = bench_results.summaries_from_document(doc)
    columns = bench_results.COLUMNS
    rows = [[s.model, s.role, s.subset, s.seat, s.n_episodes] + [s.columns[c].format(2) for c in columns]
            for s in summaries]
    return {"path": str(path), "counts": doc.get("counts", {}),
            "header": ["model", "role", "tasks", "seat", "n"] + [bench_results.SHORT_NAMES[c] for c in columns],
            "rows": rows, "plots": [{"name": p.name, "uri": png_uri(p)} for p in sorted(path.parent.glob("*.png"))]}


def report_data(sources: Sources) -> dict:
    """The JSON document the page renders."""
    tasks = TaskTable()
    episodes = [episode_entry(src, rec, tasks.add(rec.task), sources.kept) for src, rec in sources.episodes]
    pairs = [pair_entry(src, pair, tasks.add(pair.task)) for src, pair in sources.pairs]
    return {"generated": time.strftime("%Y-%m-%d %H:%M:%S"), "files": sources.files,
            "dimensions": list(DIMENSIONS), "short": [bench_results.SHORT_NAMES[d] for d in DIMENSIONS],
            "pair_kinds": list(PAIR_KINDS), "tasks": tasks.rows, "episodes": episodes,
            "branches": branch_trees(episodes), "pairs": pairs,
            "results": [results_entry(p) for p in sources.results]}


# --- The page --------------------------------------------------------------------------------

def script_json(data: dict) -> str:
    """``data`` as JSON that is safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` left
    (``\\u003c``..., which JSON.parse reads back as the same characters)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def render_html(data: dict, *, title: str = "SOTOPIA-SDPO report") -> str:
    """The whole page. The Content-Security-Policy lets only our own script (by its hash) run and
    only data: images load, so nothing is fetched and injected markup could not run either."""
    css = (ASSETS / "view.css").read_text(encoding="utf-8")
    js = (ASSETS / "view.js").read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode("ascii")
    policy = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'"
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>", f"<style>\n{css}</style>", "</head>", "<body>",
        f'<script type="application/json" id="report-data">{script_json(data)}</script>',
        f"<script>{js}</script>", "</body>", "</html>", ""])


def write_report(paths: Sequence[str], out: str | Path, *, title: str = "SOTOPIA-SDPO report") -> dict:
    """Read ``paths``, write the page to ``out``; returns the counts shown in the page."""
    data = report_data(read_sources(paths))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(data, title=title), encoding="utf-8")
    return counts(data)


def counts(data: dict) -> dict[str, int]:
    """How many of each thing the page holds (the numbers on its tabs)."""
    return {"episodes": len(data["episodes"]), "branches": sum(e["parent"] is not None for e in data["episodes"]),
            "pairs": len(data["pairs"]), "results": len(data["results"])}


def main(argv: Iterable[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.view", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="episode stores, pair files, stage ledgers, results.json files or "
                                                 "folders holding them (searched recursively)")
    parser.add_argument("--out", default="report.html", help="the HTML file to write (default: report.html)")
    parser.add_argument("--title", default="SOTOPIA-SDPO report", help="the page's title")
    args = parser.parse_args(None if argv is None else list(argv))
    shown = write_report(args.paths, args.out, title=args.title)
    print(f"{args.out}: " + ", ".join(f"{v} {k}" for k, v in shown.items()))
    return shown


if __name__ == "__main__":
    from sotopia_env.cli import main_guard

    main_guard(main)
