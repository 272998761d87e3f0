"""Every use of transformers' private API, in one place.

The rollout (``agents.hf_policy``), the judge's candidate scoring (``agents.judge``) and the
training forward (``sdpo.model_forward``) reach below transformers' public API in a few places:
the layered KV cache (``DynamicCache.layers``, each layer's ``keys`` / ``values``, subclassing
``cache_utils.DynamicLayer`` for an in-place cache), the name of the forward's cache argument, a boolean
``logits_to_keep`` mask and the config's attention implementation. They are all here, so that a transformers release that
changes them fails ``check()`` (and its test) with one message naming what moved, instead of a
shape error deep in a decode step.

The lowest transformers release this module works with is ``MIN_TRANSFORMERS``; ``pyproject.toml``
requires it.
"""
from __future__ import annotations

import functools
import inspect

from sotopia_env.errors import ConfigError

MIN_TRANSFORMERS = "5.21"
"""The first transformers release with everything below: the layered cache (``DynamicCache.layers``
of ``DynamicLayer``, ``Cache(layer_class_to_replicate=...)``, the two-tensor
``lazy_initialization``) and a boolean per-row ``logits_to_keep`` (``slice_logits_to_keep``)."""


class TransformersChanged(ConfigError):
    """The installed transformers lacks a private API this package relies on (a one-line error
    with exit code 2 from every command, like any other bad set-up)."""


@functools.cache
def check() -> None:
    """Raise TransformersChanged naming each private API that is missing from the installed
    transformers; return quietly when all are there."""
    import transformers
    from transformers import DynamicCache
    from transformers.cache_utils import Cache

    missing = []
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:
        DynamicLayer = None
        missing.append("transformers.cache_utils.DynamicLayer")
    for name in ("lazy_initialization", "update", "crop", "reset", "batch_select_indices", "get_seq_length"):
        if DynamicLayer is not None and not callable(getattr(DynamicLayer, name, None)):
            missing.append(f"DynamicLayer.{name}")
    if DynamicLayer is not None and not hasattr(DynamicLayer(), "is_initialized"):
        missing.append("DynamicLayer.is_initialized")
    if DynamicLayer is not None and len(inspect.signature(DynamicLayer.lazy_initialization).parameters) < 3:
        missing.append("DynamicLayer.lazy_initialization(key_states, value_states)")
    if "layer_class_to_replicate" not in inspect.signature(Cache.__init__).parameters:
        missing.append("Cache.__init__(layer_class_to_replicate=...)")
    from transformers import modeling_utils

    if not callable(getattr(modeling_utils, "slice_logits_to_keep", None)):
        missing.append("logits_to_keep as a boolean (batch, positions) mask (modeling_utils.slice_logits_to_keep)")
    if not hasattr(DynamicCache(), "layers"):
        missing.append("DynamicCache.layers")
    if missing:
        raise TransformersChanged(
            f"transformers {transformers.__version__} lacks what this package uses of its private API: "
            f"{', '.join(missing)} (tested from {MIN_TRANSFORMERS}; pin a release that has them)")


def attention_implementation(model) -> str:
    """The attention kernel a loaded model runs (``sdpa``, ``eager``, ``flash_attention_2``...)."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) or "sdpa"


def takes_boolean_mask(model) -> bool:
    """Whether the model's attention takes a boolean mask (True = may attend) rather than an
    additive float one."""
    return attention_implementation(model) in ("sdpa", "flash_attention_2", "flex_attention")


def cache_keyword(model) -> str:
    """``cache`` in recent transformers (``past_key_values`` is deprecated there), else the old name."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


@functools.cache
def _in_place_layer():
    """A transformers ``DynamicLayer`` that writes new keys and values into a buffer allocated
    once for the whole generation, so a decode step appends in place: the stock layer's
    ``torch.cat`` copies the whole cache every step (half of a batch-8 decode step on CPU).
    Defined on first use, so importing this module does not import transformers."""
    from transformers.cache_utils import DynamicLayer

    class InPlaceLayer(DynamicLayer):
        def __init__(self, capacity: int, **kwargs):
            super().__init__(**kwargs)
            self.capacity, self.length = capacity, 0
            self.key_buffer = self.value_buffer = None
            self.write_at = None  # static mode (see ``StaticDecode``): a device index tensor

        def update(self, key_states, value_states, *args, **kwargs):
            if self.write_at is not None:  # static: write at a device-held column, return the whole buffer
                self.key_buffer.index_copy_(2, self.write_at, key_states)
                self.value_buffer.index_copy_(2, self.write_at, value_states)
                return self.key_buffer, self.value_buffer
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if self.key_buffer is None or end > self.key_buffer.shape[-2]:  # (re)allocate, keep what is there
                size = max(end, self.capacity)
                shape = (*key_states.shape[:-2], size, key_states.shape[-1])
                keys = key_states.new_empty(shape)
                values = value_states.new_empty((*shape[:-1], value_states.shape[-1]))
                if self.length:
                    keys[..., :self.length, :] = self.keys
                    values[..., :self.length, :] = self.values
                self.key_buffer, self.value_buffer = keys, values
            self.key_buffer[..., self.length:end, :] = key_states
            self.value_buffer[..., self.length:end, :] = value_states
            self.length = end
            self.keys = self.key_buffer[..., :end, :]
            self.values = self.value_buffer[..., :end, :]
            return self.keys, self.values

        def batch_select_indices(self, indices) -> None:
            if self.length:
                self.key_buffer = self.key_buffer[indices]
                self.value_buffer = self.value_buffer[indices]
                self.keys = self.key_buffer[..., :self.length, :]
                self.values = self.value_buffer[..., :self.length, :]

        def crop(self, tokens_to_remove: int) -> None:
            super().crop(tokens_to_remove)
            self.length = self.get_seq_length()

        def reset(self) -> None:
            super().reset()
            self.length, self.key_buffer, self.value_buffer = 0, None, None

    return InPlaceLayer


def in_place_cache(capacity: int):
    """A ``DynamicCache`` whose layers hold ``capacity`` tokens without copying (grown if exceeded)."""
    from transformers import DynamicCache
    from transformers.cache_utils import Cache

    cache = DynamicCache()
    Cache.__init__(cache, layer_class_to_replicate=functools.partial(_in_place_layer(), capacity))
    return cache


def cache_layers(cache) -> list:
    """The per-layer entries of a transformers cache, each with ``keys`` and ``values`` of shape
    (batch, heads, positions, head_dim)."""
    return list(cache.layers)


def new_cache():
    """An empty stock ``DynamicCache``."""
    from transformers import DynamicCache

    return DynamicCache()


def prefix_cache(cache, length: int, rows=None):
    """A new DynamicCache holding the first ``length`` positions of ``cache`` (of batch rows ``rows``,
    all when None). Views or gathers: gradients flow back into the call that made them."""
    prefix = new_cache()
    for layer_idx, layer in enumerate(cache_layers(cache)):
        keys, values = layer.keys[:, :, :length], layer.values[:, :, :length]
        if rows is not None:
            keys, values = keys[rows], values[rows]
        prefix.update(keys, values, layer_idx)
    return prefix


def enable_activation_checkpointing(model) -> None:
    """Recompute activations in the backward instead of storing them (non-reentrant, so LoRA's
    frozen base still passes gradients through); under the name of the installed release."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
