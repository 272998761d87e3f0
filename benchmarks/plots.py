"""PNG plots of SOTOPIA results (matplotlib, Agg backend: no display needed).

* ``plot_dimensions``: one panel per dimension (and overall), one bar per model with its 95 %
  confidence interval as an error bar. Dimensions have different ranges (e.g. secret -10..0,
  goal 0..10), so each panel keeps its own y-axis spanning the dimension's range.
* ``plot_output_length``: the paper's Figure 3, average words of a model's action at its
  k-th own turn, one line per model.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from sotopia_env.evaluation import DIMENSION_RANGES

from .results import COLUMNS, OVERALL, SHORT_NAMES, Summary

_OVERALL_RANGE = (sum(lo for lo, _ in DIMENSION_RANGES.values()) / len(DIMENSION_RANGES),
                  sum(hi for _, hi in DIMENSION_RANGES.values()) / len(DIMENSION_RANGES))



def save_figure(fig, path: str | Path, *, dpi: int = 110) -> Path:
    """Lay out ``fig``, write it as a PNG at ``path`` (folders made as needed), close it; returns the path."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path

def plot_dimensions(summaries: Sequence[Summary], path: str | Path, *, subset: str = "all",
                    role: str = "agent", title: str = "SOTOPIA scores per dimension") -> Path:
    """Bar charts of each model's mean per dimension (``subset``, all seats) with 95 % CI bars;
    returns the PNG path. Raises ValueError if no summary matches."""
    rows = [s for s in summaries if s.subset == subset and s.role == role and s.seat == "all"]
    if not rows:
        raise ValueError(f"no {role} results on the {subset!r} tasks to plot")
    models = [r.model for r in rows]
    fig, axes = plt.subplots(2, 4, figsize=(14, 6.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, column in zip(axes.flat, COLUMNS):
        means, errors = [], []
        for r in rows:
            ci = r.columns[column]
            means.append(ci.mean if ci.mean is not None else 0.0)
            errors.append(ci.half_width or 0.0)
        x = range(len(rows))
        ax.bar(x, means, yerr=errors, capsize=4, color=[colors[i % len(colors)] for i in x])
        low, high = _OVERALL_RANGE if column == OVERALL else DIMENSION_RANGES[column]
        ax.set_ylim(low, high)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_title(SHORT_NAMES.get(column, column) if column != "financial_and_material_benefits" else "FIN")
        ax.set_xticks(list(x))
        ax.set_xticklabels([_short(m) for m in models], rotation=20, ha="right", fontsize=8)
    fig.suptitle(f"{title} ({subset} tasks, mean ± 95 % CI)")
    return save_figure(fig, path)


def plot_output_length(lengths: Mapping[str, Sequence[float]], path: str | Path, *,
                       title: str = "Average output length per turn") -> Path:
    """Line plot of words per action at each of a model's own turns (the paper's Figure 3);
    returns the PNG path. Raises ValueError if there is nothing to plot."""
    lengths = {m: v for m, v in lengths.items() if len(v)}
    if not lengths:
        raise ValueError("no turns to plot")
    fig, ax = plt.subplots(figsize=(7, 4))
    for model, values in lengths.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", label=_short(model))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("agent's turn")
    ax.set_ylabel("words per action (mean)")
    ax.set_ylim(bottom=0)  # from zero: a fall from 28 to 23 words must not look like one to nothing
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _short(model: str, width: int = 28) -> str:
    return model if len(model) <= width else "…" + model[-(width - 1):]
