"""Configuration of the pair-building pipeline (hydra structured config, ``python -m sdpo.pairs``).

Every field is documented once, here. ``OmegaConf.to_object`` builds the dataclasses so that
``__post_init__`` validates the values; a bad value raises ConfigError naming the option and
what is allowed. API keys are never part of the config: ``api_key_env`` names the environment
variable that holds one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar, Optional

from sotopia_env.errors import ConfigError, to_enum
from sotopia_env.task_source import TaskSet, TaskSource


class Stage(str, Enum):
    """A stage of the pipeline (the SDPO pipeline); ``all`` runs them in order."""

    collect = "collect"
    negatives = "negatives"
    locate = "locate"
    sample = "sample"
    segment = "segment"
    scratch = "scratch"
    write = "write"
    summary = "summary"
    all = "all"


class NegativeRule(str, Enum):
    """Which sessions are negatives (the authors' released code)."""

    paper = "paper"
    """goal < goal_below (the paper's text, default 7)."""
    authors = "authors"
    """goal <= goal_at_most or relationship <= relationship_at_most (the authors' scripts: 7 and 2)."""


class KeepRule(str, Enum):
    """When the best sampled continuation is kept as the positive (the SDPO pipeline, step 4)."""

    paper = "paper"
    """It beats the negative on goal or on relationship (the paper's text)."""
    authors = "authors"
    """Its goal is higher, or its goal equal and its relationship higher (the authors' scripts)."""


class Interlocutors(str, Enum):
    """Which sessions the written pairs come from (the paper's partner ablation)."""

    self_chat = "self"
    partner = "partner"
    both = "both"


class PairKind(str, Enum):
    """Kinds of pair files the write stage produces (the paper's baselines)."""

    sdpo = "sdpo"
    dpo = "dpo"
    eto = "eto"
    dmpo = "dmpo"
    preferred_sft = "preferred_sft"
    sft = "sft"


class SegmentMethod(str, Enum):
    """How the segment is chosen: by the judge (the paper's SDPO) or fixed lengths (the ablation)."""

    judge = "judge"
    fixed = "fixed"


@dataclass
class ModelsConfig:
    agent: str = "embedded"
    """The trained agent (the BC model): "embedded", a local path, "hf:<id>" or a LiteLLM model string."""
    partner: str = "embedded"
    """The interlocutor in partner sessions (the paper: gpt-4o)."""
    judge: str = "embedded"
    """Episode judge, error locator and segment selector. "embedded"/local path: local judge and
    log-probability fallbacks; "rules" / "rules:<rule>": the programmatic judge (agents.rules_judge:
    scores, error turn and segment by a rule, no model); otherwise a LiteLLM model answering JSON."""
    positive_model: str | None = None
    """If set, this model plays the trained seat when sampling positives (out-of-distribution ablation)."""
    api_base: str | None = None
    """OpenAI-compatible endpoint for LiteLLM models (None: the provider's default)."""
    api_key_env: str | None = None
    """Name of the environment variable holding the API key (the key itself is never stored)."""
    max_new_tokens: int = 48
    """Token limit of one agent turn (local and API models); 48 keeps the CPU default short, the
    paper's models need about 128."""
    judge_max_tokens: int = 512
    """Token limit of one judge answer for error location and segment selection."""
    max_concurrency: int = 8
    """Concurrent API calls / episodes."""


@dataclass
class CollectConfig(TaskSource):
    """The sessions of the collect stage. The task options (``collect.tasks``, ``collect.scenarios``,
    ``collect.task_ids`` ...) are ``sotopia_env.task_source.TaskSource``'s, the same as
    ``benchmarks.sotopia``'s."""

    option_prefix: ClassVar[str] = "collect."
    tasks: TaskSet = TaskSet.align
    """bc | align | test | hard | all: a built-in split (align: the SDPO alignment scenarios, bc:
    behavioural cloning); files: SOTOPIA files (collect.scenarios, collect.profiles, collect.combos;
    collect.relationships and collect.environment_list optional)."""
    episodes: Optional[str] = None
    """A SOTOPIA / SOTOPIA-pi episode log (JSONL, one episode a line) to import instead of playing:
    collect reads its episodes, with their recorded scores, into episodes.jsonl (no model or judge
    call); collect.scenarios / collect.profiles, when given, make their tasks exact."""
    max_tasks: int | None = 2
    """Use at most this many tasks of the split (in file order); null: all. The default 2 (with
    interlocutors=[self] and max_turns=6) is a quick look that finishes in minutes on a CPU; the
    paper: collect.max_tasks=null collect.interlocutors=[self,partner] collect.max_turns=20."""
    interlocutors: list[str] = field(default_factory=lambda: ["self"])
    """Sessions to collect: "self" (self-chat) and/or "partner" (the agent against models.partner, both seats)."""
    repeats: int = 1
    """Sessions per task and interlocutor."""
    temperature: float = 0.7
    """Sampling temperature of both seats while collecting (the paper's test setting)."""
    max_turns: int = 6
    """Turn limit of a session (the paper and SOTOPIA: 20)."""


@dataclass
class NegativesConfig:
    rule: NegativeRule = NegativeRule.paper
    """Which sessions are negatives: paper (goal below goal_below) or authors (the released scripts' rule)."""
    goal_below: float = 7.0
    """paper rule: a session is negative for a seat if its goal score < goal_below."""
    goal_at_most: float = 7.0
    """authors rule: goal <= goal_at_most ..."""
    relationship_at_most: float = 2.0
    """... or relationship <= relationship_at_most."""
    max_per_scenario_side: int | None = None
    """At most this many negatives per (scenario, seat); the authors used 3. None: no limit."""
    max_negatives: int | None = None
    """At most this many negatives in all, in store order (smoke runs, capped API budgets). None: no limit."""


@dataclass
class LocateConfig:
    max_reasks: int = 2
    """Re-asks after an invalid judge answer; then the negative is skipped and counted."""


@dataclass
class SampleConfig:
    n: int = 5
    """Continuations sampled from the history before the error turn."""
    target_temperature: float = 1.0
    """Temperature of the trained seat while sampling positives."""
    partner_temperature: float = 0.7
    """Temperature of the other seat while sampling positives."""
    keep: KeepRule = KeepRule.paper
    """paper: keep the best continuation if it beats the negative on goal or on relationship;
    authors: only if its goal is higher, or equal with a higher relationship."""


@dataclass
class SegmentConfig:
    method: SegmentMethod = SegmentMethod.judge
    """judge: the judge chooses each side's segment; fixed: the first segment.fixed agent turns from the error turn."""
    fixed: list[int] = field(default_factory=lambda: [3, 3])
    """For method=fixed: [negative, positive] segment lengths in agent turns (the paper's [a,b] ablation)."""
    max_reasks: int = 2
    """Re-asks after an invalid judge answer; then the pair is dropped and counted."""


@dataclass
class ScratchConfig:
    n: int = 5
    """Sessions sampled from the start per negative, for ETO/DMPO."""
    only_kept: bool = True
    """Sample only for negatives that gave an SDPO pair (the same negatives as SDPO), else for all."""


@dataclass
class WriteConfig:
    kinds: list[str] = field(default_factory=lambda: ["sdpo"])
    """Pair files to write: sdpo, dpo, eto, dmpo, preferred_sft (each to pairs_<kind>.jsonl), and
    sft: behavioural-cloning records, one per collected session and seat played by models.agent
    (or an imported seat) whose goal is at least write.sft_min_goal."""
    interlocutors: Interlocutors = Interlocutors.both
    """Keep pairs from self-chat sessions, partner sessions, or both."""
    output: str | None = None
    """Also copy the first kind's pairs to this path (e.g. sdpo/data/demo_pairs.jsonl)."""
    sft_min_goal: float = 7.0
    """sft: keep a seat's session only if its goal score is at least this (SOTOPIA-pi's filter: 7)."""
    sft_models: list[str] = field(default_factory=list)
    """sft: keep only seats played by these models (an episode's models[seat], e.g. gpt-4 in an
    imported log); empty: every seat the collected agent played (both seats of imported sessions)."""


@dataclass
class PairsConfig:
    """``python -m sdpo.pairs out_dir=runs/pairs stage=all models.judge=gpt-4o ...``"""

    out_dir: str = "runs/pairs"
    """The run's folder: every stage file, the pair files and the summary live here."""
    stage: Stage = Stage.all
    """Which stage to run: one of them, or all in order (each resumes and skips what is done)."""
    models: ModelsConfig = field(default_factory=ModelsConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    negatives: NegativesConfig = field(default_factory=NegativesConfig)
    locate: LocateConfig = field(default_factory=LocateConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    scratch: ScratchConfig = field(default_factory=ScratchConfig)
    write: WriteConfig = field(default_factory=WriteConfig)
    seed: int = 11
    """Base seed; each sampled session's seed is derived from it and its run key."""
    prompt_style: str = "native"
    """native | sotopia: how every prompt of the run is rendered (``sotopia_env.render``). The
    pairs record it, so ``sdpo.fit`` trains on the prompt the episodes were played with.
    ``sotopia`` needs pip install -e ".[sotopia]"."""
    device: str | None = None
    """Device of local models (None: CUDA if present)."""
    progress: bool = True
    """Show each stage's progress bar with an ETA."""
    dry_run: bool = False
    """Load and call no model: print each stage's episodes, model calls (agent, partner, judge:
    episode, error turn, segment), tokens and price (LiteLLM's cost map) as a table and in
    ``<out_dir>/dry_run.json``. Work in the run's files is not counted (a resumed run repeats no
    call); stages after one still to run are counted at their upper bound (sdpo.pairs.dry_run)."""

    def __post_init__(self):
        from sotopia_env.render import check_prompt_style

        self.prompt_style = check_prompt_style(self.prompt_style)
        self.stage = to_enum(Stage, self.stage, "stage")
        self.collect.check_task_source()
        self.sample.keep = to_enum(KeepRule, self.sample.keep, "sample.keep")
        if not 0.0 <= float(self.write.sft_min_goal) <= 10.0:
            raise ConfigError(f"write.sft_min_goal must be a goal score in [0, 10], got {self.write.sft_min_goal!r}")
        self.negatives.rule = to_enum(NegativeRule, self.negatives.rule, "negatives.rule")
        self.segment.method = to_enum(SegmentMethod, self.segment.method, "segment.method")
        self.write.interlocutors = to_enum(Interlocutors, self.write.interlocutors, "write.interlocutors")
        allowed = {i.value for i in Interlocutors} - {"both"}
        for value in self.collect.interlocutors:
            if value not in allowed:
                raise ConfigError(f"collect.interlocutors: {value!r} is not allowed; allowed: self, partner")
        if not self.collect.interlocutors:
            raise ConfigError("collect.interlocutors: give at least one of self, partner")
        for value in self.write.kinds:
            to_enum(PairKind, value, "write.kinds")
        for name, value in (("sample.n", self.sample.n), ("scratch.n", self.scratch.n),
                            ("collect.repeats", self.collect.repeats), ("collect.max_turns", self.collect.max_turns),
                            ("models.max_new_tokens", self.models.max_new_tokens),
                            ("models.max_concurrency", self.models.max_concurrency)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name, value in (("locate.max_reasks", self.locate.max_reasks),
                            ("segment.max_reasks", self.segment.max_reasks)):
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        fixed = list(self.segment.fixed)
        if len(fixed) != 2 or not all(isinstance(k, int) and k >= 1 for k in fixed):
            raise ConfigError(f"segment.fixed must be [negative, positive] lengths >= 1 in agent turns, got {fixed!r}")
        for name, t in (("sample.target_temperature", self.sample.target_temperature),
                        ("sample.partner_temperature", self.sample.partner_temperature),
                        ("collect.temperature", self.collect.temperature)):
            if not 0.0 <= float(t) <= 2.0:
                raise ConfigError(f"{name} must be in [0, 2], got {t!r}")
        for name in ("max_per_scenario_side", "max_negatives"):
            mx = getattr(self.negatives, name)
            if mx is not None and (not isinstance(mx, int) or mx < 1):
                raise ConfigError(f"negatives.{name} must be a positive integer or null, got {mx!r}")


def register() -> None:
    """Register the config with hydra's ConfigStore under the name ``pairs``."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="pairs", node=PairsConfig)
