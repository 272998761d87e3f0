"""One forward pass for a batch of tokenized pairs -> per-turn log-probs of both sides.

Prefix sharing: the history both sides share is computed once per pair. Each pair is one packed
row ``[shared prefix | chosen rest | rejected rest]``; a 4D attention mask lets each branch see
the prefix and itself (causally) but not the other branch, and position ids restart after the
prefix, so every branch token has the same attention context and position as in a separate
forward of its own side. Without prefix sharing, the chosen and the rejected sequences are two
right-padded rows of one batch (TRL's ``[chosen; rejected]`` concatenation), run with plain causal
attention (no padding mask is needed: no kept position comes after padding).

Two ways to run a packed row (``prefix_attention``):

* ``"cache"`` (``sdpo.fit``'s choice on CPU): two calls, no 4D mask over the whole row. The first
  runs every pair's ``[prefix | chosen]`` (plain causal attention, the fast kernel); its keys and
  values of the prefix then serve as the KV cache of the second, which runs the rejected branches
  at positions that continue the prefix. Gradients flow through the cache into the shared prefix.
  Attention costs only what each branch needs, and the causal kernel skips the masked half. Pairs
  of very different lengths get two calls each instead (less padding).
* ``"mask"``: one call on the whole batch with the 4D branch mask below (works under gradient
  checkpointing and DDP, where a second forward before the backward is not allowed; on a GPU,
  where a small model's step is bound by kernel launches, one call beats two; figures in
  benchmarks/RESULTS.md).

Either way the LM head is applied only at the positions that predict a target token, so the
vocabulary projection costs one row per target token instead of one per input token. For the plain
decoder + LM head models (Llama, Mistral, Qwen) the head and the log-softmax at the target are one
autograd function (``HeadTargetLogps``): its backward turns the saved logits into their gradient in
place, where autograd's ops would allocate and fill three more (targets x vocabulary) tensors. Token
log-probs are summed per turn with ``index_put_`` (no Python loop over turns or tokens).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from agents.hf_compat import cache_keyword, new_cache, prefix_cache

from .tokenize import NO_TURN, TokenizedPair

PREFIX, CHOSEN, REJECTED, PADDING = 0, 1, 2, 3
"""Branch id of each position of a packed row (what it may attend to is decided by it)."""


@dataclass
class PackedBatch:
    """Model inputs for a batch of pairs plus where to read each target token's log-prob.

    ``input_ids``/``position_ids``: (rows, length); ``branch``: (rows, length) branch id of each
    position when rows are packed (None: plain right-padded rows, run with causal attention alone).
    ``keep``: (rows, length) bool, positions whose logits are needed. For each of the N target
    tokens: ``logit_row`` (N,) its row among the kept positions (row-major), ``target_ids`` (N,),
    ``pair`` (N,) index of its pair in the batch, ``side`` (N,) 0 chosen / 1 rejected, ``turn``
    (N,) index within the segment. ``n_turns``: (pairs, 2) segment lengths (0 for a missing side).
    ``n_tokens``: real (non-padding) tokens fed to the model.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    branch: torch.Tensor | None
    keep: torch.Tensor
    logit_row: torch.Tensor
    target_ids: torch.Tensor
    pair: torch.Tensor
    side: torch.Tensor
    turn: torch.Tensor
    n_turns: torch.Tensor
    n_tokens: int

    def to(self, device) -> PackedBatch:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return PackedBatch(**moved)


