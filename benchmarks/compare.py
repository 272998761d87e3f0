"""Several SOTOPIA runs side by side, in the layout of the SDPO paper's Table 1.

    python -m benchmarks.compare runs/sotopia/a runs/sotopia/b ... [--dims goal relationship]
                                 [--ci] [--out table.md] [--plot-dir DIR] [--paper]

Each argument is a run folder written by ``python -m benchmarks.sotopia`` (or its
``results.json``). Rows are agents (the run's ``name``, else its agent model); column groups
are the interaction settings (``self-chat``, ``vs <partner>``; qualified when a run departs
from the paper's setting: ``(N turns)`` for a turn limit other than SOTOPIA's 20, ``native
prompts``, ``judge <model>`` for a judge other than GPT-4o), each split into the ``all``
tasks and the ``hard`` subset, each with the chosen dimensions (default goal and
relationship, the paper's two). Runs of the same agent against different partners fill
the same row. The best mean of each column (of two or more) is in bold. With ``--plot-dir`` the runs' scores
per dimension and their average output length per turn (the paper's Figure 3) are also
drawn side by side, one bar / line per run.

With ``--paper`` the SDPO paper's published numbers (Table 1, all tasks; Table 9, the hard subset;
``benchmarks/data/paper_table1.json`` names the source) follow in a block of their own, every
column marked ``published``: they come from other models, prompts and judge calls, so they never
share a row, a column or a bold mark with our runs.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sotopia_env.errors import ConfigError, DataError
from sotopia_env.evaluation import DIMENSIONS

from .results import COLUMNS, OVERALL, SHORT_NAMES, SUBSETS, MeanCI, summaries_from_document

RESULTS_FILE = "results.json"
PAPER_TABLE = Path(__file__).parent / "data" / "paper_table1.json"


@dataclass
class RunResult:
    """One run's agent label, interaction setting and agent summaries by subset."""

    label: str
    setting: str
    by_subset: dict[str, MeanCI | dict]
    path: Path
    doc: dict

    @property
    def name(self) -> str:
        return f"{self.label} ({self.setting})"


SOTOPIA_MAX_TURNS = 20
PAPER_PROMPT_STYLE = "sotopia"
PAPER_JUDGES = ("gpt-4o", "openai/gpt-4o")


def setting_name(config: dict) -> str:
    """``self-chat`` or ``vs <partner model>``, qualified by what departs from the paper's setting
    (SOTOPIA's 20 turns, SOTOPIA's prompts, GPT-4o as judge), so that runs whose scores cannot sit
    in one column never share one: ``self-chat (10 turns)``, ``vs gpt-4o (native prompts, judge
    local)``."""
    partner = config.get("partner", "self")
    name = "self-chat" if partner in ("self", None, "") else f"vs {partner}"
    notes = []
    turns = config.get("max_turns", SOTOPIA_MAX_TURNS)
    if turns != SOTOPIA_MAX_TURNS:
        notes.append(f"{turns} turns")
    style = config.get("prompt_style", "native")
    if style != PAPER_PROMPT_STYLE:
        notes.append(f"{style} prompts")
    judge = config.get("judge")
    if judge and judge not in PAPER_JUDGES:
        notes.append(f"judge {judge}")
    return f"{name} ({', '.join(notes)})" if notes else name


def load_run(path: str | Path) -> RunResult:
    """Read a run folder's (or a file's) results document into a RunResult."""
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    if not file.exists():
        run_dir = path.parent if path.suffix == ".json" else path
        raise DataError(f"no {RESULTS_FILE} here; run `python -m benchmarks.sotopia output_dir={run_dir}` first "
                        "(it writes results.json at the end)", path=str(file))
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON: {e}", path=str(file)) from None
    if not isinstance(doc, dict) or "summaries" not in doc:
        raise DataError("not a results document (no 'summaries')", path=str(file))
    config = doc.get("config", {})
    rows = [s for s in summaries_from_document(doc) if s.role == "agent" and s.seat == "all"]
    agent_model = config.get("agent") or (rows[0].model if rows else "?")
    label = config.get("name") or agent_model
    by_subset = {}
    for s in rows:
        # A run has one tested model; if a file holds several, the agent's own id wins.
        if s.subset not in by_subset or s.model == agent_model:
            by_subset[s.subset] = s.columns
    return RunResult(label=label, setting=setting_name(config), by_subset=by_subset, path=file, doc=doc)


def compare_plots(runs: Sequence[RunResult], plot_dir: str | Path) -> list[Path]:
    """Scores per dimension (all tasks) and output length per turn of every run, one bar / line
    per run named ``label (setting)``; returns the PNG paths."""
    from . import plots
    from .results import Summary

    summaries, lengths = [], {}
    for run in runs:
        agent = run.doc.get("config", {}).get("agent")
        for s in summaries_from_document(run.doc):
            if s.role == "agent" and s.seat == "all" and s.subset == "all":
                summaries.append(Summary(run.name, s.role, s.subset, s.seat, s.n_episodes, s.n_tasks, s.columns))
        per_model = run.doc.get("output_length_per_turn", {})
        if agent in per_model:
            lengths[run.name] = per_model[agent]
        elif len(per_model) == 1:
            lengths[run.name] = next(iter(per_model.values()))
    plot_dir = Path(plot_dir)
    return [plots.plot_dimensions(summaries, plot_dir / "compare_scores.png"),
            plots.plot_output_length(lengths, plot_dir / "compare_output_length.png")]


