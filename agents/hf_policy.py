"""A local Hugging Face causal LM as a SOTOPIA policy, generating the pending turns of many
episodes in one batch.

Prompts are the formatter's token ids (``ConversationTokenizer.prompt_ids``), so the tokens a
model acts on are exactly the tokens ``sdpo`` later trains on. Generation is our own lean
decode loop rather than ``model.generate``: one left-padded prefill of every prompt, then one
forward a step for the whole batch; a row stops as soon as it emits an end-of-turn token, and
each row samples with its own temperature and top-p (SDPO's positives use 1.0 for the target
seat, 0.7 for the partner). On CPU a finished row leaves the batch and its KV cache; on CUDA the
batch keeps its shape and each step is one CUDA-graph replay (``StaticDecode``), since there a
small model's step costs the launching of its kernels, not their arithmetic.
"""
from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sotopia_env.errors import ConfigError

from .formatter import ConversationFormat, ConversationTokenizer, fit_messages, parse_action
from .hf_compat import cache_keyword, cache_layers, in_place_cache
from .policy import Policy, TurnRequest, TurnResult


def end_of_turn_ids(tokenizer, model=None) -> list[int]:
    """Token ids that end an assistant turn: the tokenizer's EOS, ``<|im_end|>`` / ``<|eot_id|>``
    when the vocabulary has them, and the model's generation config EOS ids."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    for name in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"):
        if name in vocab:
            ids.add(int(vocab[name]))
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(e) for e in eos)
    return sorted(ids)


def sample_next(logits, temperatures, top_ps, generator=None, *, all_greedy: bool | None = None,
                any_top_p: bool | None = None):
    """One token per row. ``logits`` (rows, vocab); ``temperatures``, ``top_ps`` (rows,);
    ``generator``: one torch.Generator for the batch, or a list of CPU generators, one per row.
    A temperature of 0 means greedy; top-p keeps the smallest set of tokens whose probability
    reaches ``top_p`` (nucleus sampling). ``all_greedy`` (every temperature is 0) and ``any_top_p``
    (some top-p is below 1) may be given by a caller that knows them, which saves reading the
    tensors back from the GPU (a synchronisation each) on every decode step."""
    import torch

    greedy = logits.argmax(dim=-1)
    if all_greedy if all_greedy is not None else bool((temperatures <= 0).all()):
        return greedy
    scaled = logits.float() / temperatures.clamp(min=1e-5).unsqueeze(-1)
    probs = torch.softmax(scaled, dim=-1)
    if any_top_p if any_top_p is not None else bool((top_ps < 1.0).any()):
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of strictly more likely tokens
        sorted_probs = sorted_probs.masked_fill(before >= top_ps.unsqueeze(-1), 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    # inverse-CDF sampling: one uniform a row and a binary search (20x cheaper than multinomial on CPU)
    cdf = probs.cumsum(dim=-1)
    if isinstance(generator, (list, tuple)):
        # one CPU generator per row: a row's draws do not depend on which rows share its batch
        u = torch.tensor([[float(torch.rand((), generator=g, dtype=torch.float64))] for g in generator],
                         dtype=cdf.dtype).to(probs.device) * cdf[:, -1:]
    else:
        u = torch.rand((probs.shape[0], 1), generator=generator, device=probs.device, dtype=cdf.dtype) * cdf[:, -1:]
    sampled = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=probs.shape[-1] - 1)
    return torch.where(temperatures <= 0, greedy, sampled)


def attention_kernels(device):
    """On CUDA, scaled-dot-product attention without the cuDNN backend (flash, memory-efficient or
    math instead): cuDNN plans each new shape on the CPU, and decode shapes change every step, so
    for a small model the planning outweighs the attention itself (figures in
    benchmarks/RESULTS.md). Elsewhere: no change."""
    import contextlib

    if getattr(device, "type", str(device)).split(":")[0] != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


DECODE_MODES = ("auto", "dynamic", "static", "graph")
"""``generate_batch``'s (and ``HFPolicy``'s) ``decode`` values."""


class StaticDecode:
    """Decode steps of one generation batch with every shape fixed, so that on CUDA the whole step
    (every layer's kernels) is captured once as a CUDA graph and replayed: a small model's eager
    decode step is bound by the CPU launching about a thousand kernels, a replay costs a fraction
    of that.

    The batch keeps its rows to the end (a finished row's outputs are ignored), the KV cache is the
    in-place cache's full buffer (``capacity`` columns; each layer writes the new column at a
    device-held index), and attention reads all columns through a boolean 4D mask that opens one
    more column a step. Until ``capture`` the same static step runs eagerly (``decode="static"``,
    for tests on CPU).
    """

    def __init__(self, model, cache, attention, next_position):
        import torch

        self.model, self.cache = model, cache
        self.length = attention.shape[1]  # columns written so far
        capacity = cache_layers(cache)[0].key_buffer.shape[-2]
        rows, device = attention.shape[0], attention.device
        self.mask = torch.zeros((rows, 1, 1, capacity), dtype=torch.bool, device=device)
        self.mask[:, 0, 0, :self.length] = attention.bool()
        self.tokens = torch.zeros((rows, 1), dtype=torch.long, device=device)
        self.positions = next_position.unsqueeze(-1).clone()
        self.write_at = torch.tensor([self.length], device=device)
        for layer in cache_layers(cache):
            layer.write_at = self.write_at
            # masked columns still enter the attention product: unwritten memory must not hold NaNs
            layer.key_buffer[..., self.length:, :].zero_()
            layer.value_buffer[..., self.length:, :].zero_()
        self.kwargs = {"input_ids": self.tokens, "attention_mask": self.mask, "position_ids": self.positions,
                       "use_cache": True, cache_keyword(model): cache}
        self.graph = self.logits = None

    def capture(self) -> None:
        """Record the step as a CUDA graph, which ``step`` then replays."""
        import torch

        stream = torch.cuda.Stream(self.tokens.device)
        stream.wait_stream(torch.cuda.current_stream(self.tokens.device))
        with torch.cuda.stream(stream):  # warm-up off the main stream; its KV column is rewritten by step 1
            self.model(**self.kwargs)
        torch.cuda.current_stream(self.tokens.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self.logits = self.model(**self.kwargs).logits
        self.graph = graph

    def step(self, tokens, rows=None):
        """Feed ``tokens`` (one per batch row, or per row of ``rows`` when given) at the next
        column; returns the next-token logits of every batch row."""
        if rows is None:
            self.tokens[:, 0] = tokens
        else:
            self.tokens[rows, 0] = tokens
        self.mask[:, 0, 0, self.length] = True
        self.write_at.fill_(self.length)
        if self.graph is not None:
            self.graph.replay()
            logits = self.logits[:, -1]
        else:
            logits = self.model(**self.kwargs).logits[:, -1]
        self.length += 1
        self.positions += 1
        return logits

    def valid_columns(self, row):
        """Which of the written columns row ``row`` attends to (its prompt and the tokens it was fed)."""
        return self.mask[row, 0, 0, :self.length]

    def release(self):
        for layer in cache_layers(self.cache):
            layer.write_at = None
        self.graph = self.logits = None


_NO_GRAPH = weakref.WeakSet()
"""Models whose decode step could not be captured as a CUDA graph: they decode eagerly from then on."""


def _graph_decode(model, cache, attention, next_position) -> StaticDecode | None:
    """A captured ``StaticDecode``, or None (the caller decodes eagerly) when this model's step
    cannot be captured: that warns once and is remembered for the model."""
    if model in _NO_GRAPH:
        return None
    static = StaticDecode(model, cache, attention, next_position)
    try:
        static.capture()
        return static
    except Exception as err:  # noqa: BLE001 - e.g. a model whose forward synchronises with the host
        import warnings

        static.release()  # back to the growing cache (nothing past its length was kept)
        _NO_GRAPH.add(model)
        warnings.warn(f"CUDA graph capture of the decode step failed ({err}); this model decodes eagerly",
                      stacklevel=3)
        return None


_MAX_PREFILL_PADDING = 0.1
"""On CPU, prompts are prefilled one by one when left-padding them to one width would add more than
this share of padding: a CPU prefill is bound by arithmetic, so padding costs its full share, while
a single prompt of a few dozen tokens already keeps the matrix units busy."""


def _prefill_alone(model, prompt: Sequence[int], prefix, device):
    """``(kv, len(prompt) - 1)``: the KV of all but the last prompt token, computed for this row
    alone (no padding), continuing its reused ``prefix`` (``(kv, n)`` or None)."""
    import torch

    n = 0 if prefix is None else int(prefix[1])
    cache = in_place_cache(len(prompt))
    for layer, (keys, values) in enumerate(prefix[0] if n else []):
        cache.update(keys[None, :, :n].to(device), values[None, :, :n].to(device), layer)
    model(input_ids=torch.tensor([list(prompt[n:-1])], device=device),
          position_ids=torch.arange(n, len(prompt) - 1, device=device)[None], use_cache=True, logits_to_keep=1,
          **{cache_keyword(model): cache})
    return [(layer.keys[0], layer.values[0]) for layer in cache_layers(cache)], len(prompt) - 1


def generate_batch(model, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, stop_ids: Sequence[int],
                   pad_id: int, temperatures: Sequence[float], top_ps: Sequence[float], generator=None,
                   prefixes: Sequence | None = None, return_caches: bool = False, prefill: str = "auto",
                   decode: str = "auto"):
    """Generate a continuation of every prompt (token ids) in one batch; returns the new token ids
    of each row, end-of-turn token included when one was produced.

    Prompts are prefilled (see ``prefill``), then decoded together: each decode step runs only the
    rows that have not finished, so episodes whose turns end early stop costing compute.

    ``prefixes[i]`` (optional) is ``(kv, n)``: the KV cache of ``prompts[i][:n]`` from an earlier
    call (``kv``: per layer ``(keys, values)``, each ``(kv_heads, >= n, head_dim)``), so only the
    rest of the prompt is prefilled; ``n < len(prompts[i])``. ``prefill``: ``batch`` (the prompts
    left-padded to one width, one call), ``rows`` (each prompt alone, then the batch decodes) or
    ``auto`` (rows on CPU when padding would exceed ``_MAX_PREFILL_PADDING`` of the prefill, else
    batch). With ``return_caches`` the result is ``(new_tokens, caches)`` where
    ``caches[i] = (ids, kv)`` holds the KV of every token fed for row i (its prompt and its reply
    but the last token), to serve as a later prefix. ``decode``: ``dynamic`` (finished rows are
    dropped from the batch and its cache; the KV cache grows a column a step), ``static`` (every
    shape fixed, see ``StaticDecode``), ``graph`` (static, replayed as one CUDA graph a step) or
    ``auto`` (graph on CUDA, dynamic elsewhere). A model whose step cannot be captured decodes
    dynamically, with one warning. ``generator``: one for the batch, or one CPU generator per
    prompt (a row then samples the same tokens whatever batch it is in).
    """
    import torch

    if prefill not in ("auto", "batch", "rows"):
        raise ValueError(f"prefill={prefill!r}; allowed: auto, batch, rows")
    if decode not in DECODE_MODES:
        raise ValueError(f"decode={decode!r}; allowed: {', '.join(DECODE_MODES)}")
    device = next(model.parameters()).device
    rows = len(prompts)
    if rows == 0:
        return ([], []) if return_caches else []
    if isinstance(generator, (list, tuple)) and len(generator) != rows:
        raise ValueError(f"generator: {len(generator)} per-row generators for {rows} prompts")
    prefixes = _prefill(model, prompts, prefixes, prefill, device)
    reused = [0 if pre is None else int(pre[1]) for pre in prefixes]
    head = max(reused)  # cached columns, each row's cache right-aligned in them
    suffixes = [list(p)[n:] for p, n in zip(prompts, reused)]
    width = max(len(x) for x in suffixes)
    if decode == "auto":
        decode = "graph" if device.type == "cuda" else "dynamic"
    capacity = head + width + max_new_tokens
    if decode != "dynamic":  # a static mask of aligned width lets SDPA's fused kernels take it as is
        capacity = -(-capacity // 64) * 64
    cache = _seeded_cache(prefixes, reused, capacity, device)
    input_ids, attention, positions = _left_padded(suffixes, reused, head, pad_id, device)
    batch = _DecodeBatch(prompts=prompts, cache=cache, attention=attention, running=list(range(rows)),
                         temps=torch.tensor(list(temperatures), dtype=torch.float32, device=device),
                         tops=torch.tensor(list(top_ps), dtype=torch.float32, device=device),
                         out=[[] for _ in range(rows)], caches=[None] * rows if return_caches else None)
    sampling = {"all_greedy": all(t <= 0 for t in temperatures), "any_top_p": any(p < 1.0 for p in top_ps)}
    with torch.inference_mode(), attention_kernels(device):
        logits = model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                       use_cache=True, logits_to_keep=1, **{cache_keyword(model): cache}).logits[:, -1]
        _decode(model, batch, logits, positions[:, -1] + 1, max_new_tokens=max_new_tokens,
                stops=set(stop_ids), generator=generator, sampling=sampling, decode=decode)
    return (batch.out, batch.caches) if return_caches else batch.out


def _prefill(model, prompts, prefixes, prefill: str, device) -> list:
    """Each row's reusable prefix ``(kv, n)`` or None; with ``prefill=rows`` (or ``auto`` on a CPU
    when left padding would exceed ``_MAX_PREFILL_PADDING`` of the work) every prompt is prefilled
    alone first, so the batch call only decodes."""
    import torch

    rows = len(prompts)
    prefixes = list(prefixes) if prefixes is not None else [None] * rows
    reused = [0 if pre is None else int(pre[1]) for pre in prefixes]
    for i, (p, n) in enumerate(zip(prompts, reused)):
        if not 0 <= n < len(p):
            raise ValueError(f"row {i}: a reused prefix of {n} tokens must be shorter than its prompt ({len(p)})")
    lengths = [len(p) - n for p, n in zip(prompts, reused)]
    if prefill == "auto":
        padding = 1 - sum(lengths) / (rows * max(lengths))
        prefill = "rows" if device.type == "cpu" and padding > _MAX_PREFILL_PADDING else "batch"
    if prefill == "rows" and rows > 1:
        with torch.inference_mode(), attention_kernels(device):
            for i, (p, length) in enumerate(zip(prompts, lengths)):
                if length > 1:
                    prefixes[i] = _prefill_alone(model, p, prefixes[i], device)
    return prefixes


def _seeded_cache(prefixes, reused: list[int], capacity: int, device):
    """An in-place cache of ``capacity`` columns holding each row's reused prefix, right-aligned
    in the first ``max(reused)`` columns."""
    cache = in_place_cache(capacity)
    head, rows = max(reused), len(reused)
    if head:
        first = next(pre for pre in prefixes if pre is not None)[0]
        for layer, (k0, v0) in enumerate(first):
            keys = k0.new_zeros((rows, k0.shape[0], head, k0.shape[-1]))
            values = v0.new_zeros((rows, v0.shape[0], head, v0.shape[-1]))
            for i, pre in enumerate(prefixes):
                if pre is not None and reused[i]:
                    keys[i, :, head - reused[i]:] = pre[0][layer][0][:, :reused[i]]
                    values[i, :, head - reused[i]:] = pre[0][layer][1][:, :reused[i]]
            cache.update(keys.to(device), values.to(device), layer)
    return cache


def _left_padded(suffixes, reused: list[int], head: int, pad_id: int, device):
    """The rest of every prompt left-padded to one width: input ids, the attention mask over the
    cached columns and the new ones, and position ids that continue each row's prefix."""
    import torch

    rows, width = len(suffixes), max(len(x) for x in suffixes)
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    attention = torch.zeros((rows, head + width), dtype=torch.long)
    positions = torch.zeros((rows, width), dtype=torch.long)
    for i, (x, n) in enumerate(zip(suffixes, reused)):
        input_ids[i, width - len(x):] = torch.tensor(x, dtype=torch.long)
        attention[i, head - n:head] = 1
        attention[i, head + width - len(x):] = 1
        positions[i, width - len(x):] = n + torch.arange(len(x))
    return input_ids.to(device), attention.to(device), positions.to(device)


