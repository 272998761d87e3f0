"""sdpo.fit: toy overfit, exact resume, checkpoints that load, errors, the hydra command line."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sdpo.fit import DEMO_PAIRS, FitConfig, LossName, Schedule, fit, lr_lambda
from sdpo.pairs_schema import read_pairs, write_pair
from sotopia_env.errors import ConfigError, DataError
from tests.pair_fixtures import make_pair

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def demo_copy(tmp_path):
    """The first 8 shipped demo pairs, copied so the reference cache is written beside the copy."""
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(Path(DEMO_PAIRS).read_text().splitlines(keepends=True)[:8]))
    return str(path)


def _cfg(model, data, out, **kw):
    base = dict(model=model, data=data, output_dir=str(out), batch_size=2, micro_batch_size=1, lr=1e-2,
                progress=False)
    base.update(kw)
    return FitConfig(**base)


def test_demo_pairs_are_valid():
    pairs = read_pairs(DEMO_PAIRS)
    assert len(pairs) >= 8 and all(p.kind == "sdpo" and p.rejected for p in pairs)


@pytest.mark.parametrize("loss, lr, drop", [("sdpo", 1e-2, 0.5), ("sft", 3e-2, 0.9)])
def test_toy_overfit_loss_goes_down(tiny_dir, demo_copy, tmp_path, loss, lr, drop):
    result = fit(_cfg(tiny_dir, demo_copy, tmp_path / "out", loss=loss, lr=lr, max_steps=8, epochs=1))
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 8 and losses[-1] < drop * losses[0], losses
    if loss == "sdpo":
        assert losses[0] == pytest.approx(0.6931, abs=1e-3)   # policy == reference: ln 2
        last = result.history[-1]
        assert last["rewards/accuracies"] == 1.0 and last["rewards/margins"] > 1
        assert "logps/gap_turn_0" in last and "logps/chosen" in last
    log = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in log] == list(range(1, 9))
    # the reference was cached in the run's folder (never beside the data) and is reused by the next run
    assert len(list((tmp_path / "out" / "reference").glob("pairs.jsonl.ref-*.pt"))) == (1 if loss == "sdpo" else 0)
    assert not list(Path(demo_copy).parent.glob("*.ref-*.pt"))


@pytest.mark.parametrize("loss", ["sdpo", "dmpo", "sft"])
def test_micro_step_is_the_loss_of_each_pair_on_its_own(tiny_llama, embedded_tokenizer, loss):
    """micro_step on one packed micro-batch (shared history, the cache layout) == sdpo.losses applied
    to each pair's log-probs computed alone and unpacked, summed over the pairs. The policy differs
    from the reference and beta and gamma are off their defaults, so a wrong reference row, a
    dropped setting or a packing error changes the loss."""
    import copy
    import dataclasses

    from agents.formatter import ConversationTokenizer
    from sdpo import losses
    from sdpo.fit import PrefixAttention, micro_step
    from sdpo.model_forward import pack_pairs, pair_logps
    from sdpo.reference import compute_reference
    from sdpo.tokenize import tokenize_pair

    conv = ConversationTokenizer(embedded_tokenizer)
    pairs = [tokenize_pair(conv, make_pair("m1", n_history=2)), tokenize_pair(conv, make_pair("m2", seg=3))]
    cfg = FitConfig(loss=loss, beta=0.3, gamma=0.4)
    if loss == "sft":   # behavioural cloning reads the chosen side only, as in fit
        pairs = [dataclasses.replace(tp, rejected=None, prefix_len=0) for tp in pairs]
    reference = {} if loss == "sft" else compute_reference(tiny_llama, pairs)
    policy = copy.deepcopy(tiny_llama)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))   # a trained policy: no longer the reference

    pad = embedded_tokenizer.pad_token_id
    out = micro_step(policy, pack_pairs(pairs, pad_id=pad), reference, cfg,
                     pair_ids=[tp.pair_id for tp in pairs], prefix_attention=PrefixAttention.cache)
    expected, margins = 0.0, []
    for tp in pairs:
        lp = pair_logps(policy, pack_pairs([tp], prefix_sharing=False, pad_id=pad))
        if loss == "sft":
            expected += losses.sft_loss(lp.chosen_tokens, lp.chosen_token_mask).sum().item()
            continue
        ref_chosen, ref_rejected = reference[tp.pair_id]
        settings = {"beta": 0.3, "gamma": 0.4} if loss == "dmpo" else {"beta": 0.3}
        loss_fn = losses.dmpo_loss if loss == "dmpo" else losses.sdpo_loss
        per_pair, chosen, rejected = loss_fn(lp.chosen, lp.rejected, ref_chosen[None], ref_rejected[None],
                                             lp.chosen_mask, lp.rejected_mask, **settings)
        expected += per_pair.sum().item()
        margins.append((chosen - rejected).item())
    assert out.loss.requires_grad and out.loss.item() == pytest.approx(expected, rel=1e-5)
    if loss == "sft":
        assert out.metrics() == {} and out.turn_gaps() is None
    else:
        assert abs(expected - 2 * 0.6931) > 1e-3   # the reference differs from the policy
        assert out.metrics()["rewards/margins"] == pytest.approx(sum(margins) / 2, rel=1e-5)


def test_resume_is_exact(tiny_dir, demo_copy, tmp_path):
    """Interrupted after 2 of 4 steps and resumed == uninterrupted (weights bit for bit). Attention
    dropout is on so that the RNG state matters too."""
    kw = dict(max_steps=4, dropout=0.1, save_every=0, micro_batch_size=2)
    whole = fit(_cfg(tiny_dir, demo_copy, tmp_path / "whole", **kw))
    first = fit(_cfg(tiny_dir, demo_copy, tmp_path / "parts", stop_after_steps=2, **kw))
    assert first.step == 2 and first.checkpoint.name == "step-000002"
    second = fit(_cfg(tiny_dir, demo_copy, tmp_path / "parts", **kw))
    assert second.step == 4
    a = load_file(whole.checkpoint / "model.safetensors")
    b = load_file(second.checkpoint / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in whole.history] == [h["loss"] for h in second.history]
    c = load_file(first.checkpoint / "model.safetensors")
    assert not all(torch.equal(a[k], c[k]) for k in a)
    # trainer state holds tensors and plain containers only
    state = torch.load(second.checkpoint / "trainer_state.pt", weights_only=True)
    assert state["step"] == 4 and "optimizer" in state
    meta = json.loads((second.checkpoint / "fit_meta.json").read_text())
    assert meta["model"] == tiny_dir and "im_start" in meta["chat_template"]
    assert "loss: sdpo" in (second.checkpoint / "fit_config.yaml").read_text()


def test_resume_survives_a_torn_metrics_line(tiny_dir, demo_copy, tmp_path):
    """A run killed while appending to metrics.jsonl leaves a torn last line: resume skips it with a
    warning (the shared JSONL reader) and goes on, instead of a raw JSONDecodeError."""
    out = tmp_path / "out"
    fit(_cfg(tiny_dir, demo_copy, out, max_steps=4, stop_after_steps=2, save_every=1))
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 3, "loss": 0.6')   # the crash
    with pytest.warns(UserWarning, match="torn last line"):
        result = fit(_cfg(tiny_dir, demo_copy, out, max_steps=4, save_every=1))
    assert result.step == 4
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_checkpoint_loads_as_policy(tiny_dir, demo_copy, tmp_path):
    from agents.models import load_model

    result = fit(_cfg(tiny_dir, demo_copy, tmp_path / "out", max_steps=1, lora=True, lora_r=4))
    assert (result.checkpoint / "adapter_config.json").exists()
    model = load_model(str(result.checkpoint), device="cpu")
    assert sum("lora_" in n for n, _ in model.named_parameters()) > 0
    # the README's route: the run's output folder stands for its latest checkpoint
    from agents import build_policy
    from agents.models import resolve_model_path

    assert resolve_model_path(str(tmp_path / "out")) == str(result.checkpoint)
    policy = build_policy(str(tmp_path / "out"), max_new_tokens=4, device="cpu")
    # the policy generates with the adapter folded into the weights: no peft layer, same logits
    assert not any("lora_" in n for n, _ in policy.model.named_parameters())
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    with torch.no_grad():
        assert torch.allclose(policy.model(ids).logits, model.eval()(ids).logits, atol=1e-4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no model: expected a Hugging Face model folder"):
        build_policy(str(tmp_path / "empty"))


def test_nan_loss_stops_with_a_clear_error(tmp_path, tiny_llama, embedded_tokenizer, demo_copy):
    with torch.no_grad():
        tiny_llama.model.norm.weight.fill_(float("nan"))
    tiny_llama.save_pretrained(tmp_path / "nan")
    embedded_tokenizer.save_pretrained(tmp_path / "nan")
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 1 .*pairs \['sdpo:"):
        fit(_cfg(str(tmp_path / "nan"), demo_copy, tmp_path / "out", max_steps=1, reference_cache=False))


def test_user_errors(tiny_dir, tmp_path):
    sft_pairs = tmp_path / "sft.jsonl"
    write_pair(sft_pairs, make_pair("s1", kind="sft"))
    with pytest.raises(DataError, match=r"sft.jsonl: field 'rejected': loss=sdpo needs a rejected side"):
        fit(_cfg(tiny_dir, str(sft_pairs), tmp_path / "out", max_steps=1))
    with pytest.raises(ConfigError, match="batch_size 6 must be a multiple of micro_batch_size 4"):
        FitConfig(batch_size=6, micro_batch_size=4)
    with pytest.raises(ConfigError, match="loss='ppo' is not allowed; allowed: sdpo, dpo"):
        FitConfig(loss="ppo")
    with pytest.raises(ConfigError, match="prefix_attention='flash' is not allowed; allowed: auto, cache, mask"):
        FitConfig(prefix_attention="flash")
    with pytest.raises(ConfigError, match="beta"):
        FitConfig(beta=float("nan"))
    with pytest.raises(ConfigError, match="gamma must be strictly between 0 and 1"):
        FitConfig(loss=LossName.dmpo, gamma=1.0)
    with pytest.raises(ConfigError, match="prefix_attention=cache cannot run with gradient_checkpointing"):
        FitConfig(prefix_attention="cache", gradient_checkpointing=True)


def test_schedule():
    assert [round(lr_lambda(s, 10, 2, Schedule.cosine), 4) for s in (0, 1, 2, 7, 9)] == [0.5, 1.0, 1.0, 0.3087, 0.0381]
    assert lr_lambda(5, 10, 0, Schedule.constant) == 1.0


def test_presets_compose():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "sdpo" / "conf"), version_base=None):
        for preset, lr, loss in (("llama31_8b", 1e-6, "sdpo"), ("mistral_7b", 5e-7, "sdpo"),
                                 ("llama31_8b_sft", 1e-5, "sft"), ("mistral_7b_sft", 3e-6, "sft")):
            cfg = OmegaConf.to_object(compose("fit", overrides=[f"+preset={preset}", "epochs=1"]))
            assert (cfg.lr, cfg.loss.value, cfg.batch_size, cfg.epochs, cfg.seed) == (lr, loss, 32, 1, 11)


def test_command_line(tiny_dir, demo_copy, tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "sdpo.fit", f"model={tiny_dir}", f"data={demo_copy}",
                           f"output_dir={out}", "max_steps=1", "batch_size=2", "micro_batch_size=2", "loss=dmpo",
                           "gamma=0.5", "progress=false"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "step 1/1 loss=0.6931" in proc.stdout and (out / "checkpoints" / "step-000001").is_dir()
    bad = subprocess.run([sys.executable, "-m", "sdpo.fit", "loss=ppo"], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert bad.returncode != 0 and "ppo" in bad.stderr and "sdpo" in bad.stderr


@pytest.mark.slow
def test_embedded_model_trains_on_demo_pairs(tmp_path):
    """Two LoRA steps of the embedded model on two of the shipped pairs (the shortest one-turn and the
    shortest multi-turn segment, to keep the CPU test fast); the adapter loads by its `embedded` base id."""
    from agents.models import load_model

    def size(pair):
        return sum(len(t.argument) for t in pair.history + pair.chosen + pair.rejected)

    def length(pair):
        return pair.segment["chosen"][1] - pair.segment["chosen"][0] + 1

    shipped = read_pairs(DEMO_PAIRS)
    data = tmp_path / "two.jsonl"
    for pair in (min((p for p in shipped if length(p) == 1), key=size),
                 min((p for p in shipped if length(p) > 1), key=size)):
        write_pair(data, pair)
    result = fit(FitConfig(model="embedded", data=str(data), output_dir=str(tmp_path / "emb"), batch_size=1,
                           micro_batch_size=1, max_steps=2, lora=True, lr=1e-3, progress=False))
    assert result.step == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
    assert result.history[0]["loss"] == pytest.approx(0.6931, abs=1e-3)
    config = json.loads((result.checkpoint / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "embedded"
    model = load_model(str(result.checkpoint), device="cpu")
    assert any("lora_" in n for n, _ in model.named_parameters())


def test_reference_is_base_with_adapter_disabled_and_cached(tiny_llama, embedded_tokenizer, tmp_path):
    import copy

    from peft import LoraConfig, get_peft_model

    from agents.formatter import ConversationTokenizer
    from sdpo import reference as ref
    from sdpo.model_forward import pack_pairs, pair_logps
    from sdpo.tokenize import tokenize_pair

    conv = ConversationTokenizer(embedded_tokenizer)
    pairs = [tokenize_pair(conv, make_pair("r1", n_history=2)), tokenize_pair(conv, make_pair("r2", seg=3))]
    base = ref.compute_reference(tiny_llama, pairs)
    fingerprint = ref.weights_fingerprint(tiny_llama)
    lora = get_peft_model(copy.deepcopy(tiny_llama), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_()                     # a trained adapter: the policy now differs from the base
    with_adapter = ref.compute_reference(lora, pairs)
    assert all(torch.equal(base[k][0], with_adapter[k][0]) and torch.equal(base[k][1], with_adapter[k][1])
               for k in base)
    policy = pair_logps(lora, pack_pairs(pairs)).chosen
    assert not torch.allclose(policy[0, :2], base["r1"][0])
    assert base["r2"][0].shape == (3,) and base["r1"][1].shape == (2,)
    # the cache round-trips with weights_only loading and answers only to its own key
    path = tmp_path / "pairs.jsonl.ref-k.pt"
    ref.save_reference(path, "k", base, {"model": "tiny"})
    loaded = ref.load_reference(path, "k")
    assert loaded.keys() == base.keys() and all(torch.equal(loaded[k][0], base[k][0]) for k in base)
    assert ref.load_reference(path, "other") is None
    with torch.no_grad():
        tiny_llama.model.norm.weight.add_(1e-3)
    assert ref.weights_fingerprint(tiny_llama) != fingerprint
    with torch.no_grad():
        tiny_llama.model.norm.weight.sub_(1e-3)
