"""SOTOPIA results from episode records: per-model scores on the seven dimensions and their
mean ("overall"), each a mean with a 95 % confidence interval, for all tasks and the hard
subset; Markdown tables, a JSON document, and the paper's average output length per turn.

Which scores count
------------------
A record's ``tags["agent_seats"]`` lists the seats the *tested* model played (``[0, 1]`` in
self-chat, ``[s]`` against a partner), read by ``EpisodeRecord.agent_seats``. Records without
that tag (e.g. SOTOPIA's published episodes) count every seat for the model that played it. A score belongs to
``(model, role)``: role ``agent`` for tested seats, ``partner`` for the other seat.

* ``all``: every episode of the run, every tested seat.
* ``hard``: only episodes of hard tasks (``"hard"`` in the scenario's tags, or a task with a
  fixed ``tested_seat``), and of those only the seat ``task.tested_seat`` (SOTOPIA fixes the
  tested model's seat on its hard subset).

Statistics
----------
The unit of observation is the **episode**: an episode's value on a dimension is the mean of
its counted seats (both seats in self-chat; they are the same model and not independent
draws, so treating them as two observations would understate the interval). With every
episode counting the same seats, the mean equals SOTOPIA's mean over agent-episodes. The
95 % interval is ``mean ± t(0.975, n-1) · s / sqrt(n)`` with the sample standard deviation
``s`` and Student's t quantile (exact, for integer degrees of freedom: ``t_quantile``); with
one episode the interval is undefined and reported as ``null``.

Episodes the judge failed on (``evaluation.evaluated == False``) are never scored 0: they
are counted as ``unevaluated`` and left out. A run key stored more than once (an episode
retried after a judge failure) counts once, its last evaluated record.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

from sotopia_env.episode import EpisodeRecord
from sotopia_env.evaluation import DIMENSIONS
from sotopia_env.redaction import redact

OVERALL = "overall"
COLUMNS: tuple[str, ...] = DIMENSIONS + (OVERALL,)
"""The eight reported columns: the seven dimensions in SOTOPIA's order, then their mean."""
SHORT_NAMES = {"believability": "BEL", "relationship": "REL", "knowledge": "KNO", "secret": "SEC",
               "social_rules": "SOC", "financial_and_material_benefits": "FIN", "goal": "GOAL",
               OVERALL: "OVERALL"}
SUBSETS = ("all", "hard")


# --- Student's t ------------------------------------------------------------------------------

def _t_two_sided_mass(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3, finite sums)."""
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 1:
        total, term = 0.0, math.cos(theta)
        for k in range(1, (df - 1) // 2 + 1):  # cos θ + (2/3)cos³θ + (2·4)/(1·3·5)cos⁵θ + ...
            total += term
            term *= c2 * (2 * k) / (2 * k + 1)
        return (2 / math.pi) * (theta + s * total) if df > 1 else 2 * theta / math.pi
    total, term = 0.0, 1.0
    for k in range(1, df // 2 + 1):  # 1 + (1/2)cos²θ + (1·3)/(2·4)cos⁴θ + ...
        total += term
        term *= c2 * (2 * k - 1) / (2 * k)
    return s * total


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (p > 0.5) of Student's t with ``df`` >= 1 degrees of freedom, by
    bisection on the exact CDF; e.g. ``t_quantile(0.975, 9) = 2.2622``."""
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    target = 2 * p - 1  # two-sided mass inside (-t, t)
    low, high = 0.0, 1.0
    while _t_two_sided_mass(high, df) < target:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        if _t_two_sided_mass(mid, df) < target:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, high):
            break
    return (low + high) / 2


@dataclass
class MeanCI:
    """A sample mean with its two-sided confidence interval (Student's t)."""

    mean: float | None
    ci_low: float | None
    ci_high: float | None
    half_width: float | None
    std: float | None
    n: int

    def format(self, digits: int = 2) -> str:
        if self.mean is None:
            return "–"
        if self.half_width is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> MeanCI:
    """Mean of ``values`` and its ``confidence`` interval, ``mean ± t((1+c)/2, n-1)·s/sqrt(n)``
    (``s``: sample standard deviation, n-1 in the denominator)."""
    n = len(values)
    if n == 0:
        return MeanCI(None, None, None, None, None, 0)
    mean = math.fsum(values) / n
    if n == 1:
        return MeanCI(mean, None, None, None, None, 1)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile((1 + confidence) / 2, n - 1) * std / math.sqrt(n)
    return MeanCI(mean, mean - half, mean + half, half, std, n)


