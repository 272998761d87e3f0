"""The one module that touches transformers' private API: it works on the installed release, it
names what is missing when a release changes it, and the floor in pyproject.toml is its floor."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from agents import hf_compat
from sotopia_env.errors import ConfigError


def test_installed_transformers_has_everything_used():
    hf_compat.check.cache_clear()
    hf_compat.check()


def test_a_changed_release_is_named_in_one_line(monkeypatch):
    from transformers.cache_utils import DynamicLayer

    monkeypatch.delattr(DynamicLayer, "batch_select_indices")
    hf_compat.check.cache_clear()
    try:
        with pytest.raises(ConfigError) as raised:
            hf_compat.check()
    finally:
        monkeypatch.undo()
        hf_compat.check.cache_clear()
    message = str(raised.value)
    assert "DynamicLayer.batch_select_indices" in message and "\n" not in message
    assert hf_compat.MIN_TRANSFORMERS in message


def test_pyproject_requires_the_floor():
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert re.findall(r'^\s*"(transformers[^"]*)"', pyproject, re.M) == [f"transformers>={hf_compat.MIN_TRANSFORMERS}"]


def test_prefix_cache_is_a_view_of_the_first_positions(tiny_llama):
    ids = torch.arange(1, 9).unsqueeze(0).repeat(2, 1)
    cache = hf_compat.new_cache()
    tiny_llama(input_ids=ids, use_cache=True, **{hf_compat.cache_keyword(tiny_llama): cache})
    prefix = hf_compat.prefix_cache(cache, 5, rows=torch.tensor([1]))
    full, cut = hf_compat.cache_layers(cache), hf_compat.cache_layers(prefix)
    assert len(cut) == len(full)
    for a, b in zip(full, cut):
        assert b.keys.shape[0] == 1 and b.keys.shape[2] == 5
        assert torch.equal(b.keys[0], a.keys[1, :, :5]) and torch.equal(b.values[0], a.values[1, :, :5])


def test_boolean_mask_follows_the_attention_implementation(tiny_llama):
    assert hf_compat.attention_implementation(tiny_llama) in ("sdpa", "eager")
    assert hf_compat.takes_boolean_mask(tiny_llama) == (hf_compat.attention_implementation(tiny_llama) == "sdpa")
