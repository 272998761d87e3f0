"""The SOTOPIA evaluation: an agent model plays the test tasks in self-chat or against a
partner model, a judge scores the seven dimensions, and the results come out as a Markdown
table (mean ± 95 % CI per dimension and overall, all tasks and the hard subset), a JSON
document and PNG plots.

    python -m benchmarks.sotopia                      # a quick look: embedded model, 3 built-in
                                                      # test tasks, 6 turns, self-chat, local judge
    python -m benchmarks.sotopia agent=runs/fit/sdpo limit=null max_turns=20 judge=gpt-4o
    python -m benchmarks.sotopia agent=openai/my-model agent_api_base=http://localhost:8000/v1 \\
        partner=gpt-4o judge=gpt-4o tasks=hard limit=null max_turns=20

The defaults are a quick look that finishes in a few minutes on a 2-core CPU. SOTOPIA's and
the paper's evaluation is ``limit=null max_turns=20 judge=gpt-4o`` (``max_turns=10`` for
the paper's 10-turn comparison); a run with another turn limit says so when it starts, and
``benchmarks.compare`` labels its columns with the limit.

Options (hydra structured config, ``SotopiaBenchConfig``; ``--help`` lists them):

* ``agent``: ``embedded`` (default), a Hugging Face id (``hf:<id>``), a local folder (an
  ``sdpo.fit`` checkpoint), or a LiteLLM model string (``gpt-4o``, ``openai/<name>`` with
  ``agent_api_base``).
* ``partner``: ``self`` (self-chat: the agent plays both seats; one episode a task) or a
  model as above (the agent plays each seat once: two episodes a task, the paper's 900).
* ``judge``: ``local`` (the offline LocalJudge on the embedded model) or a LiteLLM model
  (``gpt-4o``, the paper's judge).
* ``tasks``: ``test`` (the built-in test set), ``hard`` (its hard subset), another built-in
  split (``bc``, ``align``, ``all``) or ``files`` (official SOTOPIA JSON/JSONL through
  ``sotopia_env.loader``: ``scenarios``, ``profiles``, ``combos``, optionally ``relationships``
  to check each combo's pair against SOTOPIA's relationship profiles; what loading read and
  cleaned is printed in one paragraph); ``task_ids`` / ``task_tags``: only these combos or
  scenarios, or scenarios with these tags; ``limit``: only the first N tasks (``null``: all).
  The same options, under ``collect.``, choose the tasks of ``python -m sdpo.pairs``.

* ``prompt_style``: ``native`` (default) or ``sotopia`` (SOTOPIA 0.1.5's own agent and
  evaluator prompts, byte for byte; ``pip install -e ".[sotopia]"``). The style is printed
  with the results and stored in ``run.json``; resuming with another style is refused.

Seats: in self-chat both seats are the agent. Against a partner the agent plays each seat
once, except with ``tasks=hard`` (or an ``environment_list``), where a task with a fixed ``tested_seat`` is played only
in that seat (the hard subset's convention). On ``tasks=test`` every task is played in both
seats and the hard rows of the table take the tested-seat episodes, so no episode is wasted.

Resuming: episodes go to ``<output_dir>/episodes.jsonl`` as they finish; running the same
command again skips every task already stored and evaluated (nothing is run or paid for
twice) and retries the ones whose judge failed. ``run.json`` records the settings; a resumed
run with different model, partner, judge, sampling or turn settings is refused.

Outputs beside the store: ``results.json``, ``results.md``, ``scores.png`` (scores per
dimension) and ``output_length.png`` (average words per action at each turn, the paper's
Figure 3). ``python -m benchmarks.compare`` puts several runs in the paper's Table-1 layout.
"""
from __future__ import annotations

import json
import re
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from agents.models import is_local_model
from agents.rules_judge import RulesJudge, is_rules_judge, rule_of
from sotopia_env.episode import EpisodeStore
from sotopia_env.errors import ConfigError
from sotopia_env.loader import LoadReport
from sotopia_env.redaction import redact
from sotopia_env.task_source import TaskSet, TaskSource

