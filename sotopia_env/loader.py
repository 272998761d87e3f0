"""Loaders for SOTOPIA's data files: agent profiles, environment profiles (scenarios),
env-agent combos (tasks), environment lists (e.g. the hard subset), and the episode files
published by SOTOPIA and SOTOPIA-pi, turned into our ``EpisodeRecord``.

Every loader takes a JSON file (a list of records, one record, or an object id -> record) or a
JSONL file (one record a line). SOTOPIA's field names are read as they are, including those
of its CSV/JSONL exports (``agent_id``, ``env_id``, ``combo_id`` for ``pk``; relationships
as ``"friend"``, ``"3"`` or ``"RelationshipType.friend"``). A malformed file or record raises
``DataError`` naming the file, the line and the field; an unknown id lists close matches.

SOTOPIA's released data went through pandas, which left artefacts: list fields as the text of a
Python list (sometimes cut into fragments at its commas) and empty cells as "nan". The loaders
read them back into clean values and count every change in a ``LoadReport``
(``load_sotopia_dump`` returns one; ``report.summary()`` says it in a paragraph). Goal markup
(``<extra_info>`` ...) is kept as written and only counted: the renderer decides who sees it.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import json
import os
import random
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .episode import ACTION_TYPES, EpisodeRecord, Turn
from .errors import ConfigError, DataError, Where
from .evaluation import DIMENSIONS, AgentEvaluation, EpisodeEvaluation
from .profiles import (
    FLOAT_TO_INT,
    FRAGMENTED_LIST,
    NAN_TO_EMPTY,
    STRINGIFIED_LIST,
    Profile,
    Relationship,
    RelationshipProfile,
    Scenario,
    Task,
    is_nan,
    markup_tags,
    note_change,
    parse_list_field,
)
from .termination import RuleBasedTermination

__all__ = [
    "Combo",
    "EnvironmentList",
    "LoadReport",
    "close_matches",
    "load_combos",
    "load_environment_lists",
    "load_profiles",
    "load_relationships",
    "load_scenarios",
    "load_sotopia_dump",
    "load_sotopia_episodes",
    "load_tasks",
    "read_records",
    "sample_tasks",
    "select_environment_list",
    "sotopia_episode_to_record",
]

PathLike = str | os.PathLike
# A record type read from a file (Scenario, Profile, Combo...).
R = TypeVar("R")


# ---------------------------------------------------------------------------------------------
# Reading JSON / JSONL with line numbers
# ---------------------------------------------------------------------------------------------


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _scan_container(text: str, path: str) -> list[tuple[int, Any, str | None]]:
    """Items of a top-level JSON array or object as ``(line, value, key)``; line numbers are
    where each item starts, so errors can point at it."""
    decoder = json.JSONDecoder()
    opening = text.lstrip()[0]
    closing = "]" if opening == "[" else "}"
    i = _skip_ws(text, text.index(opening) + 1)
    items: list[tuple[int, Any, str | None]] = []
    try:
        if i < len(text) and text[i] == closing:
            return items
        while True:
            key = None
            if opening == "{":
                key, i = decoder.raw_decode(text, i)
                i = _skip_ws(text, i)
                if text[i : i + 1] != ":":
                    raise json.JSONDecodeError("expected ':'", text, i)
                i = _skip_ws(text, i + 1)
            start = i
            value, i = decoder.raw_decode(text, i)
            items.append((_line_of(text, start), value, key))
            i = _skip_ws(text, i)
            if text[i : i + 1] == ",":
                i = _skip_ws(text, i + 1)
            elif text[i : i + 1] == closing:
                break
            else:
                raise json.JSONDecodeError(f"expected ',' or {closing!r}", text, i)
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON: {e.msg}", path=path, line=_line_of(text, e.pos)) from None
    if _skip_ws(text, i + 1) != len(text):
        raise DataError("extra data after the top-level JSON value", path=path, line=_line_of(text, i + 1))
    return items


def read_records(path: PathLike, *, kind: str = "record") -> list[tuple[int, dict]]:
    """Read ``path`` as JSON or JSONL and return ``(line, record)`` pairs, every record a JSON object.

    ``.jsonl`` files are read a line at a time; other files as one JSON document (a list of
    records, a single record, or an object mapping ids to records, whose key becomes ``pk``
    when the record has none), falling back to JSONL if the document is not one JSON value."""
    path = Path(path)
    where = str(path)
    if not path.exists():
        raise DataError(f"no such {kind} file", path=where)
    text = path.read_text(encoding="utf-8")
    stripped = text.strip()
    if not stripped:
        return []
    if path.suffix != ".jsonl":
        if stripped[0] == "[":
            items = _scan_container(text, where)
            return [(line, _require_object(value, where, line, kind)) for line, value, _ in items]
        if stripped[0] == "{":
            try:
                json.loads(text)
                whole = True
            except json.JSONDecodeError:
                whole = False  # several objects: JSONL with another suffix
            if whole:
                items = _scan_container(text, where)
                values = [value for _, value, _ in items]
                if (
                    items
                    and all(isinstance(v, dict) for v in values)
                    and not any(
                        k in ("pk", "first_name", "scenario", "env_id", "agent_ids", "episode_id", "name")
                        for _, _, k in items
                    )
                ):
                    records = []
                    for line, value, key in items:
                        record = dict(value)
                        record.setdefault("pk", key)
                        records.append((line, record))
                    return records
                return [(1, json.loads(text))]
    records = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(f"not valid JSON: {e.msg} (column {e.colno})", path=where, line=number) from None
        records.append((number, _require_object(value, where, number, kind)))
    return records


def _require_object(value: Any, path: str, line: int, kind: str) -> dict:
    if not isinstance(value, dict):
        raise DataError(f"a {kind} must be a JSON object, got {type(value).__name__}", path=path, line=line)
    return value


def close_matches(name: str, known: Iterable[str], *, what: str = "id") -> str:
    """``unknown <what> 'x'; close matches: a, b`` (difflib), or a few known ids when none is close."""
    known = sorted(set(known))
    matches = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    if matches:
        return f"unknown {what} {name!r}; close matches: {', '.join(matches)}"
    examples = ", ".join(known[:5]) + (", ..." if len(known) > 5 else "")
    return f"unknown {what} {name!r}; no close match among {len(known)} known ({examples})"


# ---------------------------------------------------------------------------------------------
# What loading read and changed
# ---------------------------------------------------------------------------------------------


_CHANGE_LABELS = {
    STRINGIFIED_LIST: "stringified lists parsed",
    FRAGMENTED_LIST: "fragmented lists joined",
    NAN_TO_EMPTY: "'nan' values made empty",
    FLOAT_TO_INT: "whole floats made int",
}


@dataclass
class LoadReport:
    """What the loaders read and what they changed on the way, so that no export artefact
    reaches a model unnoticed. Pass one as ``report=`` to the loaders (``load_sotopia_dump``
    makes one); ``summary()`` says it in one paragraph."""

    read: Counter = dataclasses.field(default_factory=Counter)
    """Records read, by kind ("scenarios", "profiles", "combos", "relationships")."""
    changes: Counter = dataclasses.field(default_factory=Counter)
    """Values changed, by (change, field): e.g. ("stringified list parsed", "moral_values")."""
    markup: Counter = dataclasses.field(default_factory=Counter)
    """Goals holding each inline tag (``extra_info``, ...); kept as written."""
    goals_with_markup: int = 0
    unclosed_tags: int = 0
    """Opening tags in goals with no closing tag (kept as written)."""
    combos_checked: int = 0
    unmatched_combos: list[str] = dataclasses.field(default_factory=list)
    """Combos whose pair has no relationship profile with their scenario's relationship."""
    short_scenarios: list[str] = dataclasses.field(default_factory=list)
    """``sample_tasks``: scenarios with fewer fitting pairs than asked for."""

    def changed(self, change: str) -> int:
        """How many values got ``change`` (one of the names in ``sotopia_env.profiles``), all fields."""
        return sum(n for (c, _), n in self.changes.items() if c == change)

    @property
    def stringified_lists(self) -> int:
        return self.changed(STRINGIFIED_LIST)

    @property
    def fragments_joined(self) -> int:
        return self.changed(FRAGMENTED_LIST)

    @property
    def nan_to_null(self) -> int:
        return self.changed(NAN_TO_EMPTY)

    def note_goals(self, scenario: Scenario) -> None:
        for goal in scenario.agent_goals:
            opened, unclosed = markup_tags(goal)
            if opened:
                self.goals_with_markup += 1
                self.markup.update(set(opened))
            self.unclosed_tags += len(unclosed)

    def summary(self) -> str:
        names = (("scenarios", "scenarios"), ("profiles", "agent profiles"), ("combos", "combos"),
                 ("relationships", "relationship profiles"), ("sampled", "sampled tasks"))
        read = ", ".join(f"{self.read[k]} {label}" for k, label in names if k in self.read)
        parts = [f"Read {read or 'nothing'}."]
        changed = []
        for change, label in _CHANGE_LABELS.items():
            by_field = {f: n for (c, f), n in sorted(self.changes.items()) if c == change}
            if by_field:
                detail = ", ".join(f"{f} {n}" for f, n in by_field.items())
                changed.append(f"{sum(by_field.values())} {label} ({detail})")
        parts.append(f"Changed: {'; '.join(changed)}." if changed else "Changed nothing.")
        if self.goals_with_markup:
            tags = ", ".join(f"<{t}> {n}" for t, n in sorted(self.markup.items()))
            unclosed = f", {self.unclosed_tags} tag(s) never closed" if self.unclosed_tags else ""
            parts.append(f"Kept as written: {self.goals_with_markup} goals with markup ({tags}){unclosed}.")
        if self.combos_checked:
            if self.unmatched_combos:
                parts.append(
                    f"{len(self.unmatched_combos)} of {self.combos_checked} combos pair agents with no "
                    "relationship profile of their scenario's relationship (e.g. "
                    f"{', '.join(self.unmatched_combos[:3])})."
                )
            else:
                parts.append(f"All {self.combos_checked} combos match a relationship profile.")
        if self.short_scenarios:
            parts.append(
                f"{len(self.short_scenarios)} scenarios had fewer fitting pairs than asked for (e.g. "
                f"{', '.join(self.short_scenarios[:3])})."
            )
        return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# Profiles, scenarios, combos, relationships, environment lists -> tasks
