"""Tokens/s of batched local generation across K concurrent episodes vs sequential generation.

    python -m benchmarks.generation [--max-new-tokens 48] [--turns 4] [--ks 1 2 4 8] [--fixed-length]

For each K, K self-chat episodes (different tasks) of ``--turns`` turns are played twice with
the same model and sampling (temperature 0.7, turns end at the end-of-turn token or after
``--max-new-tokens``):

* sequential: the episodes one after another, every turn one ``model.generate`` call on the
  formatter's full prompt (what a plain implementation does);
* batched: all K episodes at once through ``agents.runner.run_episodes`` with one ``HFPolicy``:
  each turn round is one generation batch (on CPU finished rows leave the batch early; on CUDA
  the batch keeps its shape and each step is one CUDA-graph replay) and each prompt is
  prefilled only from where it differs from the same seat's previous turn (prefix KV cache).

Tokens/s counts only generated tokens. Also printed: the batched rate with the prefix cache
off (batching alone). Ratios are side by side in one run (target: >= 8x at K = 8).

On a CPU (fp32) the ratio at K = 8 stays well below 8x, for two reasons:

* prefill: every seat's first prompt (SOTOPIA's, opening with the agent's own name, so no prefix
  is shared across seats) costs the same arithmetic batched or not;
* decode: fp32 GEMM over 8 rows runs the weights slower per row than the matrix-vector product
  over 1 row, so a batch-8 step costs well over a batch-1 step.

On a GPU the batched decode step is one CUDA-graph replay (``generate_batch(decode="graph")``),
while ``generate`` launches every kernel of every step from Python. Measured figures, with their
machines: benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _tasks():
    """Tasks to build prompts from: the built-in test split when present, else two synthetic ones."""
    try:
        from sotopia_env import builtin_tasks

        tasks = builtin_tasks("test")
        if tasks:
            return tasks
    except (ImportError, AttributeError):
        pass
    from sotopia_env.profiles import Profile, Relationship, Scenario, Task

    people = [Profile(pk=f"p{i}", first_name=f, last_name=last, age=30 + i, occupation=o)
              for i, (f, last, o) in enumerate([("Ava", "Reed", "chef"), ("Ben", "Okafor", "teacher"),
                                             ("Cleo", "Marsh", "nurse"), ("Dan", "Price", "lawyer")])]
    scenarios = [Scenario(pk="s0", codename="bike", scenario="Two neighbours discuss selling a used bike.",
                          agent_goals=["Sell the bike for at least $200.", "Buy the bike for under $150."],
                          relationship=Relationship.acquaintance),
                 Scenario(pk="s1", codename="chores", scenario="Two roommates split weekly chores.",
                          agent_goals=["Avoid cleaning the bathroom.", "Get help with the dishes."],
                          relationship=Relationship.friend)]
    return [Task(pk="t0", scenario=scenarios[0], profiles=(people[0], people[1])),
            Task(pk="t1", scenario=scenarios[1], profiles=(people[2], people[3]))]


def play_sequential(policy, tasks, turns: int, max_new_tokens: int, temperature: float,
                    fixed_length: bool = False) -> int:
    """Play each task's self-chat episode alone, one ``model.generate`` per turn; returns tokens generated."""
    import torch

    from agents.formatter import ConversationFormat, parse_action
    from agents.hf_policy import attention_kernels
    from agents.policy import TurnRequest
    from sotopia_env.episode import Turn

    model, tok = policy.model, policy.tokenizer
    device = next(model.parameters()).device
    generated = 0
    for task in tasks:
        history: list[Turn] = []
        for t in range(turns):
            seat = t % 2
            ids, _ = policy.prompt(TurnRequest(task=task, agent_index=seat, turns=history,
                                               fmt=ConversationFormat(max_turns=turns)))
            # the attention kernels of the batched path (on CUDA: no cuDNN), so the ratio is batching's
            with attention_kernels(device):
                out = model.generate(torch.tensor([ids], device=device),
                                     attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=device),
                                     max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                                     top_p=1.0, top_k=0, pad_token_id=tok.pad_token_id,
                                     eos_token_id=[i for i in policy.stop_ids if i >= 0] or None,
                                     min_new_tokens=max_new_tokens if fixed_length else 0)
            new = out[0, len(ids):].tolist()
            generated += len(new)
            action_type, argument, _ = parse_action(tok.decode(new, skip_special_tokens=True))
            history.append(Turn(turn=t, agent_index=seat, speaker=task.profiles[seat].name,
                                action_type=action_type, argument=argument))
            if action_type == "leave":
                break
    return generated


def play_batched(policy, tasks, turns: int) -> int:
    """Play all tasks' self-chat episodes concurrently through the runner; returns tokens generated."""
    from agents.runner import run_episodes, self_chat_jobs

    before = policy.stats["generated_tokens"]
    run_episodes(self_chat_jobs(tasks, policy, max_turns=turns), None, None, concurrency=len(tasks), progress=False)
    return policy.stats["generated_tokens"] - before


def main(argv=None) -> None:
    import torch

    from agents.hf_policy import HFPolicy

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--turns", type=int, default=4, help="turns per episode")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--fixed-length", action="store_true",
                        help="every reply is exactly --max-new-tokens long on both sides (no end-of-turn stop), "
                             "so the ratio does not depend on where sampled replies end")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    policy = HFPolicy(args.model, temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    no_reuse = HFPolicy(args.model, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                        model=policy.model, tokenizer=policy.tokenizer, prefix_cache_tokens=0)
    if args.fixed_length:   # no token ends a turn: every row runs the full budget
        policy.stop_ids = no_reuse.stop_ids = [-1]
    tasks = _tasks()

    def rate(fn, *fn_args):
        t = time.perf_counter()
        n = fn(*fn_args)
        return n / (time.perf_counter() - t)

    play_batched(policy, tasks[:2], 2)  # warm-up (allocator, kernels)
    policy.prefix_cache.entries.clear()
    print(f"model={policy.name} device={next(policy.model.parameters()).device} turns={args.turns} "
          f"max_new_tokens={args.max_new_tokens}{' (fixed length)' if args.fixed_length else ''} "
          f"temperature={args.temperature} threads={torch.get_num_threads()}")
    print(f"{'K':>3} {'sequential tok/s':>17} {'batched tok/s':>14} {'ratio':>6} {'batched, no prefix cache':>25} "
          f"{'ratio':>6}")
    for k in args.ks:
        chosen = [tasks[(7 * i) % len(tasks)] for i in range(k)]
        seq = rate(play_sequential, policy, chosen, args.turns, args.max_new_tokens, args.temperature,
                   args.fixed_length)
        policy.prefix_cache.entries.clear()
        bat = rate(play_batched, policy, chosen, args.turns)
        plain = rate(play_batched, no_reuse, chosen, args.turns)
        print(f"{k:>3} {seq:>17.1f} {bat:>14.1f} {bat / seq:>5.2f}x {plain:>25.1f} {plain / seq:>5.2f}x", flush=True)


if __name__ == "__main__":
    from sotopia_env.cli import main_guard

    main_guard(main)
