"""The one place answers are scored: reward terms, their composition, and the TRL adapter."""

from typing import Any

from backtrack_gym.rewards.terms import (
    DEFAULT_WEIGHTS,
    TERMS,
    EpisodeStats,
    breakdown,
    check_weights,
    compose,
    score,
)

_ADAPTERS = (
    "METRICS",
    "completion_text",
    "episode_reward_functions",
    "replay_stats",
    "stats_from_info",
    "trl_reward_functions",
)
_MATH = ("math_answer_reward",)
_SUDOKU = ("sudoku_grid_reward",)

__all__ = [
    "DEFAULT_WEIGHTS",
    "TERMS",
    "EpisodeStats",
    "breakdown",
    "check_weights",
    "compose",
    "score",
    *_ADAPTERS,
    *_MATH,
    *_SUDOKU,
]


def __getattr__(name: str) -> Any:
    # The adapters replay through the envs, which import the terms: load them lazily.
    if name in _ADAPTERS:
        from backtrack_gym.rewards import adapters

        return getattr(adapters, name)
    if name in _MATH:
        from backtrack_gym.rewards import math as math_rewards

        return getattr(math_rewards, name)
    if name in _SUDOKU:
        from backtrack_gym.rewards import sudoku as sudoku_rewards

        return getattr(sudoku_rewards, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
