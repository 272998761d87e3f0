"""The SDPO authors' released training files (their SFT, ETO, DMPO and SDPO data) to and from
our pair records (``sdpo.pairs_schema``).

The layout (LLaMA-Factory's ShareGPT formatting, as the authors' release builds and reads it):
one JSON document, a list of records ``{"conversations": [{"from": "human" | "gpt", "value":
text}, ...]}``. An SFT file holds one session per record. A preference file (SDPO, DPO, ETO,
DMPO) holds its records in twos, the rejected (negative) session first and the chosen
(positive) one next, matched by position only; its records may also carry ``goal`` and
``relationship``, the chosen-minus-rejected score differences.

Every session is the trained agent's view. The first ``human`` message opens with SOTOPIA's
agent prompt (``Imagine you are NAME, your task ...``), then the background block
(``Scenario:``, ``Participants: A and B``, each one's ``background:`` and ``goal:``), then the
answer-format instructions and ``Conversation Starts:`` followed by a note that the agent speaks
first or by the partner's first action. Later ``gpt`` messages are the agent's JSON actions
``{"action_type": ..., "argument": ...}`` and ``human`` messages the partner's.

Import (``read_authors_file``): the turns come from the JSON actions (the authors' JSON is built
by pasting text between quotes, so an argument may hold bare quotes or newlines: such an action
is read by its shape); the seats from ``Participants`` (the first named is seat 0) and the
trained agent from ``Imagine you are``; the task is rebuilt from the background text, as
``sotopia_env.loader`` does for SOTOPIA's episodes (names, scenario, each one's background and
goal as shown to the agent; relationship stranger when the partner's background is unknown).
A pair's history is the turns both sessions share; its segment runs on each side from the
first differing turn, which must be the trained agent's, to that side's last agent turn
(partner turns after it are cut). ETO and DMPO pairs are whole sessions (no history), DPO pairs
the error turn alone, as ``sdpo.pairs.variants`` builds them. What cannot be read is refused
with a DataError naming the file, the line where the record starts and the field.

Export (``authors_records``): each side rendered by the one formatter with the background at the
head of the first user message (``system_message=False``), roles renamed; ``none`` actions are
left out, as the formatter leaves them out. Turn numbers, scores (only their differences are
written) and the task's hidden fields (the partner's profile and goal) do not survive the trip.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agents.formatter import ConversationFormat, agent_messages
from sdpo.pairs_schema import PAIR_KINDS, SFT_KINDS, PairRecord
from sotopia_env.episode import ACTION_TYPES, Turn
from sotopia_env.errors import DataError
from sotopia_env.loader import _split_background, _split_name, read_records
from sotopia_env.profiles import Profile, Relationship, Scenario, Task

from .segment import agent_turns_in, cut_after_agent_turns

ROLES = {"user": "human", "assistant": "gpt"}
"""Our chat roles -> the ShareGPT ``from`` names."""
SESSION_KINDS = ("eto", "dmpo")
"""Pairs of whole sessions sampled from the start: no shared history."""
AUTHORS_FORMAT = ConversationFormat(system_message=False)
"""The authors' layout: no system message, the background opens the first user message."""

_AGENT = re.compile(r"\s*Imagine you are (.+?), your task")
_LOOSE_ACTION = re.compile(r'\{\s*"action_type"\s*:\s*"([^"]+)"\s*,\s*"argument"\s*:\s*"(.*)"\s*\}', re.DOTALL)
_PARTNER_OPENING = "The other person's action:"


@dataclass
class Opening:
    """What the first human message says: who the agent is and what it knows before the talk."""

    agent_name: str
    names: tuple[str, str]
    scenario: str
    backgrounds: tuple[str, str]
    goals: tuple[str, str]
    context: str
    """The text before ``Conversation Starts:`` (the same on both sides of a pair)."""
    first_actions: list[tuple[str, str]]
    """The partner's actions before the agent's first turn (empty when the agent speaks first)."""


@dataclass
class Session:
    """One record of an authors' file, read."""

    opening: Opening
    agent_index: int
    turns: list[Turn]
    line: int
    index: int


def _action(obj: object) -> tuple[str, str] | None:
    if isinstance(obj, dict) and obj.get("action_type") in ACTION_TYPES and isinstance(obj.get("argument", ""), str):
        return obj["action_type"], obj.get("argument", "")
    return None