@dataclass
class _DecodeBatch:
    """What the decode loop carries from step to step; rows leave ``running`` as they finish."""

    prompts: Sequence[Sequence[int]]
    cache: Any
    attention: Any            # dynamic decode: the mask over every cache column, a column a step
    running: list[int]        # which original row each batch row is
    temps: Any
    tops: Any
    out: list[list[int]]      # the new tokens of each original row
    caches: list | None       # with return_caches: (ids fed, per-layer KV) of each finished row

    def snapshot(self, batch_rows, static, static_rows) -> None:
        """Keep the KV of the tokens each of ``batch_rows`` was fed (padding dropped) as a prefix."""
        if self.caches is None:
            return
        for b in batch_rows:
            r = self.running[b]
            if static is None:
                valid = self.attention[b].bool()
                kv = [(layer.keys[b][:, valid].clone(), layer.values[b][:, valid].clone())
                      for layer in cache_layers(self.cache)]
            else:
                c = b if static_rows is None else int(static_rows[b])
                valid, n = static.valid_columns(c), static.length
                kv = [(layer.key_buffer[c, :, :n][:, valid].clone(),
                       layer.value_buffer[c, :, :n][:, valid].clone()) for layer in cache_layers(self.cache)]
            self.caches[r] = (list(self.prompts[r]) + self.out[r][:-1], kv)