from . import plots, results

SOTOPIA_MAX_TURNS = 20
"""SOTOPIA's (and the paper's) turn limit."""
EMBEDDED_MAX_NEW_TOKENS = 48
"""Default reply budget of local models: short, so that the default run finishes in minutes on a CPU."""
API_MAX_NEW_TOKENS = 1024
"""Default reply budget of API models (it only caps; they rarely use it)."""
# Settings that must match for a resumed run to reuse stored episodes.
RESUME_FIELDS = ("agent", "agent_api_base", "partner", "partner_api_base", "judge", "judge_api_base",
                 "temperature", "top_p", "max_new_tokens", "max_turns", "max_stale_turns", "prompt_style")


class PromptStyle(str, Enum):
    """How prompts are rendered (``sotopia_env.render``)."""

    native = "native"
    sotopia = "sotopia"


@dataclass
class SotopiaBenchConfig(TaskSource):
    """``python -m benchmarks.sotopia`` settings; the task options (``tasks``, ``scenarios``,
    ``task_ids`` ...) are ``sotopia_env.task_source.TaskSource``'s, shared with ``sdpo.pairs``."""

    agent: str = "embedded"
    """Tested model: embedded, hf:<id>, a local folder/checkpoint, or a LiteLLM model string."""
    agent_api_base: Optional[str] = None
    """OpenAI-compatible endpoint of a LiteLLM agent model (e.g. http://localhost:8000/v1)."""
    partner: str = "self"
    """``self`` for self-chat, or the partner model (same forms as ``agent``)."""
    partner_api_base: Optional[str] = None
    """OpenAI-compatible endpoint of a LiteLLM partner model."""
    judge: str = "local"
    """``local`` (offline LocalJudge on the embedded model), ``rules`` / ``rules:<rule>`` (the
    programmatic judge of agents.rules_judge, for tasks whose goal is its rule) or a LiteLLM model
    string (gpt-4o)."""
    judge_api_base: Optional[str] = None
    """OpenAI-compatible endpoint of a LiteLLM judge model."""
    limit: Optional[int] = 3
    """Play only the first N tasks (null: all). The default keeps the first run short."""
    temperature: float = 0.7
    """Sampling temperature of agent and partner (the paper's test setting)."""
    top_p: float = 1.0
    """Nucleus sampling of agent and partner (1: off)."""
    max_new_tokens: Optional[int] = None
    """Reply budget per turn; null: 48 for local models, 1024 for API models."""
    max_turns: int = 6
    """Turn limit of an episode. Default 6 for the quick look; SOTOPIA and the paper use 20
    (and compare at 10)."""
    max_stale_turns: int = 2
    """The episode ends after more than this many consecutive turns in which the speaker did nothing."""
    prompt_style: PromptStyle = PromptStyle.native
    """native | sotopia: how the agent, partner and judge prompts are rendered. ``sotopia`` sends
    SOTOPIA 0.1.5's own prompts and rubric byte for byte (needs pip install -e ".[sotopia]"); use
    it for numbers comparable with SOTOPIA's and the paper's."""
    concurrency: int = 8
    """Episodes played at once (local models batch their turns; API calls are bounded by it)."""
    output_dir: Optional[str] = None
    """Where the episode store and results go; null: runs/sotopia/<agent>__<partner>__<judge>__<tasks>
    (then __sotopia under prompt_style=sotopia)."""
    name: Optional[str] = None
    """The agent's label in tables and in benchmarks.compare (default: the agent model)."""
    seed: int = 0
    """Run seed; each episode's seed is derived from it and the episode's key."""
    device: Optional[str] = None
    """Local models' device (null: CUDA when present, else CPU)."""
    progress: bool = True
    """Show a progress bar with an ETA."""
    dry_run: bool = False
    """Load and call no model: print the episodes, model calls (agent, partner, judge), tokens and
    price (LiteLLM's cost map) this run would make, as a table and in ``<output_dir>/dry_run.json``.
    Episodes already stored are not counted (a resumed run repeats no call). Needs no API key."""

    def __post_init__(self):
        from sotopia_env.render import check_prompt_style

        self.prompt_style = PromptStyle(check_prompt_style(self.prompt_style))
        self.check_task_source()
        for name in ("agent", "partner", "judge"):
            if not str(getattr(self, name)).strip():
                raise ConfigError(f"{name} must not be empty")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be a positive number of tasks or null (all), got {self.limit}")
        if not self.temperature >= 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1 or null, got {self.max_new_tokens}")
        if self.max_turns < 1:
            raise ConfigError(f"max_turns must be >= 1, got {self.max_turns}")
        if self.concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.output_dir is None:
            # the prompt style joins the name when it is not the default, so that a sotopia-style run
            # never lands in (and is refused by) the native run's folder
            parts = [self.agent, self.partner, self.judge, self.tasks.value]
            if self.prompt_style is not PromptStyle.native:
                parts.append(self.prompt_style.value)
            self.output_dir = str(Path("runs") / "sotopia" / "__".join(_slug(x) for x in parts))

    @property
    def self_chat(self) -> bool:
        return self.partner == "self"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tasks"] = self.tasks.value
        d["prompt_style"] = self.prompt_style.value
        return d


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-")[-60:] or "x"