def parse_actions(text: str) -> list[tuple[str, str]] | None:
    """``(action_type, argument)`` of a message: one JSON action, one per line (our formatter
    merges consecutive actions of a side that way), or one action pasted together with bare
    quotes in its argument (the authors' files); None when it is none of these."""
    try:
        one = _action(json.loads(text))
        if one is not None:
            return [one]
    except json.JSONDecodeError:
        pass
    lines = [line for line in text.strip().split("\n") if line.strip()]
    if len(lines) > 1:
        try:
            many = [_action(json.loads(line)) for line in lines]
        except json.JSONDecodeError:
            many = [None]
        if all(a is not None for a in many):
            return many  # type: ignore[return-value]
    loose = _LOOSE_ACTION.fullmatch(text.strip())
    if loose and loose.group(1) in ACTION_TYPES:
        return [(loose.group(1), loose.group(2))]
    return None


def _participants(head: str) -> tuple[str, str] | None:
    """The two names of the ``Participants: A and B`` line (a name may itself hold " and ": the
    split is the one whose both names have a goal line)."""
    found = re.search(r"^Participants: (.+)$", head, re.MULTILINE)
    if not found:
        return None
    line = found.group(1).strip()
    for m in re.finditer(" and ", line):
        a, b = line[: m.start()], line[m.end():]
        if f"{a}'s goal:" in head and f"{b}'s goal:" in head:
            return a, b
    return None


def _labelled(head: str, labels: Sequence[str]) -> dict[str, str]:
    """The text after each label that starts a line, up to the next label (the last one up to a
    blank line)."""
    starts = sorted((m.start(), m.end(), label) for label in labels
                    for m in [re.search("^" + re.escape(label), head, re.MULTILINE)] if m)
    values = {}
    for k, (_, end, label) in enumerate(starts):
        stop = starts[k + 1][0] if k + 1 < len(starts) else head.find("\n\n", end)
        values[label] = head[end:stop if stop >= 0 else len(head)].strip()
    return values


def parse_opening(text: str, where: dict) -> Opening:
    """Read the first human message (see the module docstring); DataError when it is not one."""
    agent = _AGENT.match(text)
    head, starts, rest = text.partition("Conversation Starts:")
    names = _participants(head)
    if agent is None or not starts or names is None:
        missing = ("'Imagine you are NAME, your task'" if agent is None else
                   "'Conversation Starts:'" if not starts else "'Participants: A and B' with a goal line for each")
        raise DataError(f"the first human message is not SOTOPIA's agent prompt: no {missing}", **where)
    if agent.group(1) not in names:
        raise DataError(f"the agent {agent.group(1)!r} is not a participant ({names[0]} and {names[1]})", **where)
    labels = ["Scenario: ", "Participants: ", *(f"{n}'s background: " for n in names),
              *(f"{n}'s goal: " for n in names)]
    values = _labelled(head, labels)
    rest = rest.strip()
    first: list[tuple[str, str]] = []
    if rest.strip("(). ").lower() not in ("", "you speak first"):
        rest = rest.removeprefix(_PARTNER_OPENING).strip()
        parsed = parse_actions(rest)
        if parsed is None:
            raise DataError(f"after 'Conversation Starts:' expected a note that you speak first or the partner's "
                            f"JSON action, got {rest!r:.80}", **where)
        first = parsed
    return Opening(agent_name=agent.group(1), names=names, scenario=values.get("Scenario: ", ""),
                   backgrounds=tuple(values.get(f"{n}'s background: ", "") for n in names),  # type: ignore[arg-type]
                   goals=tuple(values.get(f"{n}'s goal: ", "") for n in names),  # type: ignore[arg-type]
                   context=head.strip(), first_actions=first)


def read_session(record: dict, *, index: int, path: str, line: int) -> Session:
    """One record: its opening and its turns (numbered from 0 in the order they were taken)."""
    conv = record.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise DataError("expected a non-empty list of {\"from\", \"value\"} messages", path=path, line=line,
                        field="conversations")
    for k, m in enumerate(conv):
        if not isinstance(m, dict) or m.get("from") not in ("human", "gpt") or not isinstance(m.get("value"), str):
            raise DataError(f"expected {{\"from\": \"human\" | \"gpt\", \"value\": text}}, got {m!r:.80}",
                            path=path, line=line, field=f"conversations[{k}]")
    if conv[0]["from"] != "human":
        raise DataError("the first message must be the human one (the agent's prompt)", path=path, line=line,
                        field="conversations[0].from")
    opening = parse_opening(conv[0]["value"], {"path": path, "line": line, "field": "conversations[0].value"})
    seat = opening.names.index(opening.agent_name)
    acts = [(1 - seat, a) for a in opening.first_actions]
    for k, m in enumerate(conv[1:], start=1):
        parsed = parse_actions(m["value"])
        if parsed is None:
            raise DataError(f"not a JSON action {{\"action_type\": ..., \"argument\": ...}}: {m['value']!r:.80}",
                            path=path, line=line, field=f"conversations[{k}].value")
        acts += [(seat if m["from"] == "gpt" else 1 - seat, a) for a in parsed]
    turns = [Turn(turn=i, agent_index=s, speaker=opening.names[s], action_type=a, argument=arg)
             for i, (s, (a, arg)) in enumerate(acts)]
    return Session(opening=opening, agent_index=seat, turns=turns, line=line, index=index)


