"""Small episode records written in code, shared by the tests of ``sdpo.pairs``."""
from __future__ import annotations

from sotopia_env.episode import EpisodeRecord, Turn
from sotopia_env.evaluation import DIMENSIONS, AgentEvaluation, EpisodeEvaluation
from sotopia_env.profiles import Task
from tests.factories import make_task

NAMES = ("Ana Reyes", "Ben Okafor")


def evaluation(goals=(5.0, 5.0), relationships=(0.0, 0.0)) -> EpisodeEvaluation:
    agents = []
    for g, r in zip(goals, relationships):
        scores = {d: 0.0 for d in DIMENSIONS}
        scores.update(goal=float(g), relationship=float(r), believability=7.0)
        agents.append(AgentEvaluation(scores=scores))
    return EpisodeEvaluation(agents=agents, judge="test")


def lines(texts, start: int = 0) -> list[Turn]:
    """Round-robin turns: turn i is seat i % 2 speaking texts[i - start]."""
    return [Turn(turn=start + k, agent_index=(start + k) % 2, speaker=NAMES[(start + k) % 2], action_type="speak",
                 argument=text) for k, text in enumerate(texts)]


def episode(texts, *, goals=(5.0, 5.0), relationships=(0.0, 0.0), episode_id: str = "neg",
            interlocutor: str = "self", seats=(0, 1), task: Task | None = None, evaluated: bool = True,
            **kwargs) -> EpisodeRecord:
    ev = evaluation(goals, relationships) if evaluated else EpisodeEvaluation.failed("test", "scripted failure")
    return EpisodeRecord(task=task or make_task(), turns=lines(texts), evaluation=ev, episode_id=episode_id,
                         models=["agent", "agent" if interlocutor == "self" else "partner"],
                         tags={"interlocutor": interlocutor, "agent_seats": list(seats)}, **kwargs)


def branch(negative: EpisodeRecord, branch_turn: int, new_texts, *, goals, relationships=(0.0, 0.0),
           episode_id: str, evaluated: bool = True) -> EpisodeRecord:
    """A continuation of ``negative`` from ``branch_turn``: its history, then ``new_texts``."""
    turns = list(negative.turns[:branch_turn]) + lines(new_texts, start=branch_turn)
    ev = evaluation(goals, relationships) if evaluated else EpisodeEvaluation.failed("test", "scripted failure")
    return EpisodeRecord(task=negative.task, turns=turns, evaluation=ev, episode_id=episode_id,
                         parent_episode_id=negative.episode_id, branch_turn=branch_turn, models=list(negative.models),
                         tags=dict(negative.tags))
