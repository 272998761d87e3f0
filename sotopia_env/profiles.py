"""Scenarios, character profiles and tasks, with SOTOPIA's JSON field names.

A *scenario* is SOTOPIA's "environment profile", a *profile* its "agent profile", and a
*task* its "env-agent combo": one scenario plus the two profiles that play it. Files
exported from SOTOPIA and SOTOPIA-pi load without conversion (see ``sotopia_env.loader``).
"""
from __future__ import annotations

import ast
import dataclasses
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from .errors import DataError, Where


class Relationship(IntEnum):
    """SOTOPIA's relationship levels; they decide how much of the partner's profile an agent sees."""

    stranger = 0
    know_by_name = 1
    acquaintance = 2
    friend = 3
    romantic_relationship = 4
    family_member = 5


# Which of the partner's profile fields an agent may see, by relationship (as SOTOPIA shows them).
# The secret is never visible to anyone but its owner.
_ACQUAINTANCE_FIELDS = ("first_name", "last_name", "age", "gender", "gender_pronoun", "occupation",
                        "public_info")
_CLOSE_FIELDS = _ACQUAINTANCE_FIELDS + ("big_five", "moral_values", "schwartz_personal_values",
                                        "personality_and_values", "decision_making_style", "mbti")
VISIBLE_PROFILE_FIELDS: dict[Relationship, tuple[str, ...]] = {
    Relationship.stranger: (),
    Relationship.know_by_name: ("first_name", "last_name"),
    Relationship.acquaintance: _ACQUAINTANCE_FIELDS,
    Relationship.friend: _CLOSE_FIELDS,
    Relationship.romantic_relationship: _CLOSE_FIELDS,
    Relationship.family_member: _CLOSE_FIELDS,
}


# --- Export artefacts in SOTOPIA's released data ----------------------------------------------
# The Redis dump went through pandas: list fields arrive as the text of a Python list
# ("['Liberty', 'Care']"), sometimes cut at its commas into fragments (["['Liberty'", " 'Care']"]),
# and empty cells as "nan" or NaN. ``from_dict`` reads them back and counts each change in
# ``changes`` (a Counter of (change, field)), so that a loader can report what it altered.

STRINGIFIED_LIST = "stringified list parsed"
FRAGMENTED_LIST = "fragmented list joined"
NAN_TO_EMPTY = "'nan' made empty"
FLOAT_TO_INT = "float made int"

_NAN_TEXTS = ("nan", "NaN")


def is_nan(value: Any) -> bool:
    """True for pandas' empty cell: a NaN float or the text "nan"/"NaN"."""
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and value in _NAN_TEXTS


def note_change(changes: Counter | None, change: str, name: str) -> None:
    """Count one ``change`` to field ``name`` (nothing when ``changes`` is None)."""
    if changes is not None:
        changes[(change, name)] += 1


def _looks_stringified(part: str) -> bool:
    part = part.strip()
    return part.startswith("[") or part.endswith("]")