def _pk(text: str) -> str:
    return "authors:" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def task_from_opening(opening: Opening) -> Task:
    """The task as far as the agent's prompt shows it: names, scenario, backgrounds, goals."""
    profiles = []
    for name, background in zip(opening.names, opening.backgrounds):
        first, last = _split_name(name)
        public, secret = ("", "") if background in ("", "Unknown") else _split_background(background, first)
        profiles.append(Profile(pk=_pk(name), first_name=first, last_name=last, public_info=public, secret=secret))
    partner = opening.backgrounds[1 - opening.names.index(opening.agent_name)]
    relationship = Relationship.stranger if partner in ("", "Unknown") else Relationship.acquaintance
    scenario = Scenario(pk=_pk(opening.scenario), codename="", scenario=opening.scenario,
                        agent_goals=list(opening.goals), relationship=relationship, source="SDPO authors' data")
    return Task(pk=_pk(opening.context), scenario=scenario, profiles=(profiles[0], profiles[1]))


def _segment_side(turns: list[Turn], agent: int, in_history: int, count: int | None, name: str,
                  where: dict) -> tuple[list[Turn], tuple[int, int]]:
    """A side cut after its segment: ``count`` agent turns (all when None), trailing partner turns cut."""
    have = agent_turns_in(turns, agent)
    if have == 0:
        raise DataError(f"the {name} session has no turn of the trained agent after the shared history", **where)
    n = have if count is None else count
    return cut_after_agent_turns(turns, agent, n), (in_history, in_history + n - 1)


def _check_pair(rejected: Session, chosen: Session, where: dict) -> None:
    if rejected.opening.context != chosen.opening.context or rejected.agent_index != chosen.agent_index:
        raise DataError(f"records {rejected.index} and {chosen.index} (lines {rejected.line} and {chosen.line}) "
                        "are not one pair: their scenario or agent differ. The two sides are matched by position, "
                        "so a record missing or added before them shifts every later pair", **where)


def _shared_prefix(a: Sequence[Turn], b: Sequence[Turn]) -> int:
    n = 0
    while n < min(len(a), len(b)) and (a[n].agent_index, a[n].action_type, a[n].argument) == (
            b[n].agent_index, b[n].action_type, b[n].argument):
        n += 1
    return n


def pair_from_sessions(kind: str, rejected: Session, chosen: Session, *, pair_id: str, path: str,
                       extra: dict) -> PairRecord:
    """The pair record of two adjacent records (rejected first), as the module docstring says."""
    where = {"path": path, "line": rejected.line, "field": "conversations"}
    _check_pair(rejected, chosen, where)
    agent = chosen.agent_index
    history: list[Turn] = []
    if kind not in SESSION_KINDS:
        n = _shared_prefix(rejected.turns, chosen.turns)
        if n == len(rejected.turns) == len(chosen.turns):
            raise DataError(f"records {rejected.index} and {chosen.index} are the same session: a pair needs a "
                            "turn where they differ", **where)
        for side in (rejected, chosen):
            if n < len(side.turns) and side.turns[n].agent_index != agent:
                raise DataError(f"the sessions first differ at a turn of the partner (turn {n} of record "
                                f"{side.index}); a segment starts at a turn of the trained agent", **where)
        history = chosen.turns[:n]
    h = agent_turns_in(history, agent)
    count = 1 if kind == "dpo" else None
    chosen_turns, chosen_span = _segment_side(chosen.turns[len(history):], agent, h, count, "chosen", where)
    rejected_turns, rejected_span = _segment_side(rejected.turns[len(history):], agent, h, count, "rejected", where)
    provenance = {"source": "SDPO authors' data", "file": Path(path).name, "records": [rejected.index, chosen.index],
                  **extra}
    return PairRecord(pair_id=pair_id, kind=kind, task=task_from_opening(chosen.opening), agent_index=agent,
                      history=history, chosen=chosen_turns, rejected=rejected_turns,
                      segment={"chosen": chosen_span, "rejected": rejected_span}, provenance=provenance,
                      format=dataclasses.replace(AUTHORS_FORMAT))


