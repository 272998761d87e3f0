"""The ``python -m`` entry points: --help written from the configs' own field docs, and bad input
as a short message with exit code 2 (sotopia_env.cli)."""
import subprocess
import sys

import pytest

from sotopia_env.cli import options

COMMANDS = [("benchmarks.sotopia", "benchmarks.sotopia", "SotopiaBenchConfig"),
            ("sdpo.fit", "sdpo.fit", "FitConfig"),
            ("sdpo.pairs", "sdpo.pairs.config", "PairsConfig")]


def run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command,module,schema", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_help_describes_every_option(command, module, schema):
    import importlib

    cls = getattr(importlib.import_module(module), schema)
    proc = run(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "powered by Hydra" not in proc.stdout and proc.stdout.startswith(f"usage: python -m {command}")
    rows = options(cls)
    assert len(rows) > 10
    for name, default, allowed, doc in rows:
        assert doc, f"{command}: option {name} has no description"
        assert f"  {name}={default}    [{allowed}]" in proc.stdout
    if command == "benchmarks.sotopia":
        assert "[test | hard | files]" in proc.stdout and "[native | sotopia]" in proc.stdout
    if command == "sdpo.fit":
        assert "[sdpo | dpo | eto | dmpo | sft | preferred_sft]" in proc.stdout and "llama31_8b" in proc.stdout


def test_bad_input_is_short_and_exits_2(tmp_path):
    proc = run("benchmarks.sotopia", "max_turns=0", f"output_dir={tmp_path}")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: max_turns must be >= 1, got 0"
    proc = run("benchmarks.sotopia", "tasks=bogus", f"output_dir={tmp_path}")
    assert proc.returncode == 2 and "test, hard, files" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("sdpo.fit", f"data={tmp_path / 'missing.jsonl'}", f"output_dir={tmp_path / 'fit'}")
    assert proc.returncode == 2 and "missing.jsonl" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("sdpo.fit", f"data={tmp_path / 'missing.jsonl'}", f"output_dir={tmp_path / 'fit'}", "--traceback")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_missing_key_fails_before_the_first_episode(tmp_path):
    """judge=gpt-4o without OPENAI_API_KEY: one line naming the variable, exit 2, within seconds,
    before any model is loaded or any episode played."""
    import os
    import time

    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.sotopia", "judge=gpt-4o", f"output_dir={tmp_path}"],
                          capture_output=True, text=True, timeout=120, env=env)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2, proc.stderr
    assert "judge 'gpt-4o' needs OPENAI_API_KEY in the environment" in proc.stderr
    assert not (tmp_path / "episodes.jsonl").exists() or not (tmp_path / "episodes.jsonl").read_text()
    assert elapsed < 30, elapsed   # python start-up and imports included; the check itself is instant
    # an api_base that does not answer, and a model string LiteLLM does not know
    proc = subprocess.run([sys.executable, "-m", "benchmarks.sotopia", "judge=openai/judge",
                           "judge_api_base=http://127.0.0.1:9/v1", f"output_dir={tmp_path}"],
                          capture_output=True, text=True, timeout=120, env={**env, "OPENAI_API_KEY": "sk-test"})
    assert proc.returncode == 2 and "api_base http://127.0.0.1:9/v1 does not answer" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "benchmarks.sotopia", "partner=gpt4o-typo", f"output_dir={tmp_path}"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and "partner 'gpt4o-typo' is not a model LiteLLM knows" in proc.stderr