# ---------------------------------------------------------------------------------------------

_PK_ALIASES = {"profile": "agent_id", "scenario": "env_id", "combo": "combo_id"}


def _with_pk(record: dict, kind: str) -> dict:
    alias = _PK_ALIASES[kind]
    if "pk" not in record and alias in record:
        record = {**record, "pk": record[alias]}
    return record


# The fields that tell SOTOPIA's record kinds apart, and where each kind belongs.
_KIND_SIGNS = (
    ("relationship profile", ("agent_1_id", "agent1_id"), "load_relationships() (relationships=)"),
    ("agent profile", ("first_name",), "load_profiles() (profiles=)"),
    ("environment profile", ("agent_goals",), "load_scenarios() (scenarios=)"),
    ("episode", ("social_goals", "raw_messages"), "load_sotopia_episodes()"),
    ("env-agent combo", ("agent_ids",), "load_combos() (combos=)"),
)


def _check_kind(records: list[tuple[int, dict]], path: PathLike, kind: str) -> None:
    """A file of another kind fails on its first record with a line saying which kind it looks
    like and where it belongs, not with a missing field."""
    if not records:
        return
    line, record = records[0]
    signs_of = {other: signs for other, signs, _ in _KIND_SIGNS}
    if any(sign in record for sign in signs_of[kind]):
        return
    for other, signs, where_to in _KIND_SIGNS:
        found = [sign for sign in signs if sign in record]
        if other != kind and found:
            raise DataError(
                f"this looks like {'an' if other[0] in 'aeiou' else 'a'} {other} file (it has {found[0]!r}), "
                f"not {kind}s; load it with {where_to}",
                path=str(path),
                line=line,
            )


