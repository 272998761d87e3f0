"""sdpo.model_forward: prefix-shared packed forward == separate forwards of each side (fp32, 1e-5)."""
import pytest
import torch

from agents.formatter import ConversationTokenizer
from sdpo.model_forward import branch_attention_mask, pack_pairs, pair_logps, target_logps
from sdpo.tokenize import NO_TURN, tokenize_pair
from tests.pair_fixtures import make_pair


def naive_per_turn(model, side):
    """Reference computation: the side alone, full logits, log_softmax, sum per turn."""
    ids = torch.tensor([side.input_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
        logps = torch.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), -1)
    out = torch.zeros(side.n_turns, dtype=torch.float64)
    tokens = []
    for q, k in enumerate(side.turn_index):
        if k != NO_TURN:
            out[k] += logps[q - 1, side.input_ids[q]].double()
            tokens.append(logps[q - 1, side.input_ids[q]].item())

    return out, tokens


def _pairs(conv):
    pairs = [make_pair("a", n_history=4, seg=2), make_pair("b", n_history=3, seg=3, agent_index=1, words=3),
             make_pair("c", n_history=2, seg=1, rejected_seg=2, words=9)]
    return [tokenize_pair(conv, p) for p in pairs]


def _check_equal(model, tokenized, prefix_sharing, prefix_attention="cache"):
    batch = pack_pairs(tokenized, prefix_sharing=prefix_sharing, pad_id=0)
    with torch.no_grad():
        out = pair_logps(model, batch, prefix_attention=prefix_attention)
    for b, tp in enumerate(tokenized):
        for name, got, mask in (("chosen", out.chosen, out.chosen_mask), ("rejected", out.rejected, out.rejected_mask)):
            side = getattr(tp, name)
            want, tokens = naive_per_turn(model, side)
            assert mask[b].sum() == side.n_turns
            torch.testing.assert_close(got[b, :side.n_turns].double(), want, atol=1e-5, rtol=1e-5)
            if name == "chosen":
                torch.testing.assert_close(out.chosen_tokens[b, :len(tokens)],
                                           torch.tensor(tokens), atol=1e-5, rtol=1e-5)
                assert out.chosen_token_mask[b].sum() == len(tokens)
    return batch


@pytest.fixture(params=["per-row", "batched"])
def cache_calls(request, monkeypatch):
    """The cache layout both ways: each pair its own two calls, or all pairs in two padded calls
    (the choice ``_MAX_PADDING`` makes from how much padding batching would add)."""
    import sdpo.model_forward as mf

    monkeypatch.setattr(mf, "_MAX_PADDING", -1.0 if request.param == "per-row" else 1.0)
    return request.param


@pytest.mark.parametrize("prefix_attention", ["cache", "mask"])
def test_packed_equals_separate_tiny(tiny_llama, embedded_tokenizer, prefix_attention, cache_calls):
    tokenized = _pairs(ConversationTokenizer(embedded_tokenizer))
    shared = _check_equal(tiny_llama, tokenized, True, prefix_attention)
    plain = _check_equal(tiny_llama, tokenized, False)
    assert shared.input_ids.shape[0] == 3 and plain.input_ids.shape[0] == 6
    # the shared history is fed once: fewer tokens than the two sides separately
    assert shared.n_tokens == sum(tp.n_tokens for tp in tokenized) < plain.n_tokens
    # the LM head runs only where a target is predicted
    assert shared.keep.sum() < shared.n_tokens / 3


@pytest.mark.slow
@pytest.mark.parametrize("prefix_attention", ["cache", "mask"])
def test_packed_equals_separate_embedded(embedded_model, embedded_tokenizer, prefix_attention):
    """The embedded model, rejected branch (the one whose positions restart after the prefix).
    fp32 at full depth: per-token differences within 1e-4; the fp32 noise floor of batching
    itself is ~2e-5 here (the same side alone vs padded in a two-row batch differs that much, from
    shape-dependent matmul blocking), so 1e-5 holds only for the tiny model. fp64 (first 4 of its
    30 layers, to keep the test fast): equal to 1e-9, so the layout itself is exact."""
    import copy

    conv = ConversationTokenizer(embedded_tokenizer)
    tp = tokenize_pair(conv, make_pair("e", n_history=2, seg=2, words=2))
    batch = pack_pairs([tp], prefix_sharing=True)
    rejected = batch.side == 1
    want = torch.tensor(naive_per_turn(embedded_model, tp.rejected)[1])
    with torch.no_grad():
        got = target_logps(embedded_model, batch, prefix_attention=prefix_attention)[rejected]
    assert (got - want).abs().max().item() <= 1e-4, (got - want).abs().max().item()
    double = copy.deepcopy(embedded_model)
    double.model.layers = double.model.layers[:4]
    double.config.num_hidden_layers = 4
    double = double.double()
    want64 = torch.tensor(naive_per_turn(double, tp.chosen)[1] + naive_per_turn(double, tp.rejected)[1],
                          dtype=torch.float64)
    with torch.no_grad():
        got64 = target_logps(double, batch, prefix_attention=prefix_attention)
    torch.testing.assert_close(got64, want64, atol=1e-9, rtol=0)


