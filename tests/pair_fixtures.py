"""Small pair records written in code, shared by the sdpo tests (tokenize, packing, fit)."""
from __future__ import annotations

from sdpo.pairs_schema import PairRecord
from sotopia_env.episode import Turn
from tests.factories import make_task


def turn(i: int, agent: int, text: str, action: str = "speak") -> Turn:
    return Turn(turn=i, agent_index=agent, speaker=["Ana Reyes", "Ben Okafor"][agent], action_type=action,
                argument=text)


def make_pair(pair_id: str = "p0", *, n_history: int = 4, seg: int = 2, kind: str = "sdpo",
              agent_index: int = 0, words: int = 6, rejected_seg: int | None = None) -> PairRecord:
    """A pair with ``n_history`` alternating turns (agent 0 first) then ``seg`` agent turns per
    side interleaved with partner turns; the segment spans all of them."""
    history = [turn(i, i % 2, f"history line {i} " + "word " * words) for i in range(n_history)]
    in_history = sum(1 for t in history if t.agent_index == agent_index)

    def side(tag: str, n: int) -> list[Turn]:
        out, i = [], n_history
        while sum(1 for t in out if t.agent_index == agent_index) < n:
            out.append(turn(i, i % 2, f"{tag} turn {i} " + "more " * words))
            i += 1
        return out

    chosen = side("good", seg)
    rseg = seg if rejected_seg is None else rejected_seg
    rejected = None if kind in ("sft", "preferred_sft") else side("bad", rseg)
    segment = {"chosen": (in_history, in_history + seg - 1),
               "rejected": None if rejected is None else (in_history, in_history + rseg - 1)}
    return PairRecord(pair_id=pair_id, kind=kind, task=make_task(), agent_index=agent_index, history=history,
                      chosen=chosen, rejected=rejected, segment=segment,
                      scores={"chosen": {"goal": 8.0}, "rejected": {"goal": 3.0}})
