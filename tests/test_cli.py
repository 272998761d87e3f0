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