def test_branch_mask_hides_other_branch():
    branch = torch.tensor([[0, 0, 1, 1, 2, 2, 3]])
    allowed = branch_attention_mask(branch, torch.float32)[0, 0] == 0
    assert allowed[3].tolist() == [True, True, True, True, False, False, False]
    assert allowed[5].tolist() == [True, True, False, False, True, True, False]
    assert allowed[6].tolist() == [True, True, False, False, False, False, True]   # padding: never empty


def test_gradients_flow_through_both_branches(tiny_llama, embedded_tokenizer):
    tokenized = _pairs(ConversationTokenizer(embedded_tokenizer))[:1]
    batch = pack_pairs(tokenized, prefix_sharing=True)
    logps = target_logps(tiny_llama, batch)
    (logps[batch.side == 1].sum()).backward()
    assert tiny_llama.model.embed_tokens.weight.grad.abs().sum() > 0
    tiny_llama.zero_grad()


def test_cache_layout_batches_pairs_with_and_without_a_rejected_side(tiny_llama, embedded_tokenizer, cache_calls):
    """A pair without a rejected side (one row, no second call) among packed pairs: the second
    call runs only the rows that have one, on their part of the first call's cache."""
    import dataclasses

    tokenized = _pairs(ConversationTokenizer(embedded_tokenizer))
    one_sided = dataclasses.replace(tokenized[1], rejected=None, prefix_len=0)
    mixed = [tokenized[0], one_sided, tokenized[2]]
    batch = pack_pairs(mixed, prefix_sharing=True, pad_id=0)
    with torch.no_grad():
        out = pair_logps(tiny_llama, batch)
    for b, tp in enumerate(mixed):
        want, _ = naive_per_turn(tiny_llama, tp.chosen)
        torch.testing.assert_close(out.chosen[b, :tp.chosen.n_turns].double(), want, atol=1e-5, rtol=1e-5)
        if tp.rejected is not None:
            want, _ = naive_per_turn(tiny_llama, tp.rejected)
            torch.testing.assert_close(out.rejected[b, :tp.rejected.n_turns].double(), want, atol=1e-5, rtol=1e-5)
    assert not out.rejected_mask[1].any()


def test_second_call_mask_hides_the_other_rows_chosen_tokens():
    from sdpo.model_forward import _second_call_mask

    mask = _second_call_mask([3, 1], head_len=3, width=2, dtype=torch.float32, device="cpu")
    allowed = (mask[:, 0] == 0)
    assert mask.shape == (2, 1, 2, 5)
    assert allowed[0].tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
    assert allowed[1].tolist() == [[True, False, False, True, False], [True, False, False, True, True]]
    assert _second_call_mask([2, 2], head_len=2, width=3, dtype=torch.float32, device="cpu") is None


def test_cache_and_mask_layouts_give_the_same_gradients(tiny_llama, embedded_tokenizer, cache_calls):
    """The rejected branch reads the shared prefix through the KV cache: its gradient reaches the
    prefix positions exactly as through the 4D mask, and as in separate forwards of each side."""
    tokenized = _pairs(ConversationTokenizer(embedded_tokenizer))
    grads = {}
    for mode in ("cache", "mask", "separate"):
        batch = pack_pairs(tokenized, prefix_sharing=mode != "separate", pad_id=0)
        logps = pair_logps(tiny_llama, batch, prefix_attention="mask" if mode == "separate" else mode)
        (logps.chosen.sum() - 2 * logps.rejected.sum()).backward()
        grads[mode] = {n: p.grad.clone() for n, p in tiny_llama.named_parameters() if p.grad is not None}
        tiny_llama.zero_grad()
    assert grads["cache"].keys() == grads["mask"].keys() and len(grads["cache"]) > 0
    for name in grads["cache"]:
        torch.testing.assert_close(grads["cache"][name], grads["mask"][name], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(grads["cache"][name], grads["separate"][name], atol=1e-5, rtol=1e-4)


def test_cache_layout_without_the_split_head_path(tiny_llama, embedded_tokenizer, monkeypatch, cache_calls):
    """Models outside the plain decoder + head list go through the CausalLM forward per call: same values."""
    import sdpo.model_forward as mf

    tokenized = _pairs(ConversationTokenizer(embedded_tokenizer))
    batch = pack_pairs(tokenized, prefix_sharing=True, pad_id=0)
    with torch.no_grad():
        split = target_logps(tiny_llama, batch)
        monkeypatch.setattr(mf, "_PLAIN_HEAD_TYPES", frozenset())
        assert mf._decoder_and_head(tiny_llama) is None
        whole = target_logps(tiny_llama, batch)
    torch.testing.assert_close(split, whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_head_log_probs_and_gradients(dtype):
    """HeadTargetLogps == log_softmax(hidden @ W.T) at the target, values and gradients (a row used
    twice, as the last prefix position predicts the first token of both branches), fp32 log-probs."""
    from sdpo.model_forward import HeadTargetLogps

    torch.manual_seed(0)
    hidden = torch.randn(5, 8, dtype=torch.float64)
    weight = torch.randn(11, 8, dtype=torch.float64)
    rows, targets = torch.tensor([0, 1, 1, 3, 4]), torch.tensor([2, 0, 10, 7, 7])
    upstream = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0], dtype=torch.float64)

    def run(fused: bool, dt):
        h, w = hidden.clone().to(dt).requires_grad_(), weight.clone().to(dt).requires_grad_()
        if fused:
            out = HeadTargetLogps.apply(h[rows], w, targets)
        else:   # the definition, in float64
            out = torch.log_softmax(h[rows].double() @ w.double().t(), -1)[torch.arange(5), targets]
        (out.double() * upstream).sum().backward()
        return out, h.grad, w.grad

    want, want_h, want_w = run(False, torch.float64)
    got, got_h, got_w = run(True, dtype)
    assert got.dtype == torch.float32           # log-probs in fp32 also from bf16 inputs
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=0.3, rtol=0.05)
    torch.testing.assert_close(got.double(), want, **tol)
    torch.testing.assert_close(got_h.double(), want_h, **tol)
    torch.testing.assert_close(got_w.double(), want_w, **tol)
    # by hand for one row: d logp / d logits = onehot(target) - softmax
    probs = torch.softmax(hidden[4] @ weight.t(), -1)
    assert abs(float(want[4]) - float(torch.log(probs[7]))) < 1e-12