def _literal_list(text: str) -> list[str] | None:
    """The strings of a Python list literal (nested one level deep when several stringified
    lists were joined); None when ``text`` is not one. ``ast.literal_eval`` never runs code."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if not isinstance(value, (list, tuple)):
        return None
    items: list = []
    for item in value:
        items += list(item) if isinstance(item, (list, tuple)) else [item]
    return items if all(isinstance(i, str) for i in items) else None


def parse_list_field(value: Any, name: str, where: Where, changes: Counter | None = None, *,
                     split_fallback: bool = True) -> list[str] | None:
    """A list-of-strings field as SOTOPIA's exports write it, read back into a clean list.

    A list of plain strings (or one plain string) passes through. The text of a Python list,
    whole or cut into fragments, is parsed; text that is no valid literal is split at commas
    when ``split_fallback`` (short values such as moral values), else kept as written (goals,
    whose commas are prose). Returns None for an empty cell ("nan"/NaN)."""
    if is_nan(value):
        note_change(changes, NAN_TO_EMPTY, name)
        return None
    parts = [value] if isinstance(value, str) else value
    if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
        raise DataError(f"expected a list of strings, got {value!r:.60}", field=name, **where)
    if not any(_looks_stringified(p) for p in parts):
        kept = [p for p in parts if not is_nan(p)]
        if len(kept) < len(parts):
            note_change(changes, NAN_TO_EMPTY, name)
        return kept
    text = ",".join(parts).strip()
    items = _literal_list(text)
    if items is None:
        if not split_fallback:
            return list(parts)
        items = [piece.strip().strip("'\"") for piece in text.strip("[]").split(",")]
    fragments = len(parts) > 1 and not all(_literal_list(p.strip()) is not None for p in parts)
    note_change(changes, FRAGMENTED_LIST if fragments else STRINGIFIED_LIST, name)
    return [i.strip() for i in items if i.strip() and not is_nan(i.strip())]


def markup_tags(goal: str) -> tuple[list[str], list[str]]:
    """(tags opened, tags never closed) of a goal's inline markup such as ``<extra_info>``."""
    opened = re.findall(r"<([A-Za-z_]+)>", goal)
    closed = Counter(re.findall(r"</([A-Za-z_]+)>", goal))
    unclosed = []
    for tag, count in Counter(opened).items():
        unclosed += [tag] * max(0, count - closed[tag])
    return opened, unclosed


def parse_relationship(value: Any, where: Where) -> Relationship:
    """A relationship as SOTOPIA writes it: 3, "3", "friend" or "RelationshipType.friend"."""
    rel = value
    if isinstance(rel, str):
        name = rel.split(".")[-1].strip()
        if name.lstrip("-").isdigit():
            rel = int(name)
        elif name in Relationship.__members__:
            rel = Relationship[name]
    if isinstance(rel, bool) or not isinstance(rel, int) or rel not in {r.value for r in Relationship}:
        allowed = ", ".join(f"{r.value} ({r.name})" for r in Relationship)
        raise DataError(f"{value!r} is not a relationship; allowed: {allowed}", field="relationship", **where)
    return Relationship(rel)


def _check_type(record: dict, name: str, kind: type | tuple[type, ...], where: Where) -> Any:
    value = record.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        allowed = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"expected {allowed}, got {type(value).__name__} {value!r:.60}", field=name, **where)
    return value


