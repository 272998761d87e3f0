#!/usr/bin/env bash
# The tests on a fresh machine (CI runs exactly this): set up .venv (once) and run the suite, then
# the SOTOPIA parity tests in .venv-sotopia (sotopia 0.1.5 pins pettingzoo==1.25.0 and openai<2,
# so it gets a venv of its own; SOTOPIA_PARITY_REQUIRED turns a missing package into a failure).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
setup_venv .venv test,bench
python -m pytest -q "$@"
deactivate
setup_venv .venv-sotopia test,sotopia
SOTOPIA_PARITY_REQUIRED=1 python -m pytest -q -p no:cacheprovider tests/test_sotopia_parity.py
