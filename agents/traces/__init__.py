"""Oracle search agents that write their search as a trace in the env's step grammar.

A task's trace styles are the ``STYLES`` of the module its registration names
(:func:`~backtrack_gym.envs.registry.register_task`), loaded on first use.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from backtrack_gym.agents.traces.core import Trace, TraceWriter
from backtrack_gym.envs.core import Task
from backtrack_gym.envs.registry import TASKS, load

__all__ = ["TASK_OPTIONS", "Trace", "TraceWriter", "styles_for", "write_trace"]

# The options of write_trace that only some tasks' styles take (their module lists them in
# ``OPTIONS``), each with the value the other tasks' styles write by, the only one they accept.
TASK_OPTIONS: dict[str, Any] = {"trace_format": "compact", "heuristic_name": None}


def _styles_module(task: Task) -> ModuleType:
    spec = TASKS.get(task.name)
    if spec is None or spec.trace_styles is None:
        raise ValueError(f"no trace styles for task {task.name!r}")
    return load(spec.trace_styles)


def styles_for(task: Task) -> dict[str, Any]:
    """The trace styles the task supports, by name."""
    return _styles_module(task).STYLES


def write_trace(
    task: Task, problem: Any, style: str, *, rng: np.random.Generator | None = None, **options: Any
) -> Trace:
    """Solve ``problem`` by the search ``style`` names and return what it wrote.

    ``trace_format`` is ``"compact"`` (bare steps and ``<backtrack>`` lines, every task)
    or, for CountDown, ``"research"`` (the research's node lines). ``heuristic_name``
    fixes the CountDown searches' heuristic (``"sum"`` or ``"mult"``); None draws one per
    problem from ``rng``, as the research does. A task whose styles take neither (see
    :data:`TASK_OPTIONS`) refuses any other value. ``rng`` (default: seeded with 0) makes
    every random choice; other ``options`` go to the style (see its docstring).
    """
    module = _styles_module(task)
    styles = module.STYLES
    if style not in styles:
        raise ValueError(f"unknown style {style!r} for {task.name}; known: {sorted(styles)}")
    taken = getattr(module, "OPTIONS", ())
    for name, default in TASK_OPTIONS.items():
        if name in taken:
            options.setdefault(name, default)
            continue
        value = options.pop(name, default)
        if value != default:
            raise ValueError(f"{name} must be {default!r} for {task.name} (its traces take no {name}), got {value!r}")
    return styles[style](task, problem, rng=rng if rng is not None else np.random.default_rng(0), **options)
