"""Turns, episode records and the append-only JSONL episode store.

An ``EpisodeRecord`` is one line of the store: the task, both profiles, who played each seat
and how (model, sampling settings), every turn, the evaluation, the seed, timings and, for a
branch, the parent episode and the branch turn. ``EpisodeStore`` appends one record a line,
flushed and fsynced, so a crash loses at most the line being written; a torn last line is
skipped with a warning on read. The files load with ``datasets.load_dataset("json", ...)``.
"""
from __future__ import annotations

import json
import os
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .errors import DataError, Where
from .evaluation import EpisodeEvaluation
from .profiles import Task
from .redaction import redact

ACTION_TYPES: tuple[str, ...] = ("none", "speak", "non-verbal communication", "action", "leave")


@dataclass
class Turn:
    """One action of one agent. ``turn`` is the environment's turn counter when it was taken;
    ``agent_index`` is the seat (0 or 1). Token counts and ``fallback`` (the reply was not valid
    JSON and was read as plain speech) are filled by the policy that produced it."""

    turn: int
    agent_index: int
    speaker: str
    action_type: str
    argument: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    fallback: bool = False

    def __post_init__(self):
        if self.action_type not in ACTION_TYPES:
            raise DataError(f"action type {self.action_type!r} is not allowed; allowed: {', '.join(ACTION_TYPES)}",
                            field="action_type")
        if self.agent_index not in (0, 1):
            raise DataError(f"agent_index must be 0 or 1, got {self.agent_index!r}", field="agent_index")

    def to_dict(self) -> dict:
        return {"turn": self.turn, "agent_index": self.agent_index, "speaker": self.speaker,
                "action_type": self.action_type, "argument": self.argument,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "fallback": self.fallback}

    @classmethod
    def from_dict(cls, d: dict) -> Turn:
        argument = d.get("argument", "")
        if not isinstance(argument, str):  # never "None", "nan" or "{...}" trained on as if said
            raise DataError(f"a turn's argument must be a string, got {type(argument).__name__} {argument!r:.40}",
                            field="argument")
        return cls(turn=int(d["turn"]), agent_index=int(d["agent_index"]), speaker=str(d.get("speaker", "")),
                   action_type=str(d["action_type"]), argument=argument,
                   prompt_tokens=int(d.get("prompt_tokens", 0)), completion_tokens=int(d.get("completion_tokens", 0)),
                   fallback=bool(d.get("fallback", False)))


@dataclass
class EpisodeRecord:
    """Everything about one played episode (one line of an episode store)."""

    task: Task
    turns: list[Turn] = field(default_factory=list)
    models: list[str] = field(default_factory=lambda: ["", ""])
    """Model id of the policy in each seat."""
    sampling: list[dict] = field(default_factory=lambda: [{}, {}])
    """Sampling settings of each seat (temperature, top_p, max_new_tokens...). Never API keys."""
    evaluation: EpisodeEvaluation | None = None
    seed: int | None = None
    episode_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    parent_episode_id: str | None = None
    branch_turn: int | None = None
    """For a branch: index into the parent's ``turns`` list where this episode diverges."""
    termination: str = ""
    """Why the episode ended (``max_turns``, ``leave``, ``stale``)."""
    timings: dict[str, float] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)
    """Token and cost accounting per seat and for the judge."""
    tags: dict[str, Any] = field(default_factory=dict)
    """Free-form provenance: experiment name, run key, context truncation events..."""
    created: float = field(default_factory=time.time)

    @property
    def evaluated(self) -> bool:
        return self.evaluation is not None and self.evaluation.evaluated

    def score(self, agent_index: int, dimension: str = "goal") -> float:
        evaluation = self.evaluation
        if evaluation is None or not evaluation.evaluated or evaluation.agents is None:
            raise DataError(f"episode {self.episode_id} has no evaluation")
        return evaluation.agents[agent_index].scores[dimension]

    def agent_seats(self) -> list[int]:
        """The seats played by the model under test or training (``tags["agent_seats"]``, sorted):
        ``[0, 1]`` in self-chat, ``[s]`` against a partner.

        Fallback, the one convention: a record without the tag (SOTOPIA's published episodes, a
        store written by other tools) makes no claim about which seat was tested, so every seat
        counts, ``[0, 1]``, each for the model that played it (``models[seat]``)."""
        seats = self.tags.get("agent_seats")
        return sorted(int(s) for s in seats) if seats is not None else [0, 1]

    def agent_turns(self, agent_index: int) -> list[int]:
        """Indices into ``turns`` of the turns taken by ``agent_index`` (its own actions)."""
        return [i for i, t in enumerate(self.turns) if t.agent_index == agent_index]

    def to_dict(self) -> dict:
        return {"episode_id": self.episode_id, "task": self.task.to_dict(),
                "turns": [t.to_dict() for t in self.turns], "models": list(self.models),
                "sampling": list(self.sampling),
                "evaluation": self.evaluation.to_dict() if self.evaluation else None,
                "seed": self.seed, "parent_episode_id": self.parent_episode_id, "branch_turn": self.branch_turn,
                "termination": self.termination, "timings": dict(self.timings), "usage": dict(self.usage),
                "tags": dict(self.tags), "created": self.created}

    @classmethod
    def from_dict(cls, d: dict, *, path: str | None = None, line: int | None = None) -> EpisodeRecord:
        where: Where = {"path": path, "line": line}
        for name in ("episode_id", "task", "turns"):
            if name not in d:
                raise DataError("missing", field=name, **where)
        try:
            turns = [Turn.from_dict(t) for t in d["turns"]]
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"bad turn: {e}", field="turns", **where) from None
        try:
            evaluation = EpisodeEvaluation.from_dict(d["evaluation"]) if d.get("evaluation") else None
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"bad evaluation: {e}", field="evaluation", **where) from None
        return cls(task=Task.from_dict(d["task"], **where), turns=turns, models=list(d.get("models", ["", ""])),
                   sampling=list(d.get("sampling", [{}, {}])), evaluation=evaluation, seed=d.get("seed"),
                   episode_id=str(d["episode_id"]), parent_episode_id=d.get("parent_episode_id"),
                   branch_turn=d.get("branch_turn"), termination=d.get("termination", ""),
                   timings=dict(d.get("timings", {})), usage=dict(d.get("usage", {})), tags=dict(d.get("tags", {})),
                   created=float(d.get("created", 0.0)))


