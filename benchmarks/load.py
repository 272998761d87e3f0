"""A load test of the episode runner: a faulty API, SIGKILLs mid-run, resumes, exactly-once storage.

    python -m benchmarks.load [--episodes 300] [--concurrency 32] [--fault-rate 0.2]
                              [--malformed-rate 0.1] [--kills 2] [--turns 4] [--seed 0] [--out DIR]

This process (the driver) serves the scripted OpenAI-compatible server (``agents.local_server``)
in a thread, answering every request as ``agents.stand_in`` does. ``--fault-rate`` of the requests
get a random fault instead (seeded): 429, 500, 503 or a slow answer (``--slow`` seconds, then a
normal one); ``--malformed-rate`` of the judge's answers are not JSON, so ``LLMJudge`` re-asks.
The episodes run in a child process (``--worker``): ``agents.runner.run_episodes`` with
``LiteLLMPolicy`` agent and partner and an ``LLMJudge``, all clients of that server, appending
to ``OUT/episodes.jsonl``. The driver SIGKILLs the child ``--kills`` times, at random moments
around 1/(kills+1), 2/(kills+1)... of the episodes stored, and starts it again each time; the
last child runs to the end. The server lives in the driver, so it sees every request of every
child; each request names its episode (a ``[load episode N]`` mark in the scenario text).

Checked (exit status 1 if any fails):

* every episode is stored evaluated exactly once, and played exactly once (an episode stored
  unevaluated may be followed by re-judged lines of the same episode, per ``agents.runner``);
* no request for an episode arrives after a kill if the store held it evaluated at that kill,
  and only judge requests for one it held unevaluated (no paid call repeated for it);
* every request names its episode, and every kill happened;
* the child's memory is flat: its RSS, sampled as the store grows, rises by less than
  ``--rss-slope`` MiB per 100 episodes (a window of fewer counts as 100) once the first
  ``concurrency`` episodes of a phase are stored.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

AGENT, PARTNER, JUDGE = "openai/load-agent", "openai/load-partner", "openai/load-judge"
DUMMY_KEY = "sk-load-test-not-a-key"
MARK = "[load episode {}]"
_MARK = re.compile(r"\[load episode (\d+)\]")
MALFORMED_ANSWER = "Let me think about the scores first; I will give them to you later."
MAX_RETRIES = 10   # 0.2 ** 11: no request gives up in a run of thousands
MAX_REASKS = 3     # 0.1 ** 4 per episode: few episodes are stored unevaluated
REPO = Path(__file__).resolve().parents[1]


def run_key(i: int) -> str:
    return f"load|{i}"


def load_tasks(n: int):
    """``n`` tasks cycling over every built-in task; the scenario of task i carries ``[load episode i]``."""
    from sotopia_env import builtin_tasks

    base = builtin_tasks("all")
    out = []
    for i in range(n):
        t = base[i % len(base)]
        scenario = dataclasses.replace(t.scenario, scenario=f"{t.scenario.scenario} {MARK.format(i)}")
        out.append(dataclasses.replace(t, pk=f"{t.pk}#{i}", scenario=scenario))
    return out


# ------------------------------------------------------------------------- the child

def worker(args) -> int:
    """Play every episode not yet stored into ``OUT/episodes.jsonl``; write this phase's figures."""
    from agents.judge import LLMJudge
    from agents.litellm_policy import LiteLLMPolicy
    from agents.runner import EpisodeJob, run_episodes
    from sotopia_env.episode import EpisodeStore
    from sotopia_env.errors import APIError

    out = Path(args.out)
    client = dict(api_base=args.api_base, api_key=DUMMY_KEY, max_concurrency=args.concurrency, timeout=30,
                  max_retries=MAX_RETRIES, backoff_base=0.01, backoff_max=0.2)
    agent = LiteLLMPolicy(AGENT, max_new_tokens=64, **client)
    partner = LiteLLMPolicy(PARTNER, max_new_tokens=64, **client)
    judge = LLMJudge(JUDGE, max_reasks=MAX_REASKS, **client)
    jobs = [EpisodeJob(task=t, policies=(agent, partner) if i % 2 == 0 else (partner, agent),
                       run_key=run_key(i), seed=args.seed * 100_003 + i, max_turns=args.turns,
                       tags={"agent_seats": [i % 2]})
            for i, t in enumerate(load_tasks(args.episodes))]
    store = EpisodeStore(out / "episodes.jsonl")
    start = time.perf_counter()
    rc, error, stored = 0, None, None
    try:
        stored = len(run_episodes(jobs, store, judge, concurrency=args.concurrency, progress=False))
    except APIError as e:  # some episode gave up: the driver resumes once more
        rc, error = 3, str(e)[:500]
    figures = {"phase": args.phase, "rc": rc, "error": error, "stored": stored,
               "wall_seconds": time.perf_counter() - start,
               "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "clients": {p.name: dict(p.client.usage) for p in (agent, partner, judge)}}
    (out / f"worker-{args.phase}.json").write_text(json.dumps(figures, indent=1))
    return rc


# ------------------------------------------------------------------------- the driver

class _Responder:
    """``stand_in_answer``, except that a judge request gets a non-JSON answer with probability
    ``malformed_rate`` (seeded). Remembers which request bodies got one."""

    def __init__(self, malformed_rate: float, seed: int):
        from agents.stand_in import stand_in_answer

        self.answer = stand_in_answer
        self.rate = malformed_rate
        self.rng = random.Random(seed * 7919 + 1)
        self.lock = threading.Lock()
        self.malformed: set[int] = set()  # id() of the bodies (the server keeps them all alive)

    def __call__(self, body: dict) -> str:
        if "judge" in body.get("model", ""):
            with self.lock:
                bad = self.rng.random() < self.rate
                if bad:
                    self.malformed.add(id(body))
            if bad:
                return MALFORMED_ANSWER
        return self.answer(body)


def _proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a live process in MiB ({} if unreadable)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) / 1024
    except OSError:
        try:
            import psutil

            out["VmRSS"] = psutil.Process(pid).memory_info().rss / 2**20
        except Exception:  # noqa: BLE001 - no psutil, or the process is gone
            pass
    return out


