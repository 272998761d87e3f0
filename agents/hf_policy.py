"""A local Hugging Face causal LM as a SOTOPIA policy, generating the pending turns of many
episodes in one batch.

Prompts are the formatter's token ids (``ConversationTokenizer.prompt_ids``), so the tokens a
model acts on are exactly the tokens ``sdpo`` later trains on. Generation is our own lean
decode loop rather than ``model.generate``: one left-padded prefill of every prompt, then one
forward a step over the rows still running; a row leaves the batch (its KV cache rows are
dropped) as soon as it emits an end-of-turn token, and each row samples with its own
temperature and top-p (SDPO's positives use 1.0 for the target seat, 0.7 for the partner).
"""
from __future__ import annotations

import time
from typing import Sequence

from sotopia_env.errors import ConfigError

from .formatter import ConversationFormat, ConversationTokenizer, fit_messages, parse_action
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


def sample_next(logits, temperatures, top_ps, generator=None):
    """One token per row. ``logits`` (rows, vocab); ``temperatures``, ``top_ps`` (rows,).
    A temperature of 0 means greedy; top-p keeps the smallest set of tokens whose probability
    reaches ``top_p`` (nucleus sampling)."""
    import torch

    greedy = logits.argmax(dim=-1)
    if bool((temperatures <= 0).all()):
        return greedy
    scaled = logits.float() / temperatures.clamp(min=1e-5).unsqueeze(-1)
    probs = torch.softmax(scaled, dim=-1)
    if bool((top_ps < 1.0).any()):
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of strictly more likely tokens
        sorted_probs = sorted_probs.masked_fill(before >= top_ps.unsqueeze(-1), 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    sampled = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return torch.where(temperatures <= 0, greedy, sampled)


def _cache_keyword(model) -> str:
    """``cache`` in recent transformers (``past_key_values`` is deprecated there), else the old name."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def generate_batch(model, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, stop_ids: Sequence[int],
                   pad_id: int, temperatures: Sequence[float], top_ps: Sequence[float], generator=None
                   ) -> list[list[int]]:
    """Generate a continuation of every prompt (token ids) in one batch; returns the new token ids
    of each row, end-of-turn token included when one was produced.

    Prompts are left-padded and prefilled together; then each decode step runs only the rows
    that have not finished, so episodes whose turns end early stop costing compute.
    """
    import torch
    from transformers import DynamicCache

    device = next(model.parameters()).device
    rows = len(prompts)
    if rows == 0:
        return []
    width = max(len(p) for p in prompts)
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    attention = torch.zeros((rows, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        input_ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        attention[i, width - len(p):] = 1
    input_ids, attention = input_ids.to(device), attention.to(device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    temps = torch.tensor(list(temperatures), dtype=torch.float32, device=device)
    tops = torch.tensor(list(top_ps), dtype=torch.float32, device=device)
    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    out: list[list[int]] = [[] for _ in range(rows)]
    running = torch.arange(rows, device=device)  # which original row each batch row is
    cache = DynamicCache()
    cache_arg = {_cache_keyword(model): cache}
    with torch.inference_mode():
        logits = model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                       use_cache=True, logits_to_keep=1, **cache_arg).logits[:, -1]
        next_position = positions[:, -1] + 1
        for step in range(max_new_tokens):
            token = sample_next(logits, temps, tops, generator)
            for row, tok in zip(running.tolist(), token.tolist()):
                out[row].append(tok)
            alive = ~torch.isin(token, stops)
            if step + 1 == max_new_tokens or not bool(alive.any()):
                break
            if not bool(alive.all()):  # finished rows leave the batch and its KV cache
                keep = alive.nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                running, token, attention = running[keep], token[keep], attention[keep]
                next_position, temps, tops = next_position[keep], temps[keep], tops[keep]
            attention = torch.cat([attention, attention.new_ones((attention.shape[0], 1))], dim=-1)
            logits = model(input_ids=token.unsqueeze(-1), attention_mask=attention,
                           position_ids=next_position.unsqueeze(-1), use_cache=True, **cache_arg).logits[:, -1]
            next_position = next_position + 1
    return out


class HFPolicy(Policy):
    """A transformers causal LM (embedded default, HF id or local path/checkpoint) as a policy.

    ``model``/``tokenizer`` may be passed in (already loaded) instead of ``model_id``. ``adapter``
    is a peft LoRA folder applied on top. ``device`` and ``dtype`` default to CUDA + bf16 when a
    GPU is present, CPU + fp32 otherwise. Prompts longer than ``max_context_tokens -
    max_new_tokens`` lose their oldest whole turns (recorded as ``omitted_turns``).
    ``max_batch_size`` caps the rows of one generation batch.
    """

    batched = True

    def __init__(self, model_id: str = "embedded", temperature: float = 0.7, top_p: float = 1.0,
                 max_new_tokens: int = 256, adapter: str | None = None, device=None, dtype=None,
                 max_context_tokens: int = 4096, model=None, tokenizer=None, *, seed: int | None = None,
                 max_batch_size: int = 32, fmt: ConversationFormat | None = None):
        super().__init__()
        import torch

        from .models import load_model, load_tokenizer

        if not 0.0 <= temperature:
            raise ConfigError(f"temperature must be >= 0, got {temperature}")
        if not 0.0 < top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {top_p}")
        if max_new_tokens < 1 or max_context_tokens <= max_new_tokens:
            raise ConfigError(f"need 1 <= max_new_tokens < max_context_tokens, got {max_new_tokens} and "
                              f"{max_context_tokens}")
        self.name = model_id if model is None else (model_id if model_id != "embedded" else
                                                    getattr(model, "name_or_path", model_id) or model_id)
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_id)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = model if model is not None else load_model(model_id, dtype=dtype, device=device)
        if adapter is not None:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, adapter)
            self.name = f"{self.name}+{adapter}"
        self.model.eval()
        self.conversation = ConversationTokenizer(self.tokenizer)
        self.stop_ids = end_of_turn_ids(self.tokenizer, self.model)
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens
        self.max_context_tokens = max_context_tokens
        self.max_batch_size = max_batch_size
        self.adapter = adapter
        self.fmt = fmt or ConversationFormat()
        self.generator = None
        if seed is not None:
            self.generator = torch.Generator(device=next(self.model.parameters()).device).manual_seed(seed)
        self.sampling = {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens,
                         "max_context_tokens": max_context_tokens, "adapter": adapter}
        self.stats.update(generated_tokens=0, generate_seconds=0.0, batches=0)

    def prompt(self, request: TurnRequest) -> tuple[list[int], int]:
        """The prompt token ids for a turn and the number of oldest turns omitted to fit."""
        fmt = request.fmt or self.fmt
        messages, omitted = fit_messages(request.task, request.agent_index, request.turns,
                                         lambda m: len(self.conversation.prompt_ids(m)),
                                         self.max_context_tokens - self.max_new_tokens, fmt=fmt)
        return self.conversation.prompt_ids(messages), omitted

    def act(self, requests: list[TurnRequest]) -> list[TurnResult]:
        """Generate the next action of every request in as few batches as ``max_batch_size`` allows."""
        prompts = [self.prompt(r) for r in requests]
        temps = [self.temperature if r.temperature is None else r.temperature for r in requests]
        new_tokens: list[list[int]] = []
        start = time.perf_counter()
        for lo in range(0, len(requests), self.max_batch_size):
            new_tokens += generate_batch(
                self.model, [p for p, _ in prompts[lo:lo + self.max_batch_size]],
                max_new_tokens=self.max_new_tokens, stop_ids=self.stop_ids, pad_id=self.tokenizer.pad_token_id,
                temperatures=temps[lo:lo + self.max_batch_size],
                top_ps=[self.top_p] * len(requests[lo:lo + self.max_batch_size]), generator=self.generator)
            self.stats["batches"] += 1
        self.stats["generate_seconds"] += time.perf_counter() - start
        results = []
        for (ids, omitted), tokens in zip(prompts, new_tokens):
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            action_type, argument, fallback = parse_action(text)
            results.append(TurnResult(action_type=action_type, argument=argument, prompt_tokens=len(ids),
                                      completion_tokens=len(tokens), fallback=fallback, omitted_turns=omitted,
                                      raw=text))
            self.stats["generated_tokens"] += len(tokens)
        self._count(results)
        return results
