"""Tokens/s of batched local generation across K concurrent episodes vs sequential generation.

    python -m benchmarks.generation [--max-new-tokens 48] [--ks 1 2 4 8] [--repeats 2]

For each K, K episode prompts (different tasks, seats and history lengths) get one turn each:
*sequential* calls ``model.generate`` (sampling) on them one after another; *batched* is
``HFPolicy``'s decode loop (``agents.hf_policy.generate_batch``: one padded prefill, finished
rows leave the batch) over all K at once. Both sample at temperature 0.7, stop at the
end-of-turn token, and count only the tokens actually generated. Printed side by side in one
run, with the ratio batched/sequential (TARGETS.md: >= 8x at K = 8).
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

    people = [Profile(pk=f"p{i}", first_name=f, last_name=l, age=30 + i, occupation=o)
              for i, (f, l, o) in enumerate([("Ava", "Reed", "chef"), ("Ben", "Okafor", "teacher"),
                                             ("Cleo", "Marsh", "nurse"), ("Dan", "Price", "lawyer")])]
    scenarios = [Scenario(pk="s0", codename="bike", scenario="Two neighbours discuss selling a used bike.",
                          agent_goals=["Sell the bike for at least $200.", "Buy the bike for under $150."],
                          relationship=Relationship.acquaintance),
                 Scenario(pk="s1", codename="chores", scenario="Two roommates split weekly chores.",
                          agent_goals=["Avoid cleaning the bathroom.", "Get help with the dishes."],
                          relationship=Relationship.friend)]
    return [Task(pk="t0", scenario=scenarios[0], profiles=(people[0], people[1])),
            Task(pk="t1", scenario=scenarios[1], profiles=(people[2], people[3]))]


def episode_prompts(policy, k: int) -> list[list[int]]:
    """K prompt token lists as concurrent episodes would present them: varied tasks, seats, turns."""
    from agents.formatter import render_action  # noqa: F401 - keeps the formatter the only renderer
    from agents.policy import TurnRequest
    from sotopia_env.episode import Turn

    lines = ["Hi! Do you have a minute?", "Sure, what is it about?", "I wanted to talk about the plan.",
             "Okay, I am listening.", "I think we can find a fair deal.", "Let us hear your offer then."]
    tasks = _tasks()
    prompts = []
    for i in range(k):
        task = tasks[i % len(tasks)]
        n = i % 5
        turns = [Turn(turn=t, agent_index=t % 2, speaker=task.profiles[t % 2].name, action_type="speak",
                      argument=lines[t % len(lines)]) for t in range(n)]
        ids, _ = policy.prompt(TurnRequest(task=task, agent_index=n % 2, turns=turns))
        prompts.append(ids)
    return prompts


def main(argv=None) -> None:
    import torch

    from agents.hf_policy import HFPolicy, generate_batch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per setting (best is kept)")
    parser.add_argument("--temperature", type=float, default=0.7)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    policy = HFPolicy(args.model, temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    model, tok = policy.model, policy.tokenizer
    device = next(model.parameters()).device

    def sequential(prompts):
        n = 0
        for p in prompts:
            out = model.generate(torch.tensor([p], device=device), attention_mask=torch.ones(1, len(p), dtype=torch.long,
                                                                                           device=device),
                                 max_new_tokens=args.max_new_tokens, do_sample=True, temperature=args.temperature,
                                 top_p=1.0, top_k=0, eos_token_id=policy.stop_ids, pad_token_id=tok.pad_token_id)
            n += out.shape[1] - len(p)
        return n

    def batched(prompts):
        outs = generate_batch(model, prompts, max_new_tokens=args.max_new_tokens, stop_ids=policy.stop_ids,
                              pad_id=tok.pad_token_id, temperatures=[args.temperature] * len(prompts),
                              top_ps=[1.0] * len(prompts))
        return sum(len(o) for o in outs)

    def rate(fn, prompts):
        best = 0.0
        for _ in range(args.repeats):
            t = time.perf_counter()
            n = fn(prompts)
            best = max(best, n / (time.perf_counter() - t))
        return best

    batched(episode_prompts(policy, 2))  # warm-up (allocator, kernels)
    print(f"model={policy.name} device={device} max_new_tokens={args.max_new_tokens} "
          f"temperature={args.temperature} threads={torch.get_num_threads()}")
    print(f"{'K':>3} {'sequential tok/s':>17} {'batched tok/s':>14} {'ratio':>6}")
    for k in args.ks:
        prompts = episode_prompts(policy, k)
        seq = rate(sequential, prompts)
        bat = rate(batched, prompts)
        print(f"{k:>3} {seq:>17.1f} {bat:>14.1f} {bat / seq:>5.2f}x", flush=True)


if __name__ == "__main__":
    main()
