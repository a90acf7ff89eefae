"""Rewards as TRL reward functions.

TRL's ``GRPOTrainer`` calls each reward function as
``f(prompts=..., completions=..., **columns) -> list[float]`` where ``columns`` are
the data set's other columns. Here the problem travels as a column; a completion is
replayed through the task's rules exactly as the env's completion mode does, and
scored by the same terms, so training and evaluation agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
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


StatsOf = Callable[[Sequence[Any], dict[str, Any]], list[EpisodeStats]]

# Episode facts worth a curve of their own; logged through zero-weight reward functions.
METRICS: dict[str, Callable[[EpisodeStats], float]] = {
    "solved": lambda stats: float(stats.solved),
    "backtracks": lambda stats: float(stats.backtracks),
    "invalid_steps": lambda stats: float(stats.invalid),
}


def trl_reward_functions(
    task: Task,
    weights: Mapping[str, float] | None = None,
    *,
    problem_column: str = "problem",
    backtrack: bool = True,
    backtrack_token: str = BACKTRACK,
    max_steps: int = 64,
    metrics: bool = False,
) -> list[RewardFunc]:
    """One TRL reward function per weighted term, named ``<task>_<term>`` for TRL's logs.

    Each completion is replayed against the problem in ``problem_column``. The weights
    are folded into each function, so give them to TRL unweighted; one term per
    function makes TRL log each term as its own curve. With ``metrics`` the functions
    of :data:`METRICS` follow (give them weight 0: they are curves, not rewards).
    """

    def stats_of(completions: Sequence[Any], columns: dict[str, Any]) -> list[EpisodeStats]:
        problems = _column(columns, problem_column, len(completions))
        return [
            replay_stats(task, p, c, backtrack=backtrack, backtrack_token=backtrack_token, max_steps=max_steps)
            for p, c in zip(problems, completions, strict=True)
        ]

    return _functions(task.name, weights, metrics, stats_of)


def episode_reward_functions(
    task_name: str,
    weights: Mapping[str, float] | None = None,
    *,
    info_column: str = "episode_info",
    metrics: bool = False,
) -> list[RewardFunc]:
    """Like :func:`trl_reward_functions` for multi-turn rollouts: each episode is scored from
    its final ``info`` (a column the rollout passes), not by replaying the text, which
    interleaves the env's observations."""

    def stats_of(completions: Sequence[Any], columns: dict[str, Any]) -> list[EpisodeStats]:
        return [stats_from_info(info) for info in _column(columns, info_column, len(completions))]

    return _functions(task_name, weights, metrics, stats_of)


def stats_from_info(info: Mapping[str, Any]) -> EpisodeStats:
    """The :class:`EpisodeStats` of an env's ``info`` (the counts every env reports)."""
    return EpisodeStats(
        steps=int(info["steps"]),
        valid=int(info["valid_steps"]),
        malformed=int(info["malformed_steps"]),
        illegal=int(info["illegal_steps"]),
        backtracks=int(info["backtracks"]),
        solved=bool(info["solved"]),
        progress=float(info.get("progress", 0.0)),
    )


def _column(columns: dict[str, Any], name: str, size: int) -> Sequence[Any]:
    if name not in columns:
        raise KeyError(f"the data set needs a {name!r} column; columns given: {sorted(columns)}")
    values = columns[name]
    if len(values) != size:
        raise ValueError(f"{size} completions but {len(values)} values in column {name!r}")
    return values


def _functions(prefix: str, weights: Mapping[str, float] | None, metrics: bool, stats_of: StatsOf) -> list[RewardFunc]:
    checked = check_weights(weights if weights is not None else {"correct": 1.0})
    scorers = {term: partial(_weighted, term, w) for term, w in checked.items()}
    if metrics:
        scorers.update(METRICS)
    return [_named(f"{prefix}_{name}", scorer, stats_of) for name, scorer in scorers.items()]


def _weighted(term: str, weight: float, stats: EpisodeStats) -> float:
    return score(stats, {term: weight})


def _named(name: str, scorer: Callable[[EpisodeStats], float], stats_of: StatsOf) -> RewardFunc:
    def reward(prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **columns: Any) -> list[float]:
        return [scorer(stats) for stats in stats_of(completions, columns)]

    reward.__name__ = name
    return reward