def reply_budget(cfg: SotopiaBenchConfig, model: str) -> int:
    """Max new tokens per reply for ``model`` (config value, else the local/API default)."""
    if cfg.max_new_tokens is not None:
        return cfg.max_new_tokens
    return EMBEDDED_MAX_NEW_TOKENS if is_local_model(model) else API_MAX_NEW_TOKENS


# --- Tasks and jobs ---------------------------------------------------------------------------

def load_task_set(cfg: SotopiaBenchConfig) -> list:
    """The tasks of the run, in file order, cut to ``limit``."""
    load_report = LoadReport()
    tasks = cfg.load_tasks(report=load_report)
    if cfg.tasks is TaskSet.files:
        print(f"data: {load_report.summary()}", file=sys.stderr)
    return tasks[: cfg.limit] if cfg.limit is not None else tasks


def job_plan(cfg: SotopiaBenchConfig, tasks) -> list[tuple[Any, list[int], str]]:
    """(task, agent seats, run key) for every episode of the run.

    Self-chat: one episode a task, the agent in both seats. Against a partner: one episode per
    seat the agent plays; with ``tasks=hard`` only the task's ``tested_seat`` when it has one."""
    plan = []
    for task in tasks:
        if cfg.self_chat:
            plan.append((task, [0, 1], f"sotopia|{task.pk}|self-chat"))
            continue
        seats = [0, 1]
        only_tested = cfg.tasks is TaskSet.hard or (cfg.tasks is TaskSet.files and cfg.environment_list)
        if only_tested and task.tested_seat is not None:
            seats = [task.tested_seat]
        for seat in seats:
            plan.append((task, [seat], f"sotopia|{task.pk}|agent-seat-{seat}"))
    keys = [key for _, _, key in plan]
    if len(set(keys)) != len(keys):
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        raise ConfigError(f"the task set repeats task id(s) {', '.join(dupes[:5])}; task ids (combo pk) must be "
                          "unique")
    return plan


# --- Models -----------------------------------------------------------------------------------

def check_models(cfg: SotopiaBenchConfig) -> None:
    """Before anything is written or loaded: every API model of the run is known to LiteLLM, has its
    key in the environment and its api_base answers; every local model (embedded, ``hf:<id>``, a
    folder) can be loaded (the folder exists and holds a model; offline, the Hugging Face id is in
    the cache). ConfigError otherwise, in one line naming the option, within a second."""
    from agents.llm_client import check_model
    from agents.models import check_model_source

    if is_rules_judge(cfg.judge):
        rule_of(cfg.judge)
    elif cfg.judge != "local" and is_local_model(cfg.judge):
        raise ConfigError(f"judge={cfg.judge}: a local judge is judge=local (the embedded model); otherwise give "
                          "a LiteLLM model string such as gpt-4o")
    roles = [("agent", cfg.agent, cfg.agent_api_base)]
    if not cfg.self_chat:
        roles.append(("partner", cfg.partner, cfg.partner_api_base))
    if cfg.judge != "local" and not is_rules_judge(cfg.judge):
        roles.append(("judge", cfg.judge, cfg.judge_api_base))
    for role, model, api_base in roles:
        if is_local_model(model):
            check_model_source(model, option=role)
        else:
            check_model(model, api_base=api_base, role=role)