def pack_pairs(pairs: Sequence[TokenizedPair], *, prefix_sharing: bool = True, pad_id: int = 0) -> PackedBatch:
    """Lay out a batch of pairs as model rows (see the module docstring)."""
    rows: list[tuple[list[int], list[int], list[int]]] = []      # (ids, positions, branch ids)
    # per target token: (row, position that predicts it, token id, pair, side, turn)
    targets: list[tuple[int, int, int, int, int, int]] = []
    n_turns = torch.zeros(len(pairs), 2, dtype=torch.long)
    for b, tp in enumerate(pairs):
        sides = [(0, tp.chosen)] + ([(1, tp.rejected)] if tp.rejected is not None else [])
        for s, side in sides:
            n_turns[b, s] = side.n_turns
        if prefix_sharing and tp.rejected is not None and not (tp.chosen.rows or tp.rejected.rows):
            p = tp.prefix_len
            c, r = tp.chosen, tp.rejected
            ids = c.input_ids + r.input_ids[p:]
            positions = list(range(len(c.input_ids))) + list(range(p, len(r.input_ids)))
            branch = [PREFIX] * p + [CHOSEN] * (len(c.input_ids) - p) + [REJECTED] * (len(r.input_ids) - p)
            row = len(rows)
            rows.append((ids, positions, branch))
            for q, k in enumerate(c.turn_index):
                if k != NO_TURN:
                    targets.append((row, q - 1, c.input_ids[q], b, 0, k))
            offset = len(c.input_ids) - p          # packed index of rejected token q is q + offset
            for q in range(p, len(r.input_ids)):
                k = r.turn_index[q]
                if k != NO_TURN:
                    # the first rejected-branch token is predicted from the last prefix position
                    source = p - 1 if q == p else q - 1 + offset
                    targets.append((row, source, r.input_ids[q], b, 1, k))
        else:
            for s, side in sides:
                for ids, turn_index in side.rows or [(side.input_ids, side.turn_index)]:
                    row = len(rows)
                    rows.append((ids, list(range(len(ids))), [CHOSEN] * len(ids)))
                    for q, k in enumerate(turn_index):
                        if k != NO_TURN:
                            targets.append((row, q - 1, ids[q], b, s, k))
    length = max(len(ids) for ids, _, _ in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), length), dtype=torch.long)
    branch = torch.full((len(rows), length), PADDING, dtype=torch.long)
    for i, (ids, positions, br) in enumerate(rows):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        position_ids[i, :len(ids)] = torch.tensor(positions)
        branch[i, :len(ids)] = torch.tensor(br)
    t = torch.tensor(targets, dtype=torch.long).reshape(-1, 6)
    keep = torch.zeros((len(rows), length), dtype=torch.bool)
    keep[t[:, 0], t[:, 1]] = True
    # Rank of each kept position in row-major order = its row in the (kept, vocab) logits.
    rank = torch.full((len(rows), length), -1, dtype=torch.long)
    rank[keep] = torch.arange(int(keep.sum()))
    packed = prefix_sharing and any(tp.rejected is not None and not (tp.chosen.rows or tp.rejected.rows)
                                    for tp in pairs)
    return PackedBatch(
        input_ids=input_ids, position_ids=position_ids,
        branch=branch if packed else None,
        keep=keep, logit_row=rank[t[:, 0], t[:, 1]], target_ids=t[:, 2], pair=t[:, 3], side=t[:, 4],
        turn=t[:, 5], n_turns=n_turns, n_tokens=int((branch != PADDING).sum()))


def branch_attention_mask(branch: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(rows, 1, length, length) additive mask from branch ids: position q sees k <= q when k is in
    the shared prefix or in q's own branch. Padding sees earlier padding and the prefix only, so no
    query row is fully masked (which would give NaN)."""
    length = branch.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=branch.device).tril()
    same = (branch[:, None, :] == PREFIX) | (branch[:, None, :] == branch[:, :, None])
    return _additive((causal & same)[:, None], dtype)


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An attention mask of booleans (True: may attend) as the additive mask SDPA takes."""
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.tensor(torch.finfo(dtype).min, dtype=dtype, device=allowed.device))


@dataclass
class PairLogps:
    """Log-probs of a batch of pairs. ``chosen``/``rejected``: (pairs, turns) per-turn sums of
    target token log-probs (0 beyond a row's segment); ``chosen_mask``/``rejected_mask``: (pairs,
    turns) bool, True inside the segment. ``chosen_tokens``/``chosen_token_mask``: (pairs, tokens)
    per-token log-probs of the chosen side's targets (for the SFT losses). ``rejected`` and its
    mask are None when no pair of the batch has a rejected side."""

    chosen: torch.Tensor
    rejected: torch.Tensor | None
    chosen_mask: torch.Tensor
    rejected_mask: torch.Tensor | None
    chosen_tokens: torch.Tensor
    chosen_token_mask: torch.Tensor


def _model_dtype(model) -> torch.dtype:
    return next(p.dtype for p in model.parameters() if p.is_floating_point())