# --- Which records and seats count ------------------------------------------------------------

def is_hard(record: EpisodeRecord) -> bool:
    """Whether the record's task belongs to the hard subset."""
    return "hard" in record.task.scenario.tags or record.task.tested_seat is not None


def deduplicate(records: Iterable[EpisodeRecord]) -> tuple[list[EpisodeRecord], list[EpisodeRecord]]:
    """Split records into (evaluated, unevaluated), one per run key: the last evaluated record
    of a key wins; a key with no evaluated record is listed once as unevaluated. Records
    without a run key are kept as they are (keyed by episode id)."""
    evaluated: dict[str, EpisodeRecord] = {}
    unevaluated: dict[str, EpisodeRecord] = {}
    for rec in records:
        key = rec.tags.get("run_key") or f"episode:{rec.episode_id}"
        if rec.evaluated:
            evaluated[key] = rec
            unevaluated.pop(key, None)
        elif key not in evaluated:
            unevaluated[key] = rec
    return list(evaluated.values()), list(unevaluated.values())


def counted_seats(record: EpisodeRecord, subset: str, role: str = "agent") -> list[int]:
    """Seats of ``record`` whose scores count for ``role`` on ``subset`` (see module docstring)."""
    tested = record.agent_seats()
    seats = tested if role == "agent" else [s for s in (0, 1) if s not in tested]
    if subset == "hard":
        if not is_hard(record):
            return []
        if record.task.tested_seat is not None:
            seats = [s for s in seats if s == record.task.tested_seat] if role == "agent" else \
                [s for s in seats if s != record.task.tested_seat]
    return seats


def episode_value(record: EpisodeRecord, seats: Sequence[int], column: str) -> float:
    """Mean over ``seats`` of one column (a dimension, or ``overall``) of an evaluated record."""
    agents = record.evaluation.agents
    if column == OVERALL:
        return math.fsum(agents[s].overall for s in seats) / len(seats)
    return math.fsum(agents[s].scores[column] for s in seats) / len(seats)


# --- Summaries --------------------------------------------------------------------------------

@dataclass
class Summary:
    """One row of results: a model in a role on a subset, optionally one seat only."""

    model: str
    role: str
    subset: str
    seat: str  # "all", "0" or "1"
    n_episodes: int
    n_tasks: int
    columns: dict[str, MeanCI] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["columns"] = {k: asdict(v) for k, v in self.columns.items()}
        return d


def summarize(records: Iterable[EpisodeRecord], *, confidence: float = 0.95,
              roles: Sequence[str] = ("agent", "partner"), per_seat: bool = True) -> list[Summary]:
    """Summaries of evaluated records (deduplicated by run key) for every model, role, subset
    and (with ``per_seat``) seat; rows with no episodes are left out."""
    evaluated, _ = deduplicate(records)
    # (model, role, subset, seat) -> list of (task pk, per-episode column values)
    groups: dict[tuple[str, str, str, str], list[tuple[str, dict[str, float]]]] = {}
    for rec in evaluated:
        for role in roles:
            for subset in SUBSETS:
                seats = counted_seats(rec, subset, role)
                by_model: dict[str, list[int]] = {}
                for s in seats:
                    by_model.setdefault(rec.models[s], []).append(s)
                for model, model_seats in by_model.items():
                    choices = [("all", model_seats)]
                    if per_seat:
                        choices += [(str(s), [s]) for s in model_seats]
                    for seat_label, use in choices:
                        values = {c: episode_value(rec, use, c) for c in COLUMNS}
                        groups.setdefault((model, role, subset, seat_label), []).append((rec.task.pk, values))
    rows = []
    for (model, role, subset, seat), items in groups.items():
        columns = {c: mean_ci([v[c] for _, v in items], confidence) for c in COLUMNS}
        rows.append(Summary(model, role, subset, seat, len(items), len({pk for pk, _ in items}), columns))
    order = {"agent": 0, "partner": 1, "all": 0, "hard": 1}
    rows.sort(key=lambda r: (order.get(r.role, 9), r.model, order.get(r.subset, 9),
                             -1 if r.seat == "all" else int(r.seat)))
    return rows


