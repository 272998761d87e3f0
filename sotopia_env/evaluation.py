"""Evaluation types: the seven SOTOPIA dimensions, their ranges, per-agent scores with the
judge's reasoning, and the ``Evaluator`` interface the environment calls at the end.

The LLM judge and the offline local judge live in ``agents.judge``; this module only knows
the score types, validates ranges, and turns an evaluation into a reward.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .errors import DataError
from .redaction import redact

if TYPE_CHECKING:  # episode.py imports this module
    from .episode import EpisodeRecord

# Dimension -> (low, high), inclusive (SOTOPIA v0.1.4).
DIMENSION_RANGES: dict[str, tuple[int, int]] = {
    "believability": (0, 10),
    "relationship": (-5, 5),
    "knowledge": (0, 10),
    "secret": (-10, 0),
    "social_rules": (-10, 0),
    "financial_and_material_benefits": (-5, 5),
    "goal": (0, 10),
}
DIMENSIONS: tuple[str, ...] = tuple(DIMENSION_RANGES)


def check_score(dimension: str, score: float, *, where: str = "") -> float:
    """Return ``score`` if it is a finite number inside ``dimension``'s range; raise DataError otherwise."""
    if dimension not in DIMENSION_RANGES:
        raise DataError(f"{where}unknown dimension {dimension!r}; allowed: {', '.join(DIMENSIONS)}")
    low, high = DIMENSION_RANGES[dimension]
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise DataError(f"{where}score for {dimension!r} must be a number in [{low}, {high}], got {score!r}")
    if not low <= score <= high:
        raise DataError(f"{where}score for {dimension!r} is {score} but must be in [{low}, {high}]")
    return float(score)


@dataclass
class AgentEvaluation:
    """One agent's scores on the seven dimensions, with the judge's reasoning per dimension."""

    scores: dict[str, float]
    reasoning: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        missing = [d for d in DIMENSIONS if d not in self.scores]
        if missing:
            raise DataError(f"evaluation is missing dimension(s) {', '.join(missing)}")
        # Stored as floats so that every record (and its Arrow column) has one type.
        self.scores = {d: check_score(d, s) for d, s in self.scores.items()}

    @property
    def overall(self) -> float:
        """SOTOPIA's overall score: the plain mean of the seven raw scores."""
        return sum(self.scores[d] for d in DIMENSIONS) / len(DIMENSIONS)

    def to_dict(self) -> dict:
        return {"scores": dict(self.scores), "reasoning": dict(self.reasoning), "overall": self.overall}

    @classmethod
    def from_dict(cls, d: dict) -> AgentEvaluation:
        return cls(scores={k: float(v) for k, v in d["scores"].items()}, reasoning=dict(d.get("reasoning", {})))


@dataclass
class EpisodeEvaluation:
    """The judge's verdict on a finished episode: one AgentEvaluation per seat, or, when the judge
    failed for good, ``evaluated=False`` with the error (never a silent score of 0)."""

    agents: list[AgentEvaluation] | None
    judge: str = ""
    evaluated: bool = True
    error: str | None = None
    comment: str = ""

    def __post_init__(self):
        if self.evaluated and (self.agents is None or len(self.agents) != 2):
            raise DataError("an evaluated episode needs exactly 2 agent evaluations")

    @classmethod
    def failed(cls, judge: str, error: str) -> EpisodeEvaluation:
        return cls(agents=None, judge=judge, evaluated=False, error=redact(error))  # an API may echo the key

    def to_dict(self) -> dict:
        return {"evaluated": self.evaluated, "judge": self.judge, "error": self.error, "comment": self.comment,
                "agents": [a.to_dict() for a in self.agents] if self.agents else None}

    @classmethod
    def from_dict(cls, d: dict) -> EpisodeEvaluation:
        agents = [AgentEvaluation.from_dict(a) for a in d["agents"]] if d.get("agents") else None
        return cls(agents=agents, judge=d.get("judge", ""), evaluated=bool(d.get("evaluated", agents is not None)),
                   error=d.get("error"), comment=d.get("comment", ""))


@dataclass
class RewardWeights:
    """How ``step`` turns an evaluation into a scalar reward: a weighted sum of dimensions.
    The default is SOTOPIA's and the paper's headline metric, the goal score alone."""

    weights: dict[str, float] = field(default_factory=lambda: {"goal": 1.0})

    def __post_init__(self):
        for d in self.weights:
            if d not in DIMENSION_RANGES:
                raise DataError(f"reward weight for unknown dimension {d!r}; allowed: {', '.join(DIMENSIONS)}")

    def reward(self, evaluation: AgentEvaluation) -> float:
        return float(sum(w * evaluation.scores[d] for d, w in self.weights.items()))


@runtime_checkable
class Evaluator(Protocol):
    """Scores a finished episode. ``agents.judge`` provides the LLM and the local judge.

    ``evaluate(episode)`` receives the episode record (task, turns) and returns an
    EpisodeEvaluation; it must not raise for a judge failure but return
    ``EpisodeEvaluation.failed(...)`` so that the episode is stored as unevaluated.
    """

    name: str

    def evaluate(self, episode: EpisodeRecord) -> EpisodeEvaluation: ...