def _unwrap(model):
    """The transformers model under DDP / accelerate and peft wrappers (peft's LoRA layers stay in it)."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


_PLAIN_HEAD_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})
"""Causal LMs whose logits are exactly ``lm_head(decoder(...).last_hidden_state)`` (no soft-capping,
no logit scale), so the head can be applied once to the kept states of several decoder calls."""


def _decoder_and_head(model):
    """``(decoder, lm_head)`` of a plain decoder + LM head model, to be called apart; None for other
    models and under DDP / FSDP / DeepSpeed wrappers (only their own forward syncs gradients)."""
    if getattr(model, "module", None) is not None:
        return None
    base = _unwrap(model)
    if getattr(base.config, "model_type", None) in _PLAIN_HEAD_TYPES and hasattr(base, "lm_head") \
            and hasattr(base, "model"):
        return base.model, base.lm_head
    return None


def _padded_rows(source: torch.Tensor, spans: Sequence[tuple[int, int, int]], width: int) -> torch.Tensor:
    """Stack ``source[row, start:stop]`` for each ``(row, start, stop)``, right-padded with zeros to ``width``."""
    out = source.new_zeros((len(spans), width) + tuple(source.shape[2:]))
    for j, (row, start, stop) in enumerate(spans):
        out[j, :stop - start] = source[row, start:stop]
    return out


_MAX_PADDING = 0.1
"""Largest share of padding for which rows of different lengths share the two calls of a step."""


def _second_call_mask(prefix_lens: Sequence[int], head_len: int, width: int, dtype, device) -> torch.Tensor | None:
    """(rows, 1, width, head_len + width) additive mask of the rejected-branch call: query q of row b
    sees its prefix (key < prefix_lens[b]) and its own branch causally (head_len <= key <= head_len + q).
    None when every row's prefix fills ``head_len`` (plain causal attention then)."""
    if all(p == head_len for p in prefix_lens):
        return None
    key = torch.arange(head_len + width, device=device)
    query = torch.arange(width, device=device)
    lens = torch.tensor(list(prefix_lens), device=device)
    allowed = (key[None, None, :] < lens[:, None, None]) | \
        ((key[None, None, :] >= head_len) & (key[None, None, :] - head_len <= query[None, :, None]))
    return _additive(allowed[:, None], dtype)