class _LineCounter:
    """Counts the complete lines of a growing file, reading only what was appended."""

    def __init__(self, path: Path):
        self.path, self.offset, self.lines = path, 0, 0

    def count(self) -> int:
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                if size < self.offset:  # a torn last line was cut off
                    self.offset = self.lines = 0
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return 0
        end = data.rfind(b"\n") + 1
        self.lines += data[:end].count(b"\n")
        self.offset += end
        return self.lines


def _store_state(path: Path) -> dict:
    """The store's records as the driver reads them: lines per key, evaluated / unevaluated keys."""
    from sotopia_env.episode import read_jsonl

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = [obj for _, obj in read_jsonl(path)]
    evaluated = {r["tags"]["run_key"] for r in rows if (r.get("evaluation") or {}).get("evaluated")}
    keys = {r["tags"]["run_key"] for r in rows}
    return {"rows": rows, "lines": len(rows), "evaluated": evaluated, "unevaluated": keys - evaluated,
            "torn": sum("torn" in str(w.message) for w in caught)}


def _kill_targets(episodes: int, kills: int, rng: random.Random) -> list[int]:
    """Store line counts at which to kill: around j/(kills+1) of the episodes, jittered by +-1/4 of a step."""
    targets, last = [], 0
    for j in range(1, kills + 1):
        t = round(episodes * (j + rng.uniform(-0.25, 0.25)) / (kills + 1))
        t = min(max(t, last + 1), episodes - 1)
        targets.append(t)
        last = t
    return targets


