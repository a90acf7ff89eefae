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
        dead_end_steps: valid steps that reached a dead end, a state the goal cannot
            be reached from: the "mistakes before finding the right answer" of Qin et
            al., "To Backtrack or Not to Backtrack".
        dead_ends_entered: valid steps from a solvable state into a dead end.
        dead_ends_left: backtracks from a dead end back to a solvable state.
        backtracks_from_solvable: backtracks that undid a solvable state (needless ones).
        unlabelled_states: states whose label the solver's node cap left unknown.
        states_visited: the start and each state a valid step reached.
        distinct_states: how many of those differ (by the task's ``state_key``).
        deepest_depth: the most steps the stack held above the start.
        backtrack_points: distinct states a backtrack returned to.
        backtrack_point_branches: the distinct states the steps from those reached, summed.

    The counts from ``dead_end_steps`` to ``unlabelled_states`` come from the dead-end
    labels (:mod:`backtrack_gym.envs.labels`) and stay 0 with labels off; those from
    ``states_visited`` on are the shape of the search, kept either way.
    """

    steps: int = 0
    valid: int = 0
    malformed: int = 0
    illegal: int = 0
    backtracks: int = 0
    solved: bool = False
    progress: float = 0.0
    dead_end_steps: int = 0
    dead_ends_entered: int = 0
    dead_ends_left: int = 0
    backtracks_from_solvable: int = 0
    unlabelled_states: int = 0
    states_visited: int = 0
    distinct_states: int = 0
    deepest_depth: int = 0
    backtrack_points: int = 0
    backtrack_point_branches: int = 0

    @property
    def invalid(self) -> int:
        return self.malformed + self.illegal

    @property
    def dead_ends_never_left(self) -> int:
        """Dead ends entered and not left by a backtrack (so far)."""
        return max(0, self.dead_ends_entered - self.dead_ends_left)

    @property
    def backtrack_precision(self) -> float | None:
        """The share of backtracks that left a dead end; None without a backtrack."""
        return self.dead_ends_left / self.backtracks if self.backtracks else None

    @property
    def revisits(self) -> int:
        """Visits to a state visited before (e.g. a step redone after its backtrack)."""
        return self.states_visited - self.distinct_states

    @property
    def mean_backtrack_branching(self) -> float | None:
        """The mean branching at the backtrack points; None without one."""
        return self.backtrack_point_branches / self.backtrack_points if self.backtrack_points else None


# The dead-end and search-shape counts of EpisodeStats an env's info reports (under the same names).
SEARCH_COUNTS = (
    "dead_end_steps",
    "dead_ends_entered",
    "dead_ends_left",
    "backtracks_from_solvable",
    "unlabelled_states",
    "states_visited",
    "distinct_states",
    "deepest_depth",
    "backtrack_points",
    "backtrack_point_branches",
)


def search_info(stats: EpisodeStats) -> dict[str, float | int | None]:
    """The dead-end and search-shape counts of ``stats`` for ``info``, and the measures made of them."""
    return {
        **{name: getattr(stats, name) for name in SEARCH_COUNTS},
        "dead_ends_never_left": stats.dead_ends_never_left,
        "backtrack_precision": stats.backtrack_precision,
        "revisits": stats.revisits,
        "mean_backtrack_branching": stats.mean_backtrack_branching,
    }


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


def process(stats: EpisodeStats) -> float:
    """Minus the steps into a dead end and the backtracks from a solvable state: a process
    reward from the dead-end labels (a step or backtrack of unknown label costs nothing).
    Leaving a dead end is free, so backtracking out of a mistake costs only the mistake."""
    return float(-(stats.dead_ends_entered + stats.backtracks_from_solvable))


TERMS: dict[str, Callable[[EpisodeStats], float]] = {
    "correct": correct,
    "progress": progress,
    "format": format_errors,
    "validity": validity,
    "length": length,
    "backtrack": backtracking,
    "process": process,
}
# The terms that read the dead-end labels: an env with labels off refuses a weight on them.
LABEL_TERMS = frozenset({"process"})

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
