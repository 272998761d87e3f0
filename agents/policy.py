"""The policy interface the episode loop calls: one turn request in, one action out.

``act(requests)`` is the batched form (a local model generates all pending turns of many
episodes in one batch); ``aact(request)`` is the async form (API models, bounded by their
client's concurrency). ``build_policy`` picks the implementation from a model string.
"""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from sotopia_env.episode import Turn
from sotopia_env.profiles import Task

from .formatter import ConversationFormat


@dataclass
class TurnRequest:
    """Ask a policy for the action of seat ``agent_index`` in ``task`` after ``turns`` (the env's
    history so far). ``temperature`` overrides the policy's own (e.g. 1.0 for the target seat
    when sampling SDPO positives); ``fmt`` overrides the policy's conversation format."""

    task: Task
    agent_index: int
    turns: Sequence[Turn]
    temperature: float | None = None
    fmt: ConversationFormat | None = None
    seed: int | None = None
    """Seed of this turn's sampling (the runner derives it from the episode's seed, the turn and
    the seat), so that a local model samples the same action whatever other turns share its batch."""


@dataclass
class TurnResult:
    """The action a policy chose, with its accounting. ``fallback``: the reply was not a valid
    JSON action and was read as plain speech. ``omitted_turns``: oldest turns dropped to fit the
    context window. ``raw``: the model's reply text as generated. ``retries``: API attempts
    after the first (rate limits, timeouts, 5xx)."""

    action_type: str
    argument: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    fallback: bool = False
    omitted_turns: int = 0
    cost: float = 0.0
    raw: str = ""
    retries: int = 0


class Policy:
    """Base class of policies. Subclasses implement ``act`` (batched) or ``aact`` (async); each
    form falls back on the other."""

    name: str = "policy"
    """Model id, as recorded in episode records."""
    sampling: dict = {}  # noqa: RUF012 - replaced per instance by every subclass
    """Sampling settings (temperature, top_p, max_new_tokens...), as recorded. Never API keys."""
    batched: bool = False
    """True when ``act`` over many requests is cheaper than one call per request (local models):
    the runner then gathers pending turns of all running episodes into one ``act`` call."""

    def __init__(self):
        self.fmt = ConversationFormat()
        self.stats = {"turns": 0, "fallbacks": 0, "truncated_turns": 0}

    def act(self, requests: list[TurnRequest]) -> list[TurnResult]:
        async def gather():
            return await asyncio.gather(*(self.aact(r) for r in requests))

        return list(asyncio.run(gather()))

    async def aact(self, request: TurnRequest) -> TurnResult:
        return (await asyncio.to_thread(self.act, [request]))[0]

    def _count(self, results: Sequence[TurnResult]) -> None:
        self.stats["turns"] += len(results)
        self.stats["fallbacks"] += sum(r.fallback for r in results)
        self.stats["truncated_turns"] += sum(r.omitted_turns > 0 for r in results)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, sampling={self.sampling!r})"
