"""HFPolicy and its batched decode loop."""
import pytest
import torch

from agents import build_policy
from agents.formatter import ConversationTokenizer, agent_messages
from agents.hf_compat import in_place_cache
from agents.hf_policy import HFPolicy, end_of_turn_ids, generate_batch, sample_next
from agents.policy import TurnRequest
from sotopia_env.errors import ConfigError
from tests.factories import RENT, make_task, make_turns


def test_sample_next_greedy_rows_and_top_p():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9], [5.0, 0.0, 0.0, 0.0]])
    g = torch.Generator().manual_seed(0)
    # temperature 0: argmax regardless of the other row's sampling
    out = sample_next(logits, torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0]), g)
    assert out[0].item() == 1
    # a tiny top-p keeps only the most likely token, whatever the temperature
    for _ in range(20):
        out = sample_next(logits, torch.tensor([5.0, 5.0]), torch.tensor([0.01, 0.01]), g)
        assert out.tolist() == [1, 0]
    # top-p 0.5 on row 0 keeps tokens 1 and 3 (softmax 0.46 + 0.42 >= 0.5 reached after two)
    seen = {sample_next(logits[:1], torch.tensor([1.0]), torch.tensor([0.5]), g).item() for _ in range(200)}
    assert seen == {1, 3}


def test_sample_next_follows_the_softmax_distribution():
    """Frequencies over 20000 draws match softmax(logits / T) within 4 standard errors; a token of
    probability 0 (cut by top-p) is never drawn."""
    logits = torch.log(torch.tensor([[0.1, 0.0, 0.2, 0.3, 0.4]]).clamp(min=1e-30)).repeat(20000, 1)
    g = torch.Generator().manual_seed(1)
    draws = sample_next(logits, torch.ones(20000), torch.ones(20000), g)
    freq = torch.bincount(draws, minlength=5).double() / 20000
    want = torch.tensor([0.1, 0.0, 0.2, 0.3, 0.4], dtype=torch.float64)
    assert ((freq - want).abs() <= 4 * (want * (1 - want) / 20000).sqrt() + 1e-12).all(), freq
    hot = sample_next(logits[:2000] * 2.0, torch.full((2000,), 2.0), torch.ones(2000), g)   # T cancels the x2
    assert abs((hot == 4).double().mean().item() - 0.4) < 0.05


@pytest.mark.parametrize("prefill,decode", [("batch", "dynamic"), ("rows", "dynamic"), ("auto", "auto"),
                                            ("batch", "static"), ("rows", "static")])
def test_generate_batch_matches_generate_per_prompt(tiny_llama, prefill, decode):
    """Left-padded batch with rows leaving at different steps == greedy ``generate`` one by one,
    whether the prompts are prefilled together (padded) or one by one, and whether finished rows
    leave the batch (dynamic) or stay in a fixed-shape one (static, the CUDA graph's layout)."""
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]
    refs = [tiny_llama.generate(torch.tensor([p]), max_new_tokens=8, do_sample=False, pad_token_id=0,
                                eos_token_id=None)[0, len(p):].tolist() for p in prompts]
    # stop at the token row 1 emits at its 3rd step, so that row (and any sharing it) finishes early
    stop = refs[1][2]
    expected = []
    for r in refs:
        cut = r.index(stop) + 1 if stop in r else len(r)
        expected.append(r[:cut])
    got = generate_batch(tiny_llama, prompts, max_new_tokens=8, stop_ids=[stop], pad_id=0,
                         temperatures=[0.0] * 3, top_ps=[1.0] * 3, prefill=prefill, decode=decode)
    assert got == expected
    assert len(got[1]) <= 3 and any(len(g) == 8 for g in got)


