"""Segment selection: validation of the judge's segment, equal-length cutting, the fixed ablation."""
import json

import pytest

from sdpo.pairs.locate import InvalidAnswer
from sdpo.pairs.segment import cut_sides, validate_segment

from .pairs_episodes import branch, episode, lines

NEG = ["Hi Ben, want my bike?", "Maybe. How much?", "200 dollars, final.", "Too much.", "Fine, 190?", "No.",
       "Bye.", "Bye."]


def test_validate_segment_start_end_and_owner():
    neg = episode(NEG)
    pos = branch(neg, 2, ["Would 130 work?", "Maybe 110.", "Let's say 120.", "Deal.", "Great, bye."],
                 goals=(8, 6), episode_id="p")
    assert validate_segment('{"start_index": 2, "end_index": 4, "reason": "meets halfway"}', pos.turns, 0, 2) == {
        "start_index": 2, "end_index": 4, "reason": "meets halfway"}
    for text, problem in [('{"start_index": 3, "end_index": 4}', "must be 2"),
                          ('{"start_index": 2, "end_index": 7}', "out of range"),
                          ('{"start_index": 2, "end_index": 1}', "out of range"),
                          ('{"start_index": 2, "end_index": 5}', "not the trained agent's"),
                          ('{"start_index": 2}', "end_index"), ("[2, 4]", "no JSON")]:
        with pytest.raises(InvalidAnswer, match=problem):
            validate_segment(text, pos.turns, 0, 2)


def test_cut_sides_equal_lengths_and_cut_after_the_segment():
    history = lines(NEG[:2])
    chosen = lines(["a1", "b1", "a2", "b2", "a3", "b3"], start=2)
    rejected = lines(["x1", "y1", "x2", "y2"], start=2)
    c, r, seg, short = cut_sides(history, chosen, rejected, 0, 2, 2, equal=True)
    assert [t.argument for t in c] == ["a1", "b1", "a2"] and [t.argument for t in r] == ["x1", "y1", "x2"]
    assert seg == {"chosen": [1, 2], "rejected": [1, 2]} and not short
    # The negative has only 2 agent turns after the error turn: both sides shrink to 2.
    c, r, seg, short = cut_sides(history, chosen, rejected, 0, 3, 3, equal=True)
    assert seg == {"chosen": [1, 2], "rejected": [1, 2]} and short and len(c) == 3
    # Asymmetric [a, b] = [1, 3] (negative, positive): each side its own length.
    c, r, seg, short = cut_sides(history, chosen, rejected, 0, 3, 1, equal=False)
    assert seg == {"chosen": [1, 3], "rejected": [1, 1]} and [t.argument for t in r] == ["x1"] and len(c) == 5


def test_local_fallback_segment_ends_on_an_agent_turn_of_the_positive(tiny_llama, embedded_tokenizer):
    import asyncio

    from sdpo.pairs.locate import LocalTurnScorer
    from sdpo.pairs.segment import select_one

    neg = episode(NEG)
    pos = branch(neg, 2, ["Would 130 work?", "Maybe 110.", "Let's say 120.", "Deal.", "Great, bye."],
                 goals=(8, 6), episode_id="p")
    entry = asyncio.run(select_one(neg, pos.turns, 0, 2, scorer=LocalTurnScorer(tiny_llama, embedded_tokenizer)))
    assert entry["status"] == "ok" and entry["start_index"] == 2 and entry["end_index"] in (2, 4, 6)
    assert set(entry["option_scores"]) == {"2", "4", "6"}
    assert entry["option_scores"][str(entry["end_index"])] == max(entry["option_scores"].values())
    # The answer passes the same validation as a judge's.
    assert validate_segment(json.dumps(entry), pos.turns, 0, 2)["end_index"] == entry["end_index"]