def build_models(cfg: SotopiaBenchConfig):
    """(agent policy, partner policy, judge). Self-chat shares one policy object; the local
    judge reuses the embedded model when a policy already loaded it."""
    from agents import build_policy

    def policy(model: str, api_base: str | None):
        settings: dict[str, Any] = {"temperature": cfg.temperature, "top_p": cfg.top_p,
                                    "max_new_tokens": reply_budget(cfg, model)}
        settings["prompt_style"] = cfg.prompt_style.value
        if is_local_model(model):
            settings["device"] = cfg.device
            settings["max_batch_size"] = max(2, cfg.concurrency)
        else:
            settings["api_base"] = api_base
            settings["max_concurrency"] = cfg.concurrency
        return build_policy(model, **settings)

    agent = policy(cfg.agent, cfg.agent_api_base)
    partner = agent if cfg.self_chat else policy(cfg.partner, cfg.partner_api_base)
    return agent, partner, build_judge(cfg, (agent, partner))


def build_judge(cfg: SotopiaBenchConfig, policies=()):
    from agents.models import is_embedded

    if is_rules_judge(cfg.judge):
        return RulesJudge(cfg.judge)
    if cfg.judge == "local":
        from agents.judge import LocalJudge

        for p in policies:  # reuse an already loaded embedded model (and save its load time and memory)
            if is_embedded(getattr(p, "name", "")) and getattr(p, "adapter", None) is None and hasattr(p, "model"):
                return LocalJudge(model=p.model, tokenizer=p.tokenizer, prompt_style=cfg.prompt_style.value)
        return LocalJudge(model_id="embedded", prompt_style=cfg.prompt_style.value)
    from agents.judge import LLMJudge

    return LLMJudge(cfg.judge, api_base=cfg.judge_api_base, max_concurrency=cfg.concurrency,
                    prompt_style=cfg.prompt_style.value)


# --- The run ----------------------------------------------------------------------------------

@dataclass
class BenchmarkOutcome:
    """What a run produced: the results document, the Markdown table, and the written files."""

    doc: dict
    table: str
    paths: dict[str, Path] = field(default_factory=dict)
    ran: int = 0
    """Episodes played by this invocation (0 when everything was stored already)."""
    wall_seconds: float = 0.0


