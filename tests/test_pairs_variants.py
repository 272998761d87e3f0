"""Pair records of every kind from the same negative, validated by the pair-file schema."""
from sdpo.pairs.config import Interlocutors, NegativesConfig, SegmentMethod
from sdpo.pairs.negatives import select_negatives
from sdpo.pairs.write import build_pairs, write_pair_file
from sdpo.pairs_schema import read_pairs

from .pairs_episodes import branch, episode

NEG = ["Hi Ben, want my bike?", "Maybe. How much?", "200 dollars, final.", "Too much.", "Fine, 190?", "No.",
       "Bye.", "Bye."]


def fixture():
    neg = episode(NEG, goals=(3, 5), seats=(0,), interlocutor="partner")
    pos = branch(neg, 2, ["Would 130 work?", "Maybe 110.", "Let's say 120.", "Deal.", "Great, bye.", "Bye."],
                 goals=(8, 6), episode_id="pos")
    scratch = episode(["Hello neighbour!", "Hi!", "Bike for 125?", "Deal."], goals=(9, 7), episode_id="scr")
    negatives, _ = select_negatives([neg], NegativesConfig())
    key = negatives[0].key
    stages = {"locate": {key: {"status": "ok", "index": 2, "reason": "r", "judge": "j", "answers": ["{}"]}},
              "sample": {key: {"status": "kept", "positive": "pos", "candidates": [{"episode_id": "pos"}]}},
              "segment": {key: {"status": "ok", "start_index": 2, "end_index": 4, "reason": "s"}},
              "scratch": {key: {"status": "kept", "positive": "scr", "candidates": []}}}
    episodes = {r.episode_id: r for r in (neg, pos, scratch)}
    return negatives, episodes, stages


def test_every_kind_is_a_valid_pair_record(tmp_path):
    negatives, episodes, stages = fixture()
    out = {}
    for kind in ("sdpo", "dpo", "eto", "dmpo", "preferred_sft"):
        pairs, counts = build_pairs(kind, negatives, episodes, **stages)
        assert counts["pairs"] == 1
        write_pair_file(tmp_path / f"{kind}.jsonl", pairs)
        (out[kind],) = read_pairs(tmp_path / f"{kind}.jsonl")
    sdpo = out["sdpo"]
    # Judge segment messages 2..4 holds 2 agent turns; the negative gives 2 too; later turns cut.
    assert [t.argument for t in sdpo.history] == NEG[:2]
    assert [t.argument for t in sdpo.chosen] == ["Would 130 work?", "Maybe 110.", "Let's say 120."]
    assert [t.argument for t in sdpo.rejected] == ["200 dollars, final.", "Too much.", "Fine, 190?"]
    assert sdpo.segment == {"chosen": (1, 2), "rejected": (1, 2)}
    assert sdpo.scores["chosen"]["goal"] == 8.0 and sdpo.scores["rejected"]["goal"] == 3.0
    assert sdpo.provenance["negative_episode"] == "neg" and sdpo.provenance["branch_turn"] == 2
    assert sdpo.provenance["segment"]["end_index"] == 4
    dpo = out["dpo"]
    assert [t.argument for t in dpo.chosen] == ["Would 130 work?"] and [t.argument for t in dpo.rejected] == [NEG[2]]
    assert out["eto"].history == [] and len(out["eto"].rejected) == len(NEG)
    assert out["eto"].segment == {"chosen": (0, 1), "rejected": (0, 3)}
    assert out["dmpo"].kind == "dmpo" and out["preferred_sft"].rejected is None
    assert len(out["preferred_sft"].chosen) == 8 and out["preferred_sft"].segment["chosen"] == (0, 3)


def test_fixed_and_asymmetric_segments_and_interlocutor_filter():
    negatives, episodes, stages = fixture()
    (pair,), _ = build_pairs("sdpo", negatives, episodes, **stages, segment_method=SegmentMethod.fixed,
                             fixed=(1, 3))
    assert pair.segment == {"chosen": (1, 3), "rejected": (1, 1)}
    assert pair.provenance["segment_source"] == "fixed [1,3]"
    pairs, counts = build_pairs("sdpo", negatives, episodes, **stages, interlocutors=Interlocutors.self_chat)
    assert pairs == [] and counts["other_interlocutor"] == 1


def test_missing_stages_are_counted_not_paired():
    negatives, episodes, stages = fixture()
    key = negatives[0].key
    stages["locate"][key] = {"status": "skipped", "reason": "invalid_answer"}
    pairs, counts = build_pairs("sdpo", negatives, episodes, **stages)
    assert pairs == [] and counts["locate_invalid_answer"] == 1
    stages["locate"] = {}
    assert build_pairs("dpo", negatives, episodes, **stages)[1]["not_located"] == 1
