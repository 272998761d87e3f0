"""``python -m sdpo.fit``: train a social agent on a pair file with segment-level DPO (or a baseline).

    python -m sdpo.fit data=pairs.jsonl loss=sdpo model=embedded lr=1e-6 epochs=2
    python -m sdpo.fit +preset=llama31_8b_sdpo data=pairs.jsonl model=<your BC checkpoint>
    accelerate launch --config_file sdpo/conf/accelerate/zero3.yaml -m sdpo.fit +preset=llama31_8b_sdpo ...

Losses (``loss=``): ``sdpo`` (segment-level DPO), ``dpo`` (error turn only), ``eto``, ``dmpo``
(whole sessions; ``gamma``), ``sft`` (behavioural cloning on the chosen side) and
``preferred_sft`` (SFT on SDPO's positive sessions). Settings are the fields of
:class:`FitConfig`, each overridable on the command line (hydra).

The run reads top to bottom, one named step each: ``load_data`` (pairs -> tokens), ``build_model``
(+ LoRA), ``build_optimizer``, ``reference_logps`` (once, cached in <output_dir>/reference/),
``resume``, then one loop over optimizer steps: ``micro_step`` (one micro-batch's forward and loss)
and its backward per micro-batch (gradient accumulation), clipping, the optimizer step,
``log_metrics`` and ``save_checkpoint``.

A checkpoint ``<output_dir>/checkpoints/step-NNNNNN`` is a Hugging Face folder
(``save_pretrained``: full weights, or the LoRA adapter) with the tokenizer and its chat template,
``fit_config.yaml`` (the resolved config), ``fit_meta.json`` (model id, data hash, chat
template, tokenization counts) and ``trainer_state.pt`` (optimizer, scheduler, RNG, step; tensors
and plain containers only, loaded with ``weights_only=True``). It loads with
``agents.models.load_model(path)``. A run whose output folder holds checkpoints resumes from the
latest one exactly: the data order is a function of (seed, epoch), so the same steps follow.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch

from agents.hf_compat import enable_activation_checkpointing
from agents.models import latest_checkpoint, peft_quietly
from sotopia_env.episode import append_jsonl, read_jsonl, rewrite_jsonl
from sotopia_env.errors import ConfigError, DataError, to_enum
from sotopia_env.redaction import redact

if TYPE_CHECKING:
    from agents.formatter import ConversationTokenizer

    from .model_forward import PackedBatch, PairLogps
    from .pairs_schema import PairRecord
    from .tokenize import TokenizedPair, TokenizeStats

DEMO_PAIRS = str(Path(__file__).parent / "data" / "demo_pairs.jsonl")


class LossName(str, Enum):
    sdpo = "sdpo"
    dpo = "dpo"
    eto = "eto"
    dmpo = "dmpo"
    sft = "sft"
    preferred_sft = "preferred_sft"


class Schedule(str, Enum):
    cosine = "cosine"
    linear = "linear"
    constant = "constant"


class PrefixAttention(str, Enum):
    auto = "auto"
    cache = "cache"
    mask = "mask"


SFT_LOSS_NAMES = (LossName.sft, LossName.preferred_sft)


@dataclass
class FitConfig:
    """Settings of one training run (the paper's are in ``sdpo/conf/preset/``)."""

    model: str = "embedded"
    """Starting policy, also the frozen reference: ``embedded``, a Hugging Face id, a local path or a checkpoint."""
    data: str = DEMO_PAIRS
    """Pair file (JSONL, see sdpo/PAIRS.md)."""
    loss: LossName = LossName.sdpo
    """sdpo | dpo | eto | dmpo | sft | preferred_sft."""
    beta: float = 0.1
    """KL strength of the preference losses."""
    gamma: float = 0.7
    """DMPO's discount (loss=dmpo only)."""
    lr: float = 1e-6
    """Peak learning rate of AdamW."""
    weight_decay: float = 0.0
    """AdamW's decoupled weight decay."""
    adam_beta1: float = 0.9
    """AdamW's first-moment decay."""
    adam_beta2: float = 0.999
    """AdamW's second-moment decay."""
    adam_eps: float = 1e-8
    """AdamW's epsilon."""
    schedule: Schedule = Schedule.cosine
    """Learning-rate decay after warm-up: cosine | linear | constant."""
    warmup_ratio: float = 0.0
    """Fraction of the optimizer steps spent warming up linearly from 0."""
    batch_size: int = 32
    """Effective batch in pairs per optimizer step (all processes, all accumulation steps)."""
    micro_batch_size: int = 2
    """Pairs per forward pass on one process; batch_size / (micro_batch_size * processes) micro-batches are accumulated."""
    epochs: int = 2
    """Passes over the pair file (ignored when max_steps is set)."""
    max_steps: Optional[int] = None
    """Total optimizer steps (overrides epochs; the schedule spans them)."""
    stop_after_steps: Optional[int] = None
    """Stop once this many optimizer steps are done, without changing the schedule (chunked jobs); rerun to resume."""
    max_grad_norm: float = 1.0
    """Gradient clipping (0: off)."""
    seed: int = 11
    """Seed of the data order, LoRA initialisation and dropout; a resumed run replays the same order."""
    max_length: int = 4096
    """Token limit per side; the oldest history turns are dropped to fit, unfittable pairs skipped."""
    prefix_sharing: bool = True
    """Forward the shared history once per pair (packed branches)."""
    prefix_attention: PrefixAttention = PrefixAttention.auto
    """How a branch sees the shared history: ``cache`` (two causal calls, the rejected branch reads
    the history's KV cache; fastest on CPU), ``mask`` (one call per micro-batch with a 4D branch
    mask), ``auto`` (cache on CPU; mask on a GPU, under gradient checkpointing or several processes)."""
    lora: bool = False
    """Train a LoRA adapter (peft) instead of all weights; the reference is the base with the adapter disabled."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA branch."""
    lora_target_modules: list[str] = field(default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    """Module names that get a LoRA adapter (the paper: every projection)."""
    dropout: Optional[float] = None
    """Attention dropout of the model (the paper's SFT uses 0.2); None keeps the model's."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory (needs prefix_attention=mask or auto)."""
    bf16: bool = False
    """bf16 autocast (weights and AdamW states stay fp32)."""
    output_dir: str = "outputs/fit"
    """Where checkpoints, metrics.jsonl and the resolved config go; a folder with checkpoints is resumed."""
    save_every: int = 0
    """Checkpoint every N optimizer steps (0: only at the end)."""
    keep_checkpoints: int = 3
    """How many step checkpoints to keep (older ones are deleted); the final one is always kept."""
    resume: bool = True
    """Resume from the latest checkpoint in output_dir when there is one."""
    reference_cache: bool = True
    """Cache the reference log-probs in output_dir/reference (else keep them in memory only)."""
    log_every: int = 1
    """Log metrics every N optimizer steps (stdout, metrics.jsonl, TensorBoard)."""
    tensorboard: bool = False
    """Also write TensorBoard events to output_dir/tb (needs the tensorboard extra)."""
    progress: bool = True
    """Show a progress bar with an ETA."""

    def __post_init__(self):
        self.loss = to_enum(LossName, self.loss, "loss")
        self.schedule = to_enum(Schedule, self.schedule, "schedule")
        self.prefix_attention = to_enum(PrefixAttention, self.prefix_attention, "prefix_attention")
        positive = {"batch_size": self.batch_size, "micro_batch_size": self.micro_batch_size,
                    "epochs": self.epochs, "max_length": self.max_length, "log_every": self.log_every}
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        for name in ("max_steps", "stop_after_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 or null, got {value}")
        if self.batch_size % self.micro_batch_size:
            raise ConfigError(f"batch_size {self.batch_size} must be a multiple of micro_batch_size "
                              f"{self.micro_batch_size} (the difference is gradient accumulation)")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.lr <= 0 or not (math.isfinite(self.beta) and self.beta > 0):
            raise ConfigError(f"lr and beta must be > 0, got lr={self.lr}, beta={self.beta}")
        if self.loss == LossName.dmpo and not 0.0 < self.gamma < 1.0:
            raise ConfigError(f"gamma must be strictly between 0 and 1 for loss=dmpo, got {self.gamma}")
        if self.save_every < 0 or self.keep_checkpoints < 1:
            raise ConfigError("save_every must be >= 0 and keep_checkpoints >= 1")
        if self.prefix_attention == PrefixAttention.cache and self.gradient_checkpointing:
            raise ConfigError("prefix_attention=cache cannot run with gradient_checkpointing (it needs the KV cache "
                              "of a first forward); allowed there: auto, mask")


# ---------------------------------------------------------------------------------------------
# Pieces the loop calls (each small; the loop itself is `fit` below).

def lr_lambda(step: int, total: int, warmup: int, schedule: Schedule) -> float:
    """Learning-rate factor at ``step``: linear warm-up over ``warmup`` steps, then the decay."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    if schedule == Schedule.cosine:
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == Schedule.linear:
        return max(0.0, 1.0 - progress)
    return 1.0


def epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    """The pair order of an epoch: a permutation that depends only on (seed, epoch), so a resumed
    run visits the same pairs in the same order."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


def rng_state() -> dict:
    import numpy as np

    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_version": random.getstate()[0], "python_gauss": random.getstate()[2],
             "numpy": torch.from_numpy(np_state[1].astype("int64")), "numpy_pos": int(np_state[2]),
             "numpy_has_gauss": int(np_state[3]), "numpy_gauss": float(np_state[4])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype("uint32"), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fit_summary(metrics: dict) -> str:
    keys = ("loss", "rewards/margins", "rewards/accuracies", "lr", "grad_norm", "tokens_per_s")
    return " ".join(f"{k}={metrics[k]:.4g}" for k in keys if k in metrics)


@dataclass
class FitResult:
    """What a run produced: the final checkpoint folder, the step reached, per-step metrics."""

    checkpoint: Path | None
    step: int
    total_steps: int
    history: list[dict]
    tokenize_stats: dict


# ---------------------------------------------------------------------------------------------
# The run's steps, in the order `fit` calls them.

@dataclass
class TrainData:
    """The pair file, read, checked and tokenized, with the tokenizer that tokenized it."""

    pairs: list[PairRecord]            # their formats key the reference cache
    tokenized: list[TokenizedPair]     # the rejected side dropped under an SFT loss
    stats: TokenizeStats
    tokenizer: object
    conv: ConversationTokenizer        # its chat template goes into every checkpoint

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id


def make_accelerator(cfg: FitConfig):
    """The accelerate handle, after the checks that need the number of processes."""
    from accelerate import Accelerator

    accelerator = Accelerator(mixed_precision="bf16" if cfg.bf16 else "no")
    world = accelerator.num_processes
    if cfg.batch_size % (cfg.micro_batch_size * world):
        raise ConfigError(f"batch_size {cfg.batch_size} must be a multiple of micro_batch_size x processes = "
                          f"{cfg.micro_batch_size} x {world}")
    if cfg.prefix_attention == PrefixAttention.cache and world > 1:
        raise ConfigError(f"prefix_attention=cache cannot run in {world} processes (two forwards before the "
                          f"backward); allowed there: auto, mask")
    return accelerator


def load_data(cfg: FitConfig, accelerator) -> TrainData:
    """Read, check and tokenize the pair file. The inputs are checked before the model is loaded or
    anything is written (output_dir is created later)."""
    from agents.formatter import ConversationTokenizer
    from agents.models import check_model_source, load_tokenizer

    from .pairs_schema import read_pairs
    from .tokenize import tokenize_pairs

    check_model_source(cfg.model, option="model")
    pairs = read_pairs(cfg.data)
    if not pairs:
        raise DataError("holds no pairs (an empty pair file); build pairs with python -m sdpo.pairs, or give "
                        "data=<pair file>", path=cfg.data)
    tokenizer = load_tokenizer(cfg.model)
    conv = ConversationTokenizer(tokenizer)
    is_sft = cfg.loss in SFT_LOSS_NAMES
    if not is_sft:
        one_sided = [p.pair_id for p in pairs if p.rejected is None]
        if one_sided:
            raise DataError(f"loss={cfg.loss.value} needs a rejected side, but {len(one_sided)} pair(s) have none "
                            f"(e.g. {one_sided[0]!r}); use loss=sft or loss=preferred_sft", path=cfg.data,
                            field="rejected")
    styles = sorted({p.format.prompt_style for p in pairs})
    if len(styles) > 1:  # the two layouts pack differently (one row per turn under sotopia)
        raise DataError(f"the pairs mix prompt styles ({', '.join(styles)}); train each style from its own file",
                        path=cfg.data, field="format.prompt_style")
    tokenized, stats = tokenize_pairs(conv, pairs, cfg.max_length, progress=cfg.progress and accelerator.is_main_process)
    if is_sft:   # behavioural cloning reads the chosen side only
        tokenized = [dataclasses.replace(tp, rejected=None, prefix_len=0) for tp in tokenized]
    if not tokenized:
        raise DataError(f"no pair fits max_length={cfg.max_length} ({stats.skipped} skipped)", path=cfg.data)
    return TrainData(pairs=pairs, tokenized=tokenized, stats=stats, tokenizer=tokenizer, conv=conv)


def build_model(cfg: FitConfig, accelerator):
    """The policy in fp32 on the run's device: dropout and gradient checkpointing as configured,
    wrapped in a LoRA adapter when ``cfg.lora``."""
    from agents.models import load_model

    model = load_model(cfg.model, dtype=torch.float32, device=accelerator.device)
    if cfg.dropout is not None:
        if not hasattr(model.config, "attention_dropout"):
            raise ConfigError(f"dropout is set but model {cfg.model!r} has no attention_dropout setting")
        model.config.attention_dropout = cfg.dropout
    if cfg.gradient_checkpointing:
        enable_activation_checkpointing(model)
        model.config.use_cache = False
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()
        with peft_quietly():
            model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                     lora_dropout=cfg.lora_dropout, task_type="CAUSAL_LM",
                                                     target_modules=list(cfg.lora_target_modules)))
    return model


