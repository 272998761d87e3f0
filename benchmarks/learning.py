"""Does the loop learn? The whole SDPO loop, end to end, on tasks whose goal a rule can check,
and the trained agents' goal score on held-out tasks beside the base model's.

    python -m benchmarks.learning                       # the measured run (benchmarks/RESULTS.md)
    python -m benchmarks.learning methods=[sdpo] eval_tasks=16    # SDPO alone, half the held-out tasks

Every step is the real command on real files, run as a subprocess:

1. ``python -m sdpo.pairs`` on the training tasks of ``benchmarks/data/learning`` (scenarios
   tagged ``train``), judged by the rules judge (``models.judge=rules``, ``agents.rules_judge``:
   goal 10 when the agent addresses its partner by first name, else 0; the error turn and the
   segment by the same rule): collect, negatives, error turn, branch sampling, segment, and the
   pair files of every method from the same negatives (``pairs_<kind>.jsonl``).
2. ``python -m sdpo.fit`` (LoRA) once per method on its pair file.
3. ``python -m benchmarks.sotopia`` with ``judge=rules`` on the held-out tasks (scenarios tagged
   ``heldout``: other scenarios, other characters, other names), once with the base model and once
   with each trained run's folder as the agent.

Outputs in ``out_dir``: the stage folders (``pairs/``, ``fit/<method>/``, ``eval/<model>/``),
their logs (``logs/``), and the report: ``learning.md`` (the table: goal and believability per
model with 95 % intervals over episodes, pairs trained on, wall time per stage), ``learning.json``
and ``learning.png``. Every stage resumes, so running the same command again only does what is
missing; the wall times add up over invocations.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sotopia_env.errors import ConfigError

from .results import summaries_from_document

DATA_DIR = Path(__file__).resolve().parent / "data" / "learning"
"""The rule tasks: ``scenarios.jsonl`` (tags ``train`` / ``heldout``), ``profiles.jsonl``, ``combos.jsonl``."""
PAIR_KIND = {"sdpo": "sdpo", "dpo": "dpo", "eto": "eto", "dmpo": "dmpo", "preferred_sft": "preferred_sft",
             "sft": "sft"}
"""Method (sdpo.fit's loss) -> the pair file it trains on (pairs_<kind>.jsonl); one pair kind per loss."""
BASE = "base"


@dataclass
class LearningConfig:
    """``python -m benchmarks.learning`` settings."""

    out_dir: str = "runs/learning"
    """Where every stage's folder, the logs and the report go (a rerun resumes there)."""
    methods: list[str] = field(default_factory=lambda: ["sdpo", "dpo", "preferred_sft", "sft"])
    """Training methods (sdpo.fit losses), each on its own pair file from the same run of sdpo.pairs,
    trained and evaluated in this order: sdpo, dpo, eto, dmpo, preferred_sft, sft. eto and dmpo add
    the scratch stage (scratch_n sessions from the start per negative), the costliest on a CPU."""
    judge: str = "rules"
    """The judge of every stage (rules or rules:<rule>, agents.rules_judge)."""
    train_tasks: int | None = None
    """Use only the first N training tasks (null: all 24)."""
    eval_tasks: int | None = None
    """Evaluate on only the first N held-out tasks (null: all 32)."""
    repeats: int = 2
    """Sessions per training task in the collect stage."""
    max_turns: int = 3
    """Turn limit of every episode (collect, sampling, evaluation)."""
    max_new_tokens: int = 24
    """Reply budget of one turn."""
    max_negatives: int | None = None
    """At most this many negatives (sdpo.pairs negatives.max_negatives; null: every one)."""
    sample_n: int = 4
    """Continuations sampled from the error turn per negative (sdpo.pairs sample.n)."""
    scratch_n: int = 2
    """Sessions sampled from the start per negative for ETO / DMPO (sdpo.pairs scratch.n)."""
    concurrency: int = 32
    """Episodes played at once (one generation batch)."""
    lr: float = 2e-4
    """Peak learning rate of every fit (LoRA)."""
    beta: float = 0.1
    """KL strength of the preference losses."""
    epochs: int = 4
    """Passes over each pair file."""
    batch_size: int = 4
    """Pairs per optimizer step."""
    temperature: float = 0.7
    """Sampling temperature of the evaluation (and of the collect stage)."""
    seed: int = 11
    """Seed of pairs, fits and evaluation (11: sdpo.pairs' default)."""
    progress: bool = True
    """Show each stage's progress bars."""

    def __post_init__(self):
        from agents.rules_judge import is_rules_judge, rule_of

        if not self.methods:
            raise ConfigError(f"methods: give at least one of {', '.join(PAIR_KIND)}")
        for method in self.methods:
            if method not in PAIR_KIND:
                raise ConfigError(f"methods: {method!r} is not allowed; allowed: {', '.join(PAIR_KIND)}")
        if not is_rules_judge(self.judge):
            raise ConfigError(f"judge={self.judge}: this benchmark needs a rules judge (rules or rules:<rule>)")
        rule_of(self.judge)
        for name in ("train_tasks", "eval_tasks", "max_negatives"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be a positive number of tasks or null (all), got {value}")
        for name in ("repeats", "max_turns", "max_new_tokens", "sample_n", "scratch_n", "concurrency", "epochs",
                     "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.beta <= 0:
            raise ConfigError(f"lr and beta must be > 0, got lr={self.lr}, beta={self.beta}")


def _task_options(prefix: str, tag: str) -> list[str]:
    return [f"{prefix}tasks=files", f"{prefix}scenarios={DATA_DIR / 'scenarios.jsonl'}",
            f"{prefix}profiles={DATA_DIR / 'profiles.jsonl'}", f"{prefix}combos={DATA_DIR / 'combos.jsonl'}",
            f"{prefix}task_tags=[{tag}]"]


def _null(value) -> str:
    return "null" if value is None else str(value)


def pairs_command(cfg: LearningConfig) -> list[str]:
    kinds = sorted({PAIR_KIND[m] for m in cfg.methods}, key=list(PAIR_KIND.values()).index)
    return [sys.executable, "-m", "sdpo.pairs", f"out_dir={Path(cfg.out_dir) / 'pairs'}",
            *_task_options("collect.", "train"), f"collect.max_tasks={_null(cfg.train_tasks)}",
            f"collect.repeats={cfg.repeats}", f"collect.max_turns={cfg.max_turns}",
            f"collect.temperature={cfg.temperature}", f"models.judge={cfg.judge}",
            f"models.max_new_tokens={cfg.max_new_tokens}", f"models.max_concurrency={cfg.concurrency}",
            f"negatives.max_negatives={_null(cfg.max_negatives)}", f"sample.n={cfg.sample_n}", f"scratch.n={cfg.scratch_n}", f"write.kinds=[{','.join(kinds)}]",
            f"seed={cfg.seed}", f"progress={str(cfg.progress).lower()}"]


def fit_command(cfg: LearningConfig, method: str) -> list[str]:
    out = Path(cfg.out_dir)
    return [sys.executable, "-m", "sdpo.fit", f"data={out / 'pairs' / f'pairs_{PAIR_KIND[method]}.jsonl'}",
            f"loss={method}", "lora=true", f"lr={cfg.lr}", f"beta={cfg.beta}", f"epochs={cfg.epochs}",
            f"batch_size={cfg.batch_size}", "micro_batch_size=2", "warmup_ratio=0.1", f"seed={cfg.seed}",
            f"output_dir={out / 'fit' / method}", f"progress={str(cfg.progress).lower()}"]


def eval_command(cfg: LearningConfig, name: str) -> list[str]:
    out = Path(cfg.out_dir)
    agent = "embedded" if name == BASE else str(out / "fit" / name)
    return [sys.executable, "-m", "benchmarks.sotopia", f"agent={agent}", f"name={name}", "partner=self",
            f"judge={cfg.judge}", *_task_options("", "heldout"), f"limit={_null(cfg.eval_tasks)}",
            f"max_turns={cfg.max_turns}", f"max_new_tokens={cfg.max_new_tokens}",
            f"temperature={cfg.temperature}", f"concurrency={cfg.concurrency}", f"seed={cfg.seed}",
            f"output_dir={out / 'eval' / name}", f"progress={str(cfg.progress).lower()}"]


class Stages:
    """Runs each stage's command with its output in ``logs/<stage>.log`` and keeps the wall time of
    every stage, summed over invocations, in ``timings.json``."""

    def __init__(self, out: Path):
        self.out = out
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.path = out / "timings.json"
        self.seconds: dict[str, float] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def run(self, stage: str, command: list[str]) -> None:
        log = self.logs / f"{stage.replace(' ', '_')}.log"
        print(f"[{stage}] {' '.join(command[1:])}  (log: {log})", file=sys.stderr, flush=True)
        start = time.perf_counter()
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"$ {' '.join(command)}\n")
            f.flush()
            # the child's output (its progress bars too) goes to the log: `tail -f` it to follow a stage
            code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=os.environ.copy()).returncode
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
        self.path.write_text(json.dumps(self.seconds, indent=2) + "\n")
        if code != 0:
            tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
            raise ConfigError(f"stage {stage} failed (exit {code}): {tail[0] if tail else ''} -- see {log}")


def count_lines(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip()) if path.exists() else 0


def agent_row(results_json: Path) -> dict:
    """The agent's all-tasks, all-seats row of a benchmarks.sotopia results file: n and every column's
    mean and 95 % interval."""
    doc = json.loads(results_json.read_text(encoding="utf-8"))
    rows = [s for s in summaries_from_document(doc) if s.role == "agent" and s.subset == "all" and s.seat == "all"]
    if len(rows) != 1:
        raise ConfigError(f"{results_json}: expected one agent row over all tasks, found {len(rows)}")
    return {"n": rows[0].n_episodes, "columns": {c: asdict(v) for c, v in rows[0].columns.items()}}


def run_learning(cfg: LearningConfig) -> dict:
    """Run (or resume) every stage: the pairs, then the base's evaluation, then each method's fit and
    evaluation in turn; the report (learning.md / .json / .png) is rewritten after each evaluation,
    so a run stopped part-way has the models done so far. Returns the report document."""
    out = Path(cfg.out_dir)
    stages = Stages(out)
    stages.run("pairs", pairs_command(cfg))
    pairs = {m: count_lines(out / "pairs" / f"pairs_{PAIR_KIND[m]}.jsonl") for m in cfg.methods}
    models: dict[str, dict] = {}
    doc: dict = {}
    for name in [BASE, *cfg.methods]:
        if name != BASE:
            if pairs[name] == 0:
                print(f"[fit {name}] skipped: no pairs", file=sys.stderr)
                continue
            stages.run(f"fit {name}", fit_command(cfg, name))
        stages.run(f"eval {name}", eval_command(cfg, name))
        models[name] = agent_row(out / "eval" / name / "results.json")
        doc = {"config": asdict(cfg), "pairs": pairs, "models": models, "seconds": stages.seconds,
               "verdicts": verdicts(models)}
        (out / "learning.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        (out / "learning.md").write_text(markdown(doc) + "\n", encoding="utf-8")
        plot(doc, out / "learning.png")
    return doc


def verdicts(models: dict[str, dict]) -> dict[str, str]:
    """Per trained model: ``above`` / ``below`` the base's goal with non-overlapping 95 % intervals,
    else ``overlapping``."""
    base = models.get(BASE, {}).get("columns", {}).get("goal")
    out = {}
    for name, row in models.items():
        goal = row["columns"]["goal"]
        if name == BASE or base is None or goal["ci_low"] is None or base["ci_low"] is None:
            continue
        out[name] = ("above" if goal["ci_low"] > base["ci_high"] else
                     "below" if goal["ci_high"] < base["ci_low"] else "overlapping")
    return out


def _cell(column: dict) -> str:
    if column["mean"] is None:
        return "–"
    if column["half_width"] is None:
        return f"{column['mean']:.2f}"
    return f"{column['mean']:.2f} ± {column['half_width']:.2f} [{column['ci_low']:.2f}, {column['ci_high']:.2f}]"


def markdown(doc: dict) -> str:
    """The report's table: one row per model, then the wall time of each stage."""
    seconds = doc["seconds"]
    lines = ["| model | pairs trained on | n (held-out episodes) | GOAL (95 % CI) | BEL (95 % CI) | vs base | "
             "fit wall time | eval wall time |", "|---|---:|---:|---|---|---|---:|---:|"]
    for name, row in doc["models"].items():
        c = row["columns"]
        fit = seconds.get(f"fit {name}")
        lines.append(f"| {name} | {doc['pairs'].get(name, '–')} | {row['n']} | {_cell(c['goal'])} | "
                     f"{_cell(c['believability'])} | {doc['verdicts'].get(name, '–')} | "
                     f"{f'{fit:.0f} s' if fit is not None else '–'} | {seconds.get(f'eval {name}', 0):.0f} s |")
    untrained = [m for m, n in doc["pairs"].items() if n == 0]
    if untrained:
        lines.append(f"\nNot trained (no pairs): {', '.join(untrained)}.")
    total = sum(seconds.values())
    lines.append(f"\nWall time: pairs (sdpo.pairs, every stage) {seconds.get('pairs', 0):.0f} s; "
                 f"all stages {total:.0f} s ({total / 60:.1f} min).")
    return "\n".join(lines)


def plot(doc: dict, path: Path) -> Path:
    """Goal and believability per model, bars with their 95 % intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(doc["models"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, column, label in zip(axes, ("goal", "believability"), ("goal (rule)", "believability (rule)")):
        cols = [doc["models"][n]["columns"][column] for n in names]
        means = [c["mean"] or 0.0 for c in cols]
        errors = [c["half_width"] or 0.0 for c in cols]
        ax.bar(names, means, yerr=errors, capsize=4, color=["#999999"] + ["#4c72b0"] * (len(names) - 1))
        ax.set_ylim(0, 10)
        ax.set_title(f"{label}, held-out tasks")
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle("benchmarks.learning: mean and 95 % CI over episodes")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    from sotopia_env import cli

    def task(cfg: LearningConfig) -> None:
        doc = run_learning(cfg)
        out = Path(cfg.out_dir)
        print(markdown(doc))
        print(f"report: {out / 'learning.md'}\nplot: {out / 'learning.png'}\nJSON: {out / 'learning.json'}")

    cli.run("benchmarks.learning", LearningConfig, task, summary=__doc__.split("\n\n")[0],
            config_name="learning", hydra_defaults=["hydra.run.dir=.", "hydra.output_subdir=null",
                                                    "hydra/job_logging=none", "hydra/hydra_logging=none"])


if __name__ == "__main__":
    main()