def load_profiles(path: PathLike, *, report: LoadReport | None = None) -> list[Profile]:
    """SOTOPIA agent profiles (one per record); pks must be unique."""
    records = read_records(path, kind="agent profile")
    _check_kind(records, path, "agent profile")
    changes = report.changes if report is not None else None
    profiles = [
        Profile.from_dict(_with_pk(r, "profile"), path=str(path), line=line, changes=changes)
        for line, r in records
    ]
    _check_unique(profiles, path, lambda p: p.pk, [line for line, _ in records])
    if report is not None:
        report.read["profiles"] += len(profiles)
    return profiles


def load_scenarios(path: PathLike, *, report: LoadReport | None = None) -> list[Scenario]:
    """SOTOPIA environment profiles (scenarios); pks must be unique. Goal markup is kept as written
    and counted in ``report``."""
    records = read_records(path, kind="environment profile")
    _check_kind(records, path, "environment profile")
    changes = report.changes if report is not None else None
    scenarios = [
        Scenario.from_dict(_with_pk(r, "scenario"), path=str(path), line=line, changes=changes)
        for line, r in records
    ]
    _check_unique(scenarios, path, lambda s: s.pk, [line for line, _ in records])
    if report is not None:
        report.read["scenarios"] += len(scenarios)
        for scenario in scenarios:
            report.note_goals(scenario)
    return scenarios


def load_relationships(path: PathLike, *, report: LoadReport | None = None) -> list[RelationshipProfile]:
    """SOTOPIA relationship profiles (``agent_1_id``, ``agent_2_id``, ``relationship``,
    ``background_story``; or its JSONL export's ``relationship_id``/``agent1_id``/``agent2_id``);
    pks must be unique."""
    records = read_records(path, kind="relationship profile")
    _check_kind(records, path, "relationship profile")
    changes = report.changes if report is not None else None
    relationships = [
        RelationshipProfile.from_dict(r, path=str(path), line=line, changes=changes) for line, r in records
    ]
    _check_unique(relationships, path, lambda r: r.pk, [line for line, _ in records])
    if report is not None:
        report.read["relationships"] += len(relationships)
    return relationships


def _check_unique(items: Sequence[R], path: PathLike, key: Callable[[R], str], lines: list[int]) -> None:
    seen: dict[str, int] = {}
    for item, line in zip(items, lines):
        k = key(item)
        if k in seen:
            raise DataError(
                f"duplicate pk {k!r} (first on line {seen[k]})", path=str(path), line=line, field="pk"
            )
        seen[k] = line


@dataclass(frozen=True)
class Combo:
    """SOTOPIA's env-agent combo: which scenario (``env_id``) the two profiles (``agent_ids``,
    seat order) play. ``tested_seat``: for the hard subset, the seat the tested model plays."""

    pk: str
    env_id: str
    agent_ids: tuple[str, str]
    tested_seat: int | None = None
    path: str | None = dataclasses.field(default=None, compare=False)
    line: int | None = dataclasses.field(default=None, compare=False)

    @classmethod
    def from_dict(
        cls, record: dict, *, path: str | None = None, line: int | None = None, changes: Counter | None = None
    ) -> Combo:
        where: Where = {"path": path, "line": line}
        record = _with_pk(record, "combo")
        env_id, agent_ids = record.get("env_id"), record.get("agent_ids")
        if isinstance(agent_ids, str) or (
            isinstance(agent_ids, list) and all(isinstance(a, str) for a in agent_ids)
        ):
            agent_ids = parse_list_field(agent_ids, "agent_ids", where, changes)
        if not isinstance(env_id, str) or not env_id:
            raise DataError(f"expected the scenario pk (str), got {env_id!r:.60}", field="env_id", **where)
        if (
            not isinstance(agent_ids, list)
            or len(agent_ids) != 2
            or not all(isinstance(a, str) and a for a in agent_ids)
        ):
            raise DataError(
                f"expected a list of 2 agent profile pks, got {agent_ids!r:.80}", field="agent_ids", **where
            )
        pk = record.get("pk")
        if pk is None:
            pk = f"{env_id}:{agent_ids[0]}:{agent_ids[1]}"
        if not isinstance(pk, str):
            raise DataError(f"expected str, got {type(pk).__name__}", field="pk", **where)
        seat = record.get("tested_seat")
        if is_nan(seat):
            note_change(changes, NAN_TO_EMPTY, "tested_seat")
            seat = None
        elif isinstance(seat, float) and seat in (0.0, 1.0):
            note_change(changes, FLOAT_TO_INT, "tested_seat")
            seat = int(seat)
        if seat is not None and (isinstance(seat, bool) or seat not in (0, 1)):
            raise DataError(f"expected 0, 1 or null, got {seat!r}", field="tested_seat", **where)
        return cls(pk=pk, env_id=env_id, agent_ids=(agent_ids[0], agent_ids[1]), tested_seat=seat, **where)


