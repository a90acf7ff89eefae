"""The one place answers are scored: reward terms, their composition, and the TRL adapters.

The terms themselves live in :mod:`backtrack_gym.envs.terms`, below the envs that count
them; every registered task's own reward adapters are exported here by name too.
"""

from backtrack_gym.envs.registry import TASKS, adapter_name, load
from backtrack_gym.envs.terms import (
    DEFAULT_WEIGHTS,
    TERMS,
    EpisodeStats,
    breakdown,
    check_weights,
    compose,
    score,
)
from backtrack_gym.rewards.adapters import (
    METRICS,
    completion_text,
    episode_reward_functions,
    replay_stats,
    stats_from_info,
    trl_reward_functions,
)

# Each task's own reward adapters (registered by import path, loaded now), by function name.
TASK_REWARDS = {adapter_name(path): load(path) for spec in TASKS.values() for path in spec.reward_adapters}
globals().update(TASK_REWARDS)

__all__ = [
    "DEFAULT_WEIGHTS",
    "METRICS",
    "TASK_REWARDS",
    "TERMS",
    "EpisodeStats",
    "breakdown",
    "check_weights",
    "completion_text",
    "compose",
    "episode_reward_functions",
    "replay_stats",
    "score",
    "stats_from_info",
    "trl_reward_functions",
    *TASK_REWARDS,
]