def _decode(model, batch: _DecodeBatch, logits, next_position, *, max_new_tokens: int, stops: set[int],
            generator, sampling: dict, decode: str) -> None:
    """Sample up to ``max_new_tokens`` tokens a row from the prefill's ``logits``; a row stops at an
    end-of-turn token. One read-back from the device a step (the sampled tokens): stop checks and
    row bookkeeping are Python, since every extra read-back on a GPU stalls the launch queue."""
    import torch

    device, per_row = logits.device, isinstance(generator, (list, tuple))
    static = None
    if decode == "graph" and max_new_tokens > 1:
        static = _graph_decode(model, batch.cache, batch.attention, next_position)
    elif decode == "static":
        static = StaticDecode(model, batch.cache, batch.attention, next_position)
    static_rows = None  # static: the batch rows still running, when some have finished
    cache_arg = {cache_keyword(model): batch.cache}
    for step in range(max_new_tokens):
        token = sample_next(logits, batch.temps, batch.tops,
                            [generator[r] for r in batch.running] if per_row else generator, **sampling)
        sampled = token.tolist()
        for row, tok in zip(batch.running, sampled):
            batch.out[row].append(tok)
        alive = [tok not in stops for tok in sampled]
        if step + 1 == max_new_tokens or not any(alive):
            batch.snapshot(range(len(batch.running)), static, static_rows)
            break
        if not all(alive):  # finished rows leave the batch (dynamic: and its KV cache)
            batch.snapshot([b for b, a in enumerate(alive) if not a], static, static_rows)
            kept = [b for b, a in enumerate(alive) if a]
            keep = torch.tensor(kept, device=device)
            batch.running = [batch.running[b] for b in kept]
            token, batch.temps, batch.tops = token[keep], batch.temps[keep], batch.tops[keep]
            if static is None:
                batch.cache.batch_select_indices(keep)
                batch.attention, next_position = batch.attention[keep], next_position[keep]
            else:
                static_rows = keep if static_rows is None else static_rows[keep]
        if static is None:
            batch.attention = torch.cat([batch.attention, batch.attention.new_ones((batch.attention.shape[0], 1))],
                                        dim=-1)
            logits = model(input_ids=token.unsqueeze(-1), attention_mask=batch.attention,
                           position_ids=next_position.unsqueeze(-1), use_cache=True, **cache_arg).logits[:, -1]
            next_position = next_position + 1
        else:
            logits = static.step(token, static_rows)
            if static_rows is not None:
                logits = logits[static_rows]
    if static is not None:
        static.release()


