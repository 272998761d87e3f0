"""The pair file: one segment-level preference pair (or one SFT session) per JSON line.

Written by ``sdpo.pairs`` (the pair-building pipeline), read by ``sdpo.tokenize`` and
``sdpo.fit``. Every pair is an explicit record (never chosen and rejected matched by position
in two lists), and its segment is explicit too. Full documentation: ``sdpo/PAIRS.md``.

================ ============================ ================================================
field            type                         meaning
================ ============================ ================================================
``pair_id``      str                          unique id of the pair within the file
``kind``         str                          ``sdpo``, ``dpo``, ``eto``, ``dmpo``, ``sft`` or
                                              ``preferred_sft``
``task``         object                       ``Task.to_dict()``: scenario and both profiles
``agent_index``  0 or 1                       the trained seat (its turns carry the loss)
``history``      list of Turn dicts           turns shared by both sides, before the error turn
``chosen``       list of Turn dicts           turns after the history on the chosen (positive)
                                              side, both agents, cut after the segment
``rejected``     list of Turn dicts or null   the same for the rejected (negative) side; null
                                              for the SFT kinds
``segment``      object                       ``{"chosen": [first, last], "rejected": [first,
                                              last] or null}``: inclusive indices counted over
                                              the trained agent's turns in history + that side
``scores``       object                       ``{"chosen": {dim: v}, "rejected": {dim: v}}``
``provenance``   object                       free: episode ids, judge model, reasons, ...
``format``       object                       the ``ConversationFormat`` the turns are rendered
                                              with (omitted fields take their defaults)
================ ============================ ================================================

Rules checked on reading: a segment lies inside that side's own turns (its first index is at
least the number of the trained agent's turns in the history, and its last index is below the
number of the trained agent's turns in history + side); ``first <= last``. Segment lengths may
differ between the sides (the paper's [a, b] ablation). The error turn of an SDPO pair is
``segment.chosen[0] == segment.rejected[0] ==`` the number of the trained agent's turns in
the history.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.formatter import ConversationFormat
from sotopia_env.episode import Turn, append_jsonl, read_jsonl
from sotopia_env.errors import DataError
from sotopia_env.profiles import Task
from sotopia_env.render import PROMPT_STYLES

PAIR_KINDS: tuple[str, ...] = ("sdpo", "dpo", "eto", "dmpo", "sft", "preferred_sft")
SFT_KINDS: tuple[str, ...] = ("sft", "preferred_sft")
"""Kinds with one side only (``rejected`` is null): behavioural cloning on ``chosen``."""


@dataclass
class PairRecord:
    """One line of a pair file (see the module docstring for the meaning of each field)."""

    pair_id: str
    kind: str
    task: Task
    agent_index: int
    history: list[Turn]
    chosen: list[Turn]
    rejected: list[Turn] | None
    segment: dict[str, tuple[int, int] | None]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    format: ConversationFormat = field(default_factory=ConversationFormat)

    def agent_turn_count(self, side: str) -> int:
        """Number of the trained agent's turns in history + ``side`` ("chosen" or "rejected")."""
        turns = self.history + (getattr(self, side) or [])
        return sum(1 for t in turns if t.agent_index == self.agent_index)

    @property
    def history_agent_turns(self) -> int:
        """Number of the trained agent's turns in the shared history (= the error turn index)."""
        return sum(1 for t in self.history if t.agent_index == self.agent_index)

    @property
    def sides(self) -> tuple[str, ...]:
        return ("chosen",) if self.kind in SFT_KINDS else ("chosen", "rejected")

    def to_dict(self) -> dict:
        return {
            "pair_id": self.pair_id, "kind": self.kind, "task": self.task.to_dict(),
            "agent_index": self.agent_index,
            "history": [t.to_dict() for t in self.history],
            "chosen": [t.to_dict() for t in self.chosen],
            "rejected": None if self.rejected is None else [t.to_dict() for t in self.rejected],
            "segment": {side: None if span is None else list(span) for side, span in self.segment.items()},
            "scores": self.scores, "provenance": self.provenance,
            "format": dataclasses.asdict(self.format),
        }

    @classmethod
    def from_dict(cls, d: dict, *, path: str | None = None, line: int | None = None) -> PairRecord:
        """Parse and validate one record; a DataError names the file, the line and the field."""
        where = {"path": path, "line": line}
        if not isinstance(d, dict):
            raise DataError(f"a pair must be a JSON object, got {type(d).__name__}", **where)
        for name in ("pair_id", "kind", "task", "agent_index", "history", "chosen", "segment"):
            if name not in d:
                raise DataError("missing", field=name, **where)
        if not isinstance(d["pair_id"], str) or not d["pair_id"]:
            raise DataError(f"expected a non-empty string, got {d['pair_id']!r:.60}", field="pair_id", **where)
        kind = d["kind"]
        if kind not in PAIR_KINDS:
            raise DataError(f"{kind!r} is not a pair kind; allowed: {', '.join(PAIR_KINDS)}", field="kind", **where)
        agent_index = d["agent_index"]
        if isinstance(agent_index, bool) or agent_index not in (0, 1):
            raise DataError(f"must be 0 or 1 (the trained seat), got {agent_index!r}", field="agent_index", **where)
        task = Task.from_dict(d["task"], **where)

        history, chosen = _turns(d, "history", where), _turns(d, "chosen", where)
        if kind in SFT_KINDS:
            if d.get("rejected") is not None:
                raise DataError(f"must be null for kind {kind!r} (one side only)", field="rejected", **where)
            rejected = None
        else:
            if d.get("rejected") is None:
                raise DataError(f"missing; kind {kind!r} needs a rejected side (null only for "
                                f"{' / '.join(SFT_KINDS)})", field="rejected", **where)
            rejected = _turns(d, "rejected", where)
        segment = _segment(d["segment"], kind, agent_index, history, {"chosen": chosen, "rejected": rejected}, where)
        for name in ("scores", "provenance", "format"):
            if d.get(name) is not None and not isinstance(d[name], dict):
                raise DataError(f"expected an object, got {type(d[name]).__name__}", field=name, **where)
        fmt_dict = _format(d.get("format") or {}, where)
        return cls(pair_id=d["pair_id"], kind=kind, task=task, agent_index=agent_index, history=history,
                   chosen=chosen, rejected=rejected, segment=segment, scores=dict(d.get("scores") or {}),
                   provenance=dict(d.get("provenance") or {}), format=ConversationFormat(**fmt_dict))


