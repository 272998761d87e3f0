"""sdpo.pairs_schema: round trip, validation errors naming file, line and field."""
import json

import pytest

from sdpo.pairs_schema import PairRecord, read_pairs, write_pair
from sotopia_env.errors import DataError
from tests.pair_fixtures import make_pair


def test_round_trip(tmp_path):
    path = tmp_path / "pairs.jsonl"
    pairs = [make_pair("a"), make_pair("b", kind="sft"), make_pair("c", seg=3, rejected_seg=1)]
    for p in pairs:
        write_pair(path, p)
    back = read_pairs(path)
    assert [p.to_dict() for p in back] == [p.to_dict() for p in pairs]
    assert back[1].rejected is None and back[1].sides == ("chosen",)
    assert back[2].segment == {"chosen": (2, 4), "rejected": (2, 2)}   # asymmetric is allowed
    assert back[0].history_agent_turns == 2 == back[0].segment["chosen"][0]


def _write(tmp_path, records):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("edit, field, words", [
    (lambda d: d.update(kind="ppo"), "kind", "allowed: sdpo, dpo"),
    (lambda d: d.update(agent_index=2), "agent_index", "0 or 1"),
    (lambda d: d.pop("history"), "history", "missing"),
    (lambda d: d.update(rejected=None), "rejected", "needs a rejected side"),
    (lambda d: d["segment"].update(chosen=[2, 9]), "segment.chosen", "hold 4 turns"),
    (lambda d: d["segment"].update(rejected=[1, 2]), "segment.rejected", "shared history already holds 2"),
    (lambda d: d["segment"].update(chosen=[3, 2]), "segment.chosen", "after last"),
    (lambda d: d["segment"].update(chosen="2-3"), "segment.chosen", "two integers"),
    (lambda d: d["chosen"][1].update(action_type="dance"), "chosen[1]", "not allowed"),
    (lambda d: d["format"].update(colour=1), "format", "unknown option"),
])
def test_errors_name_file_line_field(tmp_path, edit, field, words):
    good = make_pair("ok").to_dict()
    bad = make_pair("bad").to_dict()
    edit(bad)
    path = _write(tmp_path, [good, bad])
    with pytest.raises(DataError) as err:
        read_pairs(path)
    msg = str(err.value)
    assert f"{path} line 2" in msg and f"field {field!r}" in msg and words in msg, msg


def test_duplicate_ids_and_missing_file(tmp_path):
    path = _write(tmp_path, [make_pair("x").to_dict(), make_pair("x").to_dict()])
    with pytest.raises(DataError, match="line 2.*duplicate pair_id 'x'"):
        read_pairs(path)
    with pytest.raises(DataError, match="does not exist"):
        read_pairs(tmp_path / "nope.jsonl")


def test_write_validates(tmp_path):
    pair = make_pair("w")
    pair.segment["chosen"] = (0, 0)       # inside the shared history: not a segment of this side
    with pytest.raises(DataError, match="segment.chosen"):
        write_pair(tmp_path / "out.jsonl", pair)
    assert not (tmp_path / "out.jsonl").exists()
    assert isinstance(PairRecord.from_dict(make_pair().to_dict()), PairRecord)