def _run_phase(phase: int, args, api_base: str, out: Path, kill_at: int | None, rng: random.Random,
               checkpoints: list[int], rss_log: list[dict]) -> dict:
    """Start the child; SIGKILL it once the store holds ``kill_at`` lines (None: let it finish)."""
    cmd = [sys.executable, "-m", "benchmarks.load", "--worker", "--phase", str(phase), "--out", str(out),
           "--api-base", api_base, "--episodes", str(args.episodes), "--concurrency", str(args.concurrency),
           "--turns", str(args.turns), "--seed", str(args.seed)]
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    counter = _LineCounter(out / "episodes.jsonl")
    first_lines = counter.count()
    log = open(out / f"worker-{phase}.log", "wb")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
    killed, deadline, status = False, start + args.phase_timeout, None
    next_sample = start + 1.0
    try:
        while True:
            pid, wstatus, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status = wstatus
                break
            lines = counter.count()
            now = time.perf_counter()
            due = [c for c in checkpoints if c <= lines]
            if due or now >= next_sample:
                for c in due:
                    checkpoints.remove(c)
                mem = _proc_status(proc.pid)
                if mem.get("VmRSS"):
                    rss_log.append({"phase": phase, "seconds": now - start, "stored": lines,
                                    "stored_in_phase": lines - first_lines, "rss_mib": mem["VmRSS"],
                                    "checkpoint": bool(due)})
                next_sample = now + 1.0
            if kill_at is not None and lines >= kill_at and not killed:
                time.sleep(rng.uniform(0, 0.1))  # land anywhere in the flow, mid-write included
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
            elif now > deadline and not killed:
                os.kill(proc.pid, signal.SIGKILL)
                killed = "timeout"
            time.sleep(0.05)
    finally:
        log.close()
        if status is None:  # the driver failed: leave no child behind
            proc.kill()
            proc.wait()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if killed and proc.returncode != -signal.SIGKILL:  # it had finished just before the kill
        killed = False
    wall = time.perf_counter() - start
    lines = counter.count()
    figures = {}
    path = out / f"worker-{phase}.json"
    if path.exists():
        figures = json.loads(path.read_text())
    return {"phase": phase, "killed": killed, "kill_at": kill_at, "rc": proc.returncode, "wall_seconds": wall,
            "lines_before": first_lines, "lines_after": lines, "peak_rss_mib": usage.ru_maxrss / 1024,
            "worker": figures}


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def run_load(episodes: int = 300, concurrency: int = 32, fault_rate: float = 0.2, malformed_rate: float = 0.1,
             kills: int = 2, turns: int = 4, seed: int = 0, out: str | os.PathLike | None = None, *,
             slow: float = 1.0, delay: float = 0.05, rss_slope: float = 10.0, phase_timeout: float = 900,
             max_extra_resumes: int = 3, log=print) -> dict:
    """Run the load test; return its figures and ``invariants`` (name -> bool). See the module's docstring."""
    from agents.local_server import ScriptedOpenAIServer

    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="sotopia-load-"))
    out.mkdir(parents=True, exist_ok=True)
    store_path = out / "episodes.jsonl"
    if store_path.exists() and store_path.stat().st_size:
        raise FileExistsError(f"{store_path} is not empty: a load test starts from an empty store")
    args = argparse.Namespace(episodes=episodes, concurrency=concurrency, turns=turns, seed=seed,
                              phase_timeout=phase_timeout)
    rng = random.Random(seed)
    responder = _Responder(malformed_rate, seed)
    choices = [429, 500, 503, ("delay", slow)]
    targets = _kill_targets(episodes, kills, rng)
    checkpoints = sorted({max(1, round(episodes * k / 10)) for k in range(1, 11)})
    rss_log: list[dict] = []
    phases: list[dict] = []
    boundaries: list[dict] = []  # per phase: first request index, store state at its start
    dropped = Counter()
    total_start = time.perf_counter()
    with ScriptedOpenAIServer(responder, delay=delay, fault_rate=fault_rate, fault_choices=choices,
                              fault_seed=seed) as srv:
        default_error = srv._httpd.handle_error

        def handle_error(request, client_address):  # a killed child leaves its connections broken
            error = sys.exc_info()[1]
            if isinstance(error, (BrokenPipeError, ConnectionResetError)):
                dropped[type(error).__name__] += 1
            else:
                default_error(request, client_address)

        srv._httpd.handle_error = handle_error
        phase, extra = 0, 0
        while True:
            phase += 1
            settle = time.perf_counter()
            while True:  # requests a killed child sent before it died are all in before the next child starts
                n = len(srv.requests)
                time.sleep(0.3)
                if len(srv.requests) == n or time.perf_counter() - settle > 5:
                    break
            state = _store_state(store_path)
            boundaries.append({"phase": phase, "first_request": len(srv.requests),
                               "evaluated": state["evaluated"], "unevaluated": state["unevaluated"],
                               "torn": state["torn"]})
            kill_at = targets[phase - 1] if phase <= kills else None
            info = _run_phase(phase, args, srv.base_url, out, kill_at, rng, checkpoints, rss_log)
            info["requests"] = len(srv.requests) - boundaries[-1]["first_request"]
            phases.append(info)
            how = ("killed at " + str(info["lines_after"]) + " lines" if info["killed"] is True
                   else "TIMED OUT" if info["killed"] else f"exit {info['rc']}")
            log(f"phase {phase}: {how}, {info['lines_after'] - info['lines_before']} lines stored, "
                f"{info['requests']} requests, {info['wall_seconds']:.1f} s, "
                f"peak RSS {info['peak_rss_mib']:.0f} MiB")
            if info["killed"] == "timeout" or (not info["killed"] and info["rc"] not in (0, 3)):
                log(_tail(out / f"worker-{phase}.log"))
                break
            if info["killed"]:
                continue
            done = _store_state(store_path)["evaluated"]
            if len(done) >= episodes or extra >= max_extra_resumes:
                break
            extra += 1  # an episode gave up or was stored unevaluated: resume once more
        time.sleep(0.3)
        requests = list(zip(srv.requests, srv.faults_served))
        malformed_ids = set(responder.malformed)
    raw = {"episodes": episodes, "concurrency": concurrency, "kills": kills, "targets": targets,
           "store_path": store_path, "phases": phases, "boundaries": boundaries, "requests": requests,
           "malformed_ids": malformed_ids, "rss_log": rss_log, "dropped": dict(dropped),
           "wall_seconds": time.perf_counter() - total_start, "rss_slope": rss_slope, "out": str(out),
           "extra_resumes": extra}
    return verify(raw)


