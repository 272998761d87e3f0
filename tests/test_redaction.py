"""The one redaction point (sotopia_env.redaction): keys from the environment, keys given in code
and bearer tokens are masked in records, configs, results, logs, the command line's error line
and its traceback, including when a server echoes the key back in its error."""
import json
import logging
import os
import subprocess
import sys

from agents.local_server import ScriptedOpenAIServer
from sotopia_env.redaction import MASK, install_log_redaction, is_secret_name, redact, register_secret
from tests.test_benchmark_sotopia import Responder, write_task_files

KEY = "sk-test-secret-7f3a9c2e11d04b5a"


def test_redact_masks_key_variables_bearer_tokens_and_registered_keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnop")
    monkeypatch.setenv("MY_SERVICE_SECRET", "s3cr3t-v4lue-long")
    monkeypatch.setenv("SHORT_API_KEY", "abc")          # too short to be a key: left alone
    monkeypatch.setenv("HOME_DIRECTORY", "/root/somewhere")  # not a key variable
    register_secret("given-in-code-0123456789")
    text = (f"key {KEY}, token hf_abcdefghijklmnop, s3cr3t-v4lue-long, abc, /root/somewhere, "
            f"given-in-code-0123456789, Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig")
    assert redact(text) == (f"key {MASK}, token {MASK}, {MASK}, abc, /root/somewhere, {MASK}, "
                            f"Authorization: Bearer {MASK}")


def test_key_variables_litellm_names_are_secret_names():
    """Every key variable LiteLLM asks for (missing ones are named by validate_environment) has a
    name the rule recognises; endpoint and region settings are not keys."""
    import litellm

    names = set()
    for model in ("gpt-4o", "anthropic/claude-3-5-sonnet", "azure/gpt-4o", "groq/llama3", "mistral/mistral-large",
                  "together_ai/x", "deepseek/deepseek-chat", "huggingface/x", "bedrock/x", "cohere/command-r"):
        names |= set(litellm.validate_environment(model=model)["missing_keys"])
    keys = {n for n in names if not n.endswith(("_API_BASE", "_API_VERSION", "_REGION_NAME"))}
    assert "OPENAI_API_KEY" in keys or "OPENAI_API_KEY" in os.environ
    assert all(is_secret_name(n) for n in keys), sorted(n for n in keys if not is_secret_name(n))
    assert not any(is_secret_name(n) for n in ("AZURE_API_BASE", "TOKENIZERS_PARALLELISM", "PATH", "KEYBOARD"))


def test_log_records_are_redacted_whatever_the_logger(monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    install_log_redaction()
    with caplog.at_level(logging.INFO):
        logging.getLogger("LiteLLM").warning("request failed with api_key=%s", KEY)
        logging.getLogger("httpx.client").info("header Authorization: Bearer %s", "tok-0123456789abcdef")
        try:
            raise RuntimeError(f"Invalid API key: Bearer {KEY}")
        except RuntimeError:
            logging.getLogger("agents.whatever").exception("call failed")
    text = caplog.text
    assert KEY not in text and "tok-0123456789abcdef" not in text
    assert "api_key=***" in text and "Invalid API key: Bearer ***" in text


def _run_benchmark(srv, out, files, *extra):
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    args = [sys.executable, "-m", "benchmarks.sotopia", "agent=openai/scripted-agent", f"agent_api_base={srv.base_url}",
            "judge=openai/scripted-judge", f"judge_api_base={srv.base_url}", "tasks=files", "limit=1",
            "max_turns=2", "progress=false", f"output_dir={out}", *[f"{k}={v}" for k, v in files.items()], *extra]
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)


def _written(folder):
    return {p: p.read_text(encoding="utf-8", errors="replace") for p in folder.rglob("*") if p.is_file()}


def test_a_key_echoed_by_the_server_is_written_and_printed_nowhere(tmp_path):
    """The judge's server answers 401 quoting the Authorization header (the key from
    OPENAI_API_KEY): the command exits 2 with one line naming the model and the variable, and the
    key is in no file of the run and in nothing printed; the same with --traceback, where the
    refusal comes on the agent's first turn."""
    files = write_task_files(tmp_path)
    with ScriptedOpenAIServer(Responder()) as srv:
        srv.fault_queue += [None, None, "echo_key"]  # agent, agent, then the judge is refused
        proc = _run_benchmark(srv, tmp_path / "run", files)
        assert srv.faults_served[-1] == "echo_key"
        srv.fault_queue.append("echo_key")
        traced = _run_benchmark(srv, tmp_path / "traced", files, "--traceback")
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the run stopped: openai/scripted-judge: AuthenticationError")
    assert "OPENAI_API_KEY" in last and "Invalid API key: Bearer ***" in last
    episodes = (tmp_path / "run" / "episodes.jsonl").read_text().splitlines()
    assert len(episodes) == 1 and "Bearer ***" in json.loads(episodes[0])["evaluation"]["error"]
    assert traced.returncode == 2 and "Traceback" in traced.stderr and "AuthenticationError" in traced.stderr
    outputs = {"stdout": proc.stdout, "stderr": proc.stderr, "traceback stdout": traced.stdout,
               "traceback stderr": traced.stderr, **_written(tmp_path / "run"), **_written(tmp_path / "traced")}
    assert "run.json" in " ".join(str(k) for k in outputs)
    assert [name for name, text in outputs.items() if KEY in text] == []
