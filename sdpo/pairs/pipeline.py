"""The pair-building pipeline: one method per stage, each concurrent and resumable.

Files in the run's folder (``config.out_dir``), in the order the stages write them:

================================ ===========================================================
``config.yaml``                  the resolved config of the last run (no API keys)
``episodes.jsonl``               collect: judged sessions (EpisodeStore, keyed by run key), or
                                 the sessions of an imported SOTOPIA log (``collect.episodes``)
``negatives.jsonl``              negatives: one line per negative (rebuilt, no model calls)
``locate.jsonl``                 locate: error turn per negative (append-only ledger)
``branches.jsonl``               sample: continuations from the error turn (EpisodeStore)
``sample.jsonl``                 sample: positive chosen / negative dropped (ledger)
``segment.jsonl``                segment: the judge's segment per kept pair (ledger)
``scratch_episodes.jsonl``       scratch: sessions sampled from the start, ETO/DMPO (EpisodeStore)
``scratch.jsonl``                scratch: positive chosen / dropped (ledger)
``pairs_<kind>.jsonl``           write: the pair files (rebuilt atomically each run); ``sft``: the
                                 collected sessions' seats whose goal is >= write.sft_min_goal
``summary.json``                 summary: counts per stage, drops with reasons, calls and cost
``summary.md``                   summary: pair statistics (``sdpo.pairs.stats``): pairs per kind,
                                 error turns, segment lengths, why negatives gave no pair
``pair_stats.png``               summary: error-turn and segment-length histograms
================================ ===========================================================

A killed run restarts where it stopped: episode stores skip run keys already judged, ledgers
skip keys with a final entry, so finished work costs no second model or judge call.
"""
from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from agents.formatter import ConversationFormat
from agents.models import is_local_model
from agents.rules_judge import RulesJudge, is_rules_judge, rule_of
from sotopia_env.episode import EpisodeRecord, EpisodeStore
from sotopia_env.errors import APIError, ConfigError, FatalAPIError
from sotopia_env.profiles import Task
from sotopia_env.redaction import redact

from .config import CollectConfig, PairKind, PairsConfig, SegmentMethod, Stage
from .locate import LocalTurnScorer, locate_one
from .negatives import Negative, select_negatives
from .sample import branch_run_key, continuation, decide, sample_seed
from .segment import select_one
from .stages import StageFile, Status
from .write import build_pairs, build_sft, write_pair_file


def check_inputs(config: PairsConfig) -> None:
    """Before the run's folder is created: every model the chosen stage(s) call can be used (a local
    model's folder or Hugging Face id resolves; an API model is known to LiteLLM, has its key and
    its api_base answers). ConfigError in one line naming the option (``models.agent`` ...) otherwise.
    ``stage=negatives`` and ``stage=write`` call no model and check none; ``stage=summary`` only
    the agent's tokenizer (target tokens of the pair statistics) when the agent is local. The collected tasks
    (``collect.tasks``, ``collect.task_ids`` ...) or the imported episode log (``collect.episodes``) must
    load too (a bad file: DataError naming the file, line and field). Importing a log and writing only
    ``sft`` records calls no model and checks none."""
    if config.stage in (Stage.all, Stage.collect):
        c = config.collect
        _ = read_episode_log(c) if c.episodes is not None else c.load_tasks()
    if config.stage in (Stage.negatives, Stage.write):
        return
    if config.stage is Stage.summary:
        if is_local_model(config.models.agent):
            from agents.models import check_model_source

            check_model_source(config.models.agent, option="models.agent")
        return
    if not calls_models(config):
        return
    m = config.models
    roles = [("agent", m.agent), ("judge", m.judge)]
    if m.positive_model:
        roles.append(("positive_model", m.positive_model))
    if "partner" in config.collect.interlocutors:
        roles.append(("partner", m.partner))
    api_key = None
    for role, model_id in roles:
        if role == "judge" and is_rules_judge(model_id):
            rule_of(model_id, option="models.judge")
            continue
        if is_local_model(model_id):
            from agents.models import check_model_source

            check_model_source(model_id, option=f"models.{role}")
            continue
        from agents.llm_client import check_model

        if m.api_key_env is not None:
            if m.api_key_env not in os.environ:
                raise ConfigError(f"models.api_key_env names {m.api_key_env!r}, but that environment variable is "
                                  "not set")
            api_key = os.environ[m.api_key_env]
        check_model(model_id, api_base=m.api_base, api_key=api_key, role=f"models.{role}")