def check_resume(cfg: SotopiaBenchConfig, out: Path, *, write: bool = True) -> None:
    """Refuse to mix episodes of different settings in one store; write ``run.json`` otherwise
    (unless ``write`` is False: a dry run leaves nothing that would refuse a later run)."""
    run_file = out / "run.json"
    current = cfg.to_dict()
    if run_file.exists():
        try:
            stored = json.loads(run_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{run_file} is not valid JSON ({e}); delete it or choose another output_dir") from None
        changed = [f"{k}: stored {stored.get(k)!r}, now {current[k]!r}" for k in RESUME_FIELDS
                   if k in stored and stored.get(k) != current[k]]
        if changed:
            raise ConfigError(f"{out} holds episodes of a run with other settings ({'; '.join(changed)}); "
                              "choose another output_dir= or restore those settings to resume")
    if not write:
        return
    out.mkdir(parents=True, exist_ok=True)
    run_file.write_text(redact(json.dumps(current, indent=2)) + "\n", encoding="utf-8")


def run_benchmark(cfg: SotopiaBenchConfig, *, models=None) -> BenchmarkOutcome:
    """Play every not-yet-stored episode of the run, then aggregate, write and plot.

    ``models``: an (agent, partner, judge) triple to use instead of building them from the
    config (tests pass policies pointing at a local server)."""
    from agents.runner import EpisodeJob, run_episodes

    start = time.perf_counter()
    out = Path(cfg.output_dir)
    # every input is checked before output_dir is created: a refused start leaves no folder behind
    if models is None:
        check_models(cfg)
    plan = job_plan(cfg, load_task_set(cfg))
    check_resume(cfg, out)
    store = EpisodeStore(out / "episodes.jsonl")
    done = store.done_keys()
    todo = [(task, seats, key) for task, seats, key in plan if key not in done]
    if cfg.max_turns != SOTOPIA_MAX_TURNS:
        print(f"note: max_turns={cfg.max_turns}; SOTOPIA's evaluation uses {SOTOPIA_MAX_TURNS} "
              f"(max_turns={SOTOPIA_MAX_TURNS})", file=sys.stderr)
    print(f"SOTOPIA: {len(plan)} episode(s) over {len({t.pk for t, _, _ in plan})} task(s), "
          f"{len(plan) - len(todo)} already stored in {store.path}; {len(todo)} to play.", file=sys.stderr)
    ran = 0
    if todo:
        agent, partner, judge = models if models is not None else build_models(cfg)
        jobs = []
        for task, seats, key in todo:
            policies = (agent, agent) if cfg.self_chat else \
                ((agent, partner) if seats == [0] else (partner, agent))
            jobs.append(EpisodeJob(task=task, policies=policies, run_key=key,
                                   seed=(cfg.seed * 1_000_003 + zlib.crc32(key.encode())) % 2**31,
                                   max_turns=cfg.max_turns, max_stale_turns=cfg.max_stale_turns,
                                   prompt_style=cfg.prompt_style.value, tags={"agent_seats": seats, "benchmark": "sotopia",
                                         "setting": "self-chat" if cfg.self_chat else f"vs {cfg.partner}"}))
        run_episodes(jobs, store, judge, concurrency=cfg.concurrency, progress=cfg.progress)
        ran = len(jobs)
    keys = {key for _, _, key in plan}
    records = [r for r in store if r.tags.get("run_key") in keys]
    doc = results.results_document(records, config=cfg.to_dict())
    doc["wall_seconds_this_invocation"] = time.perf_counter() - start
    paths = {"store": store.path, "json": out / "results.json", "markdown": out / "results.md"}
    results.write_results(doc, paths["json"], paths["markdown"], title=f"SOTOPIA: {cfg.name or cfg.agent}")
    summaries = results.summaries_from_document(doc)
    try:
        paths["scores_plot"] = plots.plot_dimensions(summaries, out / "scores.png")
        paths["length_plot"] = plots.plot_output_length(doc["output_length_per_turn"], out / "output_length.png")
    except ValueError as e:  # nothing evaluated yet: the table says so; no empty plot
        print(f"no plot: {e}", file=sys.stderr)
    table = results.markdown_table(summaries)
    return BenchmarkOutcome(doc=doc, table=table, paths=paths, ran=ran,
                            wall_seconds=time.perf_counter() - start)


def dry_run(cfg: SotopiaBenchConfig):
    """The episodes, model calls, tokens and price of ``run_benchmark(cfg)``, without loading or calling
    a model (``agents.estimate``): every episode of the plan not yet stored and evaluated is played
    and judged; a stored episode whose judge failed is only judged again, as in a real run. A store
    of other settings is refused as a real run would refuse it; nothing is written."""
    from agents.estimate import CallPlan, Judge, Seat

    plan_items = job_plan(cfg, load_task_set(cfg))
    out = Path(cfg.output_dir)
    check_resume(cfg, out, write=False)
    store = EpisodeStore(out / "episodes.jsonl")
    done = store.done_keys()
    keys = {key for _, _, key in plan_items}
    unevaluated = {r.tags.get("run_key"): r for r in store if r.tags.get("run_key") in keys - done}
    if cfg.judge == "local":
        judge = Judge("embedded")
    elif is_rules_judge(cfg.judge):
        judge = Judge(cfg.judge, max_tokens=0)   # no model: no tokens, no cost
    else:
        llm_judge = build_judge(cfg)
        judge = Judge(cfg.judge, max_tokens=llm_judge.max_tokens, max_reasks=llm_judge.max_reasks)
    agent = Seat("agent", cfg.agent, reply_budget(cfg, cfg.agent))
    partner = agent if cfg.self_chat else Seat("partner", cfg.partner, reply_budget(cfg, cfg.partner))
    plan = CallPlan()
    for task, seats, key in plan_items:
        if key in done:
            plan.count_episodes("sotopia", stored=1)
        elif key in unevaluated:
            plan.count_episodes("sotopia", to_rejudge=1)
            plan.add_judging("sotopia", unevaluated[key], judge, prompt_style=cfg.prompt_style.value)
        else:
            pair = (agent, agent) if cfg.self_chat else ((agent, partner) if seats == [0] else (partner, agent))
            plan.add_episode("sotopia", task, pair, judge, max_turns=cfg.max_turns,
                             prompt_style=cfg.prompt_style.value)
    plan.notes.append(f"SOTOPIA: {len(plan_items)} episode(s) over {len({t.pk for t, _, _ in plan_items})} task(s), "
                      f"max_turns={cfg.max_turns}, output_dir={out}.")
    return plan


def dry_run_report(cfg: SotopiaBenchConfig) -> str:
    """``dry_run=true``: the plan's table, also written to ``<output_dir>/dry_run.json`` (which
    refuses no later run: only ``run.json`` does)."""
    plan = dry_run(cfg)
    path = plan.write_json(Path(cfg.output_dir) / "dry_run.json")
    return f"{plan.table()}\ndry run written to {path}"


def report(outcome: BenchmarkOutcome) -> str:
    """The text printed at the end of a run: table, counts, usage, file paths."""
    doc = outcome.doc
    c, u = doc["counts"], doc["usage"]
    lines = [f"prompt style: {doc.get('config', {}).get('prompt_style', 'native')}", outcome.table, ""]
    lines.append(f"episodes: {c['evaluated']} evaluated, {c['unevaluated']} unevaluated (judge failed"
                 f"{'; run the same command again to retry them' if c['unevaluated'] else ''}), "
                 f"{outcome.ran} played now, {outcome.wall_seconds:.1f} s")
    for model, m in u["models"].items():
        lines.append(f"tokens {model}: {int(m['prompt_tokens'])} prompt + {int(m['completion_tokens'])} completion "
                     f"over {int(m['turns'])} turns")
    judge = u.get("judge", {})
    if judge.get("prompt_tokens") or judge.get("completion_tokens"):
        lines.append(f"tokens judge: {int(judge['prompt_tokens'])} prompt + {int(judge['completion_tokens'])} "
                     "completion")
    for model, counts in u.get("reliability", {}).items():
        lines.append(f"reliability {results.reliability_line(model, counts)}")
    lines.append(f"cost: ${u['cost']:.4f}")
    for label, key in (("results", "markdown"), ("results JSON", "json"), ("plot", "scores_plot"),
                       ("plot", "length_plot"), ("episodes", "store")):
        if key in outcome.paths:
            lines.append(f"{label}: {outcome.paths[key]}")
    return "\n".join(lines)


# --- hydra entry point ------------------------------------------------------------------------

def main() -> None:
    from sotopia_env import cli

    # Our outputs go to output_dir; keep hydra from creating outputs/<date>/ folders and log files.
    def task(cfg: SotopiaBenchConfig) -> None:
        print(dry_run_report(cfg) if cfg.dry_run else report(run_benchmark(cfg)))

    cli.run("benchmarks.sotopia", SotopiaBenchConfig, task,
            summary=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[2], config_name="sotopia_bench",
            hydra_defaults=["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=none",
                            "hydra/hydra_logging=none"])


if __name__ == "__main__":
    main()