@dataclass
class Profile:
    """A character (SOTOPIA's agent profile). Field names are SOTOPIA's."""

    pk: str
    first_name: str
    last_name: str
    age: int = 0
    occupation: str = ""
    gender: str = ""
    gender_pronoun: str = ""
    public_info: str = ""
    big_five: str = ""
    moral_values: list[str] = field(default_factory=list)
    schwartz_personal_values: list[str] = field(default_factory=list)
    personality_and_values: str = ""
    decision_making_style: str = ""
    secret: str = ""
    model_id: str = ""
    mbti: str = ""
    tag: str = ""

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    @classmethod
    def from_dict(cls, record: dict, *, path: str | None = None, line: int | None = None,
                  changes: Counter | None = None) -> Profile:
        """Read one agent profile; export artefacts ("nan", stringified lists, float ages) are
        cleaned and counted in ``changes`` (see ``parse_list_field``)."""
        where: Where = {"path": path, "line": line}
        if not isinstance(record, dict):
            raise DataError(f"an agent profile must be a JSON object, got {type(record).__name__}", **where)
        for name in ("pk", "first_name", "last_name"):
            _check_type(record, name, str, where)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in record or record[f.name] is None:
                continue
            value = record[f.name]
            if f.name in ("moral_values", "schwartz_personal_values"):
                value = parse_list_field(value, f.name, where, changes) or []
            elif f.name not in ("pk", "first_name", "last_name") and is_nan(value):
                note_change(changes, NAN_TO_EMPTY, f.name)
                continue
            elif f.name == "age":
                if isinstance(value, str) and value.strip().isdigit():
                    value = int(value)
                elif isinstance(value, float) and value.is_integer():
                    # pandas turns an int column with gaps into floats
                    note_change(changes, FLOAT_TO_INT, f.name)
                    value = int(value)
                _check_type({"age": value}, "age", int, where)
            elif not isinstance(value, str):
                raise DataError(f"expected str, got {type(value).__name__}", field=f.name, **where)
            kwargs[f.name] = value
        return cls(**kwargs)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Scenario:
    """A social scenario (SOTOPIA's environment profile): the shared situation and one private
    goal per seat. Goals may hold inline tags such as ``<extra_info>`` for their owner."""

    pk: str
    codename: str
    scenario: str
    agent_goals: list[str]
    relationship: Relationship = Relationship.stranger
    source: str = ""
    age_constraint: str | None = None
    occupation_constraint: str | None = None
    agent_constraint: list[list[str]] | None = None
    tag: str = ""
    tags: list[str] = field(default_factory=list)
    """Our own labels (e.g. ``hard``, ``negotiation``) and the split (``bc``, ``align``, ``test``)."""

    @classmethod
    def from_dict(cls, record: dict, *, path: str | None = None, line: int | None = None,
                  changes: Counter | None = None) -> Scenario:
        """Read one environment profile; export artefacts are cleaned and counted in ``changes``
        (see ``parse_list_field``). Goal markup is kept as written: the renderer decides who sees it."""
        where: Where = {"path": path, "line": line}
        if not isinstance(record, dict):
            raise DataError(f"an environment profile must be a JSON object, got {type(record).__name__}",
                            **where)
        record = dict(record)
        for name in ("codename", "source", "tag", "age_constraint", "occupation_constraint",
                     "agent_constraint", "relationship"):
            if is_nan(record.get(name)):
                note_change(changes, NAN_TO_EMPTY, name)
                record[name] = None
        pk = _check_type(record, "pk", str, where)
        scenario = _check_type(record, "scenario", str, where)
        goals = record.get("agent_goals")
        if isinstance(goals, str) or (
            isinstance(goals, list) and goals and all(isinstance(g, str) for g in goals)
            and (len(goals) != 2 or (goals[0].lstrip().startswith("[") and goals[-1].rstrip().endswith("]")))
        ):
            goals = parse_list_field(goals, "agent_goals", where, changes, split_fallback=False)
        if not isinstance(goals, list) or len(goals) != 2 or not all(isinstance(g, str) for g in goals):
            raise DataError(f"expected a list of 2 strings (one goal per agent), got {goals!r:.80}",
                            field="agent_goals", **where)
        rel = record.get("relationship")
        relationship = Relationship.stranger if rel is None else parse_relationship(rel, where)
        tags = parse_list_field(record.get("tags") or [], "tags", where, changes) or []
        for name in ("codename", "source", "tag", "age_constraint", "occupation_constraint"):
            if record.get(name) is not None and not isinstance(record[name], str):
                raise DataError(f"expected str, got {type(record[name]).__name__}", field=name, **where)
        constraint = record.get("agent_constraint")
        if isinstance(constraint, str):
            if constraint.strip().lower() in ("", "none"):
                constraint = None
            else:
                try:
                    constraint = ast.literal_eval(constraint)
                except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                    raise DataError(f"cannot read {constraint!r:.60} as a list of lists of agent pks",
                                    field="agent_constraint", **where) from None
                note_change(changes, STRINGIFIED_LIST, "agent_constraint")
        if constraint is not None and (
            not isinstance(constraint, (list, tuple))
            or not all(isinstance(c, (list, tuple)) and all(isinstance(a, str) for a in c)
                       for c in constraint)
        ):
            raise DataError(f"expected a list of lists of agent pks, got {constraint!r:.60}",
                            field="agent_constraint", **where)
        return cls(pk=pk, codename=record.get("codename") or pk, scenario=scenario, agent_goals=list(goals),
                   relationship=relationship, source=record.get("source") or "",
                   age_constraint=record.get("age_constraint"),
                   occupation_constraint=record.get("occupation_constraint"),
                   agent_constraint=None if constraint is None else [list(c) for c in constraint],
                   tag=record.get("tag") or "", tags=list(tags))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["relationship"] = int(self.relationship)
        return d