def _fault_name(fault) -> str:
    if fault is None:
        return "none"
    if isinstance(fault, tuple):
        return "slow"
    return str(fault)


def verify(raw: dict) -> dict:
    """The figures and invariants of a run from what the driver saw (``raw``: the store's path, the
    phases, the server's requests and faults, the RSS samples); ``raw`` is kept in the result."""
    episodes, concurrency, kills = raw["episodes"], raw["concurrency"], raw["kills"]
    rss_slope = raw["rss_slope"]
    phases, boundaries, requests, rss_log = raw["phases"], raw["boundaries"], raw["requests"], raw["rss_log"]
    malformed_ids = raw["malformed_ids"]
    keys = [run_key(i) for i in range(episodes)]
    state = _store_state(raw["store_path"])
    rows = state["rows"]
    # -- exactly once
    evaluated = Counter(r["tags"]["run_key"] for r in rows if r["evaluation"].get("evaluated"))
    played = Counter(r["tags"]["run_key"] for r in rows if not r["tags"].get("rejudged"))
    episode_ids: dict[str, set] = {}
    for r in rows:
        episode_ids.setdefault(r["tags"]["run_key"], set()).add(r["episode_id"])
    # per key: one played line, then (while unevaluated) re-judged lines of it until one is evaluated
    bad_order = []
    for key in keys:
        mine = [r for r in rows if r["tags"]["run_key"] == key]
        ok = bool(mine) and not mine[0]["tags"].get("rejudged")
        ok = ok and all(r["tags"].get("rejudged") for r in mine[1:])
        ok = ok and all(not r["evaluation"].get("evaluated") for r in mine[:-1])
        if not ok:
            bad_order.append(key)
    # -- requests: episode, role, phase
    phase_starts = [b["first_request"] for b in boundaries]
    per_request = []
    for index, (body, fault) in enumerate(requests):
        text = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
        match = _MARK.search(text)
        phase = sum(index >= s for s in phase_starts)
        per_request.append({"key": run_key(int(match.group(1))) if match else None,
                            "judge": "judge" in body.get("model", ""), "phase": phase,
                            "fault": _fault_name(fault), "malformed": id(body) in malformed_ids})
    unidentified = sum(r["key"] is None for r in per_request)
    repeated = []  # paid calls after a kill for an episode already stored at that kill
    for b in boundaries[1:]:
        for r in per_request:
            if r["phase"] < b["phase"]:
                continue
            if r["key"] in b["evaluated"] or (r["key"] in b["unevaluated"] and not r["judge"]):
                repeated.append((b["phase"], r["key"], "judge" if r["judge"] else "agent"))
    faults = Counter(r["fault"] for r in per_request)
    # requests spent on episodes a kill cut short (played again by a later phase)
    stored_by_phase_end, wasted = set(), 0
    for p in phases:
        stored_by_phase_end = stored_by_phase_end | {r["tags"]["run_key"] for r in rows[:p["lines_after"]]}
        wasted += sum(r["phase"] == p["phase"] and r["key"] not in stored_by_phase_end for r in per_request)
    # -- the records' own accounting (stored episodes only)
    final = {}
    for r in rows:
        final[r["tags"]["run_key"]] = r
    seat_retries = sum(s.get("retries", 0) for r in final.values() for s in r["usage"].get("seats", []))
    judge_usage = [r["usage"].get("judge") or {} for r in rows]
    judge_retries = sum(u.get("retries", 0) for u in judge_usage)
    reasks = sum(u.get("reasks", 0) for u in judge_usage)
    # -- memory: RSS growth per 100 stored episodes, per phase, after its first `concurrency` episodes
    # (the warm-up: imports, connection pools, the first C episodes in flight); a phase's window
    # of fewer than 100 episodes counts as 100, so that allocator noise in a short window is no slope
    slopes = {}
    for p in phases:
        pts = [s for s in rss_log if s["phase"] == p["phase"] and s["stored_in_phase"] >= concurrency]
        if pts:
            growth = max(s["rss_mib"] for s in pts) - pts[0]["rss_mib"]
            slopes[p["phase"]] = 100 * growth / max(100, pts[-1]["stored"] - pts[0]["stored"])
    kills_done = sum(p["killed"] is True for p in phases)
    invariants = {
        "every episode stored evaluated exactly once":
            set(evaluated) == set(keys) and set(evaluated.values()) == {1},
        "every episode played exactly once":
            set(played) == set(keys) and set(played.values()) == {1}
            and all(len(v) == 1 for v in episode_ids.values()) and not bad_order,
        "no paid call repeated for a stored episode": not repeated,
        "every request names its episode": unidentified == 0,
        f"{kills} kill(s) happened": kills_done == kills,
        f"RSS grows < {rss_slope:g} MiB per 100 episodes": bool(slopes) and max(slopes.values()) < rss_slope,
    }
    return {
        "out": raw["out"], "episodes": episodes, "kill_targets": raw["targets"], "phases": phases,
        "extra_resumes": raw["extra_resumes"], "wall_seconds": raw["wall_seconds"], "store_lines": len(rows),
        "evaluated_keys": len(evaluated),
        "max_evaluated_per_key": max(evaluated.values(), default=0), "rejudged_lines": sum(
            bool(r["tags"].get("rejudged")) for r in rows),
        "unevaluated_lines": sum(not r["evaluation"].get("evaluated") for r in rows),
        "torn_lines_seen": sum(b["torn"] for b in boundaries), "requests": len(per_request),
        "agent_requests": sum(not r["judge"] for r in per_request),
        "judge_requests": sum(r["judge"] for r in per_request),
        "faults": dict(faults), "malformed_judge_answers": sum(r["malformed"] for r in per_request),
        "retries_in_records": seat_retries + judge_retries, "reasks_in_records": reasks,
        "requests_cut_by_kills": wasted, "repeated_paid_calls": repeated[:20],
        "n_repeated_paid_calls": len(repeated),
        "unidentified_requests": unidentified, "broken_connections": raw["dropped"], "rss_samples": rss_log,
        "rss_slope_mib_per_100": slopes, "invariants": invariants, "raw": raw,
    }