def sft_from_session(kind: str, session: Session, *, pair_id: str, path: str) -> PairRecord:
    """One SFT record: the whole session, every agent turn in the segment."""
    where = {"path": path, "line": session.line, "field": "conversations"}
    turns, span = _segment_side(session.turns, session.agent_index, 0, None, "SFT", where)
    return PairRecord(pair_id=pair_id, kind=kind, task=task_from_opening(session.opening),
                      agent_index=session.agent_index, history=[], chosen=turns, rejected=None,
                      segment={"chosen": span, "rejected": None},
                      provenance={"source": "SDPO authors' data", "file": Path(path).name, "records": [session.index]},
                      format=dataclasses.replace(AUTHORS_FORMAT))


def read_authors_file(path: str | os.PathLike, kind: str) -> list[PairRecord]:
    """Pair records of ``kind`` from an authors' training file (module docstring)."""
    if kind not in PAIR_KINDS:
        raise DataError(f"{kind!r} is not a pair kind; allowed: {', '.join(PAIR_KINDS)}", field="kind")
    where = str(path)
    records = read_records(path, kind="conversation record")
    sessions = [read_session(r, index=i, path=where, line=line) for i, (line, r) in enumerate(records)]
    stem = Path(path).stem
    if kind in SFT_KINDS:
        return [sft_from_session(kind, s, pair_id=f"{stem}:{s.index}", path=where) for s in sessions]
    if len(sessions) % 2:
        raise DataError(f"a preference file holds its records in twos (rejected, then chosen), but this one "
                        f"holds {len(sessions)}", path=where, line=sessions[-1].line)
    pairs = []
    for i in range(0, len(sessions), 2):
        rejected, chosen = sessions[i], sessions[i + 1]
        extra = {"score_difference": {k: records[i + 1][1][k] for k in ("goal", "relationship")
                                      if isinstance(records[i + 1][1].get(k), (int, float))}}
        pairs.append(pair_from_sessions(kind, rejected, chosen, pair_id=f"{stem}:{i // 2}", path=where,
                                        extra=extra if extra["score_difference"] else {}))
    return pairs


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def _conversation(pair: PairRecord, side: str, where: dict) -> dict:
    """One side as the authors' record: history + the side cut after its segment."""
    first, last = pair.segment[side]
    in_history = pair.history_agent_turns
    if pair.kind not in SESSION_KINDS and first != in_history:
        raise DataError(f"pair {pair.pair_id!r}: the segment starts at agent turn {first}, but the authors' layout "
                        f"starts it where the sides first differ (agent turn {in_history})", field=f"segment.{side}",
                        **where)
    turns = pair.history + cut_after_agent_turns(getattr(pair, side), pair.agent_index, last + 1 - in_history)
    fmt = dataclasses.replace(pair.format, system_message=False, prompt_style="native")
    messages = agent_messages(pair.task, pair.agent_index, turns, fmt=fmt)
    return {"conversations": [{"from": ROLES[m["role"]], "value": m["content"]} for m in messages]}


def authors_records(pairs: Sequence[PairRecord], path: str | None = None,
                    lines: Sequence[int | None] | None = None) -> list[dict]:
    """Our pairs as an authors' file: SFT kinds one record each, the others rejected then chosen;
    ``path`` and ``lines`` (each pair's line) place a refusal in the pair file."""
    kinds = {p.kind in SFT_KINDS for p in pairs}
    if len(kinds) > 1:
        raise DataError("an authors' file is either SFT sessions or preference pairs, not both; "
                        f"this pair file mixes kinds {', '.join(sorted({p.kind for p in pairs}))}", field="kind",
                        path=path)
    out: list[dict] = []
    for pair, line in zip(pairs, lines or [None] * len(pairs)):
        where = {"path": path, "line": line}
        if pair.rejected is None:
            out.append(_conversation(pair, "chosen", where))
            continue
        difference = {k: pair.scores["chosen"][k] - pair.scores["rejected"][k] for k in ("goal", "relationship")
                      if k in pair.scores.get("chosen", {}) and k in pair.scores.get("rejected", {})}
        out += [{**_conversation(pair, "rejected", where), **difference},
                {**_conversation(pair, "chosen", where), **difference}]
    return out


def write_authors_file(path: str | os.PathLike, records: list[dict]) -> None:
    """The records as one indented JSON list, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(records, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
