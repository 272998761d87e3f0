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
        assert "[bc | align | test | hard | all | files]" in proc.stdout and "[native | sotopia]" in proc.stdout
    if command == "sdpo.fit":
        assert "[sdpo | dpo | eto | dmpo | sft | preferred_sft]" in proc.stdout and "llama31_8b" in proc.stdout


def test_bad_input_is_short_and_exits_2(tmp_path):
    proc = run("benchmarks.sotopia", "max_turns=0", f"output_dir={tmp_path}")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: max_turns must be >= 1, got 0"
    proc = run("benchmarks.sotopia", "tasks=bogus", f"output_dir={tmp_path}")
    assert proc.returncode == 2 and "bc, align, test, hard, all, files" in proc.stderr and "Traceback" not in proc.stderr
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


# --- bad input: one line, exit code 2, nothing written -------------------------------------------
# Each case is a command that must fail early: at most two lines on stderr holding the key words,
# exit code 2, and no output folder (``out`` under tmp_path) left behind.
BAD_INPUTS = [
    ("hf-id-not-cached", ["benchmarks.sotopia", "agent=hf:nobody/nothing", "output_dir={out}"],
     ["agent=hf:nobody/nothing", "Hugging Face cache"]),
    ("typo-checkpoint", ["benchmarks.sotopia", "agent=ckpts/sdpoo", "output_dir={out}"],
     ["agent=ckpts/sdpoo", "no such folder"]),
    ("missing-task-file", ["benchmarks.sotopia", "tasks=files", "scenarios={tmp}/nope.jsonl",
                           "profiles={tmp}/nope.jsonl", "combos={tmp}/nope.jsonl", "output_dir={out}"],
     ["nope.jsonl"]),
    ("fit-empty-pairs", ["sdpo.fit", "data={tmp}/empty.jsonl", "output_dir={out}"],
     ["empty.jsonl", "holds no pairs"]),
    ("fit-folder-without-model", ["sdpo.fit", "model={tmp}/ckpts", "data={tmp}/empty.jsonl", "output_dir={out}"],
     ["model=", "ckpts", "holds no model"]),
    ("pairs-missing-model", ["sdpo.pairs", "models.judge=runs/no-such-judge", "out_dir={out}"],
     ["models.judge=runs/no-such-judge", "no such folder"]),
    ("compare-missing-run", ["benchmarks.compare", "{tmp}/nonexistent/results.json"],
     ["nonexistent/results.json", "no results.json here"]),
    ("prob-gap-typo-checkpoint", ["benchmarks.prob_gap", "embedded", "ckpts/sdpoo", "--out", "{out}"],
     ["checkpoints=ckpts/sdpoo", "no such folder"]),
    ("pair-stats-missing-file", ["benchmarks.pair_stats", "{tmp}/nope.jsonl", "--out", "{out}"],
     ["nope.jsonl", "does not exist"]),
]


@pytest.mark.parametrize("args,words", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, args, words):
    (tmp_path / "ckpts").mkdir()          # an existing folder that holds no model
    (tmp_path / "empty.jsonl").write_text("")
    out = tmp_path / "out"
    args = [a.format(tmp=tmp_path, out=out) for a in args]
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert 1 <= len(lines) <= 2 and lines[0].startswith("error: "), proc.stderr
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpts", "empty.jsonl"]   # no hydra folder or log


def test_argparse_command_traceback_on_request(tmp_path):
    """--traceback (taken out before argparse sees it) prints the stack of our own error; exit 2."""
    proc = run("benchmarks.compare", str(tmp_path / "nonexistent"), "--traceback")
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "DataError" in proc.stderr


def test_model_strings_local_or_litellm(tmp_path, monkeypatch):
    """One convention decides local (transformers) or LiteLLM; a path-like string naming no folder
    is a ConfigError naming the option, not a LiteLLM model."""
    from agents.models import check_model_source, is_local_model
    from sdpo.pairs import pipeline
    from sotopia_env.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpts").mkdir()
    assert pipeline.is_local_model is is_local_model
    for name in ("embedded", "hf:a/b", "./x", "../x", "/x/y", "~/x", "runs/fit/sdpoo", "ckpts", "ckpts/sdpoo"):
        assert is_local_model(name), name
    for name in ("gpt-4o", "openai/my-model", "hosted_vllm/x", "ollama/llama3", "local"):
        assert not is_local_model(name), name
    with pytest.raises(ConfigError, match=r"^agent=ckpts/sdpoo: no such folder"):
        check_model_source("ckpts/sdpoo", option="agent")
    with pytest.raises(ConfigError, match=r"^model=ckpts: ckpts holds no model"):
        check_model_source("ckpts")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"^partner=hf:nobody/nothing: .* not in the Hugging Face cache"):
        check_model_source("hf:nobody/nothing", option="partner")
    with pytest.raises(ConfigError, match="not a local folder nor a Hugging Face id"):
        check_model_source("a/b/c d")
    check_model_source("embedded")   # the shipped model: no error, nothing loaded


def test_torn_line_warned_once_per_file(tmp_path):
    """A run reads its store several times (done keys, records, counts): a torn last line is
    reported once, not once per read; another file's torn line still gets its own warning."""
    import warnings

    from sotopia_env.episode import EpisodeStore, read_jsonl

    store = EpisodeStore(tmp_path / "episodes.jsonl")
    store.path.write_text('{"episode_id": "x", "tur', encoding="utf-8")   # a crash mid-write, nothing else
    other = tmp_path / "ledger.jsonl"
    other.write_text('{"key": 1}\n{"ke', encoding="utf-8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert store.done_keys() == set() and store.records() == [] and len(store) == 0
        assert [obj for _, obj in read_jsonl(other)] == [{"key": 1}] and len(list(read_jsonl(other))) == 1
    torn = [str(w.message) for w in caught if "torn last line" in str(w.message)]
    assert len(torn) == 2 and "episodes.jsonl line 1" in torn[0] and "ledger.jsonl line 2" in torn[1], torn