def _shared_prefix_outputs(model, batch: PackedBatch, split) -> torch.Tensor:
    """The kept outputs of a packed batch, row-major, by two calls (module doc): final hidden states
    when ``split`` is the model's ``(decoder, head)``, logits when it is None.

    Call one runs every row's ``[prefix | chosen]`` together (right-padded: causal attention needs no
    mask, and no kept position reads a padding token); call two runs every row's rejected branch on
    the prefix part of call one's KV cache, with a mask that hides each row's chosen tokens and
    padding. So every weight is used in two calls a step, not two per pair (each extra use costs
    a weight-sized gradient sum in the backward). When rows differ much in length (padding would
    exceed ``_MAX_PADDING`` of the work), each row gets its own pair of calls instead.

    For the plain decoder + LM head models (Llama, Mistral, Qwen) the embedding runs once over
    the whole batch and the caller applies the LM head once to the kept states of every call, so
    their backward (each a dense vocabulary-sized gradient) also runs once a step, not once a call."""
    if split is not None:
        decoder, _ = split
        embeds = decoder.get_input_embeddings()(batch.input_ids)
        keyword = cache_keyword(decoder)
    else:
        keyword = cache_keyword(_unwrap(model))

    def call(spans, cache, mask=None) -> list[torch.Tensor]:
        """Run ``spans`` (row, start, stop) of the packed rows as one right-padded batch (its KV lands
        in ``cache``); returns the kept outputs (hidden states or logits), one tensor per span."""
        width = max(stop - start for _, start, stop in spans)
        keep = _padded_rows(batch.keep, spans, width)
        positions = _padded_rows(batch.position_ids, spans, width)
        if split is not None:
            hidden = decoder(inputs_embeds=_padded_rows(embeds, spans, width), position_ids=positions,
                             attention_mask=mask, use_cache=True, **{keyword: cache}).last_hidden_state
            return [hidden[j, keep[j]] for j in range(len(spans))]
        logits = model(input_ids=_padded_rows(batch.input_ids, spans, width), position_ids=positions,
                       attention_mask=mask, use_cache=True, logits_to_keep=keep, **{keyword: cache}).logits
        counts = keep.sum(-1).tolist()
        return list(logits.reshape(-1, logits.shape[-1]).split(counts))

    first, second = [], []       # (row, start, stop) of each call
    prefix_lens = []
    for i in range(batch.input_ids.shape[0]):
        branch, keep = batch.branch[i], batch.keep[i]
        p, c, r = (int((branch == b).sum()) for b in (PREFIX, CHOSEN, REJECTED))
        # [prefix | chosen]: positions after its last kept one feed nothing (but the prefix is needed)
        kept_first = keep[:p + c].nonzero()
        first.append((i, 0, max(p, int(kept_first[-1]) + 1 if len(kept_first) else 0, 1)))
        kept_second = keep[p + c:p + c + r].nonzero()
        second.append((i, p + c, p + c + int(kept_second[-1]) + 1) if r and len(kept_second) else None)
        prefix_lens.append(p)

    def padding(spans) -> float:
        real = sum(stop - start for _, start, stop in spans)
        return 1 - real / (len(spans) * max(stop - start for _, start, stop in spans))

    groups = [list(range(len(first)))]
    if len(first) > 1 and (padding(first) > _MAX_PADDING
                           or padding([s for s in second if s is not None] or first) > _MAX_PADDING):
        groups = [[i] for i in range(len(first))]
    pieces: dict[int, list] = {}
    for rows in groups:
        cache = new_cache()
        outs = call([first[i] for i in rows], cache)
        for i, out in zip(rows, outs):
            pieces[i] = [out]
        with_second = [j for j, i in enumerate(rows) if second[i] is not None]
        if with_second:
            spans = [second[rows[j]] for j in with_second]
            width = max(stop - start for _, start, stop in spans)
            head_len = max(prefix_lens[rows[j]] for j in with_second)
            mask = _second_call_mask([prefix_lens[rows[j]] for j in with_second], head_len, width,
                                     _model_dtype(model), batch.input_ids.device)
            outs = call(spans, prefix_cache(cache, head_len, None if len(with_second) == len(rows)
                                                            else torch.tensor(with_second)), mask)
            for j, out in zip(with_second, outs):
                pieces[rows[j]].append(out)
    return torch.cat([piece for i in range(len(first)) for piece in pieces[i]])


class HeadTargetLogps(torch.autograd.Function):
    """``log_softmax(hidden @ weight.T)[i, targets[i]]`` for each row ``i`` of ``hidden`` (N, H), the
    LM head (``weight``: (vocab, H), no bias) and the log-softmax at the target in one function.

    The forward keeps the (N, vocab) logits (as the unfused ops do); the backward turns them in
    place into the gradient ``g * (onehot(target) - softmax)`` and runs the two matmuls of the
    head's backward on it. Autograd's own ops would allocate and fill three more (N, vocab) tensors
    (the logsumexp's gradient, the target gather's scattered gradient, their sum), each page-faulted
    in afresh on CPU. Logits and their gradient are computed in float32 at least."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = hidden @ weight.t()
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()    # log-probs in at least fp32 (bf16 logsumexp loses digits)
        lse = torch.logsumexp(logits, dim=-1)
        out = logits.gather(1, targets[:, None]).squeeze(1) - lse
        ctx.save_for_backward(hidden, weight, targets, logits, lse)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable     # the saved logits become the gradient in place
    def backward(ctx, grad_out: torch.Tensor):
        hidden, weight, targets, logits, lse = ctx.saved_tensors
        grad_out = grad_out.to(logits.dtype)
        grad = logits.sub_(lse[:, None]).exp_().mul_(-grad_out[:, None])    # -g * softmax
        grad.scatter_add_(1, targets[:, None], grad_out[:, None])           # + g at the target
        grad = grad.to(hidden.dtype)
        grad_hidden = grad @ weight if ctx.needs_input_grad[0] else None
        grad_weight = grad.t() @ hidden if ctx.needs_input_grad[1] else None
        return grad_hidden, grad_weight, None


def _head_logps(hidden: torch.Tensor, head, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Log-prob of ``targets[i]`` after ``hidden[rows[i]]`` through the LM head ``head``: one fused
    function (``HeadTargetLogps``) for a bias-free ``nn.Linear`` head outside autocast, else the
    head's logits through ``_logits_logps``."""
    if type(head) is torch.nn.Linear and head.bias is None and hidden.dtype == head.weight.dtype \
            and not torch.is_autocast_enabled(hidden.device.type):
        return HeadTargetLogps.apply(hidden[rows], head.weight, targets)
    return _logits_logps(head(hidden), rows, targets)


