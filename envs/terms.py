"""Reward terms: each one maps the facts of an episode to a number.

Every reward in backtrack-gym is a weighted sum of these terms, computed from an
:class:`EpisodeStats`. The env counts the same stats in both interaction modes, and
the TRL adapter scores a completion by playing it in a completion-mode env with the
settings it is given, so a completion earns the same reward in training and in the env.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass
class EpisodeStats:
    """Counts of what happened in an episode so far.

    Attributes:
        steps: lines acted on (valid, invalid and backtrack lines; free text that a
            grammar allows and the blank lines of a completion are not steps).
        valid: steps applied by the rules.
        malformed: lines the grammar could not parse.
        illegal: parsed steps the rules rejected (including a backtrack when
            backtracking is off or there is nothing to undo).
        backtracks: backtrack lines that undid a step.
        solved: the goal holds in the current state.
        progress: the task's measure of how much of the goal the current state
            reaches, in [0, 1] (e.g. Sudoku cells filled correctly, givens excluded).
    """

    steps: int = 0
    valid: int = 0
    malformed: int = 0
    illegal: int = 0
    backtracks: int = 0
    solved: bool = False
    progress: float = 0.0

    @property
    def invalid(self) -> int:
        return self.malformed + self.illegal


def correct(stats: EpisodeStats) -> float:
    """1 if the task is solved, else 0 (the terminal correctness reward)."""
    return 1.0 if stats.solved else 0.0


def progress(stats: EpisodeStats) -> float:
    """The task's partial credit for the current state, in [0, 1]."""
    return float(stats.progress)


def format_errors(stats: EpisodeStats) -> float:
    """Minus the number of lines that do not parse in the step grammar."""
    return float(-stats.malformed)


def validity(stats: EpisodeStats) -> float:
    """Minus the number of well-formed steps that break the rules."""
    return float(-stats.illegal)


def length(stats: EpisodeStats) -> float:
    """Minus the number of steps taken."""
    return float(-stats.steps)


def backtracking(stats: EpisodeStats) -> float:
    """Minus the number of backtracks (a positive weight rewards them instead)."""
    return float(-stats.backtracks)


TERMS: dict[str, Callable[[EpisodeStats], float]] = {
    "correct": correct,
    "progress": progress,
    "format": format_errors,
    "validity": validity,
    "length": length,
    "backtrack": backtracking,
}

DEFAULT_WEIGHTS: dict[str, float] = {"correct": 1.0}


def check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Return ``weights`` as a dict, or raise ``ValueError`` naming an unknown term."""
    unknown = sorted(set(weights) - set(TERMS))
    if unknown:
        raise ValueError(f"unknown reward terms {unknown}; known: {sorted(TERMS)}")
    return {name: float(w) for name, w in weights.items()}


def breakdown(stats: EpisodeStats, weights: Mapping[str, float]) -> dict[str, float]:
    """The weighted value of each term with a non-zero weight."""
    return {name: w * TERMS[name](stats) for name, w in weights.items() if w}


def score(stats: EpisodeStats, weights: Mapping[str, float] = DEFAULT_WEIGHTS) -> float:
    """The total reward: the weighted sum of the terms."""
    return sum(breakdown(stats, weights).values())


def compose(weights: Mapping[str, float]) -> Callable[[EpisodeStats], float]:
    """A reward function ``stats -> float`` for the given term weights."""
    checked = check_weights(weights)
    return lambda stats: score(stats, checked)