def _turns(d: dict, name: str, where: dict) -> list[Turn]:
    """The list of turns in field ``name`` of a pair record."""
    value = d.get(name)
    if not isinstance(value, list):
        raise DataError(f"expected a list of turns, got {type(value).__name__}", field=name, **where)
    out = []
    for i, t in enumerate(value):
        if not isinstance(t, dict):
            raise DataError(f"expected a turn object, got {type(t).__name__}", field=f"{name}[{i}]", **where)
        try:
            out.append(Turn.from_dict(t))
        except KeyError as e:
            raise DataError(f"missing key {e}", field=f"{name}[{i}]", **where) from None
        except (TypeError, ValueError) as e:
            raise DataError(str(e), field=f"{name}[{i}]", **where) from None
    return out


def _segment(seg, kind: str, agent_index: int, history: list[Turn], sides: dict[str, list[Turn] | None],
             where: dict) -> dict[str, tuple[int, int] | None]:
    """The ``[first, last]`` agent-turn span of the segment on each side, checked to lie in that
    side's own turns (not in the shared history)."""
    if not isinstance(seg, dict):
        raise DataError(f"expected an object {{\"chosen\": [first, last], \"rejected\": [first, last]}}, "
                        f"got {type(seg).__name__}", field="segment", **where)
    segment: dict[str, tuple[int, int] | None] = {"chosen": None, "rejected": None}
    in_history = sum(1 for t in history if t.agent_index == agent_index)
    for side, side_turns in sides.items():
        span = seg.get(side)
        if side_turns is None:
            if span is not None:
                raise DataError(f"must be null for kind {kind!r}", field=f"segment.{side}", **where)
            continue
        if (not isinstance(span, (list, tuple)) or len(span) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) for v in span)):
            raise DataError(f"expected [first, last] (two integers), got {span!r:.60}",
                            field=f"segment.{side}", **where)
        first, last = span
        total = in_history + sum(1 for t in side_turns if t.agent_index == agent_index)
        if first > last:
            raise DataError(f"first {first} is after last {last}", field=f"segment.{side}", **where)
        if first < in_history:
            raise DataError(f"first is {first} but the shared history already holds {in_history} turns of "
                            f"agent {agent_index}; the segment must lie in the {side} side's own turns",
                            field=f"segment.{side}", **where)
        if last >= total:
            raise DataError(f"last is {last} but history + {side} hold {total} turns of agent "
                            f"{agent_index} (indices 0..{total - 1})", field=f"segment.{side}", **where)
        segment[side] = (first, last)
    return segment


def _format(fmt_dict: dict, where: dict) -> dict:
    """The record's conversation-format options, checked against ``ConversationFormat``'s fields."""
    fmt_fields = {f.name for f in dataclasses.fields(ConversationFormat)}
    unknown = sorted(set(fmt_dict) - fmt_fields)
    if unknown:
        raise DataError(f"unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(fmt_fields))}",
                        field="format", **where)
    if fmt_dict.get("prompt_style", "native") not in PROMPT_STYLES:
        raise DataError(f"{fmt_dict['prompt_style']!r} is not a prompt style; allowed: {', '.join(PROMPT_STYLES)}",
                        field="format.prompt_style", **where)
    return fmt_dict


def read_pairs(path: str | os.PathLike) -> list[PairRecord]:
    """All pairs of a JSONL pair file. A malformed line raises DataError naming file, line and
    field; duplicate ``pair_id`` values are an error too (pairs are keyed by id)."""
    path = Path(path)
    if not path.exists():
        raise DataError("pair file does not exist", path=str(path))
    pairs: list[PairRecord] = []
    seen: dict[str, int] = {}
    for line, obj in read_jsonl(path):
        rec = PairRecord.from_dict(obj, path=str(path), line=line)
        if rec.pair_id in seen:
            raise DataError(f"duplicate pair_id {rec.pair_id!r} (first on line {seen[rec.pair_id]})",
                            path=str(path), line=line, field="pair_id")
        seen[rec.pair_id] = line
        pairs.append(rec)
    return pairs


def write_pair(path: str | os.PathLike, rec: PairRecord) -> None:
    """Append one pair as a JSON line (flushed and fsynced; a crash loses at most this line).
    The record is validated first, so a pair file never holds a line ``read_pairs`` rejects."""
    d = rec.to_dict()
    PairRecord.from_dict(d, path=str(path), line=None)
    append_jsonl(path, d)
