"""benchmarks.load at small size (24 episodes, concurrency 8, one SIGKILL and a resume against the
fault-injecting server), its checks shown to fail on a broken run, and the server's random faults."""
import json
import shutil
import urllib.error
import urllib.request

import pytest

from agents.local_server import ScriptedOpenAIServer
from benchmarks import load


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("load")
    return load.run_load(episodes=24, concurrency=8, fault_rate=0.2, malformed_rate=0.1, kills=1, turns=4,
                         seed=0, out=out / "run", log=lambda *a: None)


def test_killed_and_resumed_run_stores_every_episode_once(small_run):
    r = small_run
    assert r["invariants"] and all(r["invariants"].values()), load.report(r)
    # one kill, then one child that finished: 2 phases, the first ended by SIGKILL mid-run
    assert [p["killed"] for p in r["phases"][:2]] == [True, False]
    assert 0 < r["phases"][0]["lines_after"] < 24
    assert r["phases"][-1]["rc"] == 0
    # the store: every run key evaluated exactly once, the re-judge lines only after unevaluated ones
    rows = [json.loads(line) for line in open(f"{r['out']}/episodes.jsonl")]
    evaluated = [x["tags"]["run_key"] for x in rows if x["evaluation"]["evaluated"]]
    assert sorted(evaluated) == sorted(load.run_key(i) for i in range(24))
    assert len(rows) == 24 + r["rejudged_lines"]
    # nothing stored before the kill was asked for again after it
    assert r["n_repeated_paid_calls"] == 0 and r["unidentified_requests"] == 0
    # the faults really happened, and the clients got through them
    assert r["faults"].get("none", 0) < r["requests"]
    assert sum(v for k, v in r["faults"].items() if k != "none") >= 5
    assert r["malformed_judge_answers"] >= 1 and r["reasks_in_records"] >= 1
    assert r["retries_in_records"] >= 1
    assert r["judge_requests"] >= 24 and r["agent_requests"] >= 24 * 4
    # memory: sampled, and flat
    assert r["rss_samples"] and r["rss_slope_mib_per_100"]
    assert max(r["rss_slope_mib_per_100"].values()) < 10


def _tampered(r, tmp_path, change):
    """``verify`` of the same run after ``change(raw, store_path)`` (on a copy of the store)."""
    raw = dict(r["raw"])
    raw["requests"] = list(raw["requests"])
    raw["rss_log"] = [dict(s) for s in raw["rss_log"]]
    store = tmp_path / "episodes.jsonl"
    shutil.copy(raw["store_path"], store)
    raw["store_path"] = store
    change(raw, store)
    return load.verify(raw)["invariants"]


def test_the_checks_fail_on_a_broken_run(small_run, tmp_path):
    def duplicate_line(raw, store):
        lines = store.read_text().splitlines(keepends=True)
        store.write_text("".join(lines + lines[:1]))

    bad = _tampered(small_run, tmp_path, duplicate_line)
    assert not bad["every episode stored evaluated exactly once"]
    assert not bad["every episode played exactly once"]

    def replay_after_kill(raw, store):  # a request after the kill for an episode stored before it
        stored_before = sorted(raw["boundaries"][1]["evaluated"])[0]
        index = int(stored_before.split("|")[1])
        raw["requests"].append(({"model": "load-agent", "messages": [
            {"role": "user", "content": f"... {load.MARK.format(index)} ..."}]}, None))

    bad = _tampered(small_run, tmp_path, replay_after_kill)
    assert not bad["no paid call repeated for a stored episode"]
    assert bad["every episode stored evaluated exactly once"]

    def anonymous_request(raw, store):
        body = {"model": "load-agent", "messages": [{"role": "user", "content": "hi"}]}
        raw["requests"].append((body, None))

    assert not _tampered(small_run, tmp_path, anonymous_request)["every request names its episode"]

    def leak(raw, store):
        last = raw["rss_log"][-1]
        raw["rss_log"].append({**last, "stored": last["stored"] + 1, "stored_in_phase": 10**6,
                               "rss_mib": last["rss_mib"] + 500})

    assert not _tampered(small_run, tmp_path, leak)["RSS grows < 10 MiB per 100 episodes"]


def _post(srv) -> int:
    request = urllib.request.Request(srv.base_url + "/chat/completions", method="POST",
                                     data=json.dumps({"model": "m", "messages": []}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def test_server_random_faults_are_seeded_and_queue_first():
    def statuses(seed):
        with ScriptedOpenAIServer(fault_rate=0.5, fault_choices=(429, 503), fault_seed=seed) as srv:
            srv.fault_queue += [500, None]
            codes = [_post(srv) for _ in range(40)]
            return codes, list(srv.faults_served)

    codes, served = statuses(3)
    assert codes[:1] == [500] and served[:2] == [500, None]  # queued faults come first, None answers
    assert set(codes[2:]) <= {200, 429, 503} and {200, 429, 503} <= set(codes[2:])
    assert served[2:] == [None if c == 200 else c for c in codes[2:]]
    assert statuses(3) == (codes, served)  # the same seed, the same faults
    with ScriptedOpenAIServer() as srv:  # no fault_rate: every request answered
        assert [_post(srv) for _ in range(5)] == [200] * 5
    with pytest.raises(ValueError):
        ScriptedOpenAIServer(fault_rate=1.5)
