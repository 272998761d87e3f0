"""Every code block of README.md, run in order as a reader runs them, in a copy of the repository.

Commands run as written, with three documented changes (the README says so at its top):
- ``SIZE``: options appended to the long commands so that each finishes in seconds on a CPU
  (hydra and argparse both let the last value of an option win);
- ``pip install`` resolves with ``--dry-run`` against the venv running this test (set up by
  the same commands in ``scripts/setup.sh``), and ``python3 -m venv`` of an existing venv is
  left alone;
- ``gpt-4o`` is answered by the stand-in server (``agents.stand_in``) through ``OPENAI_API_BASE``.
Blocks that use ``prompt_style=sotopia`` run in ``.venv-sotopia`` (set up by
``scripts/test.sh``); without it they skip, unless ``SOTOPIA_VENV_REQUIRED`` is set (as CI does).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from agents.local_server import ScriptedOpenAIServer
from agents.stand_in import stand_in_answer

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# Appended to ``python -m <module>`` (and to ``bash scripts/main.sh``, which runs benchmarks.sotopia).
SIZE = {
    "benchmarks.sotopia": ["limit=1", "max_turns=2", "progress=false"],
    "sdpo.pairs": ["models.agent=embedded", "collect.max_tasks=1", "collect.max_turns=4", "sample.n=3",
                   "models.max_new_tokens=24", "negatives.max_negatives=2"],
    "sdpo.fit": ["max_steps=1", "batch_size=2", "micro_batch_size=1", "bf16=false", "lora=true", "progress=false"],
    "benchmarks.generation": ["--ks", "1", "2", "--turns", "1", "--max-new-tokens", "8"],
    "benchmarks.fit_speed": ["--steps", "1", "--rounds", "1", "--warmup", "0", "--batch", "1"],
    "benchmarks.api_concurrency": ["--episodes", "10", "--delay", "0.05"],
    "benchmarks.env_steps": ["--episodes", "20"],
    "benchmarks.load": ["--episodes", "24", "--concurrency", "8", "--kills", "1"],
}

BLOCK = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.MULTILINE | re.DOTALL)


@dataclass
class Block:
    index: int
    line: int
    language: str
    text: str

    @property
    def needs_sotopia(self) -> bool:
        return "prompt_style=sotopia" in self.text


def readme_blocks() -> list[Block]:
    text = README.read_text()
    blocks = []
    for i, m in enumerate(BLOCK.finditer(text)):
        indent, language, body = m.groups()
        body = "".join(line[len(indent):] if line.startswith(indent) else line
                       for line in body.splitlines(keepends=True))
        blocks.append(Block(i, text.count("\n", 0, m.start()) + 1, language, body))
    return blocks


def _case(module: str) -> str:
    return f'        {module}) extra=({" ".join(SIZE[module])}) ;;'


PRELUDE = """set -euo pipefail
_size() {
    extra=()
    case "$1" in
@CASES@
    esac
}
python() {
    if [ "${1:-}" = -m ]; then _size "$2"; else extra=(); fi
    command python "$@" "${extra[@]}"
}
accelerate() {
    _size sdpo.fit
    command accelerate "$@" "${extra[@]}"
}
bash() {
    case "$1" in
        scripts/test.sh) echo "scripts/test.sh is the test run itself (CI: .ci/run); not run here" ;;
        scripts/main.sh) _size benchmarks.sotopia; command bash "$@" "${extra[@]}" ;;
        *) command bash "$@" ;;
    esac
}
python3() {
    if [ "${1:-}" = -m ] && [ "${2:-}" = venv ] && [ -x "${3:-}/bin/python" ]; then return 0; fi
    command python3 "$@"
}
pip() {
    if [ "${1:-}" = install ]; then shift; command pip install --dry-run --quiet "$@"; else command pip "$@"; fi
}
""".replace("@CASES@", "\n".join(_case(m) for m in SIZE))


def sotopia_venv() -> Path | None:
    python = ROOT / ".venv-sotopia" / "bin" / "python"
    if not python.exists():
        return None
    probe = subprocess.run([str(python), "-c", "import sotopia"], capture_output=True)
    return ROOT / ".venv-sotopia" if probe.returncode == 0 else None


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A copy of the repository's files (what git tracks or would track), with the test's venvs linked in."""
    work = tmp_path_factory.mktemp("readme") / "repo"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, work / name)
    (work / ".venv").symlink_to(Path(sys.prefix))
    if sotopia_venv() is not None:
        (work / ".venv-sotopia").symlink_to(ROOT / ".venv-sotopia")
    # the copy's scripts/setup.sh finds the venv set up by the same scripts (same stamp)
    return work