def _logits_logps(logits: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Log-prob of ``targets[i]`` under the logits row ``logits[rows[i]]``."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()   # log-probs in at least fp32 (bf16 logsumexp loses digits)
    # log softmax at the target only: logit - logsumexp, without materialising the full log-softmax
    return logits[rows, targets] - torch.logsumexp(logits, dim=-1)[rows]


def target_logps(model, batch: PackedBatch, *, prefix_attention: str = "cache") -> torch.Tensor:
    """(N,) log-prob of every target token of the batch, in ``batch`` order.

    ``prefix_attention`` (packed batches only): ``"cache"`` or ``"mask"`` (see the module doc)."""
    if prefix_attention not in ("cache", "mask"):
        raise ValueError(f"prefix_attention={prefix_attention!r}; allowed: cache, mask")
    split = _decoder_and_head(model)
    if batch.branch is not None and prefix_attention == "cache":
        kept = _shared_prefix_outputs(model, batch, split)
    else:
        if batch.branch is not None:
            attention_mask = branch_attention_mask(batch.branch, _model_dtype(model))
        else:
            # Plain rows are right-padded and every kept position comes before its row's padding, so
            # causal attention alone keeps padding out of every kept output. Without a padding mask the
            # attention kernel runs causal and skips the blocks above the diagonal; with one it computes
            # them all (a fifth of an unshared step on fit_speed's multi-turn pairs, same log-probs).
            attention_mask = None
        inputs = dict(input_ids=batch.input_ids, attention_mask=attention_mask, position_ids=batch.position_ids,
                      use_cache=False)
        if split is not None:
            kept = split[0](**inputs).last_hidden_state[batch.keep]     # row-major, as logit_row counts
        else:
            logits = model(**inputs, logits_to_keep=batch.keep).logits
            kept = logits.reshape(-1, logits.shape[-1])   # (kept positions, vocab)
    if split is not None:
        return _head_logps(kept, split[1], batch.logit_row, batch.target_ids)
    return _logits_logps(kept, batch.logit_row, batch.target_ids)


def pair_logps(model, batch: PackedBatch, *, prefix_attention: str = "cache") -> PairLogps:
    """Per-turn log-probs of both sides for a packed batch (see the module doc)."""
    token_logps = target_logps(model, batch, prefix_attention=prefix_attention)
    pairs = batch.n_turns.shape[0]
    device = token_logps.device

    def per_turn(s: int) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(int(batch.n_turns[:, s].max()), 1)
        sel = batch.side == s
        out = torch.zeros(pairs, width, dtype=token_logps.dtype, device=device)
        out = out.index_put((batch.pair[sel], batch.turn[sel]), token_logps[sel], accumulate=True)
        mask = torch.arange(width, device=device)[None, :] < batch.n_turns[:, s:s + 1].to(device)
        return out, mask

    chosen, chosen_mask = per_turn(0)
    has_rejected = bool((batch.n_turns[:, 1] > 0).any())
    rejected, rejected_mask = per_turn(1) if has_rejected else (None, None)
    # chosen-side token log-probs as a padded (pairs, tokens) tensor for the SFT losses
    sel = batch.side == 0
    pair_of = batch.pair[sel]
    counts = torch.bincount(pair_of, minlength=pairs)
    starts = torch.cumsum(counts, 0) - counts
    column = torch.arange(int(sel.sum()), device=device) - starts[pair_of]
    width = max(int(counts.max()), 1)
    tokens = torch.zeros(pairs, width, dtype=token_logps.dtype, device=device)
    tokens = tokens.index_put((pair_of, column), token_logps[sel])
    token_mask = torch.arange(width, device=device)[None, :] < counts[:, None]
    return PairLogps(chosen=chosen, rejected=rejected, chosen_mask=chosen_mask, rejected_mask=rejected_mask,
                     chosen_tokens=tokens, chosen_token_mask=token_mask)