def build_optimizer(cfg: FitConfig, params: list, total_steps: int):
    """AdamW and its learning-rate schedule (warm-up, then the decay) over ``total_steps``."""
    # the fused kernel (CPU and CUDA) does the whole update in one pass: ~7x faster than the loop
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.bfloat16) for p in params)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
                                  weight_decay=cfg.weight_decay, fused=fused or None)
    warmup = int(cfg.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, total_steps, warmup, cfg.schedule))
    return optimizer, scheduler


def reference_logps(cfg: FitConfig, accelerator, model, data: TrainData) -> dict:
    """The frozen reference's per-turn log-probs of every pair (pair_id -> (chosen, rejected)):
    loaded from ``<output_dir>/reference/`` when its key (model, weights, data, tokenization)
    matches, else computed once without gradients and cached there. Empty under an SFT loss."""
    from tqdm import tqdm

    from . import reference as ref_cache

    if cfg.loss in SFT_LOSS_NAMES:
        return {}
    settings = {"max_length": cfg.max_length, "chat_template": data.conv.chat_template, "bf16": cfg.bf16,
                "formats": sorted({json.dumps(dataclasses.asdict(p.format), sort_keys=True) for p in data.pairs})}
    key = ref_cache.cache_key(cfg.model, ref_cache.weights_fingerprint(accelerator.unwrap_model(model)),
                              ref_cache.file_hash(cfg.data), settings)
    path = ref_cache.cache_path(Path(cfg.output_dir), cfg.data, key)
    reference = (ref_cache.load_reference(path, key) if cfg.reference_cache else None) or {}
    if any(tp.pair_id not in reference for tp in data.tokenized):
        reference = ref_cache.compute_reference(
            model, data.tokenized, batch_size=cfg.micro_batch_size, prefix_sharing=cfg.prefix_sharing,
            pad_id=data.pad_id, device=accelerator.device, progress=cfg.progress and accelerator.is_main_process)
        if cfg.reference_cache and accelerator.is_main_process:
            try:
                ref_cache.save_reference(path, key, reference, {"model": cfg.model, "data": cfg.data, **settings})
            except OSError as e:   # a read-only data folder: keep the reference in memory
                tqdm.write(f"reference cache not written ({e}); continuing without it")
    accelerator.wait_for_everyone()
    return reference