def read_episode_log(collect: CollectConfig) -> list[EpisodeRecord]:
    """The episodes of ``collect.episodes`` (SOTOPIA's episode JSONL), their tasks exact where
    ``collect.scenarios`` / ``collect.profiles`` are given."""
    from sotopia_env.loader import load_sotopia_episodes

    path = collect.episodes
    if path is None:
        raise ConfigError("collect.episodes: give the SOTOPIA episode log (JSONL) to import")
    records = load_sotopia_episodes(path, profiles=collect.profiles, scenarios=collect.scenarios)
    if not records:
        raise ConfigError(f"collect.episodes={path} holds no episode")
    return records


def needs_pairs(config: PairsConfig) -> bool:
    """Whether a written kind needs negatives located and positives sampled (every kind but sft)."""
    return any(kind != PairKind.sft.value for kind in config.write.kinds)


def calls_models(config: PairsConfig) -> bool:
    """Whether the chosen stage(s) play or judge anything: collecting plays and judges unless it
    imports an episode log; locate, sample, segment and scratch only run for a kind that needs them."""
    importing = config.collect.episodes is not None
    if config.stage is Stage.collect:
        return not importing
    if config.stage is Stage.all:
        return not importing or needs_pairs(config)
    return config.stage in (Stage.locate, Stage.sample, Stage.segment, Stage.scratch) and needs_pairs(config)