class PrefixCache:
    """KV caches of earlier turns, so a prompt that extends an earlier prompt (the same episode
    and seat one turn later, or any prompt sharing a long prefix) is only prefilled from where
    they differ. Bounded by ``max_tokens`` cached tokens; least recently used entries go first."""

    def __init__(self, max_tokens: int, min_reuse: int = 16):
        self.max_tokens, self.min_reuse = max_tokens, min_reuse
        self.entries: list[tuple[list[int], list]] = []  # most recently used last

    def lookup(self, prompt: Sequence[int]):
        """``(kv, n, entry)`` of the entry sharing the longest prefix with ``prompt`` (n tokens,
        at most len(prompt) - 1), or None when no entry shares ``min_reuse`` tokens."""
        best, best_n = None, 0
        for entry in self.entries:
            ids = entry[0]
            n = 0
            limit = min(len(ids), len(prompt) - 1)
            while n < limit and ids[n] == prompt[n]:
                n += 1
            if n > best_n:
                best, best_n = entry, n
        if best is None or best_n < self.min_reuse:
            return None
        self.entries.remove(best)
        self.entries.append(best)
        return best[1], best_n, best

    def add(self, ids: list[int], kv, replaces=None) -> None:
        if replaces is not None and replaces in self.entries and ids[:len(replaces[0])] == replaces[0]:
            self.entries.remove(replaces)  # the new entry holds all of it
        self.entries.append((ids, kv))
        while self.entries and sum(len(e[0]) for e in self.entries) > self.max_tokens:
            self.entries.pop(0)


