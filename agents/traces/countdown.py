"""CountDown trace styles: direct, DFS, beam/BFS, mix, think (pruned) and self-backtracking.

The searches follow Stream of Search: children are ordered by a heuristic of the
numbers they leave ("sum": mean distance to the target; "mult": mean distance to
the target's nearest factor), and DFS prunes children scoring above a threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np

from backtrack_gym.agents.traces.core import Trace, TraceWriter
from backtrack_gym.envs.countdown.env import CountDownTask
from backtrack_gym.envs.countdown.generator import CountDownProblem
from backtrack_gym.envs.countdown.rules import Step, _moves, is_solvable
from backtrack_gym.envs.expr import Value

Heuristic = Callable[[tuple[Value, ...], int], float]
HEURISTICS = ("sum", "mult")


def sum_heuristic(numbers: tuple[Value, ...], target: int) -> float:
    """Mean distance of the numbers to the target."""
    return float(sum(abs(n - target) for n in numbers) / len(numbers))


@cache
def _factors(target: int) -> tuple[int, ...]:
    if target < 2:
        return (target,)
    return tuple(f for f in range(2, target + 1) if target % f == 0)


def mult_heuristic(numbers: tuple[Value, ...], target: int) -> float:
    """Mean distance of the numbers to the nearest factor of the target."""
    factors = _factors(int(target))
    return float(sum(min(abs(n - f) for f in factors) for n in numbers) / len(numbers))


def heuristic(name: str) -> Heuristic:
    if name == "sum":
        return sum_heuristic
    if name == "mult":
        return mult_heuristic
    raise ValueError(f"heuristic must be one of {HEURISTICS}, got {name!r}")


def _children(
    writer: TraceWriter, score: Heuristic, threshold: float | None = None
) -> list[tuple[float, Step, tuple[Value, ...]]]:
    """The children of the current state, best heuristic first, without non-goal ones above ``threshold``."""
    target = writer.problem.target
    scored = []
    for a, op, b, value, child in _moves(writer.task.rules, writer.state):
        h = score(child, target)
        if threshold is None or h <= threshold or target in child:  # never prune the goal itself
            scored.append((h, Step(a, op, b, value), child))
    scored.sort(key=lambda item: item[0])  # stable: ties keep the moves' order
    return scored


def direct(task: CountDownTask, problem: CountDownProblem, **_: object) -> Trace:
    """The steps of a shortest solution."""
    writer = TraceWriter(task, problem)
    for step in task.solve(problem, writer.state) or []:
        writer.apply(step)
    return writer.finish()


def dfs(
    task: CountDownTask,
    problem: CountDownProblem,
    *,
    heuristic_name: str = "sum",
    threshold: float | None = None,
    think: bool = False,
    max_lines: int = 512,
    **_: object,
) -> Trace:
    """Depth-first search: each tried step is a line, each return from a dead end a backtrack.

    Children scoring above ``threshold`` (default: the target, as in Stream of
    Search) are pruned. With ``think`` the failed last operations (two numbers
    left) are not written: the trace backtracks at once.
    """
    score = heuristic(heuristic_name)
    limit = float(problem.target) if threshold is None else threshold
    writer = TraceWriter(task, problem, max_lines=max_lines)

    def visit() -> bool:
        if writer.solved():
            return True
        if think and len(writer.state) == 2:
            for _, step, child in _children(writer, score, limit):
                if problem.target in child and not writer.full:
                    writer.apply(step)
                    return True
            return False
        for _, step, _child in _children(writer, score, limit):
            if writer.full:
                return False
            writer.apply(step)
            if visit():
                return True
            if writer.full:
                return False
            writer.backtrack()
        return False

    visit()
    return writer.finish()


def beam(
    task: CountDownTask,
    problem: CountDownProblem,
    *,
    heuristic_name: str = "sum",
    width: int = 5,
    max_lines: int = 512,
    **_: object,
) -> Trace:
    """Beam search (width 1..5; a wide beam is breadth-first) level by level.

    At each node of the beam every child is tried (a step, then a backtrack); the
    best ``width`` children by heuristic form the next level. Moving between nodes
    backtracks to their common ancestor and applies the other branch's steps.
    """
    if not 1 <= width <= 5:
        raise ValueError(f"beam width must be in 1..5, got {width}")
    score = heuristic(heuristic_name)
    writer = TraceWriter(task, problem, max_lines=max_lines)
    level: list[tuple[Step, ...]] = [()]
    while level and not writer.solved():
        candidates: list[tuple[float, tuple[Step, ...]]] = []
        for path in level:
            if writer.full or writer.max_lines - len(writer.lines) < 2 * len(path):
                return writer.finish()
            writer.move_to(path)
            for h, step, _child in _children(writer, score):
                if writer.max_lines - len(writer.lines) < 2:
                    return writer.finish()
                writer.apply(step)
                if writer.solved():
                    return writer.finish()
                writer.backtrack()
                candidates.append((h, (*path, step)))
        candidates.sort(key=lambda item: item[0])
        level = [path for _, path in candidates[:width]]
    return writer.finish()


def mix(
    task: CountDownTask, problem: CountDownProblem, *, rng: np.random.Generator, max_lines: int = 512, **_: object
) -> Trace:
    """A seeded random choice of search (DFS or beam of width 1..5) and heuristic per problem."""
    heuristic_name = HEURISTICS[int(rng.integers(len(HEURISTICS)))]
    if rng.random() < 0.5:
        return dfs(task, problem, heuristic_name=heuristic_name, max_lines=max_lines)
    return beam(task, problem, heuristic_name=heuristic_name, width=int(rng.integers(1, 6)), max_lines=max_lines)


def think(task: CountDownTask, problem: CountDownProblem, **options: object) -> Trace:
    """DFS that leaves the failed last operations implicit (see :func:`dfs`)."""
    return dfs(task, problem, **{**options, "think": True})


def self_backtrack(
    task: CountDownTask,
    problem: CountDownProblem,
    *,
    rng: np.random.Generator,
    wrong_step_rate: float = 1.0,
    **_: object,
) -> Trace:
    """A shortest solution with one plausible wrong step, then a backtrack, inserted at a random step.

    The wrong step is legal but leaves the target unreachable (proved by the
    solver); among those, the best by the sum heuristic is chosen. Its line is
    masked so the SFT loss teaches when to backtrack, not the mistake. With
    ``wrong_step_rate`` below 1 only that share of traces gets one (the others are
    the plain shortest solution), as the self-backtracking recipe mixes the two: a
    model that saw a backtrack in every trace learns to backtrack after any step.
    """
    if not 0.0 <= wrong_step_rate <= 1.0:
        raise ValueError(f"wrong_step_rate must be in [0, 1], got {wrong_step_rate}")
    writer = TraceWriter(task, problem)
    plan = task.solve(problem, writer.state) or []
    states = [writer.state]
    for step in plan:
        states.append(task.apply(problem, states[-1], step))
    positions = [int(k) for k in rng.permutation(len(plan))]
    if wrong_step_rate < 1.0 and rng.random() >= wrong_step_rate:
        positions = []  # this trace is the plain shortest solution
    chosen, wrong = None, None
    for k in positions:
        wrong = _plausible_wrong_step(task, problem, states[k])
        if wrong is not None:
            chosen = k
            break
    for k, step in enumerate(plan):
        if k == chosen:
            writer.apply(wrong, masked=True)
            writer.backtrack()
        writer.apply(step)
    return writer.finish()


def _plausible_wrong_step(task: CountDownTask, problem: CountDownProblem, state: tuple[Value, ...]) -> Step | None:
    dead = [
        (sum_heuristic(child, problem.target), Step(a, op, b, value))
        for a, op, b, value, child in _moves(task.rules, state)
        if not is_solvable(task.rules, child, problem.target, task.config.use_all_numbers)
    ]
    return min(dead, key=lambda item: item[0])[1] if dead else None


STYLES = {
    "direct": direct,
    "dfs": dfs,
    "bfs": beam,
    "mix": mix,
    "think": think,
    "self_backtrack": self_backtrack,
}