def report(r: dict) -> str:
    lines = [f"load test: {r['episodes']} episodes, store {r['out']}/episodes.jsonl, "
             f"wall {r['wall_seconds']:.1f} s", "",
             f"{'phase':>5} {'end':>16} {'lines':>11} {'new':>5} {'requests':>8} {'wall s':>7} "
             f"{'peak RSS MiB':>12}"]
    for p in r["phases"]:
        end = f"SIGKILL@{p['lines_after']}" if p["killed"] is True else (
            "timeout" if p["killed"] else f"exit {p['rc']}")
        lines.append(f"{p['phase']:>5} {end:>16} {p['lines_before']:>4} -> {p['lines_after']:<4} "
                     f"{p['lines_after'] - p['lines_before']:>5} {p['requests']:>8} "
                     f"{p['wall_seconds']:>7.1f} {p['peak_rss_mib']:>12.0f}")
    faults = r["faults"]
    served = sum(v for k, v in faults.items() if k != "none")
    lines += [
        "",
        f"requests            {r['requests']} ({r['agent_requests']} agent/partner, "
        f"{r['judge_requests']} judge)",
        f"faults served       {served} ({100 * served / max(1, r['requests']):.1f} %): "
        + ", ".join(f"{k} {v}" for k, v in sorted(faults.items()) if k != "none"),
        f"malformed judge     {r['malformed_judge_answers']} answers "
        f"({100 * r['malformed_judge_answers'] / max(1, r['judge_requests']):.1f} % of judge requests)",
        f"retries / re-asks   {r['retries_in_records']} / {r['reasks_in_records']} in the stored records",
        f"store               {r['store_lines']} lines: {r['evaluated_keys']} episodes evaluated (max "
        f"{r['max_evaluated_per_key']} per key), {r['unevaluated_lines']} unevaluated line(s), "
        f"{r['rejudged_lines']} re-judged, {r['torn_lines_seen']} torn line(s) seen after a kill",
        f"cut by kills        {r['requests_cut_by_kills']} requests for episodes not stored when their child "
        f"died (played again)",
        f"repeated paid calls {r['n_repeated_paid_calls']} (requests after a kill for an episode stored "
        f"before it)",
        f"unidentified        {r['unidentified_requests']} requests",
        f"broken connections  {sum(r['broken_connections'].values())} (answers to a killed child)",
        "",
        "child RSS (MiB) as the store grows:",
    ]
    for s in r["rss_samples"]:
        if s["checkpoint"]:
            lines.append(f"  phase {s['phase']}  stored {s['stored']:>4} "
                         f"({s['stored_in_phase']:>4} this phase)  {s['rss_mib']:7.1f}")
    lines.append("RSS growth per 100 episodes after each phase's first C: "
                 + ", ".join(f"phase {k} {v:+.1f} MiB" for k, v in r["rss_slope_mib_per_100"].items()))
    lines.append("")
    for name, ok in r["invariants"].items():
        lines.append(f"{'ok  ' if ok else 'FAIL'} {name}")
    return "\n".join(lines)


