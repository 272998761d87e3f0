"""SOTOPIA-style social tasks as a PettingZoo ParallelEnv: scenarios, profiles, tasks,
the environment, evaluation types and episode records."""
from .errors import APIError, ConfigError, DataError, JudgeError, SotopiaError
from .evaluation import DIMENSION_RANGES, DIMENSIONS, AgentEvaluation, EpisodeEvaluation, Evaluator, RewardWeights
from .episode import ACTION_TYPES, EpisodeRecord, EpisodeStore, Turn
from .profiles import Profile, Relationship, Scenario, Task

__all__ = [
    "APIError", "ConfigError", "DataError", "JudgeError", "SotopiaError", "DIMENSION_RANGES", "DIMENSIONS",
    "AgentEvaluation", "EpisodeEvaluation", "Evaluator", "RewardWeights", "ACTION_TYPES", "EpisodeRecord",
    "EpisodeStore", "Turn", "Profile", "Relationship", "Scenario", "Task",
]