def resume(cfg: FitConfig, accelerator, model, optimizer, scheduler, total_steps: int):
    """``(step, history, checkpoint)``: where the latest checkpoint in output_dir left off (weights,
    optimizer, schedule and RNG restored, metrics.jsonl cut back to its step), or a fresh start."""
    from tqdm import tqdm

    out_dir = Path(cfg.output_dir)
    last = latest_checkpoint(out_dir) if cfg.resume else None
    if last is None:
        return 0, [], None
    step = _load_checkpoint(last, accelerator, model, optimizer, scheduler, lora=cfg.lora)
    history = _read_log(out_dir / "metrics.jsonl", step)
    if accelerator.is_main_process:
        tqdm.write(f"resumed from {last} at step {step}/{total_steps}")
    return step, history, last


def choose_prefix_attention(cfg: FitConfig, accelerator) -> PrefixAttention:
    """``cache`` or ``mask``: ``auto`` resolved for this run. A second forward before the backward is
    not allowed under DDP / FSDP / ZeRO or checkpointing; on a GPU one batched call (mask) beats two
    calls per pair (cache): kernel launches dominate there."""
    if cfg.prefix_attention != PrefixAttention.auto:
        return cfg.prefix_attention
    if cfg.gradient_checkpointing or accelerator.num_processes > 1 or accelerator.device.type != "cpu":
        return PrefixAttention.mask
    return PrefixAttention.cache


