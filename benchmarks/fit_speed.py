"""Training speed of ``sdpo.fit`` against TRL's DPOTrainer, with and without prefix sharing.

    python -m benchmarks.fit_speed            # a few minutes on 2 CPU cores
    python -m benchmarks.fit_speed --steps 6 --warmup 1 --rounds 3
    python -m benchmarks.fit_speed --device cuda    # every contender on the GPU (fp32), GPU memory

Prints, side by side from one run (each contender in its own subprocess, so peak memory is
per contender), the ratios of the speed targets:

* ``sdpo.fit`` vs TRL ``DPOTrainer`` at its best (``precompute_ref_log_probs=True``, same
  embedded model in fp32 on CPU, same single-turn pairs, same batch size, bf16 and gradient
  checkpointing off): training throughput in the tokens TRL feeds (prompt + chosen + prompt +
  rejected per pair; the same count for both, so the ratio is the pairs/s ratio) and peak RSS.
* prefix sharing vs none, on multi-turn SDPO pairs (segment of 3 agent turns); with
  ``--demo-pairs`` also on the shipped demo pairs (made by ``sdpo.pairs`` on the embedded
  model, so the history / segment proportions of real episodes: unshared, they feed 1.74x the
  tokens of the shared layout, against 1.48x for the synthetic pairs; ``--history-turns`` sets the
  synthetic pairs' history). Sharing saves the history's second pass, so its speed-up follows that
  token ratio, printed beside it.
* training FLOP use (6 x parameters x tokens processed per second) vs a plain 2048x2048 fp32
  matmul timed in the same run.

Step times exclude the first ``--warmup`` steps and the one-off reference pass of both; each
contender's rate is from its median step time (these machines are noisy). The same ratios are also
printed round by round (each from the two contenders' median steps of that round, run minutes
apart), which shows how far a slow spell of the machine moves them.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

WORDS = ("we could meet halfway on the price if you can pick it up this week and I will add the lock "
         "and the lights because I want it to go to someone who will ride it often").split()


def _reply(seed: int, words: int) -> str:
    return " ".join(WORDS[(seed * 7 + i) % len(WORDS)] for i in range(words))


def make_pairs(path: Path, n: int, *, history_turns: int, segment: int, reply_words: int, kind: str,
               history_words: int = 30) -> None:
    """Write ``n`` synthetic pairs: ``history_turns`` alternating turns of ``history_words`` words
    (an even number, so the trained agent 0 speaks next: each side opens with its turn), then per
    side ``segment`` agent turns (with partner turns between them) of about ``reply_words`` words each."""
    if history_turns < 0 or history_turns % 2:
        raise ValueError(f"history_turns={history_turns}: must be even and >= 0 (agent 0, trained, speaks after "
                         f"the history)")
    from sdpo.pairs_schema import PairRecord, write_pair
    from sotopia_env.episode import Turn
    from sotopia_env.profiles import Profile, Relationship, Scenario, Task

    task = Task(pk="bench", scenario=Scenario(
        pk="bench-sc", codename="bike_sale", relationship=Relationship.acquaintance,
        scenario="Two neighbours meet in the hallway; one is selling a used bicycle the other wants to buy.",
        agent_goals=["Sell the bicycle for at least $120.", "Buy the bicycle for at most $100."]),
        profiles=(Profile(pk="a", first_name="Ana", last_name="Reyes", age=34, occupation="nurse",
                          public_info="Works night shifts at the city hospital.", secret="Saving to move abroad."),
                  Profile(pk="b", first_name="Ben", last_name="Okafor", age=29, occupation="teacher",
                          public_info="Coaches the school football team.", secret="Broke a fence last year.")))
    names = [p.name for p in task.profiles]
    path.unlink(missing_ok=True)
    for k in range(n):
        history = [Turn(turn=i, agent_index=i % 2, speaker=names[i % 2], action_type="speak",
                        argument=_reply(k + i, history_words)) for i in range(history_turns)]
        in_history = sum(1 for t in history if t.agent_index == 0)

        def side(k: int, tag: int) -> list:
            out, i = [], history_turns
            while sum(1 for t in out if t.agent_index == 0) < segment:
                words = reply_words if i % 2 == 0 else history_words
                out.append(Turn(turn=i, agent_index=i % 2, speaker=names[i % 2], action_type="speak",
                                argument=_reply(k * 3 + i + tag, words + tag)))
                i += 1
            return out

        write_pair(path, PairRecord(pair_id=f"b{k}", kind=kind, task=task, agent_index=0, history=history,
                                    chosen=side(k, 0), rejected=side(k, 5),
                                    segment={"chosen": (in_history, in_history + segment - 1),
                                             "rejected": (in_history, in_history + segment - 1)}))


def trl_rows(pairs_path: Path, tokenizer) -> list[dict]:
    """The single-turn pairs as TRL's prompt / chosen / rejected strings: the prompt is the trained
    agent's view of the history, rendered by our formatter with the generation prompt; a reply is
    that side's one turn (TRL appends the EOS, ``<|im_end|>``, itself)."""
    from agents.formatter import ConversationTokenizer, agent_messages
    from sdpo.pairs_schema import read_pairs
    from sotopia_env.render import action_json

    conv = ConversationTokenizer(tokenizer)
    rows = []
    for p in read_pairs(pairs_path):
        reply = {}
        for side in ("chosen", "rejected"):
            turns = getattr(p, side)
            if len(turns) != 1 or turns[0].agent_index != p.agent_index:
                raise ValueError(f"{pairs_path}: pair {p.pair_id}: {side} must be one turn of agent "
                                 f"{p.agent_index} for TRL (single-turn pairs), got {len(turns)} turns")
            reply[side] = action_json(turns[0].action_type, turns[0].argument)
        rows.append({"prompt": conv._render(agent_messages(p.task, p.agent_index, p.history), True), **reply})
    return rows


