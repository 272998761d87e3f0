"""``python -m sdpo.pairs dry_run=true ...``: the episodes, model calls, tokens and price of each
stage, counted without loading or calling a model (``agents.estimate`` says how).

Work the run's files already hold is not counted: a resumed run repeats no call. Stages that
depend on answers not given yet are counted at their upper bound: every trained seat of a
session still to collect is a negative (within ``negatives.max_per_scenario_side`` and
``negatives.max_negatives``), every error turn still to locate is the trained agent's first turn
(the longest continuation), and every negative still to sample gets a positive, so that segment
selection and the sessions from the start count all of them. Run ``stage=collect`` first and
dry-run again to count the later stages on the real negatives.
"""
from __future__ import annotations

from pathlib import Path

from agents.estimate import (
    ASSUMED_JUDGE_ANSWER_TOKENS,
    CallPlan,
    Judge,
    Seat,
    approx_tokens,
)
from agents.models import is_local_model
from agents.rules_judge import is_rules_judge
from sotopia_env.episode import EpisodeRecord
from sotopia_env.evaluation import DIMENSION_RANGES, AgentEvaluation, EpisodeEvaluation

from .config import PairKind, PairsConfig, SegmentMethod, Stage
from .locate import locate_messages
from .negatives import select_negatives
from .pipeline import PairPipeline, collect_run_key, read_episode_log
from .sample import branch_run_key, continuation
from .segment import segment_messages
from .stages import Status


def _lowest_scores() -> EpisodeEvaluation:
    """The evaluation assumed for a session still to judge: the lowest score on every dimension, so
    that every trained seat counts as a negative (the upper bound of the later stages)."""
    agent = AgentEvaluation(scores={d: float(low) for d, (low, _) in DIMENSION_RANGES.items()})
    return EpisodeEvaluation(agents=[agent, agent], judge="dry run")