def micro_batches(cfg: FitConfig, step: int, n_pairs: int, rank: int, world: int) -> list[list[int]]:
    """This process's share of an optimizer step's pairs (indices into the tokenized pairs), cut into
    micro-batches. The step's pairs are a slice of the epoch's order, so a resumed run replays them."""
    steps_per_epoch = math.ceil(n_pairs / cfg.batch_size)
    epoch, index_in_epoch = divmod(step, steps_per_epoch)
    order = epoch_order(cfg.seed, epoch, n_pairs)
    mine = order[index_in_epoch * cfg.batch_size:(index_in_epoch + 1) * cfg.batch_size][rank::world]
    return [mine[i:i + cfg.micro_batch_size] for i in range(0, len(mine), cfg.micro_batch_size)]


@dataclass
class MicroStep:
    """One micro-batch's forward: the loss with its graph, and the policy log-probs and rewards
    its metrics are read from once the backward is queued (reading them syncs a GPU)."""

    loss: torch.Tensor                        # sum of the per-pair losses of the micro-batch
    logps: PairLogps                          # the policy's
    chosen_rewards: Optional[torch.Tensor]    # (pairs,); None under an SFT loss
    rejected_rewards: Optional[torch.Tensor]

    def metrics(self) -> dict[str, float]:
        """Means over the micro-batch under TRL's names (none under an SFT loss)."""
        from .losses import preference_metrics

        if self.chosen_rewards is None:
            return {}
        lp = self.logps
        return preference_metrics(self.chosen_rewards, self.rejected_rewards, lp.chosen, lp.rejected,
                                  lp.chosen_mask, lp.rejected_mask)

    def turn_gaps(self) -> Optional[torch.Tensor]:
        """Chosen-minus-rejected policy log-prob per aligned turn (None under an SFT loss)."""
        from .losses import per_turn_logp_gaps

        if self.chosen_rewards is None:
            return None
        lp = self.logps
        return per_turn_logp_gaps(lp.chosen, lp.rejected, lp.chosen_mask, lp.rejected_mask)