_TORN_WARNED: set[tuple[str, int, str]] = set()
"""Torn last lines already warned about (file, line, text): a store is read several times a run."""


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each line of a JSONL file. A torn *last* line (a crash
    mid-write) is skipped with a warning (once per file and torn line in a process); a bad line
    elsewhere raises DataError naming it."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            if i == len(lines) and not raw.endswith("\n"):
                # once per file and torn line in a process, however often a run re-reads the file
                seen = (str(path.resolve()), i, raw)
                if seen not in _TORN_WARNED:
                    _TORN_WARNED.add(seen)
                    warnings.warn(f"{path} line {i}: torn last line skipped (interrupted write): {e}", stacklevel=2)
                continue
            raise DataError(f"not valid JSON: {e}", path=str(path), line=i) from None
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", path=str(path), line=i)
        yield i, obj


def rewrite_jsonl(path: str | os.PathLike, objs: list[dict]) -> None:
    """Replace a JSONL file by ``objs``, one a line, atomically (a crash leaves the old file or
    the new one, never half of each)."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(redact("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs)))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_jsonl(path: str | os.PathLike, obj: dict) -> None:
    """Append one JSON object as a line, flushed and fsynced. If the file ends in a torn line
    (a crash mid-write), that partial line is cut off first (with a warning): it never held a
    complete record, and left in place it would sit in the middle of the file and make every
    later read fail. A complete record that only lacks its newline is kept."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = redact(json.dumps(obj, ensure_ascii=False)) + "\n"
    with open(path, "r+b" if path.exists() else "w+b") as f:
        end = f.seek(0, os.SEEK_END)
        if end > 0:
            f.seek(end - 1)
            if f.read(1) != b"\n":
                keep = _end_of_last_full_line(f, end)
                f.seek(keep)
                try:
                    json.loads(f.read(end - keep).decode("utf-8"))
                    complete = True  # the crash came between the record and its newline
                except (UnicodeDecodeError, json.JSONDecodeError):
                    complete = False
                if complete:
                    f.seek(end)
                    f.write(b"\n")
                else:
                    warnings.warn(f"{path}: cut off a torn last line of {end - keep} bytes (interrupted write) "
                                  f"before appending", stacklevel=2)
                    f.truncate(keep)
                    f.seek(keep)
        f.write(line.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def _end_of_last_full_line(f: IO[bytes], end: int) -> int:
    """Offset just after the last newline before ``end`` (0 if there is none)."""
    pos = end
    while pos > 0:
        start = max(0, pos - 65536)
        f.seek(start)
        chunk = f.read(pos - start)
        i = chunk.rfind(b"\n")
        if i >= 0:
            return start + i + 1
        pos = start
    return 0


class EpisodeStore:
    """Append-only JSONL store of episode records, one per line.

    ``run_key`` (stored in ``record.tags["run_key"]``) identifies a unit of work (task, seats,
    models, repetition); ``done_keys()`` lets a resumed run skip what is already stored.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def append(self, record: EpisodeRecord) -> None:
        append_jsonl(self.path, record.to_dict())

    def __iter__(self) -> Iterator[EpisodeRecord]:
        for line, obj in read_jsonl(self.path):
            yield EpisodeRecord.from_dict(obj, path=str(self.path), line=line)

    def records(self) -> list[EpisodeRecord]:
        return list(self)

    def __len__(self) -> int:
        return sum(1 for _ in read_jsonl(self.path))

    def done_keys(self, *, evaluated_only: bool = True) -> set[str]:
        """Run keys already finished (and, by default, evaluated: unevaluated ones are retried)."""
        keys = set()
        for _, obj in read_jsonl(self.path):
            key = (obj.get("tags") or {}).get("run_key")
            ev = obj.get("evaluation") or {}
            if key is not None and (not evaluated_only or ev.get("evaluated")):
                keys.add(key)
        return keys

    def get(self, episode_id: str) -> EpisodeRecord:
        for rec in self:
            if rec.episode_id == episode_id:
                return rec
        raise KeyError(f"{self.path}: no episode with id {episode_id!r}")