def trl_token_count(pairs_path: Path, tokenizer) -> float:
    """Mean tokens TRL feeds per pair: (prompt + chosen + EOS) + (prompt + rejected + EOS)."""
    def n(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    rows = trl_rows(pairs_path, tokenizer)
    return sum(2 * n(r["prompt"]) + n(r["chosen"]) + n(r["rejected"]) + 2 for r in rows) / len(rows)


def pair_token_count(pairs_path: Path, tokenizer) -> float:
    """Mean tokens per pair of our tokenization, both sides in full (the history counted twice, as
    the layout without prefix sharing feeds it): the unit of the prefix-sharing rates."""
    from agents.formatter import ConversationTokenizer
    from sdpo.pairs_schema import read_pairs
    from sdpo.tokenize import tokenize_pairs

    tokenized, _ = tokenize_pairs(ConversationTokenizer(tokenizer), read_pairs(pairs_path))
    return sum(len(tp.chosen.input_ids) + len(tp.rejected.input_ids) for tp in tokenized) / len(tokenized)


# ---------------------------------------------------------------------------------------------
# Workers (each in its own process).

def worker_ours(pairs: str, out: str, steps: int, batch: int, prefix_sharing: bool,
                prefix_attention: str = "auto") -> dict:
    from sdpo.fit import FitConfig, fit

    result = fit(FitConfig(model="embedded", data=pairs, output_dir=out, batch_size=batch, micro_batch_size=batch,
                           max_steps=steps, lr=1e-6, prefix_sharing=prefix_sharing, progress=False,
                           save_every=0, reference_cache=False, prefix_attention=prefix_attention))
    seconds = [h["tokens"] / h["tokens_per_s"] for h in result.history]
    return {"step_seconds": seconds, "processed_tokens": [h["tokens"] for h in result.history]}


def worker_trl(pairs: str, out: str, steps: int, batch: int, device: str = "cpu") -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from agents.models import load_model, load_tokenizer

    tokenizer = load_tokenizer("embedded")
    rows = trl_rows(Path(pairs), tokenizer)
    model = load_model("embedded", device=device, dtype=torch.float32)   # the plain rebuild, not GGUF-flagged
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    args = DPOConfig(output_dir=out, per_device_train_batch_size=batch, gradient_accumulation_steps=1,
                     max_steps=steps, learning_rate=1e-6, beta=0.1, precompute_ref_log_probs=True,
                     precompute_ref_batch_size=batch, bf16=False, gradient_checkpointing=False, use_cpu=device == "cpu",
                     report_to=[], save_strategy="no", logging_steps=1000, max_length=None,
                     dataloader_num_workers=0, seed=11, disable_tqdm=True)
    trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, callbacks=[StepTimer()])
    trainer.train()
    return {"step_seconds": times}


