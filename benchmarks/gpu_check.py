"""Numerical checks of the CUDA paths (run where a GPU is present; CPU works too, for a dry run).

    python -m benchmarks.gpu_check [--model embedded] [--device cuda]

1. Prefix-shared log-probs (``cache`` and ``mask`` layouts) against separate forwards of each
   side, in fp32 with TF32 off: per-turn log-probs and gradients, largest differences printed.
2. The same in bf16 autocast (what ``sdpo.fit bf16=true`` runs), against fp32 separate forwards:
   differences printed, to show how far bf16 moves the per-turn log-probs.
3. Batched generation (``generate_batch``, greedy, rows of different lengths), with the dynamic
   decode and with the CUDA-graph decode, against ``model.generate`` one prompt at a time: in
   fp32, the fraction of identical tokens. Fails on CUDA when the graph capture falls back to
   eager decoding, and anywhere when the two decodes disagree.

Exits non-zero when an fp32 per-turn log-prob differs by more than 1e-5 relative to the largest
per-turn magnitude (sums over ~100 tokens of ~-11 each for a random model), or a gradient by more
than 1e-3 relative. Measured differences: benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def main(argv=None) -> int:
    import torch

    from agents.formatter import ConversationTokenizer
    from agents.hf_policy import generate_batch
    from agents.models import load_model, load_tokenizer
    from sdpo.fit import DEMO_PAIRS
    from sdpo.model_forward import pack_pairs, pair_logps
    from sdpo.pairs_schema import read_pairs
    from sdpo.tokenize import tokenize_pairs

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--pairs", type=int, default=2, help="demo pairs per batch")
    args = parser.parse_args(argv)

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model, device=args.device, dtype=torch.float32)
    conv = ConversationTokenizer(tokenizer)
    tokenized, _ = tokenize_pairs(conv, read_pairs(DEMO_PAIRS))
    tokenized = sorted(tokenized, key=lambda tp: tp.n_tokens)[:args.pairs]
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    print(f"device={args.device} ({name}) model={args.model} pairs={len(tokenized)} "
          f"tokens={sum(tp.n_tokens for tp in tokenized)} torch={torch.__version__}")
    failed = []

    def run(layout, autocast):
        batch = pack_pairs(tokenized, prefix_sharing=layout != "separate", pad_id=tokenizer.pad_token_id or 0).to(args.device)
        model.zero_grad()
        with torch.autocast(device_type=args.device.split(":")[0], dtype=torch.bfloat16, enabled=autocast):
            out = pair_logps(model, batch, prefix_attention="mask" if layout == "separate" else layout)
        (out.chosen.sum() - 2 * out.rejected.sum()).backward()
        return torch.cat([out.chosen[out.chosen_mask], out.rejected[out.rejected_mask]]).detach().float(), \
            _grads(model)

    model.train()
    ref_logps, ref_grads = run("separate", False)
    scale = ref_logps.abs().max().item()
    print(f"per-turn log-probs of the separate forwards reach {scale:.1f} in magnitude")
    print(f"{'layout':<8} {'autocast':<9} {'max |dlogp| / turn':>19} {'relative':>9} {'max rel dgrad':>14}")
    for autocast in (False, True):
        for layout in ("cache", "mask"):
            logps, grads = run(layout, autocast)
            dlogp = (logps - ref_logps).abs().max().item()
            dgrad = max(((grads[n] - g).norm() / g.norm().clamp(min=1e-12)).item() for n, g in ref_grads.items())
            print(f"{layout:<8} {'bf16' if autocast else 'off':<9} {dlogp:>19.2e} {dlogp / scale:>9.1e} {dgrad:>14.2e}")
            if not autocast and (dlogp > 1e-5 * max(1.0, scale) or dgrad > 1e-3):
                failed.append(f"{layout} fp32")
    model.zero_grad()
    model.eval()

    prompts = [tp.chosen.input_ids[:n] for tp, n in zip(tokenized * 2, (40, 120, 75, 200))]
    refs = []
    for p in prompts:
        with torch.no_grad():
            out = model.generate(torch.tensor([p], device=args.device), max_new_tokens=24, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=None)
        refs.append(out[0, len(p):].tolist())
    decoded = {}
    for decode in ("dynamic", "graph"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            decoded[decode] = got = generate_batch(
                model, prompts, max_new_tokens=24, stop_ids=[], pad_id=tokenizer.pad_token_id or 0,
                decode=decode, temperatures=[0.0] * len(prompts), top_ps=[1.0] * len(prompts))
        same = sum(a == b for r, g in zip(refs, got) for a, b in zip(r, g)) / sum(len(r) for r in refs)
        first = [next((i for i, (a, b) in enumerate(zip(r, g)) if a != b), len(r)) for r, g in zip(refs, got)]
        fell_back = [str(w.message) for w in caught if "CUDA graph capture" in str(w.message)]
        print(f"generate_batch decode={decode} vs generate (fp32, greedy, 4 prompts x 24 tokens): {same:.1%} "
              f"identical tokens; first difference at {first}{'; ' + fell_back[0] if fell_back else ''}")
        if decode == "graph" and args.device.startswith("cuda") and fell_back:
            failed.append("CUDA graph capture")
    if decoded["graph"] != decoded["dynamic"]:
        failed.append("graph decode tokens differ from dynamic decode")
    if failed:
        print("FAILED:", ", ".join(failed))
        return 1
    print("all fp32 checks passed")
    return 0


if __name__ == "__main__":
    from sotopia_env.cli import main_guard

    main_guard(lambda: sys.exit(main()))