@pytest.fixture(scope="module")
def stand_in():
    with ScriptedOpenAIServer(stand_in_answer, model_name="gpt-4o") as srv:
        yield srv


def run_block(block: Block, work: Path, server: ScriptedOpenAIServer) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPENAI_API_BASE": server.base_url, "OPENAI_API_KEY": "sk-stand-in",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONHASHSEED": "0", "SOTOPIA_SDPO_NO_SETUP": "1"}
    env.pop("VIRTUAL_ENV", None)
    venv = work / (".venv-sotopia" if block.needs_sotopia else ".venv")
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    if block.language == "python":
        script = work / f"readme_block_{block.index}.py"
        script.write_text(block.text)
        command = [str(venv / "bin" / "python"), script.name]
    else:
        command = ["bash", "-c", PRELUDE + block.text]
    return subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=900)


BLOCKS = readme_blocks()


def test_every_block_is_fenced_with_a_language():
    """Indented code would escape the test: every block is fenced, and text blocks hold no commands."""
    text = README.read_text()
    assert len(BLOCKS) >= 10
    assert all(b.language in ("bash", "python", "text") for b in BLOCKS), [(b.line, b.language) for b in BLOCKS]
    outside = BLOCK.sub("", text)
    indented = [line for line in outside.splitlines()
                if re.match(r"^ {4,}(python|bash|pip|accelerate|export) ", line)]
    assert not indented, f"unfenced commands in README.md: {indented}"
    for b in BLOCKS:
        if b.language == "text":
            assert not re.search(r"^(python|bash|pip|accelerate) ", b.text, re.MULTILINE), b.text


def test_ci_runs_the_readme_test_command():
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert any(b.language == "bash" and "bash scripts/test.sh" in b.text for b in BLOCKS)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.language != "text"],
                         ids=lambda b: f"line{b.line}-{b.language}")
def test_readme_block_runs(block, workdir, stand_in):
    if block.needs_sotopia and sotopia_venv() is None:
        if os.environ.get("SOTOPIA_VENV_REQUIRED"):
            pytest.fail(".venv-sotopia with the sotopia package is required (bash scripts/test.sh sets it up)")
        pytest.skip("needs .venv-sotopia (bash scripts/test.sh sets it up)")
    result = run_block(block, workdir, stand_in)
    assert result.returncode == 0, (f"README.md line {block.line} failed (exit {result.returncode}):\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    check_outputs(block, workdir, result)


def check_outputs(block: Block, work: Path, result: subprocess.CompletedProcess) -> None:
    """What each kind of command leaves behind, read back from its files."""
    text = block.text
    if "benchmarks.sotopia" in text or "scripts/main.sh" in text:
        runs = sorted((work / "runs" / "sotopia").glob("*/results.json"))
        assert runs
        for path in runs:
            doc = json.loads(path.read_text())
            assert doc["counts"]["evaluated"] >= 1
    if "sdpo.pairs out_dir=runs/pairs " in text + " ":
        pairs = (work / "runs" / "pairs" / "pairs_sdpo.jsonl").read_text().splitlines()
        assert pairs, "the quick look wrote no SDPO pair: the training block has nothing to train on"
    if "sdpo.fit" in text and "output_dir=runs/fit/sdpo" in text:
        assert list((work / "runs" / "fit" / "sdpo" / "checkpoints").glob("step-*"))
        assert list((work / "runs" / "fit" / "ddp" / "checkpoints").glob("step-*"))
    if "benchmarks.compare" in text:
        assert "goal" in result.stdout.lower()
    if "sdpo_loss" in text:
        assert "tensor" in result.stdout
    if "dry_run=true" in text:
        for line in text.splitlines():
            if m := re.search(r"out(?:put)?_dir=(\S+)", line):
                assert json.loads((work / m.group(1) / "dry_run.json").read_text())
        assert "$" in result.stdout or "price" in result.stdout.lower()
    if "sdpo.pairs.convert" in text:
        for name in ("sdpo.jsonl", "sdpo_authors.json", "sdpo_trl.jsonl"):
            assert (work / "runs" / "convert" / name).stat().st_size > 0
    if "benchmarks.prob_gap" in text:
        assert (work / "runs" / "prob_gap" / "prob_gap.png").stat().st_size > 0
    if "benchmarks.view " in text:
        page = (work / "runs" / "report.html").read_text()
        assert "<script" in page and "application/json" in page