def main(argv=None) -> dict | int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=300, help="episodes to store (default 300)")
    parser.add_argument("--concurrency", type=int, default=32, help="episodes at once (default 32)")
    parser.add_argument("--fault-rate", type=float, default=0.2,
                        help="share of requests answered 429, 500, 503 or slowly (default 0.2)")
    parser.add_argument("--malformed-rate", type=float, default=0.1,
                        help="share of judge answers that are not JSON, so the judge re-asks (default 0.1)")
    parser.add_argument("--kills", type=int, default=2,
                        help="times the child is SIGKILLed and resumed (default 2)")
    parser.add_argument("--turns", type=int, default=4, help="turns per episode (default 4)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the faults, the kill moments and the episodes (default 0)")
    parser.add_argument("--out", default=None,
                        help="directory for the store and logs, empty or new (default: a new temp dir)")
    parser.add_argument("--slow", type=float, default=1.0, help="seconds a 'slow' fault waits (default 1.0)")
    parser.add_argument("--delay", type=float, default=0.05,
                        help="server latency of every answer (default 0.05 s)")
    parser.add_argument("--rss-slope", type=float, default=10.0,
                        help="the most RSS growth (MiB) per 100 stored episodes that is flat (default 10)")
    parser.add_argument("--phase-timeout", type=float, default=900,
                        help="seconds after which a phase's child is killed and the test fails (default 900)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--phase", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--api-base", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        raise SystemExit(worker(args))
    for name in ("episodes", "concurrency", "turns"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.kills < 0 or args.kills >= args.episodes:
        parser.error("--kills must be >= 0 and below --episodes")
    for name in ("fault_rate", "malformed_rate"):
        if not 0 <= getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be in [0, 1)")
    r = run_load(args.episodes, args.concurrency, args.fault_rate, args.malformed_rate, args.kills,
                 args.turns, args.seed, args.out, slow=args.slow, delay=args.delay, rss_slope=args.rss_slope,
                 phase_timeout=args.phase_timeout)
    print(report(r))
    if args.json:
        figures = {k: v for k, v in r.items() if k != "raw"}
        Path(args.json).write_text(json.dumps(figures, indent=1, default=str))
    if not all(r["invariants"].values()):
        raise SystemExit(1)
    return r


if __name__ == "__main__":
    from sotopia_env.cli import main_guard

    main_guard(main)
