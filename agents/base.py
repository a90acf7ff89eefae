"""The agent interface and the task-aware agents every env supports."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from backtrack_gym.envs.core import Task


def info_at(infos: dict[str, Any], index: int) -> dict[str, Any]:
    """The ``info`` of sub-env ``index`` from a Gymnasium vector env's batched infos."""
    out = {}
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        item = info_at(value, index) if isinstance(value, dict) else value[index]
        out[key] = item.item() if isinstance(item, np.generic) else item
    return out


class Agent(ABC):
    """A policy over text envs: ``act(observation, info) -> action``.

    Agents read the problem and state from ``info`` (every backtrack-gym env puts
    them there), so one agent object can play many envs of its task.
    """

    @abstractmethod
    def act(self, observation: str, info: dict[str, Any]) -> str: ...


class TaskAgent(Agent):
    """An agent that knows the task's rules (to enumerate or search steps)."""

    def __init__(self, task: Task):
        self.task = task

    def _problem_and_state(self, info: dict[str, Any]) -> tuple[Any, Any]:
        problem = self.task.coerce_problem(info["problem"])
        return problem, self.task.state_from_info(info["state"])

    @classmethod
    def for_env(cls, env: Any, **kwargs: Any) -> TaskAgent:
        """An agent for ``env`` (a made env, possibly wrapped)."""
        return cls(env.unwrapped.task, **kwargs)


class OracleAgent(TaskAgent):
    """Acts with the task's exact solver.

    In step mode it plays the first step of a solution from the current state, or
    ``<backtrack>`` when the state is a dead end and backtracking is on. In
    completion mode it writes a whole solution.
    """

    def act(self, observation: str, info: dict[str, Any]) -> str:
        problem, state = self._problem_and_state(info)
        if info["interaction"] == "completion":
            plan = self.task.solve(problem, self.task.initial_state(problem)) or []
            return "\n".join(self.task.format_step(step) for step in plan)
        plan = self.task.solve(problem, state)
        if plan:
            return self.task.format_step(plan[0])
        if info["backtrack"] and info["valid_steps"] > info["backtracks"]:
            return info["backtrack_token"]
        legal = self.task.legal_steps(problem, state)
        return self.task.format_step(legal[0]) if legal else info["backtrack_token"]


class RandomAgent(TaskAgent):
    """Plays uniformly random legal steps, and backtracks with ``backtrack_prob`` when allowed.

    In completion mode it writes a random walk of up to ``max_lines`` legal steps.
    """

    def __init__(self, task: Task, *, seed: int | None = None, backtrack_prob: float = 0.2, max_lines: int = 16):
        super().__init__(task)
        if not 0.0 <= backtrack_prob <= 1.0:
            raise ValueError(f"backtrack_prob must be in [0, 1], got {backtrack_prob}")
        self.rng = np.random.default_rng(seed)
        self.backtrack_prob = backtrack_prob
        self.max_lines = max_lines

    def act(self, observation: str, info: dict[str, Any]) -> str:
        problem, state = self._problem_and_state(info)
        if info["interaction"] == "completion":
            return "\n".join(self._walk(problem, self.task.initial_state(problem), info))
        can_undo = info["backtrack"] and info["valid_steps"] > info["backtracks"]
        return self._choose(problem, state, can_undo, info["backtrack_token"])[0]

    def _choose(self, problem: Any, state: Any, can_undo: bool, backtrack_token: str) -> tuple[str, Any]:
        legal = self.task.legal_steps(problem, state)
        if not legal or (can_undo and self.rng.random() < self.backtrack_prob):
            return backtrack_token, None
        step = legal[int(self.rng.integers(len(legal)))]
        return self.task.format_step(step), step

    def _walk(self, problem: Any, state: Any, info: dict[str, Any]) -> list[str]:
        lines, stack = [], [state]
        for _ in range(self.max_lines):
            if self.task.is_solved(problem, stack[-1]):
                break
            can_undo = info["backtrack"] and len(stack) > 1
            line, step = self._choose(problem, stack[-1], can_undo, info["backtrack_token"])
            lines.append(line)
            if step is None:
                if len(stack) == 1:
                    break
                stack.pop()
            else:
                stack.append(self.task.apply(problem, stack[-1], step))
        return lines