def micro_step(model, batch: PackedBatch, reference: dict, cfg: FitConfig, *, pair_ids: list[str],
               prefix_attention: PrefixAttention) -> MicroStep:
    """Forward one packed micro-batch and its loss under ``cfg.loss``: SFT on the chosen tokens, or
    the preference loss against the reference log-probs of ``pair_ids`` (the batch's pairs, in order).
    ``prefix_attention`` is resolved (cache or mask); no backward, no gradient sync."""
    from . import reference as ref_cache
    from .losses import LOSSES, SFT_LOSSES
    from .model_forward import pair_logps

    logps = pair_logps(model, batch, prefix_attention=PrefixAttention(prefix_attention).value)
    if cfg.loss in SFT_LOSS_NAMES:
        losses = SFT_LOSSES[cfg.loss.value](logps.chosen_tokens, logps.chosen_token_mask)
        return MicroStep(losses.sum(), logps, None, None)
    ref_chosen, ref_rejected = ref_cache.reference_batch(reference, pair_ids, logps.chosen.shape[1],
                                                         logps.rejected.shape[1], device=logps.chosen.device)
    kwargs = {"beta": cfg.beta, "gamma": cfg.gamma} if cfg.loss == LossName.dmpo else {"beta": cfg.beta}
    losses, chosen_rewards, rejected_rewards = LOSSES[cfg.loss.value](
        logps.chosen, logps.rejected, ref_chosen, ref_rejected, logps.chosen_mask, logps.rejected_mask, **kwargs)
    return MicroStep(losses.sum(), logps, chosen_rewards, rejected_rewards)


