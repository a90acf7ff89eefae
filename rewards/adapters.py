"""Rewards as TRL reward functions.

TRL's ``GRPOTrainer`` calls each reward function as
``f(prompts=..., completions=..., **columns) -> list[float]`` where ``columns`` are
the data set's other columns. Here the problem travels as a column; a completion is
replayed through the task's rules exactly as the env's completion mode does, and
scored by the same terms, so training and evaluation agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from backtrack_gym.envs.core import BACKTRACK, Episode, Task
from backtrack_gym.rewards.terms import EpisodeStats, check_weights, score

RewardFunc = Callable[..., list[float]]


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or a conversational list of messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], Mapping):
        content = completion[-1].get("content", "")
        return content if isinstance(content, str) else ""
    raise TypeError(f"a completion is a str or a list of messages, got {type(completion).__name__}")


def replay_stats(
    task: Task,
    problem: Any,
    completion: Any,
    *,
    backtrack: bool = True,
    backtrack_token: str = BACKTRACK,
    max_steps: int = 64,
) -> EpisodeStats:
    """Replay one completion against ``problem`` (object, dict or JSON) and count what happened."""
    episode = Episode(task, task.coerce_problem(problem), backtrack=backtrack, backtrack_token=backtrack_token)
    episode.run(completion_text(completion), max_steps=max_steps)
    return episode.stats


def trl_reward_functions(
    task: Task,
    weights: Mapping[str, float] | None = None,
    *,
    problem_column: str = "problem",
    backtrack: bool = True,
    backtrack_token: str = BACKTRACK,
    max_steps: int = 64,
) -> list[RewardFunc]:
    """One TRL reward function per weighted term, named ``<task>_<term>`` for TRL's logs.

    The weights are folded into each function, so pass them to TRL unweighted (or
    give TRL ``reward_weights`` and ``weights`` of 1). With one term per function TRL
    logs each term as its own curve.
    """
    checked = check_weights(weights if weights is not None else {"correct": 1.0})
    return [
        _term_function(task, {term: w}, problem_column, backtrack, backtrack_token, max_steps)
        for term, w in checked.items()
    ]


def _term_function(
    task: Task,
    weights: dict[str, float],
    problem_column: str,
    backtrack: bool,
    backtrack_token: str,
    max_steps: int,
) -> RewardFunc:
    def reward(prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **columns: Any) -> list[float]:
        if problem_column not in columns:
            raise KeyError(f"the data set needs a {problem_column!r} column; columns given: {sorted(columns)}")
        problems = columns[problem_column]
        if len(problems) != len(completions):
            raise ValueError(f"{len(completions)} completions but {len(problems)} problems")
        return [
            score(
                replay_stats(
                    task, problem, completion, backtrack=backtrack, backtrack_token=backtrack_token, max_steps=max_steps
                ),
                weights,
            )
            for problem, completion in zip(problems, completions, strict=True)
        ]

    reward.__name__ = f"{task.name}_{next(iter(weights))}"
    return reward
