"""Time the SOTOPIA environment itself: steps per second and the per-step overhead, with a
scripted policy (no model), so the figure is what the env adds to every turn of a rollout.

    python -m benchmarks.env_steps [--episodes 200] [--turn-order round-robin] [--max-turns 20]

Each episode plays a built-in task to ``max_turns`` with pre-drawn actions (the policy's cost
is not timed); then the env is branch-reset at the middle turn of the episode, as the SDPO
pair builder does. Target: under 0.2 ms a step.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from sotopia_env import builtin_tasks, parallel_env
from sotopia_env.env import TURN_ORDERS

TARGET_MS = 0.2
_KINDS = ("speak", "speak", "speak", "non-verbal communication", "action")


def scripted_actions(rng: random.Random, env) -> dict:
    """The agents whose turn it is speak (or gesture/act); the others submit none, as a runner does."""
    actions = {}
    for agent in env.agents:
        if agent in env.next_agents():
            kind = rng.choice(_KINDS)
            words = " ".join(
                rng.choice(("price", "fair", "maybe", "deal", "tomorrow", "sure")) for _ in range(30)
            )
            actions[agent] = {"action_type": kind, "argument": words}
        else:
            actions[agent] = {"action_type": "none", "argument": ""}
    return actions


def run(episodes: int, turn_order: str, max_turns: int, seed: int = 0) -> dict:
    tasks = builtin_tasks("all")
    rng = random.Random(seed)
    step_s, reset_s, branch_s = [], [], []
    for e in range(episodes):
        env = parallel_env(tasks[e % len(tasks)], turn_order=turn_order, max_turns=max_turns)
        start = time.perf_counter()
        env.reset(seed=e)
        reset_s.append(time.perf_counter() - start)
        while env.agents:
            actions = scripted_actions(rng, env)
            start = time.perf_counter()
            env.step(actions)
            step_s.append(time.perf_counter() - start)
        record = env.to_record()
        start = time.perf_counter()
        env.reset(options={"history": record, "branch_turn": len(record.turns) // 2})
        branch_s.append(time.perf_counter() - start)
    return {"steps": len(step_s), "step_s": step_s, "reset_s": reset_s, "branch_s": branch_s}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.env_steps", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--episodes", type=int, default=200, help="episodes to play (built-in tasks, cycled)")
    parser.add_argument("--turn-order", choices=TURN_ORDERS, default="round-robin")
    parser.add_argument("--max-turns", type=int, default=20)
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")

    run(min(5, args.episodes), args.turn_order, args.max_turns)  # warm-up: imports, data loading, caches
    result = run(args.episodes, args.turn_order, args.max_turns)
    steps = sorted(result["step_s"])
    total = sum(steps)
    mean_ms = 1e3 * total / len(steps)
    p95_ms = 1e3 * steps[int(0.95 * (len(steps) - 1))]
    print(
        f"env steps: {args.episodes} episodes, {result['steps']} steps, turn order {args.turn_order}, "
        f"max_turns {args.max_turns}"
    )
    print(f"steps/s: {len(steps) / total:,.0f}")
    print(
        f"per-step overhead: mean {mean_ms:.4f} ms, median {1e3 * statistics.median(steps):.4f} ms, "
        f"p95 {p95_ms:.4f} ms (target < {TARGET_MS} ms: {'met' if mean_ms < TARGET_MS else 'NOT met'})"
    )
    print(
        f"reset: mean {1e3 * statistics.mean(result['reset_s']):.4f} ms; branch reset at the middle turn: "
        f"mean {1e3 * statistics.mean(result['branch_s']):.4f} ms"
    )


if __name__ == "__main__":
    from sotopia_env.cli import main_guard

    main_guard(main)
