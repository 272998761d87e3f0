"""Shared fixtures. The embedded model is loaded once per test session."""
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def embedded_tokenizer():
    from agents.models import load_tokenizer

    return load_tokenizer("embedded")


@pytest.fixture(scope="session")
def embedded_model():
    """The embedded SmolLM2-135M-Instruct, plain fp32 on CPU, in eval mode. Do not train it in
    place: copy it (``copy.deepcopy``) if a test changes weights."""
    from agents.models import load_model

    return load_model("embedded", device="cpu").eval()


@pytest.fixture
def tiny_llama(embedded_tokenizer):
    """A tiny random Llama with the embedded tokenizer's vocabulary, for fast training tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(embedded_tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=True,
                         pad_token_id=embedded_tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def tiny_dir(tmp_path, tiny_llama, embedded_tokenizer):
    """The tiny random Llama saved as a model folder (what `model=` points at)."""
    path = tmp_path / "tiny"
    tiny_llama.save_pretrained(path)
    embedded_tokenizer.save_pretrained(path)
    return str(path)
