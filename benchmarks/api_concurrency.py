"""How close the episode runner gets to the concurrency bound with an API model.

    python -m benchmarks.api_concurrency [--episodes 200] [--concurrency 20] [--delay 1.0]
                                         [--turns 4] [--judge]

The scripted OpenAI-compatible server (``agents.local_server``) answers every chat request
after a fixed ``delay``; both seats are ``LiteLLMPolicy`` clients of it, so every turn is one
real HTTP request through LiteLLM. Every episode lasts exactly ``turns`` turns (round-robin,
one model call a turn; the scripted agents never leave). With at most C episodes at once, no
run can beat the bound ``turns × delay × ceil(episodes / C)``; the script prints the
wall time, the bound and their ratio bound / wall (target: >= 90 %). With ``--judge`` an
``LLMJudge`` on the same server scores each episode: one more delayed call, counted as a turn.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def _tasks(n: int):
    """``n`` tasks cycling over the built-in test set (run keys stay unique by index)."""
    import dataclasses

    from sotopia_env import builtin_tasks

    base = builtin_tasks("test")
    return [dataclasses.replace(base[i % len(base)], pk=f"{base[i % len(base)].pk}#{i}") for i in range(n)]


def _responder(body: dict) -> str:
    if "judge" in body["model"]:
        from sotopia_env.evaluation import DIMENSIONS

        return json.dumps({k: {d: ["scripted", 0] for d in DIMENSIONS}
                           for k in ("agent_1_evaluation", "agent_2_evaluation")})
    return json.dumps({"action_type": "speak", "argument": "Let us keep talking about this."})


def measure(episodes: int, concurrency: int, delay: float, turns: int, judge: bool = False,
            progress: bool = False) -> dict:
    """Play ``episodes`` against the scripted server; return wall time, bound and ratio."""
    from agents.judge import LLMJudge
    from agents.litellm_policy import LiteLLMPolicy
    from agents.local_server import ScriptedOpenAIServer
    from agents.runner import EpisodeJob, run_episodes

    os.environ.setdefault("OPENAI_API_KEY", "sk-scripted-local-server")
    with ScriptedOpenAIServer(_responder, delay=delay) as srv:
        # one client per seat role; each may have all C episodes' requests in flight
        agent = LiteLLMPolicy("openai/scripted-agent", max_new_tokens=32, api_base=srv.base_url,
                              max_concurrency=concurrency, timeout=60 + 10 * delay)
        partner = LiteLLMPolicy("openai/scripted-partner", max_new_tokens=32, api_base=srv.base_url,
                                max_concurrency=concurrency, timeout=60 + 10 * delay)
        scorer = LLMJudge("openai/scripted-judge", api_base=srv.base_url, max_concurrency=concurrency) if judge \
            else None
        jobs = [EpisodeJob(task=t, policies=(agent, partner), run_key=f"api|{i}", seed=i, max_turns=turns)
                for i, t in enumerate(_tasks(episodes))]
        start = time.perf_counter()
        records = run_episodes(jobs, None, scorer, concurrency=concurrency, progress=progress)
        wall = time.perf_counter() - start
        requests = len(srv.requests)
    calls_per_episode = turns + (1 if judge else 0)
    played = sum(len(r.turns) for r in records)
    if played != episodes * turns:  # the bound assumes every episode ran its full length
        raise RuntimeError(f"expected {episodes * turns} turns, played {played}")
    bound = calls_per_episode * delay * math.ceil(episodes / concurrency)
    return {"episodes": episodes, "concurrency": concurrency, "delay": delay, "turns": turns, "judge": judge,
            "requests": requests, "wall_seconds": wall, "bound_seconds": bound, "ratio": bound / wall}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.api_concurrency",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20, help="episodes at once (C)")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds the server waits before each answer")
    parser.add_argument("--turns", type=int, default=4, help="turns per episode (one model call each)")
    parser.add_argument("--judge", action="store_true", help="also judge each episode on the server")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    for name in ("episodes", "concurrency", "turns"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.delay <= 0:
        parser.error("--delay must be > 0")
    r = measure(args.episodes, args.concurrency, args.delay, args.turns, args.judge, args.progress)
    calls = r["turns"] + (1 if r["judge"] else 0)
    print(f"{r['episodes']} episodes x {calls} calls, server delay {r['delay']:.2f} s, concurrency {r['concurrency']}: "
          f"{r['requests']} requests")
    print(f"wall time         {r['wall_seconds']:.2f} s")
    print(f"concurrency bound {r['bound_seconds']:.2f} s  (calls x delay x ceil(episodes / C) = {calls} x "
          f"{r['delay']:.2f} x {math.ceil(r['episodes'] / r['concurrency'])})")
    print(f"ratio bound/wall  {100 * r['ratio']:.1f} %  (target >= 90 %)")
    return r


if __name__ == "__main__":
    from sotopia_env.cli import main_guard

    main_guard(main)