def run_worker(argv: list[str], device: str = "cpu") -> dict:
    """Run one contender in a subprocess; returns its JSON result plus its peak memory in MiB
    (RSS on CPU, allocated GPU memory on CUDA). On ``cpu`` no GPU is visible to it."""
    env = dict(os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {}))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.fit_speed", "--worker", *argv, "--device", device],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {argv[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def matmul_flops(size: int = 2048, repeats: int = 10, device: str = "cpu") -> float:
    import torch

    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    torch.mm(a, b)
    if device == "cuda":
        repeats *= 20
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * size ** 3 * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per contender and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds in which the contenders take turns")
    parser.add_argument("--warmup", type=int, default=1, help="first steps left out of the timing")
    parser.add_argument("--batch", type=int, default=2, help="pairs per step (one micro-batch)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cpu: the speed targets' setting (fp32 on CPU); cuda: every contender on the GPU, fp32")
    parser.add_argument("--demo-pairs", action="store_true",
                        help="also time prefix sharing on the shipped demo pairs (made by sdpo.pairs on the "
                             "embedded model: real episode shapes instead of the synthetic multi-turn pairs)")
    parser.add_argument("--prefix-attention", choices=["auto", "cache", "mask"], default="auto",
                        help="sdpo.fit's prefix_attention for our contenders (auto: cache on CPU, mask on GPU)")
    parser.add_argument("--history-turns", type=int, default=4,
                        help="history turns before the segment of the synthetic multi-turn pairs (even)")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        kind, pairs, out = args.worker[:3]
        if kind == "trl":
            result = worker_trl(pairs, out, args.steps, args.batch, args.device)
        else:
            result = worker_ours(pairs, out, args.steps, args.batch, prefix_sharing=kind == "ours",
                                 prefix_attention=args.prefix_attention)
        if args.device == "cuda":
            import torch

            result["peak_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
        else:
            result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    import torch

    from agents.models import load_model, load_tokenizer

    tokenizer = load_tokenizer("embedded")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        single, multi = tmp / "single.jsonl", tmp / "multi.jsonl"
        n = args.batch * args.steps
        # the speed targets' shape, a ~346-token prompt and ~120-token replies: here the trained agent's first
        # turn, a 325-token prompt (its system prompt; a history turn adds ~22 tokens of chat template)
        # and 119-125-token replies
        make_pairs(single, n, history_turns=0, segment=1, reply_words=104, kind="dpo")
        make_pairs(multi, n, history_turns=args.history_turns, segment=3, reply_words=40, kind="sdpo")
        single_tokens, multi_tokens = trl_token_count(single, tokenizer), pair_token_count(multi, tokenizer)
        contenders = [("trl", "trl", single), ("ours", "ours", single), ("multi_shared", "ours", multi),
                      ("multi_unshared", "ours_noshare", multi)]
        if args.demo_pairs:
            from sdpo.fit import DEMO_PAIRS

            demo = Path(DEMO_PAIRS)   # the workers keep no reference cache, so nothing is written beside it
            demo_tokens = pair_token_count(demo, tokenizer)
            contenders += [("demo_shared", "ours", demo), ("demo_unshared", "ours_noshare", demo)]
        params = sum(p.numel() for p in load_model("embedded", device="cpu").parameters())

        # Contenders take turns, ``--rounds`` times, so a slow spell of a shared machine hits all of
        # them alike; each keeps its timed steps (warm-up steps of every round left out) of all rounds.
        results: dict[str, dict] = {}
        matmul_rates: list[float] = []
        for round_ in range(args.rounds):
            for name, argv in ((name, [kind, str(data), str(tmp / f"{name}{round_}")])
                               for name, kind, data in contenders):
                print(f"round {round_ + 1}/{args.rounds}: running {name} ...", flush=True)
                got = run_worker(argv + ["--steps", str(args.steps), "--batch", str(args.batch),
                                         "--prefix-attention", args.prefix_attention], args.device)
                print(f"  {name}: {json.dumps(got)}", flush=True)
                shutil.rmtree(argv[2], ignore_errors=True)   # its final checkpoint (~1.3 GB): 24 runs fill a disk
                mine = results.setdefault(name, {"step_seconds": [], "processed_tokens": [], "peak_mib": 0.0,
                                                 "round_median": []})
                mine["step_seconds"] += got["step_seconds"][args.warmup:]
                mine["processed_tokens"] += got.get("processed_tokens", [])[args.warmup:]
                mine["peak_mib"] = max(mine["peak_mib"], got["peak_mib"])
                mine["round_median"].append(statistics.median(got["step_seconds"][args.warmup:]))
            matmul_rates.append(matmul_flops(device=args.device))
        flops_ref = statistics.median(matmul_rates)

    def pairs_per_s(r):   # median step: one slow step of a noisy machine does not decide the ratio
        return args.batch / statistics.median(r["step_seconds"])

    trl, ours = pairs_per_s(results["trl"]), pairs_per_s(results["ours"])
    shared, unshared = pairs_per_s(results["multi_shared"]), pairs_per_s(results["multi_unshared"])

    def fed_ratio(base: str, mine: str) -> str:
        """Tokens a step feeds without sharing / with it: the speed-up sharing would give if a token cost
        the same either way (attention, quadratic in the row length, makes shorter rows a little cheaper)."""
        fed = [statistics.median(results[name]["processed_tokens"]) for name in (base, mine)]
        return f"{fed[0] / fed[1]:.2f}x"

    processed = statistics.median(results["ours"]["processed_tokens"])
    seconds = statistics.median(results["ours"]["step_seconds"])
    flop_use = 6 * params * processed / seconds / flops_ref
    rows = [
        ("throughput, single-turn (TRL tokens/s)", f"{trl * single_tokens:9.1f}", f"{ours * single_tokens:9.1f}",
         f"{ours / trl:5.2f}x", ">= 2x"),
        ("peak RSS MiB, single-turn" if args.device == "cpu" else "peak GPU memory MiB, single-turn",
         f"{results['trl']['peak_mib']:9.0f}",
         f"{results['ours']['peak_mib']:9.0f}",
         f"{results['ours']['peak_mib'] / results['trl']['peak_mib']:5.2f}x", "<= 1x"),
        ("prefix sharing, multi-turn (pair tokens/s)", f"{unshared * multi_tokens:9.1f}",
         f"{shared * multi_tokens:9.1f}", f"{shared / unshared:5.2f}x",
         f">= 1.5x (tokens fed {fed_ratio('multi_unshared', 'multi_shared')})"),
    ]
    if args.demo_pairs:
        demo_shared, demo_unshared = pairs_per_s(results["demo_shared"]), pairs_per_s(results["demo_unshared"])
        rows.append(("prefix sharing, demo pairs (pair tokens/s)", f"{demo_unshared * demo_tokens:9.1f}",
                     f"{demo_shared * demo_tokens:9.1f}", f"{demo_shared / demo_unshared:5.2f}x",
                     f">= 1.5x (tokens fed {fed_ratio('demo_unshared', 'demo_shared')})"))
    rows += [
        ("FLOP use vs 2048^2 fp32 matmul (GFLOP/s)", f"{flops_ref / 1e9:9.1f}",
         f"{6 * params * processed / seconds / 1e9:9.1f}", f"{flop_use:5.0%}", ">= 60%"),
    ]
    where = f"CPU, {torch.get_num_threads()} threads" if args.device == "cpu" else torch.cuda.get_device_name(0)
    print(f"\nembedded model ({params / 1e6:.0f}M params, fp32, {where}), batch "
          f"{args.batch} pairs, {args.rounds} rounds of {args.steps} steps ({args.warmup} warm-up a round left out), "
          f"median step, prefix_attention={args.prefix_attention}; single-turn pairs "
          f"{single_tokens:.0f} TRL tokens, multi-turn ({args.history_turns} history turns, 3 agent turns a side) "
          f"{multi_tokens:.0f}")
    print(f"{'measure':45} {'baseline':>9} {'sdpo.fit':>9} {'ratio':>6}  target")
    for row in rows:
        print(f"{row[0]:45} {row[1]} {row[2]} {row[3]:>6}  {row[4]}")
    print("baselines: TRL DPOTrainer (precompute_ref_log_probs=True) | fit without prefix sharing | matmul")
    print("tokens fed: tokens a step feeds without prefix sharing / with it, the speed-up sharing gives where a "
          "token costs the same either way")
    # The same ratios round by round (each from the contenders' median steps of that round, run minutes
    # apart): how far a slow spell of the machine moves them.
    paired = [("vs TRL", "trl", "ours"), ("prefix sharing, multi-turn", "multi_unshared", "multi_shared")]
    if args.demo_pairs:
        paired.append(("prefix sharing, demo pairs", "demo_unshared", "demo_shared"))
    for label, base, mine in paired:
        per_round = [b / m for b, m in zip(results[base]["round_median"], results[mine]["round_median"])]
        print(f"per round, {label}: " + " ".join(f"{r:.2f}x" for r in per_round))


if __name__ == "__main__":
    from sotopia_env.cli import main_guard

    main_guard(main)
