"""Play many episodes concurrently, judge them, and append each to an episode store at once.

One env per episode, all in one asyncio loop. Local (batched) policies get the pending turns
of every running episode in one ``act`` call (one generation batch, run in a worker thread so
API episodes keep going); API policies are called through ``aact``, bounded by their client's
concurrency. A resumed run skips every job whose ``run_key`` is stored and evaluated; an
episode stored unevaluated (the judge failed) is judged again without being replayed. A run
ends with every job's episode recorded exactly once (plus, for re-judged ones, the earlier
unevaluated line), or raises APIError naming the jobs that could not be played. A fatal API
error (``FatalAPIError``: a refused key, an unknown model, for agent, partner or judge alike)
stops the run at once: no further episode is played, what is stored stays stored (an episode
played but refused by the judge is stored unevaluated, so a resumed run only judges it).
"""
from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sotopia_env.episode import EpisodeRecord, EpisodeStore, Turn
from sotopia_env.errors import APIError, ConfigError, FatalAPIError
from sotopia_env.evaluation import EpisodeEvaluation
from sotopia_env.profiles import Task
from sotopia_env.redaction import redact

from .formatter import ConversationFormat
from .policy import Policy, TurnRequest, TurnResult


@dataclass
class EpisodeJob:
    """One episode to play. ``policies[i]`` plays seat i. ``run_key`` names the unit of work for
    resuming. A branch (SDPO positive sampling) starts from ``history`` (the turns shared with
    ``parent_episode_id`` before ``branch_turn``). ``temperatures`` overrides each seat's
    sampling temperature (None: the policy's own), e.g. (1.0, 0.7) for target and partner."""

    task: Task
    policies: tuple[Policy, Policy]
    run_key: str
    seed: int | None = None
    history: Sequence[Turn] = ()
    parent_episode_id: str | None = None
    branch_turn: int | None = None
    max_turns: int = 20
    tags: dict = field(default_factory=dict)
    temperatures: tuple[float | None, float | None] = (None, None)
    turn_order: str = "round-robin"
    max_stale_turns: int = 2
    prompt_style: str = "native"
    """How both seats' prompts and the env's observations are rendered (``sotopia_env.render``)."""

    def __post_init__(self):
        if len(self.policies) != 2:
            raise ConfigError(f"job {self.run_key!r}: policies must be a pair (seat 0, seat 1), "
                              f"got {len(self.policies)}")
        if isinstance(self.history, EpisodeRecord):
            raise ConfigError(f"job {self.run_key!r}: history must be a list of Turn (the turns before the "
                              "branch), not an EpisodeRecord; pass record.turns[:branch_turn]")