def load_combos(path: PathLike, *, report: LoadReport | None = None) -> list[Combo]:
    """SOTOPIA env-agent combos (tasks by reference); pks must be unique."""
    records = read_records(path, kind="env-agent combo")
    _check_kind(records, path, "env-agent combo")
    changes = report.changes if report is not None else None
    combos = [Combo.from_dict(r, path=str(path), line=line, changes=changes) for line, r in records]
    _check_unique(combos, path, lambda c: c.pk, [line for line, _ in records])
    if report is not None:
        report.read["combos"] += len(combos)
    return combos


@dataclass(frozen=True)
class EnvironmentList:
    """SOTOPIA's environment list (e.g. the hard subset): scenario pks and, per scenario, the
    seat the tested model plays (``agent_index``; None when both seats are tested)."""

    name: str
    environments: tuple[str, ...]
    agent_index: tuple[int, ...] | None = None


def load_environment_lists(path: PathLike) -> list[EnvironmentList]:
    """SOTOPIA environment lists: ``{"name", "environments": [env pk...], "agent_index": [seat...]}``."""
    lists = []
    for line, r in read_records(path, kind="environment list"):
        where: Where = {"path": str(path), "line": line}
        envs = r.get("environments")
        if not isinstance(envs, list) or not all(isinstance(e, str) for e in envs):
            raise DataError("expected a list of scenario pks", field="environments", **where)
        seats = r.get("agent_index")
        if seats is not None:
            if not isinstance(seats, list) or len(seats) != len(envs):
                raise DataError(
                    f"expected a list of {len(envs)} seats (one per environment)",
                    field="agent_index",
                    **where,
                )
            try:
                seats = tuple(int(s) for s in seats)
            except (TypeError, ValueError):
                raise DataError(
                    f"seats must be 0 or 1, got {seats!r:.80}", field="agent_index", **where
                ) from None
            if any(s not in (0, 1) for s in seats):
                raise DataError(
                    f"seats must be 0 or 1, got {list(seats)!r:.80}", field="agent_index", **where
                )
        lists.append(
            EnvironmentList(
                name=str(r.get("name") or r.get("pk") or Path(path).stem),
                environments=tuple(envs),
                agent_index=seats,
            )
        )
    return lists


def _as_list(
    source: PathLike | Sequence[R],
    loader: Callable[..., list[R]],
    kind: str,
    report: LoadReport | None = None,
) -> list[R]:
    if isinstance(source, Sequence) and not isinstance(source, str):
        return list(source)
    if isinstance(source, (str, os.PathLike)):
        return loader(source, report=report)
    raise ConfigError(f"{kind} must be a file path or a list, got {type(source).__name__}")


def load_tasks(
    scenarios: PathLike | Sequence[Scenario],
    profiles: PathLike | Sequence[Profile],
    combos: PathLike | Sequence[Combo],
    relationships: PathLike | Sequence[RelationshipProfile] | None = None,
    *,
    report: LoadReport | None = None,
) -> list[Task]:
    """Join combos with their scenario and profiles into tasks (paths or already loaded lists).
    A combo naming an unknown scenario or profile raises DataError with close matches.

    With ``relationships``, each combo's pair is checked against them the way SOTOPIA's
    constraint-based sampler chose pairs: a relationship profile of the two agents (either seat
    order) whose relationship is the scenario's. Combos without one are counted in ``report``
    (a warning without one), not refused: SOTOPIA's released combos were sampled from them."""
    scenario_list = _as_list(scenarios, load_scenarios, "scenarios", report)
    profile_list = _as_list(profiles, load_profiles, "profiles", report)
    combo_list = _as_list(combos, load_combos, "combos", report)
    relationship_list = None
    if relationships is not None:
        relationship_list = _as_list(relationships, load_relationships, "relationships", report)
    scenario_by_pk = {s.pk: s for s in scenario_list}
    profile_by_pk = {p.pk: p for p in profile_list}
    tasks = []
    for combo in combo_list:
        where: Where = {"path": combo.path, "line": combo.line}
        scenario = scenario_by_pk.get(combo.env_id)
        if scenario is None:
            raise DataError(
                close_matches(combo.env_id, scenario_by_pk, what="scenario"), field="env_id", **where
            )
        for pk in combo.agent_ids:
            if pk not in profile_by_pk:
                raise DataError(
                    close_matches(pk, profile_by_pk, what="agent profile"), field="agent_ids", **where
                )
        if combo.agent_ids[0] == combo.agent_ids[1]:
            raise DataError(f"both seats are played by {combo.agent_ids[0]!r}", field="agent_ids", **where)
        tasks.append(
            Task(
                pk=combo.pk,
                scenario=scenario,
                profiles=(profile_by_pk[combo.agent_ids[0]], profile_by_pk[combo.agent_ids[1]]),
                tested_seat=combo.tested_seat,
            )
        )
    if relationship_list is not None:
        _check_relationships(tasks, relationship_list, report)
    return tasks


