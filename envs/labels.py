"""Dead-end labels and the shape of an episode's search, kept alongside its state stack.

Every task here has an exact solver, so each state an episode reaches can be labelled
``solvable`` (:meth:`~backtrack_gym.envs.core.Task.solvable`: the goal is still
reachable from it, whatever the step budget) or a *dead end* (it is not). From the
labels of the states a step leaves and reaches follow the labels of the step: it
entered a dead end (a solvable state to a dead end), left one (a backtrack from a dead
end to a solvable state), or backtracked from a solvable state (a backtrack the
episode did not need). An unknown label (None: the solver's node cap was hit) makes
no event: a step is never labelled wrongly.

The counts they add up to are the measures of Qin et al., "To Backtrack or Not to
Backtrack", whose backtracking models make "more mistakes before finding the right
answer": steps taken in dead ends, and how precisely backtracks leave them.
:class:`SearchRecord` keeps them in the episode's
:class:`~backtrack_gym.envs.terms.EpisodeStats`.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from backtrack_gym.envs.terms import EpisodeStats


@dataclass(frozen=True)
class StepLabels:
    """The labels of the step just taken.

    Attributes:
        solvable: the label of the state after it (None: unknown, or labels off).
        entered_dead_end: it went from a solvable state to a dead end.
        left_dead_end: it backtracked from a dead end to a solvable state.
        backtracked_from_solvable: it undid a solvable state.
    """

    solvable: bool | None
    entered_dead_end: bool = False
    left_dead_end: bool = False
    backtracked_from_solvable: bool = False

    def to_info(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies, and this runs at every env step.
        return {
            "solvable": self.solvable,
            "entered_dead_end": self.entered_dead_end,
            "left_dead_end": self.left_dead_end,
            "backtracked_from_solvable": self.backtracked_from_solvable,
        }


class SearchRecord:
    """The labels and search shape of one episode, kept in step with its state stack.

    The episode calls :meth:`begin` at each step it counts, then :meth:`push` for each
    state a valid step reaches and :meth:`pop` for the states a backtrack undoes; the
    counts go into the episode's stats. An env snapshot stores it through
    :meth:`snapshot_data` and :meth:`restore_data`.

    Args:
        task: the task (its :meth:`~backtrack_gym.envs.core.Task.solvable` and
            :meth:`~backtrack_gym.envs.core.Task.state_key`).
        problem: the episode's problem.
        state: the initial state.
        stats: the episode's stats (``solved`` already set for ``state``).
        labels: whether to label states (the search shape is kept either way).
    """

    def __init__(self, task: Any, problem: Any, state: Any, stats: EpisodeStats, *, labels: bool):
        self.task = task
        self.problem = problem
        self.labels = labels
        key = task.state_key(state)
        # Aligned with the episode's state stack: each state's key and label.
        self.keys: list[Hashable] = [key]
        self.solvable: list[bool | None] = [self._label(state, stats.solved, stats)]
        self.seen: set[Hashable] = {key}
        self.edges: set[tuple[Hashable, Hashable]] = set()
        self.children: dict[Hashable, int] = {}  # distinct states a step from each state reached
        self.backtrack_points: dict[Hashable, None] = {}  # states a backtrack returned to, in order
        self.step = StepLabels(self.solvable[0])
        stats.states_visited = stats.distinct_states = 1

    def _label(self, state: Any, solved: bool | None, stats: EpisodeStats) -> bool | None:
        if not self.labels:
            return None
        if solved:  # the goal holds: no solver call
            return True
        label = self.task.solvable(self.problem, state, solved)
        if label is None:
            stats.unlabelled_states += 1
        return label

    def begin(self) -> None:
        """A new step: nothing has happened yet, the state keeps its label."""
        self.step = StepLabels(self.solvable[-1])

    def push(self, stats: EpisodeStats, state: Any, solved: bool | None = None) -> None:
        """A valid step reached ``state`` (``solved``: whether the goal holds there, None if unchecked)."""
        parent, parent_label = self.keys[-1], self.solvable[-1]
        key = self.task.state_key(state)
        label = self._label(state, solved, stats)
        self.keys.append(key)
        self.solvable.append(label)
        stats.states_visited += 1
        if key not in self.seen:
            self.seen.add(key)
            stats.distinct_states += 1
        stats.deepest_depth = max(stats.deepest_depth, len(self.keys) - 1)
        if (parent, key) not in self.edges:
            self.edges.add((parent, key))
            self.children[parent] = self.children.get(parent, 0) + 1
            if parent in self.backtrack_points:
                stats.backtrack_point_branches += 1
        entered = parent_label is True and label is False
        stats.dead_ends_entered += entered
        stats.dead_end_steps += label is False
        step = self.step
        self.step = StepLabels(
            label, step.entered_dead_end or entered, step.left_dead_end, step.backtracked_from_solvable
        )

    def pop(self, stats: EpisodeStats, count: int) -> None:
        """A backtrack undid the top ``count`` states (at least one, never the start)."""
        top = self.solvable[-1]
        undone_solvable = sum(label is True for label in self.solvable[-count:])
        del self.keys[-count:]
        del self.solvable[-count:]
        left = top is False and self.solvable[-1] is True
        stats.backtracks_from_solvable += undone_solvable
        stats.dead_ends_left += left
        point = self.keys[-1]
        if point not in self.backtrack_points:
            self.backtrack_points[point] = None
            stats.backtrack_points += 1
            stats.backtrack_point_branches += self.children.get(point, 0)
        step = self.step
        self.step = StepLabels(
            self.solvable[-1],
            step.entered_dead_end,
            step.left_dead_end or left,
            step.backtracked_from_solvable or undone_solvable > 0,
        )

    def snapshot_data(self) -> dict[str, Any]:
        """The record as JSON data for an env snapshot (:mod:`backtrack_gym.envs.snapshot`).

        A state key is written as the task's ``state_info`` of it (the keys here are states),
        once each in a table in a canonical order, so two equal records give equal data.
        """
        infos = {key: self.task.state_info(key) for key in self.seen}
        table = sorted(self.seen, key=lambda key: json.dumps(infos[key], sort_keys=True, default=str))
        ref = {key: i for i, key in enumerate(table)}
        return {
            "labels": self.labels,
            "table": [infos[key] for key in table],
            "keys": [ref[key] for key in self.keys],
            "solvable": list(self.solvable),
            "edges": sorted([ref[a], ref[b]] for a, b in self.edges),
            "children": [[ref[key], count] for key, count in self.children.items()],
            "backtrack_points": [ref[key] for key in self.backtrack_points],
            "step": self.step.to_info(),
        }

    def restore_data(self, data: Mapping[str, Any]) -> None:
        """Set the record from :meth:`snapshot_data`'s data (a fresh episode's record)."""
        table = [self.task.state_key(self.task.state_from_info(info)) for info in data["table"]]
        keys, solvable = [table[i] for i in data["keys"]], list(data["solvable"])
        if len(keys) != len(solvable) or not keys:
            raise ValueError("a search record has one label per state of its stack")
        self.labels = bool(data["labels"])
        self.keys, self.solvable, self.seen = keys, solvable, set(table)
        self.edges = {(table[a], table[b]) for a, b in data["edges"]}
        self.children = {table[i]: int(count) for i, count in data["children"]}
        self.backtrack_points = {table[i]: None for i in data["backtrack_points"]}
        self.step = StepLabels(**data["step"])

    @property
    def current(self) -> bool | None:
        """The label of the current state."""
        return self.solvable[-1]

    def backtrack_branching(self) -> list[int]:
        """For each state a backtrack returned to (in the order first returned to), how many
        distinct states the episode's steps from it reached: the search's branching there."""
        return [self.children.get(point, 0) for point in self.backtrack_points]