def finite(loss: torch.Tensor, *, step: int, epoch: int, pair_ids: list[str], lr: float) -> float:
    """The loss's value; a non-finite loss stops the run before the optimizer step uses its gradients.
    It is read once, after the backward is queued (a read before it would stall a GPU)."""
    value = loss.item()
    if not math.isfinite(value):
        raise FloatingPointError(f"loss is {value} at step {step} (epoch {epoch}), pairs {pair_ids}; lower lr "
                                 f"(now {lr:.3g}), check the data, or turn bf16 off")
    return value


@dataclass
class StepTally:
    """One optimizer step's micro-batches summed into its metrics: the loss (each micro-batch's
    share of the mean over this process's pairs), the preference metrics weighted by micro-batch
    size, the per-turn gaps and the token count."""

    n_pairs: int                 # pairs of this process in the step
    sums: dict = field(default_factory=lambda: {"loss": 0.0})
    gaps: list = field(default_factory=list)
    tokens: int = 0

    def add(self, loss_value: float, out: MicroStep, n_micro: int, n_tokens: int) -> None:
        self.tokens += n_tokens
        self.sums["loss"] += loss_value
        for k, v in out.metrics().items():
            self.sums[k] = self.sums.get(k, 0.0) + v * n_micro / self.n_pairs
        gaps = out.turn_gaps()
        if gaps is not None:
            self.gaps.append(gaps)

    def reduce(self, accelerator, *, step: int, epoch: float, lr: float, grad_norm, started: float) -> dict:
        """The step's metrics, averaged over the processes (TRL's names; ``logps/gap_turn_<t>`` per turn)."""
        metrics = {k: accelerator.reduce(torch.tensor(v, device=accelerator.device), "mean").item()
                   for k, v in self.sums.items()}
        if self.gaps:
            width = max(g.numel() for g in self.gaps)
            stacked = torch.stack([torch.nn.functional.pad(g, (0, width - g.numel()), value=math.nan)
                                   for g in self.gaps])
            for t, gap in enumerate(stacked.nanmean(0).tolist()):
                if not math.isnan(gap):
                    metrics[f"logps/gap_turn_{t}"] = gap
        world = accelerator.num_processes
        metrics.update(step=step, epoch=epoch, lr=lr, tokens=self.tokens * world,
                       tokens_per_s=self.tokens * world / (time.perf_counter() - started))
        if grad_norm is not None:
            metrics["grad_norm"] = float(grad_norm)
        return metrics


class RunLog:
    """Where a step's metrics go: the progress bar, metrics.jsonl, TensorBoard and stdout (every
    ``log_every`` steps and the last); only the main process writes."""

    def __init__(self, cfg: FitConfig, accelerator, *, step: int, total_steps: int):
        from tqdm import tqdm

        self.out_dir, self.log_every, self.total_steps = Path(cfg.output_dir), cfg.log_every, total_steps
        self.main = accelerator.is_main_process
        self.writer = None
        if cfg.tensorboard and self.main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        self.bar = tqdm(total=total_steps, initial=step, desc=f"fit {cfg.loss.value}",
                        disable=not (cfg.progress and self.main))

    def log_metrics(self, metrics: dict) -> None:
        from tqdm import tqdm

        step = metrics["step"]
        self.bar.update(1)
        if not self.main:
            return
        _append_log(self.out_dir / "metrics.jsonl", metrics)
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(k, v, step)
        if step % self.log_every == 0 or step == self.total_steps:
            tqdm.write(f"step {step}/{self.total_steps} " + fit_summary(metrics))

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