class HFPolicy(Policy):
    """A transformers causal LM (embedded default, HF id or local path/checkpoint) as a policy.

    ``model``/``tokenizer`` may be passed in (already loaded) instead of ``model_id``. ``adapter``
    is a peft LoRA folder applied on top. ``device`` and ``dtype`` default to CUDA + bf16 when a
    GPU is present, CPU + fp32 otherwise. Prompts longer than ``max_context_tokens -
    max_new_tokens`` lose their oldest whole turns (recorded as ``omitted_turns``).
    ``max_batch_size`` caps the rows of one generation batch. ``prefix_cache_tokens`` bounds the
    KV cache kept between turns (0: none), so each turn only prefills what is new since the
    same seat's previous turn. ``decode`` is ``generate_batch``'s (auto: one CUDA-graph replay a
    decode step on CUDA, the dynamic batch elsewhere).
    """

    batched = True

    def __init__(self, model_id: str = "embedded", temperature: float = 0.7, top_p: float = 1.0,
                 max_new_tokens: int = 256, adapter: str | None = None, device=None, dtype=None,
                 max_context_tokens: int = 4096, model=None, tokenizer=None, *, seed: int | None = None,
                 max_batch_size: int = 32, fmt: ConversationFormat | None = None,
                 prefix_cache_tokens: int = 32768, decode: str = "auto"):
        super().__init__()
        import torch

        from .models import load_model, load_tokenizer

        if not 0.0 <= temperature:
            raise ConfigError(f"temperature must be >= 0, got {temperature}")
        if not 0.0 < top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {top_p}")
        if decode not in DECODE_MODES:
            raise ConfigError(f"decode={decode!r}; allowed: {', '.join(DECODE_MODES)}")
        if max_new_tokens < 1 or max_context_tokens <= max_new_tokens:
            raise ConfigError(f"need 1 <= max_new_tokens < max_context_tokens, got {max_new_tokens} and "
                              f"{max_context_tokens}")
        self.name = model_id  # pass model_id with a preloaded model so records name it
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_id)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = model if model is not None else load_model(model_id, dtype=dtype, device=device)
        if adapter is not None:
            from peft import PeftModel

            from .models import peft_quietly

            with peft_quietly():
                self.model = PeftModel.from_pretrained(self.model, adapter)
            self.name = f"{self.name}+{adapter}"
        if (model is None or adapter is not None) and hasattr(self.model, "merge_and_unload"):
            # A LoRA adapter (an sdpo.fit run's folder, or ``adapter``) is folded into the weights this
            # policy loaded itself: generating through peft's wrapped layers costs several times more
            # per decode step (benchmarks/RESULTS.md), and a policy never trains. A model passed in is
            # left as it is (its owner may train it).
            self.model = self.model.merge_and_unload()
        self.model.eval()
        self.conversation = ConversationTokenizer(self.tokenizer)
        self.stop_ids = end_of_turn_ids(self.tokenizer, self.model)
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens
        self.max_context_tokens = max_context_tokens
        self.max_batch_size = max_batch_size
        self.decode = decode
        self.adapter = adapter
        self.fmt = fmt or ConversationFormat()
        self.generator = None
        if seed is not None:
            self.generator = torch.Generator(device=next(self.model.parameters()).device).manual_seed(seed)
        self.sampling = {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens,
                         "max_context_tokens": max_context_tokens, "adapter": adapter}
        self.prefix_cache = PrefixCache(prefix_cache_tokens) if prefix_cache_tokens > 0 else None
        self._lock = threading.Lock()  # one generation at a time: the prefix cache is not shared-safe
        self.stats.update(generated_tokens=0, generate_seconds=0.0, batches=0, prompt_tokens=0, reused_tokens=0)

    def prompt(self, request: TurnRequest) -> tuple[list[int], int]:
        """The prompt token ids for a turn and the number of oldest turns omitted to fit."""
        fmt = request.fmt or self.fmt
        messages, omitted = fit_messages(request.task, request.agent_index, request.turns,
                                         lambda m: len(self.conversation.prompt_ids(m)),
                                         self.max_context_tokens - self.max_new_tokens, fmt=fmt)
        return self.conversation.prompt_ids(messages), omitted

    def act(self, requests: list[TurnRequest]) -> list[TurnResult]:
        """Generate the next action of every request in as few batches as ``max_batch_size`` allows.
        A request with a ``seed`` samples from its own generator, so its action does not depend on
        the other requests of the batch; the others share the policy's generator."""
        import torch

        prompts = [self.prompt(r) for r in requests]
        temps = [self.temperature if r.temperature is None else r.temperature for r in requests]
        new_tokens: list[list[int]] = []
        with self._lock:
            gens = None
            if any(r.seed is not None for r in requests):
                gens = [torch.Generator().manual_seed(r.seed if r.seed is not None else int(
                    torch.randint(2**62, (), generator=self.generator))) for r in requests]
            start = time.perf_counter()
            for lo in range(0, len(requests), self.max_batch_size):
                new_tokens += self._generate([p for p, _ in prompts[lo:lo + self.max_batch_size]],
                                             temps[lo:lo + self.max_batch_size],
                                             None if gens is None else gens[lo:lo + self.max_batch_size])
            self.stats["generate_seconds"] += time.perf_counter() - start
        results = []
        for request, (ids, omitted), tokens in zip(requests, prompts, new_tokens):
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            action_type, argument, fallback = parse_action(text, (request.fmt or self.fmt).prompt_style)
            results.append(TurnResult(action_type=action_type, argument=argument, prompt_tokens=len(ids),
                                      completion_tokens=len(tokens), fallback=fallback, omitted_turns=omitted,
                                      raw=text))
            self.stats["generated_tokens"] += len(tokens)
        self._count(results)
        return results

    def _generate(self, prompts: list[list[int]], temperatures: list[float], generators=None) -> list[list[int]]:
        """One generation batch, reusing and refreshing the prefix cache."""
        settings = {"max_new_tokens": self.max_new_tokens, "stop_ids": self.stop_ids, "decode": self.decode,
                    "pad_id": self.tokenizer.pad_token_id, "temperatures": temperatures,
                    "top_ps": [self.top_p] * len(prompts),
                    "generator": self.generator if generators is None else generators}
        self.stats["batches"] += 1
        self.stats["prompt_tokens"] += sum(len(p) for p in prompts)
        if self.prefix_cache is None:
            return generate_batch(self.model, prompts, **settings)
        found = [self.prefix_cache.lookup(p) for p in prompts]
        self.stats["reused_tokens"] += sum(f[1] for f in found if f is not None)
        new_tokens, caches = generate_batch(self.model, prompts, prefixes=[f[:2] if f else None for f in found],
                                            return_caches=True, **settings)
        for f, (ids, kv) in zip(found, caches):
            self.prefix_cache.add(ids, kv, replaces=f[2] if f else None)
        return new_tokens
