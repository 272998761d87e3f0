"""Reference per-turn log-probs: computed once, without gradients, and cached in the run's folder.

The reference policy pi_ref is the BC agent, frozen (the SDPO paper), so its log-probs of a pair
never change during training. They are computed in one no-grad pass before the first step and
saved in the run's output folder as ``reference/<pairs>.ref-<key>.pt`` (never beside the data,
which may be read-only, e.g. the demo pairs inside an installed package); ``key`` hashes the model id, a
fingerprint of its weights, the pair file's bytes and the tokenization settings, so a changed
model, data file or setting gets a new cache instead of stale numbers. With LoRA the reference is
the base model with the adapter disabled: no second model is ever held in memory.

The cache holds tensors, lists and strings only (``torch.save``), and loads with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from .model_forward import pack_pairs, pair_logps
from .tokenize import TokenizedPair

CACHE_VERSION = 1


def weights_fingerprint(model, samples: int = 4096) -> str:
    """A cheap hash of a model's weights: names, shapes, dtypes and an evenly strided sample of
    each parameter's values (hashing every byte of an 8B model would take minutes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        flat = tensor.detach().reshape(-1)
        step = max(flat.numel() // samples, 1)
        digest.update(flat[::step].float().cpu().numpy().tobytes())
    return digest.hexdigest()


def file_hash(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(model_id: str, fingerprint: str, data_hash: str, settings: dict) -> str:
    """Hash of everything the reference log-probs depend on."""
    blob = json.dumps({"version": CACHE_VERSION, "model": model_id, "weights": fingerprint, "data": data_hash,
                       "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cache_path(output_dir: str | os.PathLike, data_path: str | os.PathLike, key: str) -> Path:
    """Where the reference log-probs of ``data_path`` under ``key`` live in a run's folder."""
    return Path(output_dir) / "reference" / f"{Path(data_path).name}.ref-{key}.pt"


def _adapter_disabled(model):
    """Context in which a peft model behaves as its base model (the reference); no-op otherwise."""
    inner = getattr(model, "module", model)      # DDP / accelerate wrappers
    if hasattr(inner, "disable_adapter"):
        return inner.disable_adapter()
    return contextlib.nullcontext()


def compute_reference(model, pairs: Sequence[TokenizedPair], *, batch_size: int = 2, prefix_sharing: bool = True,
                      pad_id: int = 0, device=None, progress: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """pair_id -> (chosen per-turn log-probs (turns_w,), rejected per-turn log-probs (turns_l,)),
    float32 on CPU, from the model in eval mode with any LoRA adapter disabled."""
    return turn_logps(model, pairs, batch_size=batch_size, prefix_sharing=prefix_sharing, pad_id=pad_id,
                      device=device, progress=progress, base_only=True, desc="reference log-probs")


@torch.no_grad()
def turn_logps(model, pairs: Sequence[TokenizedPair], *, batch_size: int = 2, prefix_sharing: bool = True,
               pad_id: int = 0, device=None, progress: bool = False, base_only: bool = False,
               desc: str = "per-turn log-probs") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """pair_id -> (chosen per-turn log-probs (turns_w,), rejected per-turn log-probs (turns_l,)),
    float32 on CPU, from the model in eval mode, without gradients; ``base_only`` disables any LoRA
    adapter (the reference), else the model runs as it is (a trained checkpoint)."""
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    try:
        with _adapter_disabled(model) if base_only else contextlib.nullcontext():
            for start in tqdm(range(0, len(pairs), batch_size), desc=desc, disable=not progress):
                chunk = list(pairs[start:start + batch_size])
                batch = pack_pairs(chunk, prefix_sharing=prefix_sharing, pad_id=pad_id)
                logps = pair_logps(model, batch.to(device) if device is not None else batch)
                for b, tp in enumerate(chunk):
                    chosen = logps.chosen[b, :tp.chosen.n_turns].float().cpu()
                    rejected = (logps.rejected[b, :tp.rejected.n_turns].float().cpu() if tp.rejected is not None
                                else torch.zeros(0))
                    out[tp.pair_id] = (chosen, rejected)
    finally:
        model.train(was_training)
    return out


def save_reference(path: str | os.PathLike, key: str, reference: dict[str, tuple[torch.Tensor, torch.Tensor]],
                   meta: dict) -> None:
    """Write the cache atomically (a crash never leaves a half-written file under the final name)."""
    ids = sorted(reference)
    blob = {"key": key, "meta": json.dumps(meta, sort_keys=True), "pair_ids": ids,
            "chosen": [reference[i][0] for i in ids], "rejected": [reference[i][1] for i in ids]}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def load_reference(path: str | os.PathLike, key: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
    """The cached reference, or None when there is none for this key."""
    path = Path(path)
    if not path.exists():
        return None
    blob = torch.load(path, weights_only=True)
    if blob.get("key") != key:
        return None
    return {i: (c, r) for i, c, r in zip(blob["pair_ids"], blob["chosen"], blob["rejected"])}


def reference_batch(reference: dict[str, tuple[torch.Tensor, torch.Tensor]], pair_ids: Sequence[str],
                    chosen_width: int, rejected_width: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(pairs, chosen_width) and (pairs, rejected_width) reference per-turn log-probs of a batch,
    zero-padded to the policy tensors' widths."""
    chosen = torch.zeros(len(pair_ids), chosen_width)
    rejected = torch.zeros(len(pair_ids), rejected_width)
    for b, pid in enumerate(pair_ids):
        c, r = reference[pid]
        chosen[b, :len(c)] = c
        rejected[b, :len(r)] = r
    return chosen.to(device), rejected.to(device)
