"""Loaders for SOTOPIA's data files: agent profiles, environment profiles (scenarios),
env-agent combos (tasks), environment lists (e.g. the hard subset), and the episode files
published by SOTOPIA and SOTOPIA-pi, turned into our ``EpisodeRecord``.

Every loader takes a JSON file (a list of records, one record, or an object id -> record) or a
JSONL file (one record a line). SOTOPIA's field names are read as they are, including those
of its CSV/JSONL exports (``agent_id``, ``env_id``, ``combo_id`` for ``pk``; relationships
as ``"friend"``, ``"3"`` or ``"RelationshipType.friend"``). A malformed file or record raises
``DataError`` naming the file, the line and the field; an unknown id lists close matches.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .episode import ACTION_TYPES, EpisodeRecord, Turn
from .errors import ConfigError, DataError
from .evaluation import DIMENSIONS, AgentEvaluation, EpisodeEvaluation
from .profiles import Profile, Relationship, Scenario, Task
from .termination import RuleBasedTermination

__all__ = [
    "Combo",
    "EnvironmentList",
    "close_matches",
    "load_combos",
    "load_environment_lists",
    "load_profiles",
    "load_scenarios",
    "load_sotopia_episodes",
    "load_tasks",
    "read_records",
    "select_environment_list",
    "sotopia_episode_to_record",
]

PathLike = str | os.PathLike


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
# Profiles, scenarios, combos, environment lists -> tasks
# ---------------------------------------------------------------------------------------------

_PK_ALIASES = {"profile": "agent_id", "scenario": "env_id", "combo": "combo_id"}


def _with_pk(record: dict, kind: str) -> dict:
    alias = _PK_ALIASES[kind]
    if "pk" not in record and alias in record:
        record = {**record, "pk": record[alias]}
    return record


def _normalize_scenario(record: dict) -> dict:
    """SOTOPIA's exports write relationships as "3", "friend" or "RelationshipType.friend", and
    a missing agent constraint as "none"."""
    record = _with_pk(record, "scenario")
    rel = record.get("relationship")
    if isinstance(rel, str):
        name = rel.split(".")[-1].strip()
        if name.lstrip("-").isdigit():
            record = {**record, "relationship": int(name)}
        elif name in Relationship.__members__:
            record = {**record, "relationship": name}
    if isinstance(record.get("agent_constraint"), str) and record["agent_constraint"].lower() in ("none", ""):
        record = {**record, "agent_constraint": None}
    return record


def load_profiles(path: PathLike) -> list[Profile]:
    """SOTOPIA agent profiles (one per record); pks must be unique."""
    records = read_records(path, kind="agent profile")
    profiles = [Profile.from_dict(_with_pk(r, "profile"), path=str(path), line=line) for line, r in records]
    _check_unique(profiles, path, lambda p: p.pk, [line for line, _ in records])
    return profiles


def load_scenarios(path: PathLike) -> list[Scenario]:
    """SOTOPIA environment profiles (scenarios); pks must be unique."""
    records = read_records(path, kind="environment profile")
    scenarios = [Scenario.from_dict(_normalize_scenario(r), path=str(path), line=line) for line, r in records]
    _check_unique(scenarios, path, lambda s: s.pk, [line for line, _ in records])
    return scenarios


def _check_unique(items: list, path: PathLike, key, lines: list[int]) -> None:
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
    def from_dict(cls, record: dict, *, path: str | None = None, line: int | None = None) -> Combo:
        where = {"path": path, "line": line}
        record = _with_pk(record, "combo")
        env_id, agent_ids = record.get("env_id"), record.get("agent_ids")
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
        if seat is not None and (isinstance(seat, bool) or seat not in (0, 1)):
            raise DataError(f"expected 0, 1 or null, got {seat!r}", field="tested_seat", **where)
        return cls(pk=pk, env_id=env_id, agent_ids=(agent_ids[0], agent_ids[1]), tested_seat=seat, **where)


def load_combos(path: PathLike) -> list[Combo]:
    """SOTOPIA env-agent combos (tasks by reference); pks must be unique."""
    records = read_records(path, kind="env-agent combo")
    combos = [Combo.from_dict(r, path=str(path), line=line) for line, r in records]
    _check_unique(combos, path, lambda c: c.pk, [line for line, _ in records])
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
        where = {"path": str(path), "line": line}
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


def _as_list(source, loader, kind):
    if isinstance(source, (str, os.PathLike)):
        return loader(source)
    if isinstance(source, Sequence):
        return list(source)
    raise ConfigError(f"{kind} must be a file path or a list, got {type(source).__name__}")


def load_tasks(
    scenarios: PathLike | Sequence[Scenario],
    profiles: PathLike | Sequence[Profile],
    combos: PathLike | Sequence[Combo],
) -> list[Task]:
    """Join combos with their scenario and profiles into tasks (paths or already loaded lists).
    A combo naming an unknown scenario or profile raises DataError with close matches."""
    scenario_list = _as_list(scenarios, load_scenarios, "scenarios")
    profile_list = _as_list(profiles, load_profiles, "profiles")
    combo_list = _as_list(combos, load_combos, "combos")
    scenario_by_pk = {s.pk: s for s in scenario_list}
    profile_by_pk = {p.pk: p for p in profile_list}
    tasks = []
    for combo in combo_list:
        where = {"path": combo.path, "line": combo.line}
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
    return tasks


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


def _turns_from_raw_messages(raw: Any, names: list[str], where: dict) -> tuple[list[Turn], str]:
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


def _turns_from_social_interactions(text: Any, names: list[str], where: dict) -> list[Turn]:
    """Fallback when ``raw_messages`` is absent: read SOTOPIA's rendered conversation
    (``Name said: "..."`` / ``Name: [action] ...`` lines, turns where someone did nothing left
    out) back into round-robin turns, filling the skipped turns with ``none``."""
    if not isinstance(text, str):
        raise DataError("expected the rendered conversation (str)", field="social_interactions", **where)
    pattern = re.compile(r"^(?:Turn #\d+:?\s*)?(" + "|".join(re.escape(n) for n in names) + r"):?\s+(.*)$")
    turns: list[Turn] = []
    for line in text.splitlines():
        match = pattern.match(line.strip())
        parsed = parse_rendered_action(match.group(2)) if match else None
        if parsed is None:
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
    obj: dict, names: list[str], judge: str, where: dict
) -> EpisodeEvaluation | None:
    rewards = obj.get("rewards")
    if rewards is None:
        rewards = obj.get("raw_rewards")
    if rewards is None:
        return None
    comment = obj.get("reasoning") if isinstance(obj.get("reasoning"), str) else ""
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
    not shown). Turns come from ``raw_messages`` (or, failing that, ``social_interactions``);
    the evaluation from ``rewards`` (or ``raw_rewards``) with the judge's ``reasoning``."""
    where = {"path": path, "line": line}
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

    if obj.get("raw_messages") is not None:
        turns, turn_order = _turns_from_raw_messages(obj["raw_messages"], [str(n) for n in goals], where)
        turns = [dataclasses.replace(t, speaker=names[t.agent_index]) for t in turns]
    elif obj.get("social_interactions") is not None:
        turns, turn_order = (
            _turns_from_social_interactions(obj["social_interactions"], names, where),
            "round-robin",
        )
    else:
        raise DataError(
            "the episode has neither 'raw_messages' nor 'social_interactions'", field="raw_messages", **where
        )

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
        tags={"source": "sotopia", "experiment_tag": obj.get("experiment_tag", ""), "turn_order": turn_order},
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
