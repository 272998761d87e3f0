"""Negatives: the (session, trained seat) pairs whose judged scores are low (the SDPO pipeline, step 2).

In self-chat both seats are played by the trained agent, so one session can give two
negatives; against a partner only the agent's own seat counts. A negative is named by its
key ``"<episode_id>:<seat>"`` in every later stage file.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from sotopia_env.episode import EpisodeRecord

from .config import NegativeRule, NegativesConfig


@dataclass(frozen=True)
class Negative:
    """One negative: a session and the seat whose turns will be trained."""

    episode_id: str
    agent_index: int
    interlocutor: str
    """"self" (self-chat) or "partner"."""
    task_pk: str
    scenario_pk: str
    goal: float
    relationship: float

    @property
    def key(self) -> str:
        return negative_key(self.episode_id, self.agent_index)

    def to_dict(self) -> dict:
        return {"key": self.key, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> Negative:
        return cls(episode_id=d["episode_id"], agent_index=int(d["agent_index"]), interlocutor=d["interlocutor"],
                   task_pk=d["task_pk"], scenario_pk=d["scenario_pk"], goal=float(d["goal"]),
                   relationship=float(d["relationship"]))


def negative_key(episode_id: str, agent_index: int) -> str:
    return f"{episode_id}:{agent_index}"


def trained_seats(record: EpisodeRecord) -> list[int]:
    """Seats played by the trained agent in a collected session: ``record.agent_seats()`` (the
    collect stage always tags them). A partner session without the tag is the one exception: one
    of its seats is the partner's and nothing says which, so it gives no negative (training on the
    partner's seat would teach the agent the partner's side)."""
    if "agent_seats" not in record.tags and _interlocutor(record) != "self":
        return []
    return record.agent_seats()


def _interlocutor(record: EpisodeRecord) -> str:
    return str(record.tags.get("interlocutor", "self"))


def is_negative(goal: float, relationship: float, config: NegativesConfig) -> bool:
    """The negatives rule (the authors' released code): the paper's goal < 7, or the authors' goal <= 7 or relationship <= 2."""
    if config.rule == NegativeRule.paper:
        return goal < config.goal_below
    return goal <= config.goal_at_most or relationship <= config.relationship_at_most


def select_negatives(records: Iterable[EpisodeRecord], config: NegativesConfig) -> tuple[list[Negative], dict]:
    """Pick negatives from collected sessions, in store order.

    Returns the negatives and counts: ``sessions``, ``unevaluated`` (judge failed: never a
    negative, since a missing score is not a low score), ``seats``, ``negatives``,
    ``capped`` (over ``max_per_scenario_side`` or ``max_negatives``).
    """
    counts = {"sessions": 0, "unevaluated": 0, "seats": 0, "negatives": 0, "capped": 0}
    per_scenario_side: dict[tuple[str, int], int] = defaultdict(int)
    chosen: list[Negative] = []
    for record in records:
        counts["sessions"] += 1
        if not record.evaluated:
            counts["unevaluated"] += 1
            continue
        for seat in trained_seats(record):
            counts["seats"] += 1
            goal, relationship = record.score(seat, "goal"), record.score(seat, "relationship")
            if not is_negative(goal, relationship, config):
                continue
            if not any(t.agent_index == seat for t in record.turns):
                continue  # the seat never acted: there is no turn to improve
            if config.max_negatives is not None and len(chosen) >= config.max_negatives:
                counts["capped"] += 1
                continue
            side = (record.task.scenario.pk, seat)
            if config.max_per_scenario_side is not None and per_scenario_side[side] >= config.max_per_scenario_side:
                counts["capped"] += 1
                continue
            per_scenario_side[side] += 1
            chosen.append(Negative(episode_id=record.episode_id, agent_index=seat,
                                   interlocutor=_interlocutor(record),
                                   task_pk=record.task.pk, scenario_pk=record.task.scenario.pk,
                                   goal=goal, relationship=relationship))
    counts["negatives"] = len(chosen)
    return chosen, counts
