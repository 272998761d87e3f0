#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv (once), then the SOTOPIA benchmark on the embedded
# default (3 built-in test tasks, self-chat, offline judge). Overrides pass through:
#   bash scripts/main.sh limit=10 max_turns=20
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
setup_venv .venv test,bench
python -m benchmarks.sotopia "$@"
