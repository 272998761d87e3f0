"""Scenarios, character profiles and tasks, with SOTOPIA's JSON field names.

A *scenario* is SOTOPIA's "environment profile", a *profile* its "agent profile", and a
*task* its "env-agent combo": one scenario plus the two profiles that play it. Files
exported from SOTOPIA and SOTOPIA-pi load without conversion (see ``sotopia_env.loader``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from .errors import DataError


class Relationship(IntEnum):
    """SOTOPIA's relationship levels; they decide how much of the partner's profile an agent sees."""

    stranger = 0
    know_by_name = 1
    acquaintance = 2
    friend = 3
    romantic_relationship = 4
    family_member = 5


# Which of the partner's profile fields an agent may see, by relationship (SOTOPIA.md).
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


def _check_type(record: dict, name: str, kind: type | tuple[type, ...], where: dict) -> Any:
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
    def from_dict(cls, record: dict, *, path: str | None = None, line: int | None = None) -> "Profile":
        where = {"path": path, "line": line}
        if not isinstance(record, dict):
            raise DataError(f"an agent profile must be a JSON object, got {type(record).__name__}", **where)
        for name in ("pk", "first_name", "last_name"):
            _check_type(record, name, str, where)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in record or record[f.name] is None:
                continue
            value = record[f.name]
            if f.name == "age":
                if isinstance(value, str) and value.strip().isdigit():
                    value = int(value)
                _check_type({"age": value}, "age", int, where)
            elif f.name in ("moral_values", "schwartz_personal_values"):
                if isinstance(value, str):
                    value = [value]
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise DataError("expected a list of strings", field=f.name, **where)
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
    def from_dict(cls, record: dict, *, path: str | None = None, line: int | None = None) -> "Scenario":
        where = {"path": path, "line": line}
        if not isinstance(record, dict):
            raise DataError(f"an environment profile must be a JSON object, got {type(record).__name__}",
                            **where)
        pk = _check_type(record, "pk", str, where)
        scenario = _check_type(record, "scenario", str, where)
        goals = record.get("agent_goals")
        if not isinstance(goals, list) or len(goals) != 2 or not all(isinstance(g, str) for g in goals):
            raise DataError(f"expected a list of 2 strings (one goal per agent), got {goals!r:.80}",
                            field="agent_goals", **where)
        rel = record.get("relationship", 0)
        if isinstance(rel, str) and rel in Relationship.__members__:
            rel = Relationship[rel]
        if isinstance(rel, bool) or not isinstance(rel, int) or rel not in {r.value for r in Relationship}:
            allowed = ", ".join(f"{r.value} ({r.name})" for r in Relationship)
            raise DataError(f"{rel!r} is not a relationship; allowed: {allowed}", field="relationship", **where)
        tags = record.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise DataError("expected a list of strings", field="tags", **where)
        for name in ("codename", "source", "tag"):
            if record.get(name) is not None and not isinstance(record[name], str):
                raise DataError(f"expected str, got {type(record[name]).__name__}", field=name, **where)
        return cls(pk=pk, codename=record.get("codename") or pk, scenario=scenario, agent_goals=list(goals),
                   relationship=Relationship(rel), source=record.get("source") or "",
                   age_constraint=record.get("age_constraint"),
                   occupation_constraint=record.get("occupation_constraint"),
                   agent_constraint=record.get("agent_constraint"), tag=record.get("tag") or "",
                   tags=list(tags))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["relationship"] = int(self.relationship)
        return d


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
    def from_dict(cls, record: dict, *, path: str | None = None, line: int | None = None) -> "Task":
        """Inverse of ``to_dict`` (a task embedded in an episode or pair record)."""
        where = {"path": path, "line": line}
        if not isinstance(record, dict) or "scenario" not in record or "profiles" not in record:
            raise DataError("expected a task object with 'scenario' and 'profiles'", field="task", **where)
        profiles = record["profiles"]
        if not isinstance(profiles, list) or len(profiles) != 2:
            raise DataError("expected a list of 2 agent profiles", field="task.profiles", **where)
        return cls(pk=str(record.get("pk") or record["scenario"].get("pk")),
                   scenario=Scenario.from_dict(record["scenario"], **where),
                   profiles=(Profile.from_dict(profiles[0], **where), Profile.from_dict(profiles[1], **where)),
                   tested_seat=record.get("tested_seat"))