def save_checkpoint(cfg: FitConfig, step: int, accelerator, model, optimizer, scheduler, data: TrainData, *,
                    total_steps: int) -> Path:
    """Write ``<output_dir>/checkpoints/step-NNNNNN`` (see the module doc) and return it."""
    from omegaconf import OmegaConf

    from agents.models import is_embedded

    from .reference import file_hash

    meta = {"model": cfg.model, "base_is_embedded": is_embedded(cfg.model), "data": cfg.data,
            "data_sha256": file_hash(cfg.data), "step": step, "total_steps": total_steps,
            "processes": accelerator.num_processes, "chat_template": data.conv.chat_template,
            "tokenize": dataclasses.asdict(data.stats)}
    return _save_checkpoint(Path(cfg.output_dir), step, accelerator, model, optimizer, scheduler, data.tokenizer,
                            OmegaConf.to_yaml(OmegaConf.structured(cfg)), meta, lora=cfg.lora,
                            base_model=cfg.model, keep=cfg.keep_checkpoints, final=step == total_steps)


# ---------------------------------------------------------------------------------------------

def fit(cfg: FitConfig) -> FitResult:
    """Train according to ``cfg``; returns where the final checkpoint is (see the module doc)."""
    from .model_forward import pack_pairs

    accelerator = make_accelerator(cfg)
    rank, world = accelerator.process_index, accelerator.num_processes
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    data = load_data(cfg, accelerator)
    steps_per_epoch = math.ceil(len(data.tokenized) / cfg.batch_size)
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs
    model = build_model(cfg, accelerator)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = build_optimizer(cfg, params, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    reference = reference_logps(cfg, accelerator, model, data)
    step, history, checkpoint = resume(cfg, accelerator, model, optimizer, scheduler, total_steps)
    prefix_attention = choose_prefix_attention(cfg, accelerator)
    # on CPU the gradient buffers are kept and zeroed between steps instead of freed: 3-6 % faster a
    # step of the 135M model in two in-process A/Bs (fresh gradient memory is page-faulted in every
    # step otherwise), for a peak RSS ~0.3-0.5 GB higher (the gradients live through the forward)
    keep_grads = accelerator.device.type == "cpu"
    stop_at = min(total_steps, step + cfg.stop_after_steps) if cfg.stop_after_steps else total_steps
    log = RunLog(cfg, accelerator, step=step, total_steps=total_steps)
    model.train()
    while step < stop_at:   # one iteration per optimizer step
        started = time.perf_counter()
        micros = micro_batches(cfg, step, len(data.tokenized), rank, world)
        tally = StepTally(n_pairs=sum(len(m) for m in micros))
        for m, micro in enumerate(micros):
            pairs = [data.tokenized[i] for i in micro]
            pair_ids = [tp.pair_id for tp in pairs]
            batch = pack_pairs(pairs, prefix_sharing=cfg.prefix_sharing, pad_id=data.pad_id).to(accelerator.device)
            # gradients are all-reduced only on the last micro-batch of the step
            with contextlib.nullcontext() if m == len(micros) - 1 else accelerator.no_sync(model):
                out = micro_step(model, batch, reference, cfg, pair_ids=pair_ids, prefix_attention=prefix_attention)
                loss = out.loss / tally.n_pairs   # mean over the step's pairs on this process
                accelerator.backward(loss)
            loss_value = finite(loss, step=step + 1, epoch=step // steps_per_epoch, pair_ids=pair_ids,
                                lr=scheduler.get_last_lr()[0])
            tally.add(loss_value, out, len(micro), batch.n_tokens)
        grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm) if cfg.max_grad_norm > 0 else None
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=not keep_grads)
        step += 1
        metrics = tally.reduce(accelerator, step=step, epoch=step / steps_per_epoch, lr=lr, grad_norm=grad_norm,
                               started=started)
        history.append(metrics)
        log.log_metrics(metrics)
        if (cfg.save_every and step % cfg.save_every == 0) or step == stop_at:
            checkpoint = save_checkpoint(cfg, step, accelerator, model, optimizer, scheduler, data,
                                         total_steps=total_steps)
    log.close()
    return FitResult(checkpoint=checkpoint, step=step, total_steps=total_steps, history=history,
                     tokenize_stats=dataclasses.asdict(data.stats))


# ---------------------------------------------------------------------------------------------
# Checkpoints and the metrics log.

def _append_log(path: Path, metrics: dict) -> None:
    append_jsonl(path, metrics)   # the one append-only writer: flushed, fsynced, torn tails cut