def test_wrapped_models_are_called_through_their_wrapper(tiny_llama):
    """Under DDP / FSDP / DeepSpeed only the wrapper's forward syncs gradients: no decoder/head split."""
    import sdpo.model_forward as mf

    class Wrapper(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert mf._decoder_and_head(tiny_llama) is not None
    assert mf._decoder_and_head(Wrapper(tiny_llama)) is None


def test_sotopia_style_pairs_run_one_row_per_trained_turn(tiny_llama, embedded_tokenizer, monkeypatch):
    """prompt_style=sotopia: every trained turn is its own row holding the prompt the policy saw at
    that turn (the formatter's one user message) and the agent's JSON action, and its per-turn
    log-prob equals that row run alone. SOTOPIA's text itself is checked against the sotopia
    package in test_sotopia_parity; here a stand-in prompt keeps the package out of the main venv."""
    import dataclasses

    import sotopia_env.render as render
    from agents.formatter import ConversationFormat, agent_messages

    monkeypatch.setattr(render, "sotopia_action_prompt",
                        lambda task, seat, turns, turn: f"seat {seat}, turn {turn}, after: "
                                                        + " | ".join(t.argument for t in turns))
    conv = ConversationTokenizer(embedded_tokenizer)
    fmt = ConversationFormat(prompt_style="sotopia")
    pairs = [dataclasses.replace(make_pair("a", n_history=4, seg=2), format=fmt),
             dataclasses.replace(make_pair("c", n_history=2, seg=1, rejected_seg=2, words=9), format=fmt)]
    tokenized = [tokenize_pair(conv, p) for p in pairs]
    for pair, tp in zip(pairs, tokenized):
        assert tp.prefix_len == 0 and len(tp.chosen.rows) == tp.chosen.n_turns
        for side_name in ("chosen", "rejected"):
            side, turns = getattr(tp, side_name), pair.history + getattr(pair, side_name)
            own = [i for i, t in enumerate(turns) if t.agent_index == pair.agent_index]
            first, _ = pair.segment[side_name]
            for k, (ids, turn_index) in enumerate(side.rows):
                i = own[first + k]
                prompt = conv.prompt_ids(agent_messages(pair.task, pair.agent_index, turns[:i], fmt=fmt))
                assert ids[:len(prompt)] == prompt            # exactly what the policy was fed at that turn
                assert set(turn_index[len(prompt):]) == {k} and set(turn_index[:len(prompt)]) == {NO_TURN}
    for sharing in (True, False):
        batch = pack_pairs(tokenized, prefix_sharing=sharing, pad_id=0)
        assert batch.branch is None and batch.input_ids.shape[0] == sum(
            len(tp.chosen.rows) + len(tp.rejected.rows) for tp in tokenized)
        with torch.no_grad():
            out = pair_logps(tiny_llama, batch)
        for b, tp in enumerate(tokenized):
            for name, got in (("chosen", out.chosen), ("rejected", out.rejected)):
                side = getattr(tp, name)
                want = torch.zeros(side.n_turns, dtype=torch.float64)
                for ids, turn_index in side.rows:
                    one, _ = naive_per_turn(tiny_llama, type(side)(ids, turn_index, side.n_turns))
                    want += one
                torch.testing.assert_close(got[b, :side.n_turns].double(), want, atol=1e-5, rtol=1e-5)