def _check_relationships(
    tasks: list[Task], relationships: list[RelationshipProfile], report: LoadReport | None
) -> None:
    known: dict[frozenset[str], set[Relationship]] = {}
    for r in relationships:
        known.setdefault(frozenset((r.agent_1_id, r.agent_2_id)), set()).add(r.relationship)
    unmatched = [
        t.pk
        for t in tasks
        if t.scenario.relationship not in known.get(frozenset(p.pk for p in t.profiles), set())
    ]
    if report is not None:
        report.combos_checked += len(tasks)
        report.unmatched_combos += unmatched
    elif unmatched:
        warnings.warn(
            f"{len(unmatched)} of {len(tasks)} combos pair agents with no relationship profile of their "
            f"scenario's relationship (e.g. {', '.join(unmatched[:3])})",
            stacklevel=3,
        )


# SOTOPIA's sampler leaves this, its default age constraint, unapplied.
_DEFAULT_AGE_CONSTRAINT = "[(18, 70), (18, 70)]"


def _age_ranges(scenario: Scenario) -> list[tuple[int, int]] | None:
    """The scenario's age range per seat; None when it sets none (or SOTOPIA's default)."""
    text = scenario.age_constraint
    if text is None or not text.strip() or text.strip() == _DEFAULT_AGE_CONSTRAINT:
        return None
    try:
        ranges = ast.literal_eval(text)
        ranges = [(int(lo), int(hi)) for lo, hi in ranges]
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        ranges = []
    if len(ranges) != 2:
        raise DataError(
            f"scenario {scenario.pk!r}: cannot read {text!r:.60} as [(min, max), (min, max)]",
            field="age_constraint",
        )
    return ranges


def sample_tasks(
    scenarios: PathLike | Sequence[Scenario],
    profiles: PathLike | Sequence[Profile],
    relationships: PathLike | Sequence[RelationshipProfile],
    *,
    per_scenario: int = 5,
    seed: int = 0,
    report: LoadReport | None = None,
) -> list[Task]:
    """Tasks built the way SOTOPIA's constraint-based sampler builds env-agent combos, for data
    without a combos file: for each scenario, the relationship profiles whose relationship is the
    scenario's and whose agents' ages fit its age constraint (seat 0 is ``agent_1_id``), shuffled,
    the first ``per_scenario`` of them. The same seed gives the same tasks (each scenario's
    shuffle is seeded by the seed and its pk, so it does not depend on the other scenarios).
    A scenario with fewer fitting pairs keeps those it has; ``report.short_scenarios`` lists it
    (a warning without a report). Task pks are ``<scenario>:<agent 1>:<agent 2>``."""
    if isinstance(per_scenario, bool) or not isinstance(per_scenario, int) or per_scenario < 1:
        raise ConfigError(f"per_scenario must be a positive number of tasks, got {per_scenario!r}")
    scenario_list = _as_list(scenarios, load_scenarios, "scenarios", report)
    profile_by_pk = {p.pk: p for p in _as_list(profiles, load_profiles, "profiles", report)}
    relationship_list = _as_list(relationships, load_relationships, "relationships", report)
    for r in relationship_list:
        for name in ("agent_1_id", "agent_2_id"):
            pk = getattr(r, name)
            if pk not in profile_by_pk:
                raise DataError(
                    close_matches(pk, profile_by_pk, what="agent profile"),
                    path=r.path,
                    line=r.line,
                    field=name,
                )
    tasks, short = [], []
    for scenario in scenario_list:
        ages = _age_ranges(scenario)
        fitting, pairs = [], set()
        for r in relationship_list:
            pair = (r.agent_1_id, r.agent_2_id)
            if r.relationship != scenario.relationship or pair in pairs or pair[0] == pair[1]:
                continue
            if ages is not None and not all(
                lo <= profile_by_pk[pk].age <= hi for pk, (lo, hi) in zip(pair, ages)
            ):
                continue
            pairs.add(pair)
            fitting.append(pair)
        random.Random(f"{seed}:{scenario.pk}").shuffle(fitting)
        if len(fitting) < per_scenario:
            short.append(scenario.pk)
        for a1, a2 in fitting[:per_scenario]:
            pk = f"{scenario.pk}:{a1}:{a2}"
            tasks.append(Task(pk=pk, scenario=scenario, profiles=(profile_by_pk[a1], profile_by_pk[a2])))
    if report is not None:
        report.read["sampled"] += len(tasks)
        report.short_scenarios += short
    elif short:
        warnings.warn(
            f"{len(short)} scenarios have fewer than {per_scenario} fitting pairs "
            f"(e.g. {', '.join(short[:3])})",
            stacklevel=2,
        )
    return tasks