def _read_log(path: Path, up_to_step: int) -> list[dict]:
    """Metrics already logged up to the resumed step (lines past it, from after the checkpoint
    of an interrupted run, are dropped from the file so it stays one line per step). A torn last
    line (the run was killed mid-write) is skipped with a warning, as in every log we append to."""
    if not path.exists():
        return []
    kept = [m for _, m in read_jsonl(path) if m.get("step", 0) <= up_to_step]
    rewrite_jsonl(path, kept)
    return kept


def _save_checkpoint(out_dir: Path, step: int, accelerator, model, optimizer, scheduler, tokenizer, resolved: str,
                     meta: dict, *, lora: bool, base_model: str, keep: int, final: bool) -> Path:
    """Write ``checkpoints/step-NNNNNN`` (see the module doc); trainer_state.pt is written last, so
    a folder without it is an interrupted save and is ignored on resume."""
    from accelerate.utils import DistributedType

    folder = out_dir / "checkpoints" / f"step-{step:06d}"
    state_dict = accelerator.get_state_dict(model)
    sharded = accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)
    if sharded:   # optimizer states are partitioned across processes: accelerate writes each shard
        accelerator.save_state(str(folder / "sharded_state"))
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(folder, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        if lora:   # the adapter names its base by our model id, so `embedded` resolves on any machine
            adapter_config = folder / "adapter_config.json"
            config = json.loads(adapter_config.read_text())
            config["base_model_name_or_path"] = base_model
            adapter_config.write_text(json.dumps(config, indent=2))
        (folder / "fit_config.yaml").write_text(redact(resolved))
        (folder / "fit_meta.json").write_text(redact(json.dumps(meta, indent=2)))
        state = {"step": step, "scheduler": scheduler.state_dict(), "rng": rng_state()}
        if not sharded:
            state["optimizer"] = optimizer.state_dict()
        torch.save(state, folder / "trainer_state.pt.tmp")
        os.replace(folder / "trainer_state.pt.tmp", folder / "trainer_state.pt")
        steps = sorted(p for p in folder.parent.glob("step-*") if p != folder)
        for old in steps[:max(len(steps) - (keep - 1), 0)]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return folder


def _load_checkpoint(folder: Path, accelerator, model, optimizer, scheduler, *, lora: bool) -> int:
    """Restore weights, optimizer, scheduler and RNG from a checkpoint; returns its step."""
    from accelerate.utils import DistributedType
    from safetensors.torch import load_file

    state = torch.load(folder / "trainer_state.pt", weights_only=True)
    if accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        accelerator.load_state(str(folder / "sharded_state"))
    else:
        unwrapped = accelerator.unwrap_model(model)
        if lora:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(unwrapped, load_file(folder / "adapter_model.safetensors"))
        else:
            weights = load_file(folder / "model.safetensors", device=str(accelerator.device))
            missing, unexpected = unwrapped.load_state_dict(weights, strict=False)
            missing = [k for k in missing if k not in _tied_names(unwrapped)]
            if missing or unexpected:
                raise DataError(f"checkpoint weights do not match the model: missing {missing[:3]}, "
                                f"unexpected {unexpected[:3]}", path=str(folder))
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return int(state["step"])


def _tied_names(model) -> set[str]:
    """Parameter names that save_pretrained leaves out because they are tied to another."""
    if getattr(model.config, "tie_word_embeddings", False):
        return {"lm_head.weight"}
    return set()


# ---------------------------------------------------------------------------------------------
# Command line (hydra).

def _register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="fit_schema", node=FitConfig)


_register()


def _hydra_main():
    from sotopia_env import cli

    def task(cfg: FitConfig) -> None:
        result = fit(cfg)
        print(f"done: step {result.step}/{result.total_steps}; checkpoint {result.checkpoint}")

    presets = ", ".join(sorted(p.stem for p in (Path(__file__).parent / "conf" / "preset").glob("*.yaml")))
    cli.run("sdpo.fit", FitConfig, task, summary="\n\n".join(__doc__.split("\n\n")[:3]), config_name="fit",
            config_path=Path(__file__).parent / "conf",
            extra_help=f"Presets (the paper's settings): +preset=<name>, one of {presets}.")


if __name__ == "__main__":
    _hydra_main()
