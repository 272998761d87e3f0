#!/usr/bin/env bash
# The tests on a fresh machine (CI runs exactly this): set up .venv-sotopia and .venv (once), run the
# suite in .venv (the README test runs its prompt_style=sotopia blocks in .venv-sotopia), then
# the SOTOPIA parity tests in .venv-sotopia (sotopia 0.1.5 pins pettingzoo==1.25.0 and openai<2,
# so it gets a venv of its own; SOTOPIA_PARITY_REQUIRED turns a missing package into a failure).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
setup_venv .venv-sotopia test,sotopia   # first: the README's test runs its prompt_style=sotopia blocks there
deactivate
setup_venv .venv test,bench
# Lint first, as it takes seconds: ruff's rule set and mypy's modules are in pyproject.toml.
ruff check .
mypy
# Two workers, a file each at a time (the README's long test first, so it is not the last to
# start); a test file's tests stay in order in one worker.
SOTOPIA_VENV_REQUIRED=1 python -m pytest -q -n 2 --dist loadfile tests/test_readme.py tests "$@"
deactivate
. .venv-sotopia/bin/activate
SOTOPIA_PARITY_REQUIRED=1 python -m pytest -q -p no:cacheprovider tests/test_sotopia_parity.py
