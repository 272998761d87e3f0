"""Where a run's tasks come from: one config block shared by every command that plays tasks.

``python -m benchmarks.sotopia`` takes these options at the top level (``tasks=files
scenarios=... profiles=... combos=...``), ``python -m sdpo.pairs`` under ``collect.``
(``collect.tasks=files collect.scenarios=...``): both configs inherit :class:`TaskSource`, so the
options, their help and their checks are written once, here.

The tasks are a built-in split (``sotopia_env.builtin``) or SOTOPIA's own files read by
``sotopia_env.loader`` (environment profiles, agent profiles, env-agent combos, optionally
relationship profiles and an environment list), then narrowed to ``task_ids`` and ``task_tags``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar, Optional

from .errors import ConfigError, to_enum
from .loader import LoadReport, close_matches
from .profiles import Task


class TaskSet(str, Enum):
    """Which tasks to play: a built-in split or SOTOPIA files."""

    bc = "bc"
    align = "align"
    test = "test"
    hard = "hard"
    all = "all"
    files = "files"


@dataclass
class TaskSource:
    """The task options; a config inherits them (``option_prefix`` names them in its errors)."""

    tasks: TaskSet = TaskSet.test
    """bc | align | test | hard | all: a built-in split (hard: the test split's hard subset);
    files: SOTOPIA files (scenarios, profiles, combos; relationships and environment_list optional)."""
    scenarios: Optional[str] = None
    """tasks=files: SOTOPIA environment profiles (JSON or JSONL)."""
    profiles: Optional[str] = None
    """tasks=files: SOTOPIA agent profiles."""
    combos: Optional[str] = None
    """tasks=files: SOTOPIA env-agent combos (the tasks)."""
    relationships: Optional[str] = None
    """tasks=files, optional: SOTOPIA relationship profiles; combos whose pair has none of the
    scenario's relationship are counted in the printed load summary."""
    environment_list: Optional[str] = None
    """tasks=files, optional: a SOTOPIA environment-list file (e.g. the hard subset, with the
    tested seat per scenario); only its scenarios' tasks are played."""
    environment_list_name: Optional[str] = None
    """Which list of that file (its ``name``); null: the file must hold exactly one."""
    task_ids: list[str] = field(default_factory=list)
    """Play only these tasks: a combo (task) pk, or a scenario pk or codename for all of that
    scenario's tasks (empty: every task of the set)."""
    task_tags: list[str] = field(default_factory=list)
    """Play only tasks whose scenario carries one of these tags (its ``tags`` list or SOTOPIA's
    ``tag`` field, e.g. hard, negotiation; empty: no tag filter)."""

    option_prefix: ClassVar[str] = ""
    """How the options are spelt on the command line of the inheriting config ("collect.")."""

    def __post_init__(self):
        self.check_task_source()

    def check_task_source(self) -> None:
        """ConfigError naming the option when the task options do not fit together."""
        p = self.option_prefix
        self.tasks = to_enum(TaskSet, self.tasks, f"{p}tasks")
        if self.tasks is TaskSet.files:
            missing = [n for n in ("scenarios", "profiles", "combos") if not getattr(self, n)]
            if missing:
                raise ConfigError(f"{p}tasks=files needs {', '.join(f'{p}{m}=<path>' for m in missing)} "
                                  "(SOTOPIA environment profiles, agent profiles and env-agent combos)")
        else:
            given = [n for n in ("combos", "relationships", "environment_list") if getattr(self, n)]
            if given:
                raise ConfigError(f"{p}{given[0]} is read only with {p}tasks=files (now {p}tasks="
                                  f"{self.tasks.value})")
        for name in ("task_ids", "task_tags"):
            values = getattr(self, name)
            if not all(isinstance(v, str) and v.strip() for v in values):
                raise ConfigError(f"{p}{name} must be a list of non-empty names, got {list(values)!r}")

    def load_tasks(self, report: LoadReport | None = None) -> list[Task]:
        """The tasks, in file order, narrowed to ``task_ids`` and ``task_tags``. A malformed file
        raises DataError naming the file, line and field; an unknown id ConfigError with close
        matches; a selection that keeps nothing ConfigError."""
        p = self.option_prefix
        if self.tasks is TaskSet.files:
            from . import loader

            assert self.scenarios and self.profiles and self.combos, "check_task_source() requires them"
            tasks = loader.load_tasks(self.scenarios, self.profiles, self.combos, self.relationships, report=report)
            if self.environment_list:
                lists = loader.load_environment_lists(self.environment_list)
                chosen = [lst for lst in lists if self.environment_list_name in (None, lst.name)]
                if len(chosen) != 1:
                    raise ConfigError(f"{p}environment_list_name={self.environment_list_name!r} must name one list "
                                      f"of {self.environment_list}; allowed: {', '.join(x.name for x in lists)}")
                tasks = loader.select_environment_list(tasks, chosen[0])
        else:
            from .builtin import builtin_tasks

            tasks = builtin_tasks(self.tasks.value)
        if self.task_ids:
            known = {t.pk for t in tasks} | {t.scenario.pk for t in tasks} | {t.scenario.codename for t in tasks}
            for task_id in self.task_ids:
                if task_id not in known:
                    raise ConfigError(f"{p}task_ids: " + close_matches(task_id, known, what="task or scenario"))
            wanted = set(self.task_ids)
            tasks = [t for t in tasks if wanted & {t.pk, t.scenario.pk, t.scenario.codename}]
        if self.task_tags:
            wanted = set(self.task_tags)
            tasks = [t for t in tasks if wanted & {*t.scenario.tags, t.scenario.tag}]
        if not tasks:
            chosen_by = "".join(f" {p}{n}={getattr(self, n)}" for n in ("task_ids", "task_tags") if getattr(self, n))
            raise ConfigError(f"{p}tasks={self.tasks.value}{chosen_by} selects no task")
        return tasks


__all__ = ["TaskSet", "TaskSource"]