class _Planner:
    """One dry run of a pipeline config: each method adds one stage's calls to ``plan``."""

    def __init__(self, config: PairsConfig):
        self.config = config
        self.pipe = PairPipeline(config, create=False)
        self.plan = CallPlan()
        m = config.models
        self.style = config.prompt_style
        self.local_judge = is_local_model(m.judge) or is_rules_judge(m.judge)   # no API call, no cost
        if self.local_judge:
            self.judge = Judge(m.judge, max_tokens=0)
        else:
            from agents.judge import LLMJudge

            self.judge = Judge(m.judge, max_tokens=LLMJudge(m.judge).max_tokens, max_reasks=config.locate.max_reasks)
        self.target_model = m.positive_model or m.agent
        self.records: dict[str, EpisodeRecord] = dict(self.pipe._latest(self.pipe.episodes))

    def runs(self, stage: Stage) -> bool:
        return self.config.stage in (stage, Stage.all)

    def _seat(self, role: str, model: str) -> Seat:
        return Seat(role, model, self.config.models.max_new_tokens)

    def _play(self, stage: str, key: str, done: set[str], unjudged: dict[str, EpisodeRecord], task, seats,
              history=()) -> list | None:
        """One episode of a stage's plan, as the runner treats its run key; returns its planned turns
        (None when it is stored and judged)."""
        if key in done:
            self.plan.count_episodes(stage, stored=1)
            return None
        if key in unjudged:
            self.plan.count_episodes(stage, to_rejudge=1)
            self.plan.add_judging(stage, unjudged[key], self.judge, prompt_style=self.style)
            return list(unjudged[key].turns)
        return self.plan.add_episode(stage, task, seats, self.judge, max_turns=self.config.collect.max_turns,
                                     history=history, prompt_style=self.style)

    @staticmethod
    def _unjudged(store, done: set[str]) -> dict[str, EpisodeRecord]:
        return {r.tags.get("run_key"): r for r in store if r.tags.get("run_key") not in done}

    def ask(self, stage: str, role: str, messages: list[dict], max_reasks: int) -> None:
        """One judge question (error turn, segment); a local judge scores its options instead (no cost)."""
        cap = 0 if self.local_judge else self.config.models.judge_max_tokens
        self.plan.add(stage, role, self.config.models.judge, prompt_tokens=approx_tokens(messages),
                      completion_tokens=ASSUMED_JUDGE_ANSWER_TOKENS, max_tokens=cap,
                      reasks=0 if self.local_judge else max_reasks)

    # ---------------------------------------------------------------- stages

    def collect(self) -> None:
        c, m = self.config.collect, self.config.models
        if c.episodes is not None:
            done = self.pipe.episodes.done_keys(evaluated_only=False)
            imported = 0
            for record in read_episode_log(c):
                if f"import/{record.episode_id}" in done:
                    continue
                record.tags.update(interlocutor="self" if len(set(record.models)) == 1 else "partner")
                self.records[record.episode_id] = record
                imported += 1
            self.plan.notes.append(f"collect: {imported} session(s) to import from {c.episodes} (no model call).")
            return
        done = self.pipe.episodes.done_keys()
        unjudged = self._unjudged(self.pipe.episodes, done)
        by_key = {r.tags.get("run_key"): r for r in self.records.values()}
        agent = self._seat("agent", m.agent)
        partner = self._seat("partner", m.partner)
        for task in self.pipe.tasks():
            for rep in range(c.repeats):
                for kind in c.interlocutors:
                    for seat in ([None] if kind == "self" else [0, 1]):
                        key = collect_run_key(kind, task.pk, seat, rep)
                        seats = (agent, agent) if kind == "self" else \
                            ((agent, partner) if seat == 0 else (partner, agent))
                        turns = self._play("collect", key, done, unjudged, task, seats)
                        if turns is None:
                            continue
                        stored = by_key.get(key)
                        record = EpisodeRecord(task=task, turns=turns, evaluation=_lowest_scores(),
                                               episode_id=stored.episode_id if stored else f"dry-run:{key}",
                                               tags={"run_key": key, "interlocutor": kind,
                                                     "agent_seats": [0, 1] if seat is None else [seat]})
                        self.records[record.episode_id] = record

    def negatives(self) -> None:
        self.negs, counts = select_negatives(self.records.values(), self.config.negatives)
        assumed = sum(self.records[n.episode_id].evaluation.judge == "dry run" for n in self.negs)
        self.plan.notes.append(f"negatives: {counts['negatives']} ({assumed} of them assumed: sessions still to play "
                               f"or judge count every trained seat as a negative).")

    def locate(self) -> None:
        located = self.pipe.ledgers["locate"].final()
        self.error_turns: dict[str, int] = {}
        for neg in self.negs:
            entry = located.get(neg.key)
            if entry is not None:
                if entry.get("status") == Status.ok:
                    self.error_turns[neg.key] = int(entry["index"])
                continue
            record = self.records[neg.episode_id]
            own = record.agent_turns(neg.agent_index)
            if not self.runs(Stage.locate) or not own:
                continue
            self.ask("locate", "judge: error turn", locate_messages(record, neg.agent_index),
                     self.config.locate.max_reasks)
            self.error_turns[neg.key] = own[0]

    def _sampling_seats(self, agent_index: int, interlocutor: str) -> tuple[Seat, Seat]:
        m = self.config.models
        target = self._seat("positive" if m.positive_model else "agent", self.target_model)
        other = self._seat("agent", m.agent) if interlocutor == "self" else self._seat("partner", m.partner)
        return (target, other) if agent_index == 0 else (other, target)

    def sample(self) -> None:
        decided = self.pipe.ledgers["sample"].final()
        self.kept = {k: e for k, e in decided.items() if e["status"] == Status.kept}
        self.assumed_kept: dict[str, tuple[int, list]] = {}
        if not self.runs(Stage.sample):
            return
        done = self.pipe.branches.done_keys()
        unjudged = self._unjudged(self.pipe.branches, done)
        for neg in self.negs:
            if neg.key in decided or neg.key not in self.error_turns:
                continue
            e = self.error_turns[neg.key]
            record = self.records[neg.episode_id]
            seats = self._sampling_seats(neg.agent_index, neg.interlocutor)
            positive = None
            for i in range(self.config.sample.n):
                key = branch_run_key("branch", neg.key, e, self.target_model, i)
                turns = self._play("sample", key, done, unjudged, record.task, seats, history=record.turns[:e])
                positive = positive or turns
            if positive is None:   # every continuation stored: its first one stands for the positive
                stored = {r.tags.get("run_key"): r for r in self.pipe.branches}
                positive = stored[branch_run_key("branch", neg.key, e, self.target_model, 0)].turns
            self.assumed_kept[neg.key] = (e, list(positive))

    def segment(self) -> None:
        if not self.runs(Stage.segment) or self.config.segment.method != SegmentMethod.judge:
            return
        final = self.pipe.ledgers["segment"].final()
        branches = self.pipe._latest(self.pipe.branches)
        for neg in self.negs:
            if neg.key in final:
                continue
            record = self.records[neg.episode_id]
            if neg.key in self.kept:
                e = self.kept[neg.key]["branch_turn"]
                positive = record.turns[:e] + continuation(branches[self.kept[neg.key]["positive"]], e,
                                                           record.turns[:e])
            elif neg.key in self.assumed_kept:
                e, positive = self.assumed_kept[neg.key]
            else:
                continue
            self.ask("segment", "judge: segment", segment_messages(record, positive, neg.agent_index, e),
                     self.config.segment.max_reasks)

    def scratch(self) -> None:
        if not self.runs(Stage.scratch) or not set(self.config.write.kinds) & {PairKind.eto.value, PairKind.dmpo.value}:
            return
        final = self.pipe.ledgers["scratch"].final()
        done = self.pipe.scratch_episodes.done_keys()
        unjudged = self._unjudged(self.pipe.scratch_episodes, done)
        for neg in self.negs:
            if neg.key in final:
                continue
            if self.config.scratch.only_kept and neg.key not in self.kept and neg.key not in self.assumed_kept:
                continue
            seats = self._sampling_seats(neg.agent_index, neg.interlocutor)
            task = self.records[neg.episode_id].task
            for i in range(self.config.scratch.n):
                self._play("scratch", branch_run_key("scratch", neg.key, 0, self.target_model, i), done, unjudged,
                           task, seats)


def dry_run(config: PairsConfig) -> CallPlan:
    """The calls of ``PairPipeline(config).run()``, stage by stage (nothing is loaded, called or written)."""
    planner = _Planner(config)
    if planner.runs(Stage.collect):
        planner.collect()
    planner.negatives()
    planner.locate()
    planner.sample()
    planner.segment()
    planner.scratch()
    return planner.plan


def dry_run_report(config: PairsConfig) -> str:
    """``dry_run=true``: the table, also written to ``<out_dir>/dry_run.json``."""
    plan = dry_run(config)
    path = plan.write_json(Path(config.out_dir) / "dry_run.json")
    return f"{plan.table()}\ndry run written to {path}"
