"""The write stage: pair records of each kind from the stage files, written atomically.

Writing makes no model or judge call, so each run rebuilds the pair files from the stage
ledgers (a temporary file renamed over the old one: a reader never sees half a file).
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from agents.formatter import ConversationFormat
from sdpo.pairs_schema import PairRecord, write_pair
from sotopia_env.episode import EpisodeRecord

from .config import Interlocutors, SegmentMethod
from .negatives import Negative
from .stages import Status
from .variants import (
    dpo_pair,
    preferred_sft_record,
    sdpo_pair,
    segment_length_from_end,
    session_pair,
    sft_record,
)


def build_pairs(kind: str, negatives: Sequence[Negative], episodes: Mapping[str, EpisodeRecord], *,
                locate: Mapping[str, dict], sample: Mapping[str, dict], segment: Mapping[str, dict],
                scratch: Mapping[str, dict], segment_method: SegmentMethod = SegmentMethod.judge,
                fixed: Sequence[int] = (3, 3), interlocutors: Interlocutors = Interlocutors.both,
                fmt: ConversationFormat | None = None) -> tuple[list[PairRecord], Counter]:
    """Pairs of ``kind`` for the negatives that reached the needed stage; ``counts`` says why the
    others did not become a pair (``not_located``, ``not_kept``, ``no_segment``, ...).

    ``locate`` / ``sample`` / ``segment`` / ``scratch`` map a negative's key to its final stage
    entry; ``episodes`` maps episode ids to records (collected sessions and sampled branches).
    """
    pairs: list[PairRecord] = []
    counts: Counter = Counter()
    for neg in negatives:
        if interlocutors != Interlocutors.both and neg.interlocutor != interlocutors.value:
            counts["other_interlocutor"] += 1
            continue
        negative = episodes[neg.episode_id]
        seat = neg.agent_index
        if kind in ("eto", "dmpo"):
            entry = scratch.get(neg.key)
            if entry is None:
                counts["not_sampled_from_start"] += 1
                continue
            if entry["status"] != Status.kept:
                counts[f"scratch_{entry.get('reason', entry['status'])}"] += 1
                continue
            positive = episodes[entry["positive"]]
            pairs.append(session_pair(negative, positive, seat, kind, fmt=fmt, pair_id=f"{kind}:{neg.key}",
                                      provenance={"candidates": entry["candidates"], "from_start": True}))
            continue
        loc, smp = locate.get(neg.key), sample.get(neg.key)
        if loc is None or loc["status"] != Status.ok:
            counts["not_located" if loc is None else f"locate_{loc.get('reason', loc['status'])}"] += 1
            continue
        if smp is None or smp["status"] != Status.kept:
            counts["not_sampled" if smp is None else f"sample_{smp.get('reason', smp['status'])}"] += 1
            continue
        positive = episodes[smp["positive"]]
        error_turn = int(loc["index"])
        provenance = {"error_turn": {k: loc.get(k) for k in ("index", "reason", "judge", "answers", "problems")
                                     if k in loc},
                      "candidates": smp["candidates"]}
        if kind == "dpo":
            pairs.append(dpo_pair(negative, positive, seat, error_turn, fmt=fmt, pair_id=f"dpo:{neg.key}",
                                  provenance=provenance))
        elif kind == "preferred_sft":
            pairs.append(preferred_sft_record(negative, positive, seat, fmt=fmt, pair_id=f"preferred_sft:{neg.key}",
                                              provenance=provenance))
        elif kind == "sdpo":
            if segment_method == SegmentMethod.fixed:
                rejected_len, chosen_len = int(fixed[0]), int(fixed[1])
                provenance["segment_source"] = f"fixed [{rejected_len},{chosen_len}]"
            else:
                seg = segment.get(neg.key)
                if seg is None or seg["status"] != Status.ok:
                    counts["no_segment" if seg is None else f"segment_{seg.get('reason', seg['status'])}"] += 1
                    continue
                chosen_len = rejected_len = segment_length_from_end(positive, seat, error_turn, int(seg["end_index"]))
                provenance["segment_source"] = "judge"
                provenance["segment"] = {k: seg.get(k) for k in ("start_index", "end_index", "reason", "judge",
                                                                 "answers", "problems") if k in seg}
            pairs.append(sdpo_pair(negative, positive, seat, error_turn, chosen_len=chosen_len,
                                   rejected_len=rejected_len, equal=chosen_len == rejected_len, fmt=fmt,
                                   pair_id=f"sdpo:{neg.key}", provenance=provenance))
        else:
            raise ValueError(f"unknown pair kind {kind!r}")  # internal: config validated the kinds
    counts["pairs"] = len(pairs)
    return pairs, counts


def build_sft(sessions: Iterable[EpisodeRecord], *, min_goal: float, models: Sequence[str] = (),
              interlocutors: Interlocutors = Interlocutors.both,
              fmt: ConversationFormat | None = None) -> tuple[list[PairRecord], Counter]:
    """Behavioural-cloning records (kind ``sft``) from collected or imported sessions, filtered by
    goal as SOTOPIA-pi filters its expert data: one record per session and seat played by the
    collected agent (``agent_seats``; both seats of an imported session), and only by one of
    ``models`` when given, whose goal score is at least ``min_goal``. ``counts`` says why the
    other seats gave none (``below_min_goal``, ``other_model``, ``unevaluated``, ...)."""
    records: list[PairRecord] = []
    counts: Counter = Counter()
    for session in sessions:
        interlocutor = str(session.tags.get("interlocutor", "self"))
        if interlocutors != Interlocutors.both and interlocutor != interlocutors.value:
            counts["other_interlocutor"] += 1
            continue
        if not session.evaluated:
            counts["unevaluated"] += 1
            continue
        for seat in session.agent_seats():
            model = session.models[seat] if seat < len(session.models) else ""
            if models and model not in models:
                counts["other_model"] += 1
            elif session.score(seat, "goal") < min_goal:
                counts["below_min_goal"] += 1
            elif not any(t.agent_index == seat for t in session.turns):
                counts["no_agent_turn"] += 1
            else:
                records.append(sft_record(session, seat, fmt=fmt, pair_id=f"sft:{session.episode_id}:{seat}",
                                          provenance={"episode": session.episode_id, "model": model,
                                                      "interlocutor": interlocutor,
                                                      "source": session.tags.get("source", "collect"),
                                                      "min_goal": min_goal}))
    counts["pairs"] = len(records)
    return records, counts


def write_pair_file(path: str | os.PathLike, pairs: Sequence[PairRecord]) -> None:
    """Write ``pairs`` to ``path`` atomically; every record is validated against the schema first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    if tmp.exists():
        tmp.unlink()
    tmp.touch()
    for rec in pairs:
        write_pair(tmp, rec)
    os.replace(tmp, path)
