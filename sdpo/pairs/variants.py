"""Pair records of every kind from the same negatives (the SDPO paper, baselines' data):

* ``sdpo``: the segment pair, history before the error turn shared, both sides cut after the
  judge's segment (or fixed [negative, positive] lengths for the ablation).
* ``dpo``: the single turn at the first differing turn (the error turn) of the SDPO pair.
* ``eto`` / ``dmpo``: a positive sampled from the start of the session, paired with the
  negative as whole sessions (same data; the loss differs).
* ``preferred_sft``: the SDPO positive session alone.
* ``sft``: one seat of a session alone (behavioural cloning on an expert's sessions).

All functions are pure: episode records in, ``PairRecord`` out.
"""
from __future__ import annotations

from agents.formatter import ConversationFormat
from sdpo.pairs_schema import PairRecord
from sotopia_env.episode import EpisodeRecord

from .sample import continuation
from .segment import agent_turns_in, cut_sides


def _scores(record: EpisodeRecord, agent_index: int) -> dict:
    return dict(record.evaluation.agents[agent_index].scores)


def _base_provenance(negative: EpisodeRecord, positive: EpisodeRecord, agent_index: int) -> dict:
    return {"negative_episode": negative.episode_id, "positive_episode": positive.episode_id,
            "interlocutor": negative.tags.get("interlocutor"), "models": {"negative": list(negative.models),
                                                                           "positive": list(positive.models)},
            "trained_seat_model": negative.models[agent_index]}


def sdpo_pair(negative: EpisodeRecord, positive: EpisodeRecord, agent_index: int, error_turn: int, *,
              chosen_len: int, rejected_len: int, equal: bool = True, fmt: ConversationFormat | None = None,
              pair_id: str, provenance: dict | None = None) -> PairRecord:
    """The segment pair: shared history ``turns[:error_turn]``; ``chosen_len`` / ``rejected_len``
    agent turns from the error turn on each side; later turns cut."""
    history = negative.turns[:error_turn]
    chosen_all = continuation(positive, error_turn, history)
    rejected_all = negative.turns[error_turn:]
    chosen, rejected, segment, shortened = cut_sides(history, chosen_all, rejected_all, agent_index, chosen_len,
                                                     rejected_len, equal=equal)
    prov = {**_base_provenance(negative, positive, agent_index), "branch_turn": error_turn,
            "segment_lengths": {"chosen": chosen_len, "rejected": rejected_len}, "shortened": shortened,
            **(provenance or {})}
    return PairRecord(pair_id=pair_id, kind="sdpo", task=negative.task, agent_index=agent_index, history=history,
                      chosen=chosen, rejected=rejected, segment={k: tuple(v) for k, v in segment.items()},
                      scores={"chosen": _scores(positive, agent_index), "rejected": _scores(negative, agent_index)},
                      provenance=prov, format=fmt or ConversationFormat())


def segment_length_from_end(positive: EpisodeRecord, agent_index: int, error_turn: int, end_index: int) -> int:
    """Agent turns of the positive in messages ``error_turn..end_index`` (the judge's segment)."""
    return agent_turns_in(positive.turns[error_turn:end_index + 1], agent_index)


def dpo_pair(negative: EpisodeRecord, positive: EpisodeRecord, agent_index: int, error_turn: int, *,
             fmt: ConversationFormat | None = None, pair_id: str, provenance: dict | None = None) -> PairRecord:
    """The single-turn pair at the first differing turn (the error turn)."""
    rec = sdpo_pair(negative, positive, agent_index, error_turn, chosen_len=1, rejected_len=1, fmt=fmt,
                    pair_id=pair_id, provenance=provenance)
    rec.kind = "dpo"
    return rec


def session_pair(negative: EpisodeRecord, positive: EpisodeRecord, agent_index: int, kind: str, *,
                 fmt: ConversationFormat | None = None, pair_id: str, provenance: dict | None = None) -> PairRecord:
    """ETO/DMPO: a from-scratch positive and the negative as whole sessions (no shared history)."""
    if kind not in ("eto", "dmpo"):
        raise ValueError(f"session pairs are eto or dmpo, not {kind!r}")  # internal: called by write only
    n_c, n_r = agent_turns_in(positive.turns, agent_index), agent_turns_in(negative.turns, agent_index)
    return PairRecord(pair_id=pair_id, kind=kind, task=negative.task, agent_index=agent_index, history=[],
                      chosen=list(positive.turns), rejected=list(negative.turns),
                      segment={"chosen": (0, n_c - 1), "rejected": (0, n_r - 1)},
                      scores={"chosen": _scores(positive, agent_index), "rejected": _scores(negative, agent_index)},
                      provenance={**_base_provenance(negative, positive, agent_index), **(provenance or {})},
                      format=fmt or ConversationFormat())


def sft_record(session: EpisodeRecord, agent_index: int, *, kind: str = "sft",
               fmt: ConversationFormat | None = None, pair_id: str, provenance: dict | None = None) -> PairRecord:
    """One seat of a whole session as a one-sided record: every turn of ``agent_index`` carries
    loss (behavioural cloning), the other seat's turns are context."""
    n = agent_turns_in(session.turns, agent_index)
    return PairRecord(pair_id=pair_id, kind=kind, task=session.task, agent_index=agent_index,
                      history=[], chosen=list(session.turns), rejected=None,
                      segment={"chosen": (0, n - 1), "rejected": None},
                      scores={"chosen": _scores(session, agent_index)}, provenance=dict(provenance or {}),
                      format=fmt or ConversationFormat())


def preferred_sft_record(negative: EpisodeRecord, positive: EpisodeRecord, agent_index: int, *,
                         fmt: ConversationFormat | None = None, pair_id: str,
                         provenance: dict | None = None) -> PairRecord:
    """Preferred-SFT: the SDPO positive session alone (every turn of the trained agent carries loss)."""
    return sft_record(positive, agent_index, kind="preferred_sft", fmt=fmt, pair_id=pair_id,
                      provenance={**_base_provenance(negative, positive, agent_index), **(provenance or {})})
