"""How fast a ``benchmarks.view`` report of many episodes opens in headless Chromium.

    python -m benchmarks.view_speed --episodes 1000 --rounds 3

Writes an episode store of synthetic episodes (built-in tasks, random replies and scores within
each dimension's range), builds the report, then opens it ``--rounds`` times in a fresh page and
prints, per round, the wall time from the request to the first drawn view (``body[data-ready]``)
and the page's own ``performance.now()`` at that moment; the median is the figure to report.
"""
from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from sotopia_env.builtin import builtin_tasks
from sotopia_env.episode import EpisodeRecord, Turn, rewrite_jsonl
from sotopia_env.evaluation import DIMENSION_RANGES, AgentEvaluation, EpisodeEvaluation

from .view import write_report
from .view_browser import console_errors, open_browser, page_url, wait_ready

WORDS = ("price", "room", "summer", "deposit", "fair", "maybe", "agree", "think", "offer", "thanks", "week", "help")
MODELS = ("embedded", "gpt-4o", "llama-3-8b")
TERMINATIONS = ("max_turns", "leave", "stale")


def synthetic_episode(rng: random.Random, tasks: list, i: int) -> EpisodeRecord:
    """One random episode of a built-in task: 6-20 turns of 10-60 words, scores in range."""
    task = tasks[i % len(tasks)]
    turns = [Turn(turn=k, agent_index=k % 2, speaker=task.agent_names[k % 2], action_type="speak",
                  argument=" ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 60))),
                  prompt_tokens=rng.randint(400, 2000), completion_tokens=rng.randint(10, 90))
             for k in range(rng.randint(6, 20))]
    agents = [AgentEvaluation(scores={d: float(rng.randint(lo, hi)) for d, (lo, hi) in DIMENSION_RANGES.items()},
                              reasoning={d: f"synthetic reasoning for {d}" for d in DIMENSION_RANGES})
              for _ in range(2)]
    return EpisodeRecord(task=task, turns=turns, models=[rng.choice(MODELS), rng.choice(MODELS)],
                         evaluation=EpisodeEvaluation(agents=agents, judge="synthetic"), seed=i,
                         termination=rng.choice(TERMINATIONS), tags={"agent_seats": [0, 1]})


def measure(n_episodes: int, rounds: int, folder: Path, seed: int = 0) -> dict:
    rng = random.Random(seed)
    tasks = builtin_tasks("all")
    store = folder / "episodes.jsonl"
    rewrite_jsonl(store, [synthetic_episode(rng, tasks, i).to_dict() for i in range(n_episodes)])
    report = folder / "report.html"
    start = time.perf_counter()
    write_report([str(store)], report)
    build_s = time.perf_counter() - start
    driver = open_browser()
    opens, in_page = [], []
    try:
        for _ in range(rounds):
            driver.get("about:blank")
            start = time.perf_counter()
            driver.get(page_url(report, "episodes"))
            wait_ready(driver, timeout=60)
            opens.append(time.perf_counter() - start)
            in_page.append(float(driver.execute_script("return document.body.dataset.readyMs")) / 1000)
        errors = console_errors(driver)
    finally:
        driver.quit()
    return {"episodes": n_episodes, "report_mib": report.stat().st_size / 2 ** 20, "build_s": build_s,
            "open_s": opens, "in_page_s": in_page, "median_open_s": statistics.median(opens), "errors": errors}


def main(argv: Iterable[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.view_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=1000, help="synthetic episodes in the report")
    parser.add_argument("--rounds", type=int, default=3, help="times the page is opened")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(None if argv is None else list(argv))
    with tempfile.TemporaryDirectory() as folder:
        out = measure(args.episodes, args.rounds, Path(folder), args.seed)
    print(f"{out['episodes']} episodes, report {out['report_mib']:.1f} MiB, built in {out['build_s']:.1f} s")
    print("opened (request to first drawn view): " + ", ".join(f"{s:.2f} s" for s in out["open_s"])
          + f"; median {out['median_open_s']:.2f} s")
    print("in the page (performance.now() when drawn): " + ", ".join(f"{s:.2f} s" for s in out["in_page_s"]))
    print(f"console errors: {len(out['errors'])}")
    return out


if __name__ == "__main__":
    from sotopia_env.cli import main_guard

    main_guard(main)