class PairPipeline:
    """Builds SDPO pairs (and the baselines' data) for one run folder.

    ``tasks`` overrides the built-in split of ``config.collect``. The models are loaded on first
    use; one local model id is loaded once and shared by every seat and the judge.
    """

    def __init__(self, config: PairsConfig, *, tasks: Sequence[Task] | None = None, create: bool = True):
        self.config = config
        self.out = Path(config.out_dir)
        if create:  # a dry run (create=False) reads the run's files and writes none
            self.out.mkdir(parents=True, exist_ok=True)
        self._tasks = list(tasks) if tasks is not None else None
        self._local: dict[str, tuple] = {}
        self._policies: dict = {}
        self._judge = None
        self.unplayed: list[str] = []
        self._built: dict | None = None     # the last write's pairs, reused by the pair report
        self._client = None
        self._scorer = None
        self.fmt = ConversationFormat(max_turns=config.collect.max_turns, prompt_style=config.prompt_style)
        self.episodes = EpisodeStore(self.out / "episodes.jsonl")
        self.branches = EpisodeStore(self.out / "branches.jsonl")
        self.scratch_episodes = EpisodeStore(self.out / "scratch_episodes.jsonl")
        self.ledgers = {name: StageFile(self.out / f"{name}.jsonl") for name in ("locate", "sample", "segment",
                                                                                   "scratch")}

    # ------------------------------------------------------------------ models

    def _local_model(self, model_id: str):
        if model_id not in self._local:
            from agents.models import load_model, load_tokenizer

            self._local[model_id] = (load_model(model_id.removeprefix("hf:"), device=self.config.device).eval(),
                                     load_tokenizer(model_id.removeprefix("hf:")))
        return self._local[model_id]

    def _api_key(self) -> str | None:
        name = self.config.models.api_key_env
        if name is None:
            return None
        if name not in os.environ:
            raise ConfigError(f"models.api_key_env names {name!r}, but that environment variable is not set")
        return os.environ[name]

    def policy(self, model_id: str):
        """The policy of ``model_id``, one object per model (a local model's seats share one generation
        batch); the temperature of each seat is set per episode job."""
        if model_id in self._policies:
            return self._policies[model_id]
        m = self.config.models
        temperature = self.config.collect.temperature
        if is_local_model(model_id):
            from agents.hf_policy import HFPolicy

            model, tokenizer = self._local_model(model_id)
            policy = HFPolicy(model_id.removeprefix("hf:"), temperature=temperature, max_new_tokens=m.max_new_tokens,
                              model=model, tokenizer=tokenizer, fmt=self.fmt, seed=self.config.seed)
        else:
            from agents.litellm_policy import LiteLLMPolicy
            from agents.llm_client import LLMClient

            client = LLMClient(model_id, api_base=m.api_base, api_key=self._api_key(), max_concurrency=m.max_concurrency)
            policy = LiteLLMPolicy(model_id, temperature=temperature, max_new_tokens=m.max_new_tokens, fmt=self.fmt,
                                   api_base=m.api_base, client=client)
        self._policies[model_id] = policy
        return policy

    @property
    def judge(self):
        """The episode judge: the local judge for a local model, else the LLM judge."""
        if self._judge is None:
            from agents.judge import LLMJudge, LocalJudge

            judge_id = self.config.models.judge
            if is_rules_judge(judge_id):
                self._judge = RulesJudge(judge_id)
            elif is_local_model(judge_id):
                model, tokenizer = self._local_model(judge_id)
                self._judge = LocalJudge(model=model, tokenizer=tokenizer, prompt_style=self.fmt.prompt_style)
            else:
                self._judge = LLMJudge(judge_id, api_base=self.config.models.api_base, api_key=self._api_key(),
                                       max_reasks=self.config.locate.max_reasks,
                                       max_concurrency=self.config.models.max_concurrency,
                                       prompt_style=self.fmt.prompt_style)
        return self._judge

    def _asker(self) -> dict:
        """How error location and segment selection are answered: an LLM client, the local scorer, or
        the rules judge's rule."""
        judge_id = self.config.models.judge
        if is_rules_judge(judge_id):
            return {"rules": self.judge}
        if is_local_model(judge_id):
            if self._scorer is None:
                self._scorer = LocalTurnScorer(*self._local_model(judge_id))
            return {"scorer": self._scorer}
        if self._client is None:
            from agents.llm_client import LLMClient

            self._client = LLMClient(judge_id, api_base=self.config.models.api_base, api_key=self._api_key(),
                                     max_concurrency=self.config.models.max_concurrency)
        return {"client": self._client}

    # ------------------------------------------------------------------ stage 1: collect

    def tasks(self) -> list[Task]:
        if self._tasks is None:
            c = self.config.collect
            tasks = c.load_tasks()
            self._tasks = tasks[: c.max_tasks] if c.max_tasks is not None else tasks
        return self._tasks

    def _run(self, jobs: list, store: EpisodeStore) -> None:
        """Play and judge ``jobs`` into ``store`` (skipping finished run keys). Episodes that could not
        be played (API down after retries) are left for the next run; bad credentials stop the run."""
        from agents.runner import run_episodes

        done = store.done_keys()
        pending = [j for j in jobs if j.run_key not in done]
        if not pending:
            return
        try:
            run_episodes(pending, store, self.judge, concurrency=self.config.models.max_concurrency,
                         progress=self.config.progress)
        except FatalAPIError:
            raise
        except APIError as e:
            warnings.warn(f"{e} -- the stage goes on with the finished episodes", stacklevel=2)
            self.unplayed.append(str(e))

    def collect(self) -> None:
        """Stage 1: the agent plays the tasks in self-chat and against the partner (both seats); judged.
        With ``collect.episodes`` the sessions are imported from that log instead."""
        from agents.runner import EpisodeJob

        c, m = self.config.collect, self.config.models
        if c.episodes is not None:
            self.import_episodes()
            return
        done = self.episodes.done_keys()
        jobs = []
        for task in self.tasks():
            for rep in range(c.repeats):
                for kind in c.interlocutors:
                    for seat in ([None] if kind == "self" else [0, 1]):
                        key = collect_run_key(kind, task.pk, seat, rep)
                        if key in done:
                            continue  # no model is loaded when everything is already collected
                        if kind == "self":
                            policies, agent_seats = (self.policy(m.agent),) * 2, [0, 1]
                        else:
                            agent, partner = self.policy(m.agent), self.policy(m.partner)
                            policies = (agent, partner) if seat == 0 else (partner, agent)
                            agent_seats = [seat]
                        jobs.append(EpisodeJob(task=task, policies=policies, run_key=key,
                                               seed=sample_seed(self.config.seed, key), max_turns=c.max_turns,
                                               temperatures=(c.temperature, c.temperature),
                                               prompt_style=self.fmt.prompt_style,
                                               tags={"interlocutor": kind, "agent_seats": agent_seats,
                                                     "stage": "collect"}))
        self._run(jobs, self.episodes)

    def import_episodes(self) -> None:
        """``collect.episodes`` into the episode store with their recorded scores (no model call).
        A session is self-chat when one model played both seats; each is stored once (run key
        ``import/<episode id>``), so a rerun adds nothing."""
        done = self.episodes.done_keys(evaluated_only=False)
        for record in read_episode_log(self.config.collect):
            key = f"import/{record.episode_id}"
            if key in done:
                continue
            interlocutor = "self" if len(set(record.models)) == 1 else "partner"
            record.tags.update(run_key=key, stage="collect", interlocutor=interlocutor)
            self.episodes.append(record)
            done.add(key)

    # ------------------------------------------------------------------ stage 2: negatives

    def negatives(self) -> tuple[list[Negative], dict]:
        """Stage 2: negatives from the judged sessions (no model call; the file is rebuilt)."""
        negatives, counts = select_negatives(self._latest(self.episodes).values(), self.config.negatives)
        path = self.out / "negatives.jsonl"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(n.to_dict()) + "\n" for n in negatives), encoding="utf-8")
        os.replace(tmp, path)
        return negatives, counts

    @staticmethod
    def _latest(store: EpisodeStore) -> dict[str, EpisodeRecord]:
        """Records by episode id; for a run key stored twice (a failed judge retried) the judged one."""
        by_key: dict[str, EpisodeRecord] = {}
        for rec in store:
            key = rec.tags.get("run_key", rec.episode_id)
            if key not in by_key or rec.evaluated or not by_key[key].evaluated:
                by_key[key] = rec
        return {rec.episode_id: rec for rec in by_key.values()}

    # ------------------------------------------------------------------ stage 3: locate

    def locate(self) -> None:
        """Stage 3: the judge names each negative's error turn (validated, bounded re-asks)."""
        if not needs_pairs(self.config):
            return
        negatives, _ = self.negatives()
        episodes = self._latest(self.episodes)
        ledger = self.ledgers["locate"]
        final = ledger.final()
        pending = [n for n in negatives if n.key not in final]
        asker = self._asker()

        async def one(neg: Negative):
            entry = await locate_one(episodes[neg.episode_id], neg.agent_index, max_reasks=self.config.locate.max_reasks,
                                     max_tokens=self.config.models.judge_max_tokens, **asker)
            ledger.append({"key": neg.key, **entry})

        self._gather([functools.partial(one, n) for n in pending], "locate")

    def _gather(self, calls: list, desc: str) -> None:
        """Run the async ``calls`` (functions of no argument), at most ``models.max_concurrency`` at
        once. Coroutines are made only when their turn comes, so a failure leaves none un-awaited."""
        if not calls:
            return
        from tqdm.auto import tqdm

        async def main():
            sem = asyncio.Semaphore(self.config.models.max_concurrency)
            bar = tqdm(total=len(calls), desc=desc, disable=not self.config.progress)

            async def bounded(call):
                async with sem:
                    await call()
                bar.update(1)

            try:
                await asyncio.gather(*(bounded(c) for c in calls))
            finally:
                bar.close()

        asyncio.run(main())

    # ------------------------------------------------------------------ stage 4: sample

    def _sampling_seats(self, seat: int, interlocutor: str) -> tuple[tuple, tuple]:
        """(policies, temperatures) of seats 0 and 1 for sampling: the trained seat at the target
        temperature (played by ``positive_model`` in the out-of-distribution ablation), the other
        seat at the partner's temperature."""
        m, s = self.config.models, self.config.sample
        target = self.policy(m.positive_model or m.agent)
        other = self.policy(m.agent if interlocutor == "self" else m.partner)
        if seat == 0:
            return (target, other), (s.target_temperature, s.partner_temperature)
        return (other, target), (s.partner_temperature, s.target_temperature)

    def _sample_jobs(self, prefix: str, neg: Negative, record: EpisodeRecord, branch_turn: int, n: int) -> list:
        from agents.runner import EpisodeJob

        model = self.config.models.positive_model or self.config.models.agent
        jobs = []
        for i in range(n):
            key = branch_run_key(prefix, neg.key, branch_turn, model, i)
            policies, temperatures = self._sampling_seats(neg.agent_index, neg.interlocutor)
            jobs.append(EpisodeJob(task=record.task, policies=policies, run_key=key, temperatures=temperatures,
                                   seed=sample_seed(self.config.seed, key), history=list(record.turns[:branch_turn]),
                                   parent_episode_id=record.episode_id, branch_turn=branch_turn or None,
                                   max_turns=self.config.collect.max_turns, prompt_style=self.fmt.prompt_style,
                                   tags={"interlocutor": neg.interlocutor, "agent_seats": [neg.agent_index],
                                         "stage": prefix, "negative": neg.key}))
        return jobs

    def _sample_stage(self, prefix: str, ledger: StageFile, store: EpisodeStore, todo: list[tuple[Negative, int]],
                      n: int) -> None:
        """Sample ``n`` continuations for each (negative, branch turn), judge them, record the decision."""
        episodes = self._latest(self.episodes)
        final = ledger.final()
        todo = [(neg, e) for neg, e in todo if neg.key not in final]
        if not todo:
            return
        jobs = []
        for neg, e in todo:
            jobs += self._sample_jobs(prefix, neg, episodes[neg.episode_id], e, n)
        self._run(jobs, store)
        by_key = {rec.tags.get("run_key"): rec for rec in self._latest(store).values()}
        model = self.config.models.positive_model or self.config.models.agent
        for neg, e in todo:
            keys = [branch_run_key(prefix, neg.key, e, model, i) for i in range(n)]
            candidates = [by_key.get(k) for k in keys]
            if any(c is None or not c.evaluated for c in candidates):
                # Not finished work: the runner retries missing or unjudged sessions on the next run.
                missing = sum(c is None for c in candidates)
                ledger.append({"key": neg.key, "status": Status.error, "reason": "candidates_unfinished",
                               "missing": missing, "unjudged": sum(c is not None and not c.evaluated
                                                                   for c in candidates)})
                continue
            entry = decide(episodes[neg.episode_id], neg.agent_index, e, candidates,
                           compare_first_turn=prefix == "branch", keep=self.config.sample.keep)
            ledger.append({"key": neg.key, **entry, "model": model})

    def sample(self) -> None:
        """Stage 4: N continuations from the history before the error turn; keep the best if it wins."""
        if not needs_pairs(self.config):
            return
        negatives, _ = self.negatives()
        located = self.ledgers["locate"].final()
        todo = [(n, int(located[n.key]["index"])) for n in negatives
                if located.get(n.key, {}).get("status") == Status.ok]
        self._sample_stage("branch", self.ledgers["sample"], self.branches, todo, self.config.sample.n)

    # ------------------------------------------------------------------ stage 5: segment

    def segment(self) -> None:
        """Stage 5: the judge picks the positive's segment (validated); fixed lengths need no judge."""
        if self.config.segment.method != SegmentMethod.judge or not needs_pairs(self.config):
            return
        negatives, _ = self.negatives()
        episodes = self._latest(self.episodes)
        branches = self._latest(self.branches)
        kept = {k: e for k, e in self.ledgers["sample"].final().items() if e["status"] == Status.kept}
        ledger = self.ledgers["segment"]
        final = ledger.final()
        pending = [n for n in negatives if n.key in kept and n.key not in final]
        asker = self._asker()

        async def one(neg: Negative):
            negative = episodes[neg.episode_id]
            positive = branches[kept[neg.key]["positive"]]
            e = kept[neg.key]["branch_turn"]
            positive_turns = negative.turns[:e] + continuation(positive, e, negative.turns[:e])
            entry = await select_one(negative, positive_turns, neg.agent_index, e,
                                     max_reasks=self.config.segment.max_reasks,
                                     max_tokens=self.config.models.judge_max_tokens, **asker)
            ledger.append({"key": neg.key, **entry})

        self._gather([functools.partial(one, n) for n in pending], "segment")

    # ------------------------------------------------------------------ ETO / DMPO: sessions from the start

    def scratch(self) -> None:
        """ETO/DMPO data: N sessions sampled from the start for the same negatives; best vs. negative."""
        kinds = set(self.config.write.kinds)
        if not kinds & {PairKind.eto.value, PairKind.dmpo.value}:
            return
        negatives, _ = self.negatives()
        if self.config.scratch.only_kept:
            kept = {k for k, e in self.ledgers["sample"].final().items() if e["status"] == Status.kept}
            negatives = [n for n in negatives if n.key in kept]
        self._sample_stage("scratch", self.ledgers["scratch"], self.scratch_episodes, [(n, 0) for n in negatives],
                           self.config.scratch.n)

    # ------------------------------------------------------------------ stage 6: write

    def build(self) -> dict[str, tuple[list, Counter]]:
        """The pairs of each configured kind as the stage files give them now, with the counts of
        why the other negatives gave none (no model call, nothing written)."""
        negatives, _ = self.negatives()
        episodes = {**self._latest(self.episodes), **self._latest(self.branches), **self._latest(self.scratch_episodes)}
        stages = {name: ledger.final() for name, ledger in self.ledgers.items()}
        results = {}
        w = self.config.write
        for kind in w.kinds:
            if kind == PairKind.sft.value:   # the collected sessions themselves, no negative involved
                pairs, counts = build_sft(self._latest(self.episodes).values(), min_goal=w.sft_min_goal,
                                          models=w.sft_models, interlocutors=w.interlocutors, fmt=self.fmt)
            else:
                pairs, counts = build_pairs(kind, negatives, episodes, segment_method=self.config.segment.method,
                                            fixed=self.config.segment.fixed, interlocutors=w.interlocutors,
                                            fmt=self.fmt, **stages)
            for rec in pairs:
                rec.provenance["run"] = {"agent": self.config.models.agent, "partner": self.config.models.partner,
                                         "judge": self.config.models.judge, "out_dir": str(self.out)}
            results[kind] = (pairs, counts)
        return results

    def write(self) -> dict[str, Counter]:
        """Write ``pairs_<kind>.jsonl`` for each configured kind; returns the counts per kind."""
        self._built = self.build()
        for i, (kind, (pairs, _)) in enumerate(self._built.items()):
            write_pair_file(self.out / f"pairs_{kind}.jsonl", pairs)
            if i == 0 and self.config.write.output:
                write_pair_file(self.config.write.output, pairs)
        return {kind: counts for kind, (_, counts) in self._built.items()}

    # ------------------------------------------------------------------ summary

    def summary(self, write_counts: dict[str, Counter] | None = None) -> dict:
        """Counts at each stage, drops with reasons, judge calls and cost; saved as summary.json."""
        _, neg_counts = self.negatives()
        episodes = self._latest(self.episodes)
        summary: dict = {"episodes": {"sessions": len(episodes),
                                      "judged": sum(r.evaluated for r in episodes.values()),
                                      "judge_failed": sum(not r.evaluated for r in episodes.values())},
                         "negatives": neg_counts}
        for name, ledger in self.ledgers.items():
            entries = ledger.entries()
            statuses = Counter(e["status"] for e in entries.values())
            reasons = Counter(f"{e['status']}:{e.get('reason')}" for e in entries.values()
                              if e["status"] not in (Status.ok, Status.kept))
            problems = Counter(c["problem"] for e in entries.values() for c in e.get("candidates", [])
                               if c.get("problem"))
            summary[name] = {"items": len(entries), **statuses, "reasons": dict(reasons)}
            if problems:
                summary[name]["rejected_candidates"] = dict(problems)
        calls: dict = {f"{n}_judge_calls": 0 for n in ("collect", "sample", "scratch", "locate", "segment")}
        calls.update(locate_local_scorings=0, segment_local_scorings=0, cost=0.0)
        for name in ("locate", "segment"):
            for line in self.ledgers[name].all_lines():
                calls[f"{name}_judge_calls"] += int(line.get("calls", 0))
                calls[f"{name}_local_scorings"] += int(line.get("local_calls", 0))
                calls["cost"] += float(line.get("cost", 0.0))
        for store, name in ((self.episodes, "collect"), (self.branches, "sample"),
                            (self.scratch_episodes, "scratch")):
            for rec in store:
                calls[f"{name}_judge_calls"] += int((rec.usage.get("judge") or {}).get("calls", 0))
                calls["cost"] += _usage_cost(rec.usage)
        calls["cost"] = round(calls["cost"], 6)
        summary["calls"] = calls
        if self.unplayed:
            summary["unplayed"] = self.unplayed
        summary["sampled_sessions"] = {"branches": len(self.branches), "scratch": len(self.scratch_episodes)}
        if write_counts is not None:
            summary["pairs"] = {k: dict(v) for k, v in write_counts.items()}
        (self.out / "summary.json").write_text(redact(json.dumps(summary, indent=2)), encoding="utf-8")
        self.pair_report(summary)
        return summary

    def pair_report(self, summary: dict) -> Path:
        """``summary.md`` and ``pair_stats.png`` (``sdpo.pairs.stats``): pairs per kind, where the
        error turn falls, segment lengths (target tokens too when the agent has a local tokenizer),
        and why negatives gave no pair; returns the Markdown file's path."""
        from sotopia_env.episode import read_jsonl

        from .stats import write_report

        built = self._built if self._built is not None else self.build()
        on_disk = {}
        for kind in built:
            path = self.out / f"pairs_{kind}.jsonl"
            on_disk[kind] = sum(1 for _ in read_jsonl(path)) if path.exists() else None
        notes = ["\"pairs\" are the pairs the stage files give now (what stage=write writes); \"in the pair file\" "
                 "is what pairs_<kind>.jsonl holds (run stage=write where they differ)."]
        agent = self.config.models.agent
        tokenizer = None
        if any(pairs for pairs, _ in built.values()):
            if agent in self._local:
                tokenizer = self._local[agent][1]
            elif is_local_model(agent):
                from agents.models import load_tokenizer

                tokenizer = load_tokenizer(agent.removeprefix("hf:"))
            else:
                notes.append(f"Target tokens are not counted: the agent {agent!r} is an API model (no local tokenizer).")
        return write_report(self.out, {kind: pairs for kind, (pairs, _) in built.items()}, title=f"Pairs of {self.out}",
                            tokenizer=tokenizer, reasons={kind: dict(counts) for kind, (_, counts) in built.items()},
                            negatives=summary["negatives"].get("negatives"), on_disk=on_disk, notes=notes)

    # ------------------------------------------------------------------ running

    def run(self, stage: Stage | None = None) -> dict:
        """Run one stage or all of them in order; returns the summary."""
        stage = stage or self.config.stage
        self.save_config()
        order = [Stage.collect, Stage.negatives, Stage.locate, Stage.sample, Stage.segment, Stage.scratch]
        write_counts = None
        chosen = [s for s in order + [Stage.write] if stage in (s, Stage.all)]
        for i, s in enumerate(chosen, start=1):
            if self.config.progress:
                print(f"[{i}/{len(chosen)}] {s.value}", file=sys.stderr, flush=True)
            if s is Stage.write:
                write_counts = self.write()
            else:
                getattr(self, s.value)()
        summary = self.summary(write_counts)
        if self.config.progress:
            print(format_summary(summary))
            print(f"pair statistics: {self.out / 'summary.md'}")
        return summary

    def save_config(self) -> None:
        from omegaconf import OmegaConf

        (self.out / "config.yaml").write_text(redact(OmegaConf.to_yaml(OmegaConf.structured(self.config))),
                                              encoding="utf-8")