def load_sotopia_dump(
    *,
    scenarios: PathLike | Sequence[Scenario],
    profiles: PathLike | Sequence[Profile],
    combos: PathLike | Sequence[Combo] | None = None,
    relationships: PathLike | Sequence[RelationshipProfile] | None = None,
    per_scenario: int = 5,
    seed: int = 0,
) -> tuple[list[Task], LoadReport]:
    """SOTOPIA's released data as tasks, with a report of what was read and changed.

    With ``combos`` the tasks are those combos (checked against ``relationships`` when given, see
    ``load_tasks``); without, they are sampled from ``relationships`` (see ``sample_tasks``)."""
    report = LoadReport()
    if combos is not None:
        tasks = load_tasks(scenarios, profiles, combos, relationships, report=report)
    elif relationships is not None:
        tasks = sample_tasks(
            scenarios, profiles, relationships, per_scenario=per_scenario, seed=seed, report=report
        )
    else:
        raise ConfigError(
            "load_sotopia_dump needs combos= (env-agent combos) or relationships= (to sample them)"
        )
    return tasks, report


def select_environment_list(tasks: Sequence[Task], environment_list: EnvironmentList) -> list[Task]:
    """The tasks of the scenarios in ``environment_list`` (in its order), each with ``tested_seat``
    set from the list's ``agent_index``. An unknown scenario pk raises DataError with close matches."""
    by_scenario: dict[str, list[Task]] = {}
    for task in tasks:
        by_scenario.setdefault(task.scenario.pk, []).append(task)
    selected = []
    for i, env_id in enumerate(environment_list.environments):
        if env_id not in by_scenario:
            raise DataError(
                close_matches(env_id, by_scenario, what="scenario"),
                field=f"{environment_list.name}.environments[{i}]",
            )
        seat = environment_list.agent_index[i] if environment_list.agent_index is not None else None
        selected += [dataclasses.replace(t, tested_seat=seat) for t in by_scenario[env_id]]
    return selected


# ---------------------------------------------------------------------------------------------
# SOTOPIA / SOTOPIA-pi episode files -> EpisodeRecord
# ---------------------------------------------------------------------------------------------

# Inverse of SOTOPIA's rendering of actions (sotopia_env.env.ACTION_TEXT): prefix -> type.
_RENDERED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("said:", "speak"),
    ("[non-verbal communication]", "non-verbal communication"),
    ("[action]", "action"),
    ("left the conversation", "leave"),
    ("did nothing", "none"),
)


def parse_rendered_action(text: str) -> tuple[str, str] | None:
    """``said: "Hi"`` -> ("speak", "Hi"); None when the text is not a rendered action."""
    text = text.strip()
    for prefix, action_type in _RENDERED_PREFIXES:
        if text.startswith(prefix):
            argument = text[len(prefix) :].strip()
            if action_type == "speak" and len(argument) >= 2 and argument[0] == argument[-1] == '"':
                argument = argument[1:-1]
            if action_type in ("none", "leave"):
                argument = ""
            return action_type, argument
    return None


def _split_name(name: str) -> tuple[str, str]:
    first, _, last = name.strip().partition(" ")
    return first, last


def _turns_from_raw_messages(raw: Any, names: list[str], where: Where) -> tuple[list[Turn], str]:
    """SOTOPIA's ``raw_messages``: one list per turn of ``[sender, receiver, text]``; agents' actions
    are sent to "Environment" (the agent that had no turn sends "did nothing"). The first list
    holds the environment's opening observations."""
    if not isinstance(raw, list):
        raise DataError(
            "expected a list of turns (lists of [sender, receiver, message])", field="raw_messages", **where
        )
    seat_of = {n: i for i, n in enumerate(names)}
    per_turn: list[dict[int, tuple[str, str]]] = []
    for k, group in enumerate(raw):
        if not isinstance(group, list):
            raise DataError(f"turn {k} is not a list", field="raw_messages", **where)
        acts: dict[int, tuple[str, str]] = {}
        for message in group:
            if not isinstance(message, (list, tuple)) or len(message) != 3:
                raise DataError(
                    f"turn {k}: expected [sender, receiver, message], got {message!r:.80}",
                    field="raw_messages",
                    **where,
                )
            sender, receiver, text = message
            if receiver != "Environment" or sender == "Environment":
                continue
            if sender not in seat_of:
                raise DataError(
                    close_matches(str(sender), names, what="speaker") + f" (turn {k})",
                    field="raw_messages",
                    **where,
                )
            parsed = parse_rendered_action(str(text))
            if parsed is None:
                raise DataError(
                    f"turn {k}: cannot read {text!r:.80} as an action (expected one of "
                    f"{', '.join(p for p, _ in _RENDERED_PREFIXES)})",
                    field="raw_messages",
                    **where,
                )
            acts[seat_of[sender]] = parsed
        if acts:
            per_turn.append(acts)
    round_robin = all(
        seat == t % 2 for t, acts in enumerate(per_turn) for seat, (a, _) in acts.items() if a != "none"
    )
    turns = []
    for t, acts in enumerate(per_turn):
        seats = (t % 2,) if round_robin else (0, 1)
        for seat in seats:
            action_type, argument = acts.get(seat, ("none", ""))
            turns.append(Turn(t, seat, names[seat], action_type, argument))
    return turns, "round-robin" if round_robin else "simultaneous"


