"""Segment selection (the SDPO pipeline, step 5): the judge sees the negative and the positive session
and names the segment of the positive, starting at the error turn, that made the difference:
JSON ``{"start_index", "end_index", "reason"}`` over the positive's numbered messages (the
authors' format). Validated: the segment starts where the sessions first differ (the error
turn) and ends on a trained-agent turn of the positive. The negative contributes the same
number of the trained agent's turns, from the error turn; both sides are cut after their
segment's last agent turn (later small talk and farewells are dropped).

The ablation's fixed lengths ([k, k] and asymmetric [a, b]) need no judge: ``cut_sides``.
"""
from __future__ import annotations

import json
from collections.abc import Sequence

from sotopia_env.episode import EpisodeRecord, Turn

from .locate import (
    InvalidAnswer,
    LocalTurnScorer,
    ask_judge_or_local,
    integer_field,
    most_likely,
    numbered_messages,
    parse_json_object,
    task_brief,
)
from .stages import StageEntry


def segment_messages(negative: EpisodeRecord, positive_turns: Sequence[Turn], agent_index: int,
                     error_turn: int) -> list[dict]:
    """The question to the judge: both sessions, numbered alike (they share messages 0..error_turn-1)."""
    name = negative.task.agent_names[agent_index]
    own = [i for i, t in enumerate(positive_turns) if i >= error_turn and t.agent_index == agent_index]
    prompt = (
        f"You compare two versions of a social interaction.\n\n{task_brief(negative.task)}"
        f"\n\nSession A (worse for {name}):\n{numbered_messages(negative.turns)}\n\n"
        f"Session B (better for {name}):\n{numbered_messages(positive_turns)}\n\n"
        f"Both sessions are identical up to message {error_turn - 1} and first differ at message {error_turn}. "
        f"Find the segment of session B, starting at message {error_turn}, whose messages by {name} made B "
        f"better than A. It must end on one of {name}'s messages in B, numbers {', '.join(map(str, own))}.\n"
        'Answer with a JSON object only: {"start_index": '
        f'{error_turn}, "end_index": <message number>, "reason": "<one sentence>"}}')
    return [{"role": "user", "content": prompt}]


def validate_segment(text: str, positive_turns: Sequence[Turn], agent_index: int, error_turn: int) -> dict:
    """Check a judge's segment answer; return ``{"start_index", "end_index", "reason"}`` or raise InvalidAnswer."""
    obj = parse_json_object(text)
    start, end = integer_field(obj, "start_index"), integer_field(obj, "end_index")
    if start != error_turn:
        raise InvalidAnswer(f"start_index must be {error_turn}, where the two sessions first differ, not {start}")
    last = len(positive_turns) - 1
    if not error_turn <= end <= last:
        raise InvalidAnswer(f"end_index {end} is out of range: it must be in {error_turn}..{last}")
    if positive_turns[end].agent_index != agent_index:
        own = [i for i, t in enumerate(positive_turns) if i >= error_turn and t.agent_index == agent_index]
        raise InvalidAnswer(f"message {end} is not the trained agent's; end_index must be one of "
                            f"{', '.join(map(str, own))}")
    reason = obj.get("reason", "")
    return {"start_index": start, "end_index": end, "reason": reason if isinstance(reason, str) else json.dumps(reason)}


def agent_turns_in(turns: Sequence[Turn], agent_index: int) -> int:
    return sum(1 for t in turns if t.agent_index == agent_index)


def cut_after_agent_turns(turns: Sequence[Turn], agent_index: int, count: int) -> list[Turn]:
    """The turns up to and including the ``count``-th turn of ``agent_index`` (all if it has fewer)."""
    seen = 0
    for i, t in enumerate(turns):
        if t.agent_index == agent_index:
            seen += 1
            if seen == count:
                return list(turns[: i + 1])
    return list(turns)


def cut_sides(history: Sequence[Turn], chosen: Sequence[Turn], rejected: Sequence[Turn], agent_index: int,
              chosen_len: int, rejected_len: int, *, equal: bool) -> tuple[list[Turn], list[Turn], dict, bool]:
    """Cut both sides after their segment: ``chosen_len`` / ``rejected_len`` agent turns from the
    error turn. A side with fewer agent turns gives what it has; with ``equal`` both sides then
    take the shorter length, so that the SDPO segments stay equal (the SDPO paper).

    Returns ``(chosen_cut, rejected_cut, segment, shortened)``; ``segment`` holds inclusive
    ``[first, last]`` over the trained agent's turns in history + side (the pair file's convention).
    """
    have_c, have_r = agent_turns_in(chosen, agent_index), agent_turns_in(rejected, agent_index)
    n_c, n_r = min(chosen_len, have_c), min(rejected_len, have_r)
    if equal:
        n_c = n_r = min(n_c, n_r)
    shortened = (n_c, n_r) != (chosen_len, rejected_len)
    first = agent_turns_in(history, agent_index)
    segment = {"chosen": [first, first + n_c - 1], "rejected": [first, first + n_r - 1]}
    return (cut_after_agent_turns(chosen, agent_index, n_c), cut_after_agent_turns(rejected, agent_index, n_r),
            segment, shortened)


def local_segment(scorer: LocalTurnScorer, negative: EpisodeRecord, positive_turns: Sequence[Turn],
                  agent_index: int, error_turn: int) -> dict:
    """The offline segment selection: the end index whose answer the local model finds most likely."""
    own = [i for i, t in enumerate(positive_turns) if i >= error_turn and t.agent_index == agent_index]
    end, why = most_likely(scorer, segment_messages(negative, positive_turns, agent_index, error_turn), own,
                           lambda i: {"start_index": error_turn, "end_index": i})
    return {"start_index": error_turn, "end_index": end, **why}


async def select_one(negative: EpisodeRecord, positive_turns: Sequence[Turn], agent_index: int, error_turn: int, *,
                     client=None, scorer: LocalTurnScorer | None = None, rules=None, max_reasks: int = 2,
                     max_tokens: int = 512) -> StageEntry:
    """Select the segment for one kept pair; returns a stage entry (without its key), as ``locate_one``
    (``rules``, an ``agents.rules_judge.RulesJudge``, answers by its rule instead of a model)."""
    local = (lambda: rules.segment(negative, positive_turns, agent_index, error_turn)) if rules is not None else \
        (lambda: local_segment(scorer, negative, positive_turns, agent_index, error_turn))
    return await ask_judge_or_local(segment_messages(negative, positive_turns, agent_index, error_turn),
                                    lambda text: validate_segment(text, positive_turns, agent_index, error_turn),
                                    local, client=client, scorer=rules or scorer, max_reasks=max_reasks,
                                    max_tokens=max_tokens)