def collect_run_key(interlocutor: str, task_pk: str, seat: int | None, rep: int) -> str:
    """Run key of a collected session (``seat`` None: self-chat, both seats the agent's)."""
    return f"collect/{interlocutor}/{task_pk}/{'both' if seat is None else f'seat{seat}'}/{rep}"


def _usage_cost(usage: dict) -> float:
    """Dollars recorded in an episode's usage (per seat and judge), whatever its nesting."""
    total = 0.0
    for key, value in usage.items():
        if isinstance(value, dict):
            total += _usage_cost(value)
        elif key == "cost" and isinstance(value, (int, float)):
            total += float(value)
    return total


def format_summary(summary: dict) -> str:
    """The summary as a plain-text table, one row per stage."""
    rows = [("stage", "counts")]
    for name, value in summary.items():
        if isinstance(value, dict):
            flat = ", ".join(f"{k}={v}" for k, v in value.items() if not isinstance(v, dict) and v != {})
            nested = "; ".join(f"{k}: " + ", ".join(f"{a}={b}" for a, b in v.items())
                               for k, v in value.items() if isinstance(v, dict) and v)
            rows.append((name, flat + (f" | {nested}" if nested else "")))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{a:<{width}}  {b}" for a, b in rows)


__all__ = ["PairPipeline", "check_inputs", "format_summary", "is_local_model"]