def test_act_uses_formatter_prompt_and_batches(tiny_llama, embedded_tokenizer):
    policy = HFPolicy(model=tiny_llama, tokenizer=embedded_tokenizer, temperature=0.0, max_new_tokens=6)
    task = make_task(**RENT)
    turns = make_turns(task, 3)
    requests = [TurnRequest(task=task, agent_index=1, turns=turns), TurnRequest(task=task, agent_index=0, turns=turns[:2]),
                TurnRequest(task=task, agent_index=1, turns=turns[:1], temperature=1.0)]
    results = policy.act(requests)
    ct = ConversationTokenizer(embedded_tokenizer)
    for req, res in zip(requests, results):
        assert res.prompt_tokens == len(ct.prompt_ids(agent_messages(req.task, req.agent_index, req.turns)))
        assert res.completion_tokens == 6 and res.omitted_turns == 0  # a random model never ends its turn
        assert res.action_type in ("none", "speak", "non-verbal communication", "action", "leave")
    assert policy.stats["batches"] == 1 and policy.stats["turns"] == 3
    assert policy.stats["fallbacks"] == sum(r.fallback for r in results)
    # greedy rows are reproducible and independent of what else is in the batch
    alone = policy.act(requests[:1])[0]
    assert alone.raw == results[0].raw
    assert end_of_turn_ids(embedded_tokenizer) == [embedded_tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_long_context_drops_oldest_turns(tiny_llama, embedded_tokenizer):
    task = make_task(**RENT)
    turns = make_turns(task, 6)
    ct = ConversationTokenizer(embedded_tokenizer)
    full = len(ct.prompt_ids(agent_messages(task, 0, turns)))
    policy = HFPolicy(model=tiny_llama, tokenizer=embedded_tokenizer, temperature=0.0, max_new_tokens=2,
                      max_context_tokens=full - 20 + 2)
    ids, omitted = policy.prompt(TurnRequest(task=task, agent_index=0, turns=turns))
    assert omitted >= 1 and len(ids) <= full - 20
    assert ids == ct.prompt_ids(agent_messages(task, 0, turns[omitted:], omitted=omitted))
    result = policy.act([TurnRequest(task=task, agent_index=0, turns=turns)])[0]
    assert result.omitted_turns == omitted and policy.stats["truncated_turns"] == 1


def test_build_policy_routes_model_strings():
    from agents.litellm_policy import LiteLLMPolicy

    p = build_policy("openai/some-model", api_base="http://127.0.0.1:1/v1", temperature=0.3)
    assert isinstance(p, LiteLLMPolicy) and p.name == "openai/some-model" and p.sampling["temperature"] == 0.3
    assert isinstance(build_policy("ollama/llama3"), LiteLLMPolicy)


@pytest.mark.parametrize("prefill", ["batch", "rows"])
def test_reused_prefix_gives_the_same_tokens(tiny_llama, prefill):
    """Prefilling only the new part of a prompt on an earlier turn's KV cache (rows with different
    reuse lengths, one with none) generates exactly what a full prefill generates, also when each
    row is prefilled alone; the caches returned hold the same keys and values either way."""
    first = [[5, 6, 7, 8, 9, 10, 11, 12], [20, 21, 22, 23, 24]]
    kw = {"max_new_tokens": 4, "stop_ids": [], "pad_id": 0, "temperatures": [0.0] * 2, "top_ps": [1.0] * 2}
    out, caches = generate_batch(tiny_llama, first, return_caches=True, **kw)
    assert [c[0] for c in caches] == [p + o[:-1] for p, o in zip(first, out)]
    assert caches[0][1][0][0].shape[1] == len(first[0]) + 3  # (kv_heads, fed tokens, head_dim), padding dropped
    later = [caches[0][0] + [out[0][-1], 30, 31], caches[1][0][:6] + [40], [50, 51, 52]]
    prefixes = [(caches[0][1], len(caches[0][0])), (caches[1][1], 6), None]
    kw3 = dict(kw, temperatures=[0.0] * 3, top_ps=[1.0] * 3)
    reused, reused_caches = generate_batch(tiny_llama, later, prefixes=prefixes, prefill=prefill,
                                           return_caches=True, **kw3)
    full, full_caches = generate_batch(tiny_llama, later, prefill="batch", return_caches=True, **kw3)
    assert reused == full
    for (ids_a, kv_a), (ids_b, kv_b) in zip(reused_caches, full_caches):
        assert ids_a == ids_b
        for (k_a, v_a), (k_b, v_b) in zip(kv_a, kv_b):
            torch.testing.assert_close(k_a, k_b, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(v_a, v_b, atol=1e-5, rtol=1e-5)


def test_static_decode_gives_the_tokens_and_caches_of_dynamic_decode(tiny_llama):
    """The static layout (fixed batch and cache width, a 4D mask, finished rows kept but ignored)
    samples the same tokens from the same seed as the dynamic one, with rows reusing prefixes and
    rows ending at different steps, and hands back the same KV caches for later turns."""
    first = [[5, 6, 7, 8, 9, 10, 11, 12], [20, 21, 22, 23, 24], [60, 61, 62]]
    kw = {"max_new_tokens": 6, "pad_id": 0, "temperatures": [0.0, 0.7, 1.0], "top_ps": [1.0, 0.9, 1.0]}
    ref = generate_batch(tiny_llama, first, stop_ids=[], **kw, generator=torch.Generator().manual_seed(3))
    stop = ref[1][2]  # ends row 1 at its third token; others run on (or end where they draw it)
    runs = {}
    for decode in ("dynamic", "static"):
        out, caches = generate_batch(tiny_llama, first, stop_ids=[stop], return_caches=True, decode=decode,
                                     generator=torch.Generator().manual_seed(3), **kw)
        later = [c[0] + [o[-1], 30 + i] for i, (c, o) in enumerate(zip(caches, out))]
        prefixes = [(kv, len(ids)) for ids, kv in caches]
        runs[decode] = (out, caches, generate_batch(tiny_llama, later, stop_ids=[stop], prefixes=prefixes,
                                                    decode=decode, generator=torch.Generator().manual_seed(4),
                                                    **kw))
    (out_d, caches_d, next_d), (out_s, caches_s, next_s) = runs["dynamic"], runs["static"]
    assert out_s == out_d and next_s == next_d
    assert len(out_d[1]) == 3 and max(len(o) for o in out_d) == 6
    for (ids_d, kv_d), (ids_s, kv_s) in zip(caches_d, caches_s):
        assert ids_s == ids_d
        for (k_d, v_d), (k_s, v_s) in zip(kv_d, kv_s):
            assert k_s.shape == k_d.shape == (k_d.shape[0], len(ids_d), k_d.shape[-1])
            torch.testing.assert_close(k_s, k_d, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(v_s, v_d, atol=1e-5, rtol=1e-5)


def test_a_failed_graph_capture_warns_once_and_decodes_eagerly(embedded_tokenizer):
    """On CPU there is no CUDA graph: asking for one warns, remembers the model, and gives the
    dynamic decode's tokens."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(embedded_tokenizer), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)
    model = LlamaForCausalLM(config).eval()
    prompts = [[5, 6, 7], [8, 9]]
    kw = {"max_new_tokens": 5, "stop_ids": [], "pad_id": 0, "temperatures": [0.0] * 2, "top_ps": [1.0] * 2}
    want = generate_batch(model, prompts, decode="dynamic", **kw)
    with pytest.warns(UserWarning, match="CUDA graph capture of the decode step failed"):
        assert generate_batch(model, prompts, decode="graph", **kw) == want
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert generate_batch(model, prompts, decode="graph", **kw) == want


def test_generate_batch_rejects_an_unknown_decode():
    with pytest.raises(ValueError, match="decode='fast'; allowed: auto, dynamic, static, graph"):
        generate_batch(None, [[1, 2]], max_new_tokens=1, stop_ids=[], pad_id=0, temperatures=[0.0],
                       top_ps=[1.0], decode="fast")


def test_generate_batch_rejects_an_unknown_prefill():
    with pytest.raises(ValueError, match="prefill='padded'; allowed: auto, batch, rows"):
        generate_batch(None, [[1, 2]], max_new_tokens=1, stop_ids=[], pad_id=0, temperatures=[0.0],
                       top_ps=[1.0], prefill="padded")


def test_policy_reuses_previous_turns_across_an_episode(tiny_llama, embedded_tokenizer):
    task = make_task(**RENT)
    turns = make_turns(task, 4)
    cached = HFPolicy(model=tiny_llama, tokenizer=embedded_tokenizer, temperature=0.0, max_new_tokens=3)
    plain = HFPolicy(model=tiny_llama, tokenizer=embedded_tokenizer, temperature=0.0, max_new_tokens=3,
                     prefix_cache_tokens=0)
    static = HFPolicy(model=tiny_llama, tokenizer=embedded_tokenizer, temperature=0.0, max_new_tokens=3,
                      decode="static")  # the CUDA-graph layout, run eagerly
    lengths = []
    for n in (0, 2, 4):  # seat 0's successive turns: each prompt extends the previous one
        request = [TurnRequest(task=task, agent_index=0, turns=turns[:n])]
        assert cached.act(request)[0].raw == plain.act(request)[0].raw == static.act(request)[0].raw
        lengths.append(cached.prompt(request[0])[0].__len__())
    # every earlier prompt is a token prefix of the next (one formatter), so all of it is reused
    assert cached.stats["reused_tokens"] >= lengths[0] + lengths[1]
    assert cached.stats["prompt_tokens"] == sum(lengths)
    assert plain.stats["reused_tokens"] == 0
    assert static.stats["reused_tokens"] == cached.stats["reused_tokens"]
    with pytest.raises(ConfigError, match="decode='fast'; allowed"):
        HFPolicy(model=tiny_llama, tokenizer=embedded_tokenizer, decode="fast")


def test_in_place_cache_equals_the_stock_cache(tiny_llama):
    """Logits through the preallocated cache equal the stock DynamicCache's at every step: after a
    prefill, through growth past its capacity, and after rows leave the batch."""
    from transformers import DynamicCache

    from agents.hf_compat import cache_keyword

    torch.manual_seed(0)
    ids = torch.randint(1, 100, (3, 6))
    kw = cache_keyword(tiny_llama)
    stock, ours = DynamicCache(), in_place_cache(8)   # 6 prefilled + 2 steps fit; the 3rd step grows it
    with torch.inference_mode():
        for step in range(5):
            a = tiny_llama(input_ids=ids, use_cache=True, **{kw: stock}).logits
            b = tiny_llama(input_ids=ids, use_cache=True, **{kw: ours}).logits
            assert torch.allclose(a, b, atol=1e-6), step
            assert ours.get_seq_length() == stock.get_seq_length() == 6 + step
            ids = a[:, -1:].argmax(-1)
            if step == 2:
                keep = torch.tensor([0, 2])
                stock.batch_select_indices(keep)
                ours.batch_select_indices(keep)
                ids = ids[keep]
    assert ours.layers[0].key_buffer.shape[-2] >= 10 and ours.layers[0].keys.shape[0] == 2


def test_attention_kernels_leave_out_cudnn_on_cuda_only():
    from agents.hf_policy import attention_kernels

    before = torch.backends.cuda.cudnn_sdp_enabled()
    with attention_kernels(torch.device("cpu")):
        assert torch.backends.cuda.cudnn_sdp_enabled() == before
    with attention_kernels(torch.device("cuda", 0)):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled() == before


def test_generation_benchmark_players_count_their_tokens(tiny_llama, embedded_tokenizer):
    """benchmarks.generation's sequential (one generate a turn) and batched (runner) players play the
    same episodes and count every generated token: fixed-length turns give turns x max_new_tokens."""
    from benchmarks.generation import _tasks, play_batched, play_sequential

    tasks = _tasks()[:2]
    policy = HFPolicy(model=tiny_llama, tokenizer=embedded_tokenizer, temperature=0.7, max_new_tokens=5)
    assert play_sequential(policy, tasks, turns=2, max_new_tokens=5, temperature=0.7, fixed_length=True) == 2 * 2 * 5
    batched = play_batched(policy, tasks, turns=2)
    assert 0 < batched <= 2 * 2 * 5