def _turns_from_social_interactions(text: Any, names: list[str], where: Where) -> list[Turn]:
    """Fallback when ``raw_messages`` is absent or empty: read SOTOPIA's rendered conversation
    (``Name said: "..."`` / ``Name: [action] ...`` lines, turns where someone did nothing left
    out) back into round-robin turns, filling the skipped turns with ``none``."""
    if not isinstance(text, str):
        raise DataError("expected the rendered conversation (str)", field="social_interactions", **where)
    pattern = re.compile(r"^(?:Turn #\d+:?\s*)?(" + "|".join(re.escape(n) for n in names) + r"):?\s+(.*)$")
    turns: list[Turn] = []
    for line in text.splitlines():
        match = pattern.match(line.strip())
        parsed = parse_rendered_action(match.group(2)) if match else None
        if match is None or parsed is None:
            if (
                turns
                and line.strip()
                and turns[-1].action_type in ("speak", "non-verbal communication", "action")
            ):
                last = turns[-1]  # a multi-line argument
                turns[-1] = dataclasses.replace(last, argument=(last.argument + "\n" + line).rstrip('"'))
            continue
        seat = names.index(match.group(1))
        t = turns[-1].turn + 1 if turns else 0
        if t % 2 != seat:
            turns.append(Turn(t, 1 - seat, names[1 - seat], "none"))
            t += 1
        turns.append(Turn(t, seat, names[seat], *parsed))
    return turns


def _evaluation_from_rewards(
    obj: dict, names: list[str], judge: str, where: Where
) -> EpisodeEvaluation | None:
    rewards = obj.get("rewards")
    if rewards is None:
        rewards = obj.get("raw_rewards")
    if rewards is None:
        return None
    stored = obj.get("reasoning")
    comment = stored if isinstance(stored, str) else ""
    reasoning = _reasoning_by_agent(comment)
    if isinstance(rewards, dict) and "agent_1_evaluation" in rewards:  # SOTOPIA v0.1.4 judge answer shape
        rewards = [rewards.get("agent_1_evaluation"), rewards.get("agent_2_evaluation")]
    elif isinstance(rewards, dict) and all(n in rewards for n in names):
        rewards = [rewards[n] for n in names]
    if not isinstance(rewards, list) or len(rewards) != 2:
        raise DataError(f"expected one entry per agent (2), got {rewards!r:.80}", field="rewards", **where)
    if all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in rewards):
        # SOTOPIA stores a failed judge as bare numbers (0.0) without dimension scores.
        return EpisodeEvaluation.failed(
            judge, "SOTOPIA stored no per-dimension scores for this episode (its judge failed); not evaluated"
        )
    agents = []
    for seat, entry in enumerate(rewards):
        field = f"rewards[{seat}]"
        if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], dict):
            entry = entry[1]  # (overall, {dimension: score})
        if not isinstance(entry, dict):
            raise DataError(
                f"expected the dimension scores (object), got {entry!r:.80}", field=field, **where
            )
        scores, why = {}, dict(reasoning[seat])
        for dim in DIMENSIONS:
            value = entry.get(dim)
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                why[dim], value = value  # [reasoning, score]
            if value is None:
                raise DataError(f"missing dimension {dim!r}", field=field, **where)
            scores[dim] = value
        try:
            agents.append(AgentEvaluation(scores=scores, reasoning=why))
        except DataError as e:
            raise DataError(str(e), field=field, **where) from None
    return EpisodeEvaluation(agents=agents, judge=judge, comment=comment)


_AGENT_COMMENTS = re.compile(r"Agent ([12]) comments:\s*\n(.*?)(?=Agent [12] comments:|\Z)", re.DOTALL)
_DIMENSION_LINE = re.compile(r"^(" + "|".join(DIMENSIONS) + r"):\s*(.*)$", re.MULTILINE)


def _reasoning_by_agent(text: str) -> list[dict[str, str]]:
    """Per-dimension reasoning out of SOTOPIA's ``reasoning`` text ("Agent 1 comments:\\n
    believability: ..."); dimensions it does not mention are left out."""
    out: list[dict[str, str]] = [{}, {}]
    for agent, block in _AGENT_COMMENTS.findall(text or ""):
        for dim, why in _DIMENSION_LINE.findall(block):
            out[int(agent) - 1][dim] = why.strip()
    return out


# SOTOPIA's environment comment ("Environment comments: terminated: ...") -> our reason.
_TERMINATION_COMMENTS = (("leaving", "leave"), ("stale", "stale"), ("too long", "max_turns"))


def _termination_from_comment(reasoning: Any) -> str | None:
    if not isinstance(reasoning, str):
        return None
    head = reasoning.split("Agent 1 comments:")[0]
    if "terminated" not in head:
        return None
    for phrase, reason in _TERMINATION_COMMENTS:
        if phrase in head:
            return reason
    return None


def _split_background(text: str, first_name: str) -> tuple[str, str]:
    """SOTOPIA's rendered background ends with "<first name>'s secrets: ..."; keep the secret
    apart so that only its owner ever sees it."""
    marker = f"{first_name}'s secrets:"
    head, found, secret = text.partition(marker)
    return (head.strip(), secret.strip()) if found else (text.strip(), "")


