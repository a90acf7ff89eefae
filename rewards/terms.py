"""The reward terms under their public path; they live in :mod:`backtrack_gym.envs.terms`,
below the envs that count them, so that the envs import no reward adapter."""

from backtrack_gym.envs.terms import (
    DEFAULT_WEIGHTS,
    TERMS,
    EpisodeStats,
    backtracking,
    breakdown,
    check_weights,
    compose,
    correct,
    format_errors,
    length,
    progress,
    score,
    validity,
)

__all__ = [
    "DEFAULT_WEIGHTS",
    "TERMS",
    "EpisodeStats",
    "backtracking",
    "breakdown",
    "check_weights",
    "compose",
    "correct",
    "format_errors",
    "length",
    "progress",
    "score",
    "validity",
]