class _Batcher:
    """Gathers the turn requests of all running episodes for one batched policy and answers them
    with one ``act`` call. A request waits until the loop has let every runnable episode reach
    its next request (a few idle loop ticks), so concurrent episodes share a batch."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self.pending: list[tuple[TurnRequest, asyncio.Future]] = []
        self.flusher: asyncio.Task | None = None
        self.busy = asyncio.Lock()

    async def submit(self, request: TurnRequest) -> TurnResult:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((request, future))
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        async with self.busy:  # one generation at a time per model; others queue into the next batch
            for _ in range(5):  # let episodes that just got their answer submit their next turn
                await asyncio.sleep(0)
            while self.pending:
                batch, self.pending = self.pending, []
                try:
                    results = await asyncio.to_thread(self.policy.act, [r for r, _ in batch])
                except Exception as e:  # noqa: BLE001 - every waiting episode must hear of the failure
                    for _, f in batch:
                        if not f.done():
                            f.set_exception(e)
                    continue
                for (_, f), result in zip(batch, results):
                    if not f.done():
                        f.set_result(result)
                for _ in range(5):
                    await asyncio.sleep(0)


def _turn_share(job: EpisodeJob) -> int:
    """The turns a job can play at most (a branch starts after its history's turns)."""
    return max(0, job.max_turns - len({t.turn for t in job.history}))


class _Run:
    def __init__(self, store: EpisodeStore | None, judge, concurrency: int, progress: bool, total: int,
                 total_turns: int = 0):
        self.store, self.judge = store, judge
        self.total = total
        self.slots = asyncio.Semaphore(concurrency)
        self.batchers: dict[int, _Batcher] = {}
        self.records: list[EpisodeRecord] = []
        self.failures: list[tuple[str, BaseException]] = []
        self._turns: dict[str, int] = {}  # turns played so far, per running episode
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            # The bar counts turns (an episode that ends early fills the rest of its share), so it
            # moves and its ETA means something long before the first episode is done.
            self.bar = tqdm(total=total_turns + total, desc="turns", unit="turn", file=sys.stderr)
            self._postfix()

    def _postfix(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"episodes {len(self.records)}/{self.total}"
                                     + (f", FAILED {len(self.failures)}" if self.failures else ""), refresh=False)

    def advance(self, n: int) -> None:
        if self.bar is not None and n > 0:
            self.bar.update(n)

    async def turn(self, policy: Policy, request: TurnRequest) -> TurnResult:
        if getattr(policy, "batched", False):
            batcher = self.batchers.get(id(policy))
            if batcher is None:
                batcher = self.batchers[id(policy)] = _Batcher(policy)
            return await batcher.submit(request)
        return await policy.aact(request)

    async def judge_record(self, record: EpisodeRecord) -> None:
        start = time.perf_counter()
        if self.judge is None:
            return
        name = getattr(self.judge, "name", type(self.judge).__name__)
        try:
            if hasattr(self.judge, "aevaluate_with_usage"):
                evaluation, usage = await self.judge.aevaluate_with_usage(record)
            elif hasattr(self.judge, "aevaluate"):
                evaluation, usage = await self.judge.aevaluate(record), {}
            else:
                evaluation, usage = await asyncio.to_thread(self.judge.evaluate, record), {}
        except FatalAPIError as e:
            record.evaluation = EpisodeEvaluation.failed(name, f"{type(e).__name__}: {e}")
            raise
        except Exception as e:  # noqa: BLE001 - stored unevaluated, judged again by the next run
            evaluation, usage = EpisodeEvaluation.failed(name, f"{type(e).__name__}: {e}"), {}
        if not isinstance(evaluation, EpisodeEvaluation):
            evaluation = EpisodeEvaluation.failed(name, f"judge returned {type(evaluation).__name__}")
        record.evaluation = evaluation
        record.usage["judge"] = usage
        record.timings["judge_seconds"] = time.perf_counter() - start

    def finish(self, record: EpisodeRecord) -> None:
        if self.store is not None:
            self.store.append(record)
        self.records.append(record)
        self._postfix()
        self.advance(1)

    async def play(self, job: EpisodeJob) -> None:
        async with self.slots:
            record = None
            try:
                record = await self.play_episode(job)
                await self.judge_record(record)
            except FatalAPIError:
                if record is not None:  # played and paid for: kept unevaluated, only judged on resume
                    self.finish(record)
                raise
            except Exception as e:  # noqa: BLE001 - this episode only: the others go on
                self.failures.append((job.run_key, e))
                self._postfix()
                self.advance(_turn_share(job) - self._turns.pop(job.run_key, 0) + 1)
                return
            self.advance(_turn_share(job) - self._turns.pop(job.run_key, 0))
            self.finish(record)

    async def rejudge(self, record: EpisodeRecord) -> None:
        async with self.slots:
            await self.judge_record(record)
            record.tags["rejudged"] = True
            self.finish(record)

    async def play_episode(self, job: EpisodeJob) -> EpisodeRecord:
        from sotopia_env import parallel_env

        start = time.perf_counter()
        env = parallel_env(job.task, max_turns=job.max_turns, max_stale_turns=job.max_stale_turns,
                           turn_order=job.turn_order, prompt_style=job.prompt_style)
        options: dict[str, Any] = {"task": job.task}
        if job.history:
            options["history"] = list(job.history)
        env.reset(seed=job.seed, options=options)
        fmt = ConversationFormat(max_turns=job.max_turns, prompt_style=job.prompt_style)
        seats: list[dict] = [{"prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0, "turns": 0,
                              "fallbacks": 0, "retries": 0} for _ in (0, 1)]
        truncations: list[dict] = []
        names = job.task.agent_names
        while env.agents:
            speakers = [names.index(n) for n in env.next_agents()]
            history = list(env.history)
            requests = {s: TurnRequest(task=job.task, agent_index=s, turns=history, temperature=job.temperatures[s],
                                       fmt=fmt, seed=turn_seed(env.seed, env.turn, s)) for s in speakers}
            results = await asyncio.gather(*(self.turn(job.policies[s], requests[s]) for s in speakers))
            before = len(env.history)
            env.step({names[s]: {"action_type": r.action_type, "argument": r.argument}
                      for s, r in zip(speakers, results)})
            self._turns[job.run_key] = self._turns.get(job.run_key, 0) + 1
            self.advance(1)
            by_seat = dict(zip(speakers, results))
            for t in env.history[before:]:
                r = by_seat.get(t.agent_index)
                if r is None:
                    continue
                t.prompt_tokens, t.completion_tokens, t.fallback = r.prompt_tokens, r.completion_tokens, r.fallback
                seat = seats[t.agent_index]
                seat["prompt_tokens"] += r.prompt_tokens
                seat["completion_tokens"] += r.completion_tokens
                seat["cost"] += r.cost
                seat["turns"] += 1
                seat["fallbacks"] += int(r.fallback)
                seat["retries"] += r.retries
                if r.omitted_turns:
                    truncations.append({"turn": t.turn, "agent_index": t.agent_index, "omitted_turns": r.omitted_turns})
        sampling = []
        for s, p in enumerate(job.policies):
            settings = dict(p.sampling)
            if job.temperatures[s] is not None:
                settings["temperature"] = job.temperatures[s]
            sampling.append(settings)
        tags = {**job.tags, "run_key": job.run_key, "fallbacks": seats[0]["fallbacks"] + seats[1]["fallbacks"],
                "context_truncations": truncations, "format": dataclasses.asdict(fmt)}
        record = env.to_record(models=[p.name for p in job.policies], sampling=sampling, seed=job.seed, tags=tags,
                               usage={"seats": seats}, timings={"play_seconds": time.perf_counter() - start})
        if job.parent_episode_id is not None:
            record.parent_episode_id = job.parent_episode_id
        if job.branch_turn is not None:
            record.branch_turn = job.branch_turn
        return record


async def arun_episodes(jobs: Sequence[EpisodeJob], store: EpisodeStore | None, judge, *, concurrency: int = 8,
                        progress: bool = True) -> list[EpisodeRecord]:
    """``run_episodes`` inside a running event loop."""
    if concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
    keys = [j.run_key for j in jobs]
    if len(set(keys)) != len(keys):
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        raise ConfigError(f"run keys must be unique within a run; repeated: {', '.join(dupes[:5])}")
    done: set[str] = set()
    unevaluated: dict[str, EpisodeRecord] = {}
    if store is not None:
        done = store.done_keys()
        for record in store:  # the last stored line of a key wins
            key = record.tags.get("run_key")
            if key in keys and key not in done:
                unevaluated[key] = record
    todo = [j for j in jobs if j.run_key not in done and j.run_key not in unevaluated]
    rejudge = [unevaluated[j.run_key] for j in jobs if j.run_key in unevaluated and judge is not None]
    todo += [j for j in jobs if j.run_key in unevaluated and judge is None]
    if todo or rejudge:
        check_api_models([p for j in todo for p in j.policies], judge)
    run = _Run(store, judge, concurrency, progress, len(todo) + len(rejudge),
               total_turns=sum(_turn_share(j) for j in todo))
    tasks = [asyncio.create_task(run.play(j)) for j in todo] + [asyncio.create_task(run.rejudge(r)) for r in rejudge]
    try:
        await asyncio.gather(*tasks)
    except BaseException as e:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if isinstance(e, FatalAPIError):
            kept = len(run.records)
            unjudged = sum(not r.evaluated for r in run.records) if judge is not None else 0
            raise FatalAPIError(f"the run stopped: {e}; kept: the {kept} episode(s) stored by this run ({unjudged} "
                                f"still to judge); not done: {len(tasks) - kept}; fix it, then run again to "
                                f"resume", model=e.model, key_source=e.key_source) from e
        raise
    finally:
        if run.bar is not None:
            run.bar.close()
        if "agents.llm_client" in sys.modules:  # an API model was called in this loop
            from .llm_client import drain_logging

            await drain_logging()
    if run.failures:
        detail = redact("; ".join(f"{key}: {type(e).__name__}: {e}" for key, e in run.failures[:5]))
        raise APIError(f"{len(run.failures)} of {len(todo)} episode(s) could not be played and were not stored "
                       f"(run again to resume them): {detail}")
    return run.records


def run_episodes(jobs: Sequence[EpisodeJob], store: EpisodeStore | None, judge, *, concurrency: int = 8,
                 progress: bool = True) -> list[EpisodeRecord]:
    """Play ``jobs`` (at most ``concurrency`` episodes at once), judge each finished episode with
    ``judge`` (an LLMJudge, LocalJudge, any Evaluator, or None), and append it to ``store`` at once.
    Jobs whose run key is already stored and evaluated are skipped; stored but unevaluated ones
    are judged again. Returns the records written by this call."""
    return asyncio.run(arun_episodes(jobs, store, judge, concurrency=concurrency, progress=progress))


def check_api_models(policies: Sequence[Policy], judge=None) -> None:
    """Check every API model of a run once (agent, partner, judge) before the first episode:
    ConfigError at once for an unknown model, a missing key or an api_base that does not answer
    (``agents.llm_client.check_model``; no paid call)."""
    seen: set[int] = set()
    for role, owner in [("policy", p) for p in policies] + [("judge", judge)]:
        client = getattr(owner, "client", None)
        if client is None or id(client) in seen or not hasattr(client, "check"):
            continue
        seen.add(id(client))
        client.check(role=role)


def turn_seed(episode_seed: int, turn: int, seat: int) -> int:
    """The sampling seed of one turn of one seat: a function of the episode's seed alone, so an
    episode plays the same whatever else runs beside it (and a branch replays its parent's turns'
    seeds up to the branch point)."""
    return (episode_seed * 1_000_003 + turn * 2 + seat) % 2**62


def _style_key(prompt_style: str) -> str:
    """The run-key suffix of a prompt style: none for native (the keys of earlier stores stay valid)."""
    return "" if prompt_style == "native" else f"|{prompt_style}"


def self_chat_jobs(tasks: Sequence[Task], policy: Policy, *, repeats: int = 1, max_turns: int = 20,
                   seed: int = 0, tags: dict | None = None, prefix: str = "self",
                   prompt_style: str = "native") -> list[EpisodeJob]:
    """One model plays both seats of every task, ``repeats`` times."""
    return [EpisodeJob(task=t, policies=(policy, policy),
                       run_key=f"{prefix}|{t.pk}|{policy.name}|{rep}{_style_key(prompt_style)}",
                       seed=seed + 1000 * rep + i, max_turns=max_turns, prompt_style=prompt_style,
                       tags={**(tags or {}), "agent_seats": [0, 1], "setting": "self-chat"})
            for rep in range(repeats) for i, t in enumerate(tasks)]


def versus_jobs(tasks: Sequence[Task], agent: Policy, partner: Policy, *, repeats: int = 1, max_turns: int = 20,
                seed: int = 0, tags: dict | None = None, prefix: str = "vs",
                prompt_style: str = "native") -> list[EpisodeJob]:
    """``agent`` against ``partner`` with seats swapped: one episode per seat of every task (only the
    task's ``tested_seat`` when it fixes one, as in SOTOPIA's hard subset)."""
    jobs = []
    for rep in range(repeats):
        for i, t in enumerate(tasks):
            for seat in ([t.tested_seat] if t.tested_seat is not None else [0, 1]):
                policies = (agent, partner) if seat == 0 else (partner, agent)
                jobs.append(EpisodeJob(task=t, policies=policies,
                                       run_key=f"{prefix}|{t.pk}|{agent.name}|{partner.name}|seat{seat}|{rep}"
                                               f"{_style_key(prompt_style)}",
                                       seed=seed + 1000 * rep + 2 * i + seat, max_turns=max_turns,
                                       prompt_style=prompt_style,
                                       tags={**(tags or {}), "agent_seats": [seat], "setting": f"vs {partner.name}"}))
    return jobs