def sotopia_episode_to_record(
    obj: dict,
    *,
    path: str | None = None,
    line: int | None = None,
    profiles: dict[str, Profile] | None = None,
    scenarios: dict[str, Scenario] | None = None,
) -> EpisodeRecord:
    """One SOTOPIA/SOTOPIA-pi episode (a line of their published JSONL) as an EpisodeRecord.

    With ``profiles``/``scenarios`` (pk -> object) the task is exact; otherwise it is rebuilt from
    the episode's own text: names and backgrounds from ``agents_background`` (the secret kept
    apart), goals from ``social_goals``, relationship unknown (stranger: the partner's profile is
    not shown). Turns come from ``raw_messages`` (or, when it is missing or holds no agent
    action, ``social_interactions``; ``tags["turns_from"]`` says which);
    the evaluation from ``rewards`` (or ``raw_rewards``) with the judge's ``reasoning``."""
    where: Where = {"path": path, "line": line}
    goals = obj.get("social_goals")
    if not isinstance(goals, dict) or len(goals) != 2:
        raise DataError(
            "expected an object agent name -> goal for the 2 agents", field="social_goals", **where
        )
    names = [str(n) for n in goals]
    agent_ids = obj.get("agent_ids") or names
    if not isinstance(agent_ids, list) or len(agent_ids) != 2:
        raise DataError(
            f"expected a list of 2 agent profile pks, got {agent_ids!r:.80}", field="agent_ids", **where
        )
    env_id = obj.get("environment_id") or obj.get("codename")
    if not isinstance(env_id, str) or not env_id:
        raise DataError("expected the scenario pk (str)", field="environment_id", **where)
    backgrounds = obj.get("agents_background") or {}
    if not isinstance(backgrounds, dict):
        raise DataError("expected an object agent name -> background", field="agents_background", **where)

    seat_profiles = []
    for seat, name in enumerate(names):
        known = (profiles or {}).get(agent_ids[seat])
        if known is not None:
            seat_profiles.append(known)
            continue
        first, last = _split_name(name)
        public, secret = _split_background(str(backgrounds.get(name, "")), first)
        seat_profiles.append(
            Profile(
                pk=str(agent_ids[seat]), first_name=first, last_name=last, public_info=public, secret=secret
            )
        )
    scenario = (scenarios or {}).get(env_id)
    if scenario is None:
        if not isinstance(obj.get("scenario"), str):
            raise DataError("expected the scenario text (str)", field="scenario", **where)
        scenario = Scenario(
            pk=env_id,
            codename=str(obj.get("codename") or env_id),
            scenario=obj["scenario"],
            agent_goals=[str(goals[n]) for n in names],
            relationship=Relationship.stranger,
            source="sotopia episode",
        )
    task = Task(
        pk=f"{env_id}:{agent_ids[0]}:{agent_ids[1]}",
        scenario=scenario,
        profiles=(seat_profiles[0], seat_profiles[1]),
    )
    names = task.agent_names

    raw, interactions = obj.get("raw_messages"), obj.get("social_interactions")
    if raw is None and interactions is None:
        raise DataError(
            "the episode has neither 'raw_messages' nor 'social_interactions'", field="raw_messages", **where
        )
    turns: list[Turn] = []
    turn_order, turns_from = "round-robin", "raw_messages"
    if raw is not None:
        turns, turn_order = _turns_from_raw_messages(raw, [str(n) for n in goals], where)
        turns = [dataclasses.replace(t, speaker=names[t.agent_index]) for t in turns]
    # Some exports keep the conversation only as text, with "raw_messages": [] (or no agent
    # action in it): the rendered text is then the record of the turns.
    if not turns and isinstance(interactions, str) and interactions.strip():
        turns = _turns_from_social_interactions(interactions, names, where)
        turn_order, turns_from = "round-robin", "social_interactions"
    elif raw is None:
        turns = _turns_from_social_interactions(interactions, names, where)
        turns_from = "social_interactions"

    models = obj.get("experiment_model_name_pairs") or []
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise DataError("expected a list of model names", field="experiment_model_name_pairs", **where)
    # SOTOPIA lists [environment/judge model, agent 1 model, agent 2 model].
    judge = models[0] if len(models) == 3 else "sotopia"
    seat_models = models[-2:] if len(models) >= 2 else ["", ""]
    evaluation = _evaluation_from_rewards(obj, [str(n) for n in goals], judge, where)
    reason = _termination_from_comment(obj.get("reasoning"))
    if reason is None:
        reason, _ = RuleBasedTermination(max_turns=max(20, len(turns))).reason_for_history(turns)
    episode_id = obj.get("episode_id") or obj.get("pk")
    if not isinstance(episode_id, str) or not episode_id:
        raise DataError("expected the episode id (str)", field="episode_id", **where)
    return EpisodeRecord(
        task=task,
        turns=turns,
        models=list(seat_models),
        evaluation=evaluation,
        episode_id=episode_id,
        termination=reason or "max_turns",
        tags={
            "source": "sotopia",
            "experiment_tag": obj.get("experiment_tag", ""),
            "turn_order": turn_order,
            "turns_from": turns_from,
        },
    )


def load_sotopia_episodes(
    path: PathLike,
    *,
    profiles: PathLike | Sequence[Profile] | None = None,
    scenarios: PathLike | Sequence[Scenario] | None = None,
) -> list[EpisodeRecord]:
    """SOTOPIA/SOTOPIA-pi published episodes (JSONL, one a line) as EpisodeRecords; optional
    profile and scenario files (or lists) make the tasks exact (see ``sotopia_episode_to_record``)."""
    profile_by_pk = (
        {p.pk: p for p in _as_list(profiles, load_profiles, "profiles")} if profiles is not None else {}
    )
    scenario_by_pk = (
        {s.pk: s for s in _as_list(scenarios, load_scenarios, "scenarios")} if scenarios is not None else {}
    )
    return [
        sotopia_episode_to_record(
            obj, path=str(path), line=line, profiles=profile_by_pk, scenarios=scenario_by_pk
        )
        for line, obj in read_records(path, kind="episode")
    ]


assert {a for _, a in _RENDERED_PREFIXES} == set(ACTION_TYPES)  # every action type can be read back