def output_length_per_turn(records: Iterable[EpisodeRecord], *, role: str = "agent") -> dict[str, list[float]]:
    """The paper's Figure 3: for each model (in ``role``), the average length in words of its
    action argument at its k-th own turn (index k-1), over evaluated episodes. Turns where it
    did nothing (``none``) are skipped; words rather than tokens so that models with different
    tokenizers compare."""
    evaluated, _ = deduplicate(records)
    sums: dict[str, list[list[int]]] = {}
    for rec in evaluated:
        tested = rec.agent_seats()
        seats = tested if role == "agent" else [s for s in (0, 1) if s not in tested]
        for s in seats:
            own = [t for t in rec.turns if t.agent_index == s and t.action_type != "none"]
            per_turn = sums.setdefault(rec.models[s], [])
            for k, t in enumerate(own):
                while len(per_turn) <= k:
                    per_turn.append([])
                per_turn[k].append(len(t.argument.split()))
    return {m: [sum(v) / len(v) for v in per_turn] for m, per_turn in sums.items()}


def usage_summary(records: Iterable[EpisodeRecord]) -> dict:
    """Tokens, cost and reliability over all stored records (retried ones too: they were paid for).

    Per model: prompt and completion tokens summed over its turns; ``cost`` summed from
    ``record.usage`` entries that carry one (LiteLLM's price table; 0 for local models);
    ``reliability``: ``reliability_summary``."""
    records = list(records)
    per_model: dict[str, dict[str, float]] = {}
    total_cost = 0.0
    episodes = 0
    for rec in records:
        episodes += 1
        for t in rec.turns:
            m = per_model.setdefault(rec.models[t.agent_index], {"prompt_tokens": 0, "completion_tokens": 0,
                                                                  "turns": 0})
            m["prompt_tokens"] += t.prompt_tokens
            m["completion_tokens"] += t.completion_tokens
            m["turns"] += 1
        total_cost += _sum_cost(rec.usage)
    return {"episodes": episodes, "models": per_model, "judge": _judge_usage(records), "cost": total_cost,
            "reliability": reliability_summary(records)}


def reliability_summary(records: Iterable[EpisodeRecord]) -> dict[str, dict[str, int]]:
    """Per model (agent and partner by model name, the judge by its name): ``retries`` (API
    attempts after the first: rate limits, timeouts, 5xx), ``reasks`` (judge answers asked again
    after an invalid one) and ``failures`` (episodes the judge left unevaluated). An agent or
    partner call that fails for good leaves no episode to count: the run's error reports it."""
    out: dict[str, dict[str, int]] = {}

    def row(name: str) -> dict[str, int]:
        return out.setdefault(name, {"retries": 0, "reasks": 0, "failures": 0})

    for rec in records:
        seats = rec.usage.get("seats") if isinstance(rec.usage, dict) else None
        for i, model in enumerate(rec.models):
            seat = seats[i] if isinstance(seats, list) and i < len(seats) else {}
            seat = seat if isinstance(seat, dict) else {}
            row(model)["retries"] += int(seat.get("retries", 0))
        if rec.evaluation is None:
            continue
        judge = row(rec.evaluation.judge or "judge")
        usage = rec.usage.get("judge") if isinstance(rec.usage, dict) else None
        if isinstance(usage, dict):
            judge["retries"] += int(usage.get("retries", 0))
            judge["reasks"] += int(usage.get("reasks", 0))
        judge["failures"] += int(not rec.evaluation.evaluated)
    return out


def reliability_line(model: str, counts: dict) -> str:
    """One model's reliability counts in words."""
    return (f"{model}: {counts.get('retries', 0)} retries, {counts.get('reasks', 0)} re-asks, "
            f"{counts.get('failures', 0)} failures")


def _sum_cost(usage) -> float:
    """Sum every numeric ``cost`` entry found in a (nested) usage dict."""
    if isinstance(usage, dict):
        return sum(float(v) if k == "cost" and isinstance(v, (int, float)) else _sum_cost(v)
                   for k, v in usage.items())
    if isinstance(usage, list):
        return sum(_sum_cost(v) for v in usage)
    return 0.0


