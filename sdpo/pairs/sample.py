"""Positive sampling (the SDPO pipeline, step 4): reset the environment to the history before the error
turn and sample N continuations; judge each; the best by goal (ties: relationship) is the
positive if it beats the negative under the keep rule (``sample.keep``: the paper's goal or
relationship, or the authors' goal then relationship), else the negative is dropped and counted.

A candidate whose first turn (the re-sampled error turn) is identical to the negative's is
rejected here: the two sides would not differ at the error turn (a pitfall of the authors'
code, the authors' released code). The same selection serves ETO/DMPO with sessions sampled from the start
(``branch_turn`` 0, nothing to compare at the first turn).
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sotopia_env.episode import EpisodeRecord, Turn

from .config import KeepRule
from .stages import StageEntry, Status


def same_action(a: Turn, b: Turn) -> bool:
    return a.agent_index == b.agent_index and a.action_type == b.action_type and a.argument.strip() == b.argument.strip()


def continuation(candidate: EpisodeRecord, branch_turn: int, history: Sequence[Turn]) -> list[Turn]:
    """The turns a branch episode added after the shared history (its ``turns`` hold the history too)."""
    head = candidate.turns[:branch_turn]
    if len(head) == len(history) and all(same_action(a, b) for a, b in zip(head, history)):
        return candidate.turns[branch_turn:]
    if branch_turn == 0:
        return candidate.turns
    raise ValueError(f"branch episode {candidate.episode_id} does not start with the negative's history")


def candidate_problem(negative: EpisodeRecord, candidate: EpisodeRecord, agent_index: int, branch_turn: int,
                      *, compare_first_turn: bool = True) -> str | None:
    """Why a sampled continuation cannot be a positive (None when it can)."""
    if not candidate.evaluated:
        return "judge_failed"
    try:
        new = continuation(candidate, branch_turn, negative.turns[:branch_turn])
    except ValueError:
        return "history_mismatch"
    if not new or new[0].agent_index != agent_index:
        return "no_agent_turn_at_branch"
    if compare_first_turn and branch_turn < len(negative.turns) and same_action(new[0], negative.turns[branch_turn]):
        return "same_error_turn"
    return None


def rank_key(record: EpisodeRecord, agent_index: int) -> tuple[float, float]:
    """Best by goal, ties broken by relationship (the SDPO pipeline, step 4)."""
    return record.score(agent_index, "goal"), record.score(agent_index, "relationship")


def beats(positive: EpisodeRecord, negative: EpisodeRecord, agent_index: int,
          keep: KeepRule = KeepRule.paper) -> bool:
    """The keep rule: the paper's (higher goal or higher relationship) or the authors' released
    code's (higher goal, or equal goal and higher relationship)."""
    pg, pr = rank_key(positive, agent_index)
    ng, nr = rank_key(negative, agent_index)
    if keep == KeepRule.paper:
        return pg > ng or pr > nr
    return pg > ng or (pg == ng and pr > nr)


def decide(negative: EpisodeRecord, agent_index: int, branch_turn: int, candidates: Sequence[EpisodeRecord],
           *, compare_first_turn: bool = True, keep: KeepRule = KeepRule.paper) -> StageEntry:
    """Choose the positive among ``candidates`` (in sampling order; the earliest wins ties).

    Returns a stage entry (without key): ``status`` "kept" with ``positive`` (episode id) or
    "dropped" with ``reason`` ("no_valid_candidate" / "not_better"), and every candidate's
    scores and rejection reason for the provenance.
    """
    rows, valid = [], []
    for cand in candidates:
        problem = candidate_problem(negative, cand, agent_index, branch_turn, compare_first_turn=compare_first_turn)
        row = {"episode_id": cand.episode_id, "problem": problem,
               "scores": dict(cand.evaluation.agents[agent_index].scores) if cand.evaluated else None}
        rows.append(row)
        if problem is None:
            valid.append(cand)
    entry = {"branch_turn": branch_turn, "candidates": rows, "keep": KeepRule(keep).value,
             "negative_scores": dict(negative.evaluation.agents[agent_index].scores)}
    if not valid:
        return {"status": Status.dropped, "reason": "no_valid_candidate", **entry}
    best = max(valid, key=lambda c: rank_key(c, agent_index))  # max keeps the first of equal keys
    if not beats(best, negative, agent_index, keep):
        return {"status": Status.dropped, "reason": "not_better", "best": best.episode_id, **entry}
    return {"status": Status.kept, "positive": best.episode_id, **entry}


def sample_seed(base: int, run_key: str) -> int:
    """A seed derived from the run key, stable across runs and Python processes."""
    return (base * 1_000_003 + int(hashlib.sha256(run_key.encode()).hexdigest()[:8], 16)) % (2 ** 31)


def branch_run_key(prefix: str, negative_key: str, branch_turn: int, model: str, i: int) -> str:
    """Run key of the i-th continuation of a negative (stable, so a resumed run skips it)."""
    return f"{prefix}/{negative_key}/{branch_turn}/{model}/{i}"