def compare_table(runs: Sequence[RunResult], *, dims: Sequence[str] = ("goal", "relationship"),
                  subsets: Sequence[str] = SUBSETS, ci: bool = False, digits: int = 2) -> str:
    """The Table-1 Markdown table of ``runs``: one row per agent label, one column per
    (setting, subset, dimension); the best mean of each column in bold."""
    for d in dims:
        if d not in COLUMNS:
            raise ConfigError(f"unknown dimension {d!r}; allowed: {', '.join(COLUMNS)}")
    settings: list[str] = []
    labels: list[str] = []
    cells: dict[tuple[str, str], RunResult] = {}
    for run in runs:
        if run.setting not in settings:
            settings.append(run.setting)
        if run.label not in labels:
            labels.append(run.label)
        if (run.label, run.setting) in cells:
            raise ConfigError(f"two runs of agent {run.label!r} in setting {run.setting!r}: "
                              f"{cells[(run.label, run.setting)].path} and {run.path}; give them different "
                              "names (name=... when running benchmarks.sotopia)")
        cells[(run.label, run.setting)] = run
    # self-chat first, as in the paper
    settings = sorted(settings, key=lambda s: (not s.startswith("self-chat"), settings.index(s)))
    columns = [(st, sub, d) for st in settings for sub in subsets for d in dims]

    def value(label, column) -> MeanCI | None:
        st, sub, d = column
        run = cells.get((label, st))
        if run is None or sub not in run.by_subset:
            return None
        return run.by_subset[sub].get(d)

    best = {}
    for col in columns:
        means = [v.mean for v in (value(lb, col) for lb in labels) if v is not None and v.mean is not None]
        best[col] = max(means) if len(means) >= 2 else None  # bold only where there is a contest
    header = ["agent"] + [f"{st} · {sub} · {SHORT_NAMES.get(d, d)}" for st, sub, d in columns]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "|".join(["---:"] * len(columns)) + "|"]
    for lb in labels:
        row = [lb]
        for col in columns:
            v = value(lb, col)
            if v is None or v.mean is None:
                row.append("–")
                continue
            text = f"{v.mean:.{digits}f}"
            if best[col] is not None and v.mean == best[col]:
                text = f"**{text}**"
            if ci and v.half_width is not None:
                text += f" ± {v.half_width:.{digits}f}"
            row.append(text)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def paper_table(*, dims: Sequence[str] = ("goal", "relationship"), subsets: Sequence[str] = SUBSETS,
                digits: int = 2, path: str | Path = PAPER_TABLE) -> str:
    """The published block: a line citing the source and setting, then one row per published agent,
    one column per (setting, subset, dimension) the paper reports among ``dims``, each header
    starting ``published ·``. No bold: the contest is the paper's own."""
    for d in dims:
        if d not in COLUMNS:
            raise ConfigError(f"unknown dimension {d!r}; allowed: {', '.join(COLUMNS)}")
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    tables = "; ".join(doc["tables"][sub] for sub in subsets)
    lines = [f"Published (not our runs): {doc['source']}: {tables}. {doc['setting']}."]
    shown = [d for d in dims if d in doc["dims"]]
    if not shown:
        return "\n".join(lines + ["", f"(the paper publishes {' and '.join(doc['dims'])} only)"])
    columns = [(st, sub, d) for st in doc["settings"] for sub in subsets for d in shown]
    header = ["published agent"] + [f"published · {st} · {sub} · {SHORT_NAMES.get(d, d)}" for st, sub, d in columns]
    lines += ["", "| " + " | ".join(header) + " |", "|---|" + "|".join(["---:"] * len(columns)) + "|"]
    for row in doc["rows"]:
        cells = [row["agent"]] + [f"{row[sub][st][doc['dims'].index(d)]:.{digits}f}" for st, sub, d in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", help="run folders of benchmarks.sotopia (or their results.json)")
    parser.add_argument("--dims", nargs="+", default=["goal", "relationship"],
                        help=f"columns to show; allowed: {', '.join(DIMENSIONS + (OVERALL,))}")
    parser.add_argument("--subsets", nargs="+", default=list(SUBSETS), choices=list(SUBSETS))
    parser.add_argument("--ci", action="store_true", help="append the 95 %% CI half-width to each mean")
    parser.add_argument("--out", help="also write the table to this Markdown file")
    parser.add_argument("--plot-dir", help="also draw compare_scores.png and compare_output_length.png here")
    parser.add_argument("--paper", action="store_true", help="also show the SDPO paper's published Table 1 / "
                                                             "Table 9 numbers, in a block of their own")
    args = parser.parse_args(argv)
    if not args.runs and not args.paper:
        raise ConfigError("give run folders of benchmarks.sotopia, --paper, or both")
    runs = [load_run(p) for p in args.runs]
    blocks = [compare_table(runs, dims=args.dims, subsets=args.subsets, ci=args.ci)] if runs else []
    if args.paper:
        blocks.append(paper_table(dims=args.dims, subsets=args.subsets))
    table = "\n\n".join(blocks)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n", encoding="utf-8")
    if args.plot_dir and runs:
        for path in compare_plots(runs, args.plot_dir):
            print(f"plot: {path}")
    return table


if __name__ == "__main__":
    from sotopia_env.cli import main_guard

    main_guard(main)