def _judge_usage(records: Iterable[EpisodeRecord]) -> dict:
    total = {"prompt_tokens": 0, "completion_tokens": 0}
    for rec in records:
        judge = rec.usage.get("judge") if isinstance(rec.usage, dict) else None
        if isinstance(judge, dict):
            for k in total:
                if isinstance(judge.get(k), (int, float)):
                    total[k] += judge[k]
    return total


# --- Tables and JSON --------------------------------------------------------------------------

def markdown_table(summaries: Sequence[Summary], *, role: str = "agent", columns: Sequence[str] = COLUMNS,
                   digits: int = 2) -> str:
    """A Markdown table: one row per (model, subset, seat) of ``role``, each cell ``mean ± 95 % CI
    half-width``."""
    header = ["model", "tasks", "seat", "n"] + [SHORT_NAMES.get(c, c) for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(columns) + 1)) + "|"]
    for s in summaries:
        if s.role != role:
            continue
        cells = [s.model, s.subset, s.seat, str(s.n_episodes)] + [s.columns[c].format(digits) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_document(records: Sequence[EpisodeRecord], *, config: dict | None = None,
                     confidence: float = 0.95) -> dict:
    """Everything a results JSON holds: config, summaries, output length per turn, usage, and
    counts (episodes stored, evaluated, unevaluated)."""
    records = list(records)
    evaluated, unevaluated = deduplicate(records)
    return {
        "config": config or {},
        "confidence": confidence,
        "interval": "Student t, episode = unit of observation",
        "counts": {"stored": len(records), "evaluated": len(evaluated), "unevaluated": len(unevaluated),
                   "unevaluated_run_keys": [r.tags.get("run_key", r.episode_id) for r in unevaluated]},
        "summaries": [s.to_dict() for s in summarize(records, confidence=confidence)],
        "output_length_per_turn": output_length_per_turn(records),
        "usage": usage_summary(records),
    }


def summaries_from_document(doc: dict) -> list[Summary]:
    """Inverse of ``Summary.to_dict`` over a results document's ``summaries``."""
    out = []
    for d in doc.get("summaries", []):
        cols = {k: MeanCI(**v) for k, v in d["columns"].items()}
        out.append(Summary(d["model"], d["role"], d["subset"], d["seat"], d["n_episodes"], d["n_tasks"], cols))
    return out


def write_results(doc: dict, json_path, md_path=None, *, title: str = "SOTOPIA results") -> None:
    """Write the results document as JSON and (optionally) a Markdown report beside it."""
    from pathlib import Path

    Path(json_path).write_text(redact(json.dumps(doc, indent=2, ensure_ascii=False)) + "\n", encoding="utf-8")
    if md_path is not None:
        Path(md_path).write_text(redact(markdown_report(doc, title=title)) + "\n", encoding="utf-8")


def markdown_report(doc: dict, *, title: str = "SOTOPIA results") -> str:
    """A Markdown report of a results document: the agent table, the partner table if any,
    counts and usage."""
    summaries = summaries_from_document(doc)
    conf = round(doc.get("confidence", 0.95) * 100)
    parts = [f"# {title}", "",
             (f"Mean ± half-width of the {conf} % confidence interval (Student t over episodes). "
             f"`all`: every task; `hard`: SOTOPIA's hard subset, tested seat only. Prompt style: "
             f"`{doc.get('config', {}).get('prompt_style', 'native')}`."), "",
             markdown_table(summaries, role="agent")]
    if any(s.role == "partner" for s in summaries):
        parts += ["", "Partner:", "", markdown_table(summaries, role="partner")]
    c = doc.get("counts", {})
    parts += ["", (f"Episodes stored: {c.get('stored', 0)}, evaluated: {c.get('evaluated', 0)}, "
                  f"unevaluated (judge failed): {c.get('unevaluated', 0)}.")]
    u = doc.get("usage", {})
    if u:
        tok = ", ".join(f"{m}: {int(v['prompt_tokens'])} prompt + {int(v['completion_tokens'])} completion "
                        f"tokens over {int(v['turns'])} turns" for m, v in u.get("models", {}).items())
        parts.append(f"Usage: {tok}; cost ${u.get('cost', 0.0):.4f}.")
    if u.get("reliability"):
        lines = "; ".join(reliability_line(m, r) for m, r in u["reliability"].items())
        parts.append(f"Reliability: {lines}.")
    return "\n".join(parts)
