"""Oracle search agents that write their search as a trace in the env's step grammar."""

from __future__ import annotations

from typing import Any

import numpy as np

from backtrack_gym.agents.traces.core import Trace, TraceWriter
from backtrack_gym.envs.core import Task

__all__ = ["Trace", "TraceWriter", "styles_for", "write_trace"]


def styles_for(task: Task) -> dict[str, Any]:
    """The trace styles the task supports, by name."""
    if task.name == "countdown":
        from backtrack_gym.agents.traces import countdown

        return countdown.STYLES
    if task.name == "math":
        from backtrack_gym.agents.traces import math

        return math.STYLES
    if task.name == "sudoku":
        from backtrack_gym.agents.traces import sudoku

        return sudoku.STYLES
    raise ValueError(f"no trace styles for task {task.name!r}")


def write_trace(
    task: Task,
    problem: Any,
    style: str,
    *,
    rng: np.random.Generator | None = None,
    trace_format: str = "compact",
    heuristic_name: str | None = None,
    **options: Any,
) -> Trace:
    """Solve ``problem`` by the search ``style`` names and return what it wrote.

    ``trace_format`` is ``"compact"`` (bare steps and ``<backtrack>`` lines, every task)
    or, for CountDown, ``"research"`` (the research's node lines). ``heuristic_name``
    fixes the CountDown searches' heuristic (``"sum"`` or ``"mult"``); None draws one per
    problem from ``rng``, as the research does. ``rng`` (default: seeded with 0) makes
    every random choice; other ``options`` go to the style (see its docstring).
    """
    styles = styles_for(task)
    if style not in styles:
        raise ValueError(f"unknown style {style!r} for {task.name}; known: {sorted(styles)}")
    if task.name == "countdown":
        options.update(trace_format=trace_format, heuristic_name=heuristic_name)
    elif trace_format != "compact":
        raise ValueError(f"trace_format must be 'compact' for {task.name}, got {trace_format!r}")
    elif heuristic_name is not None:
        raise ValueError(f"heuristic_name is a CountDown option; {task.name} traces take none")
    return styles[style](task, problem, rng=rng if rng is not None else np.random.default_rng(0), **options)
