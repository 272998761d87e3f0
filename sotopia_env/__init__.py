"""SOTOPIA-style social tasks as a PettingZoo ParallelEnv: scenarios, profiles, tasks,
the environment, evaluation types and episode records."""
from .builtin import builtin_tasks, get_task
from .env import SotopiaEnv, aec_env, parallel_env
from .episode import ACTION_TYPES, EpisodeRecord, EpisodeStore, Turn
from .errors import APIError, ConfigError, DataError, FatalAPIError, JudgeError, SotopiaError
from .evaluation import (
    DIMENSION_RANGES,
    DIMENSIONS,
    AgentEvaluation,
    EpisodeEvaluation,
    Evaluator,
    RewardWeights,
)
from .loader import (
    Combo,
    EnvironmentList,
    LoadReport,
    load_combos,
    load_environment_lists,
    load_profiles,
    load_relationships,
    load_scenarios,
    load_sotopia_dump,
    load_sotopia_episodes,
    load_tasks,
    sample_tasks,
    select_environment_list,
)
from .profiles import Profile, Relationship, RelationshipProfile, Scenario, Task
from .render import PROMPT_STYLES, check_prompt_style
from .termination import RuleBasedTermination

__all__ = [
    "APIError", "ConfigError", "DataError", "JudgeError", "SotopiaError", "DIMENSION_RANGES", "DIMENSIONS",
    "AgentEvaluation", "EpisodeEvaluation", "Evaluator", "RewardWeights", "ACTION_TYPES", "EpisodeRecord",
    "EpisodeStore", "Turn", "Profile", "Relationship", "RelationshipProfile", "Scenario", "Task",
    "RuleBasedTermination", "Combo", "EnvironmentList", "LoadReport", "load_combos", "load_environment_lists",
    "load_profiles", "load_relationships", "load_scenarios", "load_sotopia_dump", "load_sotopia_episodes",
    "load_tasks", "sample_tasks", "select_environment_list", "builtin_tasks",
    "get_task", "SotopiaEnv", "aec_env", "parallel_env", "PROMPT_STYLES", "check_prompt_style",
    "FatalAPIError",
]
