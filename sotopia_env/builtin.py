"""The built-in scenario set shipped with the package (``sotopia_env/data``): written for this
project in SOTOPIA's format, split into ``bc`` (behavioral cloning), ``align`` (SDPO data)
and ``test`` scenarios, with a ``hard`` subset of the test split.

``builtin_tasks(split)`` lists the tasks of a split; ``get_task(id)`` finds one task by its
pk, or the first task of a scenario given by scenario pk or codename.
"""

from __future__ import annotations

import functools
from pathlib import Path

from .errors import ConfigError
from .loader import close_matches, load_tasks
from .profiles import Task

DATA_DIR = Path(__file__).resolve().parent / "data"
SPLITS: tuple[str, ...] = ("bc", "align", "test", "hard", "all")


@functools.lru_cache(maxsize=1)
def _all_tasks() -> tuple[Task, ...]:
    return tuple(
        load_tasks(DATA_DIR / "scenarios.jsonl", DATA_DIR / "profiles.jsonl", DATA_DIR / "combos.jsonl")
    )


def builtin_tasks(split: str = "test") -> list[Task]:
    """The built-in tasks of ``split`` ("bc", "align", "test", "hard" or "all"), in file order.
    The Task objects are shared between calls: copy one before changing it."""
    split = getattr(split, "value", split)  # accept an Enum from a hydra config
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} is not allowed; allowed: {', '.join(SPLITS)}")
    tasks = _all_tasks()
    if split == "all":
        return list(tasks)
    return [t for t in tasks if split in t.scenario.tags]


def get_task(task_id: str) -> Task:
    """A built-in task by its pk; a scenario pk or codename gives that scenario's first task.
    An unknown id raises ConfigError listing close matches."""
    tasks = _all_tasks()
    for task in tasks:
        if task.pk == task_id:
            return task
    for task in tasks:
        if task_id in (task.scenario.pk, task.scenario.codename):
            return task
    known = {t.pk for t in tasks} | {t.scenario.pk for t in tasks} | {t.scenario.codename for t in tasks}
    raise ConfigError(close_matches(task_id, known, what="task or scenario"))