@dataclass(frozen=True)
class RelationshipProfile:
    """SOTOPIA's relationship profile: two agent profiles and how they know each other.
    SOTOPIA's constraint-based sampler pairs agents for a scenario only through these, seat
    order as written (``agent_1_id`` plays seat 0)."""

    pk: str
    agent_1_id: str
    agent_2_id: str
    relationship: Relationship
    background_story: str = ""
    tag: str = ""
    path: str | None = field(default=None, compare=False, repr=False)
    line: int | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_dict(cls, record: dict, *, path: str | None = None, line: int | None = None,
                  changes: Counter | None = None) -> RelationshipProfile:
        """Read one relationship profile, also in SOTOPIA's JSONL export form (``relationship_id``,
        ``agent1_id``, ``agent2_id``, the relationship as text)."""
        where: Where = {"path": path, "line": line}
        if not isinstance(record, dict):
            raise DataError(f"a relationship profile must be a JSON object, got {type(record).__name__}",
                            **where)
        record = dict(record)
        exported = (("pk", "relationship_id"), ("agent_1_id", "agent1_id"), ("agent_2_id", "agent2_id"))
        for ours, export in exported:
            if ours not in record and export in record:
                record[ours] = record[export]
        ids = [_check_type(record, name, str, where) for name in ("agent_1_id", "agent_2_id")]
        if "relationship" not in record:
            raise DataError("missing; expected a relationship such as 3 or \"friend\"", field="relationship",
                            **where)
        relationship = parse_relationship(record["relationship"], where)
        text = {}
        for name in ("background_story", "tag"):
            value = record.get(name)
            if is_nan(value):
                note_change(changes, NAN_TO_EMPTY, name)
                value = None
            if value is not None and not isinstance(value, str):
                raise DataError(f"expected str, got {type(value).__name__}", field=name, **where)
            text[name] = value or ""
        pk = record.get("pk") or f"{ids[0]}:{ids[1]}:{int(relationship)}"
        if not isinstance(pk, str):
            raise DataError(f"expected str, got {type(pk).__name__}", field="pk", **where)
        return cls(pk=pk, agent_1_id=ids[0], agent_2_id=ids[1], relationship=relationship, path=path,
                   line=line, **text)

    def to_dict(self) -> dict:
        return {"pk": self.pk, "agent_1_id": self.agent_1_id, "agent_2_id": self.agent_2_id,
                "relationship": int(self.relationship), "background_story": self.background_story,
                "tag": self.tag}


@dataclass
class Task:
    """One scenario played by two profiles (SOTOPIA's env-agent combo). ``profiles[i]`` plays
    seat i and pursues ``scenario.agent_goals[i]``."""

    pk: str
    scenario: Scenario
    profiles: tuple[Profile, Profile]
    tested_seat: int | None = None
    """For SOTOPIA's hard subset: the seat the tested model plays (None: both, in turn)."""

    @property
    def agent_names(self) -> list[str]:
        return [p.name for p in self.profiles]

    def to_dict(self) -> dict:
        return {"pk": self.pk, "env_id": self.scenario.pk, "agent_ids": [p.pk for p in self.profiles],
                "tested_seat": self.tested_seat, "scenario": self.scenario.to_dict(),
                "profiles": [p.to_dict() for p in self.profiles]}

    @classmethod
    def from_dict(cls, record: dict, *, path: str | None = None, line: int | None = None) -> Task:
        """Inverse of ``to_dict`` (a task embedded in an episode or pair record)."""
        where: Where = {"path": path, "line": line}
        if not isinstance(record, dict) or "scenario" not in record or "profiles" not in record:
            raise DataError("expected a task object with 'scenario' and 'profiles'", field="task", **where)
        profiles = record["profiles"]
        if not isinstance(profiles, list) or len(profiles) != 2:
            raise DataError("expected a list of 2 agent profiles", field="task.profiles", **where)
        return cls(pk=str(record.get("pk") or record["scenario"].get("pk")),
                   scenario=Scenario.from_dict(record["scenario"], **where),
                   profiles=(Profile.from_dict(profiles[0], **where),
                             Profile.from_dict(profiles[1], **where)),
                   tested_seat=record.get("tested_seat"))
