"""The episode store: append-only JSONL, fsync per record, torn-line recovery, resume, datasets."""

import json
import os

import pytest

from sotopia_env import DataError, EpisodeRecord, EpisodeStore, parallel_env
from tests.test_env import TASK, CountingJudge, play


def make_record(seed, *, run_key=None, judge_fails=False, evaluator=True) -> EpisodeRecord:
    env = parallel_env(TASK, max_turns=6, evaluator=CountingJudge(fail=judge_fails) if evaluator else None)
    record, _, _ = play(env, seed=seed, policy_seed=seed)
    record = env.to_record(
        models=["embedded", "gpt-4o"],
        sampling=[{"temperature": 1.0}, {"temperature": 0.7}],
        tags={"run_key": run_key} if run_key else {},
        timings={"episode_s": 0.5 + seed},
    )
    return record


def test_append_writes_one_fsynced_line_per_record(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    store = EpisodeStore(tmp_path / "runs" / "episodes.jsonl")  # parent folders are created
    records = [make_record(i) for i in range(3)]
    for i, record in enumerate(records):
        store.append(record)
        assert len(synced) == i + 1  # durable before append returns
    lines = store.path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and all(
        json.loads(line)["episode_id"] == r.episode_id for line, r in zip(lines, records)
    )
    assert [r.to_dict() for r in store] == [r.to_dict() for r in records] and len(store) == 3
    assert store.get(records[1].episode_id).to_dict() == records[1].to_dict()
    with pytest.raises(KeyError, match="no episode with id 'nope'"):
        store.get("nope")


def test_torn_last_line_skipped_with_warning_nothing_else_lost(tmp_path):
    store = EpisodeStore(tmp_path / "episodes.jsonl")
    records = [make_record(i) for i in range(3)]
    for record in records:
        store.append(record)
    whole = json.dumps(make_record(9).to_dict())
    with open(store.path, "a", encoding="utf-8") as f:
        f.write(whole[: len(whole) // 2])  # the crash: half a record, no newline
    with pytest.warns(UserWarning, match="line 4: torn last line skipped"):
        read = store.records()
    assert [r.to_dict() for r in read] == [r.to_dict() for r in records]
    # appending after the crash cuts the torn tail off, so the file stays readable
    late = make_record(4)
    with pytest.warns(UserWarning, match="cut off a torn last line"):
        store.append(late)
    assert [r.episode_id for r in store.records()] == [r.episode_id for r in records] + [late.episode_id]
    assert len(store.path.read_text(encoding="utf-8").splitlines()) == 4


def test_record_missing_only_its_newline_is_kept(tmp_path):
    store = EpisodeStore(tmp_path / "episodes.jsonl")
    first, second, third = make_record(0), make_record(1), make_record(2)
    store.append(first)
    with open(store.path, "a", encoding="utf-8") as f:
        f.write(json.dumps(second.to_dict()))  # crash between the record and its newline
    assert [r.episode_id for r in store.records()] == [first.episode_id, second.episode_id]
    store.append(third)
    assert [r.episode_id for r in store.records()] == [first.episode_id, second.episode_id, third.episode_id]


def test_corrupt_line_in_the_middle_is_an_error(tmp_path):
    store = EpisodeStore(tmp_path / "episodes.jsonl")
    store.append(make_record(0))
    with open(store.path, "a", encoding="utf-8") as f:
        f.write("{not json}\n")
    store.append(make_record(1))
    with pytest.raises(DataError, match=r"episodes.jsonl line 2: not valid JSON"):
        store.records()


def test_resume_skips_done_and_retries_unevaluated(tmp_path):
    store = EpisodeStore(tmp_path / "episodes.jsonl")
    store.append(make_record(0, run_key="t-rent/self/0"))
    store.append(make_record(1, run_key="t-rent/self/1", judge_fails=True))
    store.append(make_record(2, run_key="t-rent/self/2", evaluator=False))
    store.append(make_record(3))  # no run key: not a unit of a resumable run
    assert store.done_keys() == {"t-rent/self/0"}
    assert store.done_keys(evaluated_only=False) == {"t-rent/self/0", "t-rent/self/1", "t-rent/self/2"}
    # a resumed run: only the keys not done are played again
    planned = [f"t-rent/self/{i}" for i in range(4)]
    assert [k for k in planned if k not in store.done_keys()] == planned[1:]
    assert EpisodeStore(tmp_path / "absent.jsonl").done_keys() == set()


def test_record_round_trip_keeps_everything(tmp_path):
    env = parallel_env(TASK, max_turns=8, evaluator=CountingJudge())
    parent, _, _ = play(env, seed=1, allow_leave=False)
    env.reset(options={"history": parent, "branch_turn": 3})
    while env.agents:
        env.step({a: {"action_type": "speak", "argument": "again"} for a in env.next_agents()})
    branch = env.to_record(models=["a", "b"], usage={"judge": {"prompt_tokens": 10}})
    assert branch.parent_episode_id == parent.episode_id and branch.branch_turn == 3
    assert [t.to_dict() for t in branch.turns[:3]] == [t.to_dict() for t in parent.turns[:3]]
    store = EpisodeStore(tmp_path / "e.jsonl")
    store.append(branch)
    (loaded,) = store.records()
    assert (
        loaded.to_dict() == branch.to_dict()
        and loaded.evaluated
        and loaded.usage["judge"]["prompt_tokens"] == 10
    )


def test_store_loads_with_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    store = EpisodeStore(tmp_path / "episodes.jsonl")
    records = [make_record(0, run_key="a"), make_record(1, judge_fails=True), make_record(2, evaluator=False)]
    for record in records:
        store.append(record)
    ds = datasets.load_dataset(
        "json", data_files=str(store.path), split="train", cache_dir=str(tmp_path / "cache")
    )
    assert ds.num_rows == 3 and ds["episode_id"] == [r.episode_id for r in records]
    assert ds[0]["evaluation"]["agents"][0]["scores"]["goal"] == records[0].score(0)
    assert ds[1]["evaluation"]["evaluated"] is False and ds[2]["evaluation"] is None
    assert [len(t) for t in ds["turns"]] == [len(r.turns) for r in records]
    assert ds[0]["task"]["profiles"][0]["first_name"] == "Mia"


@pytest.mark.parametrize("bad", [None, float("nan"), {"text": "hi"}, 3])
def test_a_turn_argument_is_a_string_on_every_path(tmp_path, bad):
    """Store, pair file and env agree: an argument that is not a string is refused with the file,
    line and field, never read as "None", "nan" or "{...}" (and trained on)."""
    from sdpo.pairs_schema import read_pairs
    from tests.pair_fixtures import make_pair

    env = parallel_env(TASK, max_turns=4)
    record, _, _ = play(env, seed=0, allow_leave=False)
    row = record.to_dict()
    row["turns"][1]["argument"] = bad
    store = tmp_path / "episodes.jsonl"
    store.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=r"episodes.jsonl line 1: field 'turns'.*argument must be a string"):
        list(EpisodeStore(store))
    pair = make_pair("p").to_dict()
    pair["history"][0]["argument"] = bad
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps(pair) + "\n")
    with pytest.raises(DataError, match=r"pairs.jsonl line 1: field 'history\[0\]'.*argument must be a string"):
        read_pairs(pairs)
    env.reset(seed=0)
    with pytest.raises(DataError, match="argument"):
        env.step({env.agents[0]: {"action_type": "speak", "argument": bad}})
