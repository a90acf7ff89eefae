"""Rewards as TRL reward functions.

TRL's ``GRPOTrainer`` calls each reward function as
``f(prompts=..., completions=..., **columns) -> list[float]`` where ``columns`` are
the data set's other columns. Here the problem travels as a column; a completion is
played in a completion-mode env built with the given env settings
(:func:`~backtrack_gym.envs.core.play_completion`), so its reward is, term by
term, the env's return: training and evaluation cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from backtrack_gym.envs.core import Task, TextEnv, play_completion
from backtrack_gym.envs.terms import SEARCH_COUNTS, EpisodeStats, check_weights, score

RewardFunc = Callable[..., list[float]]


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or a conversational list of messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], Mapping):
        content = completion[-1].get("content", "")
        return content if isinstance(content, str) else ""
    raise TypeError(f"a completion is a str or a list of messages, got {type(completion).__name__}")


def completion_env(task: Task, **env_settings: Any) -> TextEnv:
    """The completion-mode env that scores outputs; ``env_settings`` are :class:`TextEnv`'s
    keywords (``backtrack``, ``max_steps``, ``invalid_policy``, ``reward_weights``, ...)."""
    if "interaction" in env_settings:
        raise TypeError("completions are scored in completion mode; pass no 'interaction'")
    return TextEnv(task, interaction="completion", **env_settings)


def replay_stats(
    task: Task, problem: Any, completion: Any, *, backtrack: bool = True, **env_settings: Any
) -> EpisodeStats:
    """Play one completion against ``problem`` (object, dict or JSON) and count what happened.

    The env is :func:`completion_env` ``(task, backtrack=backtrack, **env_settings)``.
    """
    env = completion_env(task, backtrack=backtrack, **env_settings)
    return stats_from_info(play_completion(env, problem, completion_text(completion)).info)


# Episode facts worth a curve of their own; logged through zero-weight reward functions. Each is
# defined for every episode: backtrack precision, undefined without a backtrack (TRL then logs
# None and transformers warns at every step), is the ratio of the dead_ends_left and backtracks curves.
METRICS: dict[str, Callable[[EpisodeStats], float]] = {
    "solved": lambda stats: float(stats.solved),
    "backtracks": lambda stats: float(stats.backtracks),
    "invalid_steps": lambda stats: float(stats.invalid),
    # From the dead-end labels (envs/labels.py): mistakes before the solution, and how backtracks went.
    "dead_end_steps": lambda stats: float(stats.dead_end_steps),
    "dead_ends_left": lambda stats: float(stats.dead_ends_left),
    "backtracks_from_solvable": lambda stats: float(stats.backtracks_from_solvable),
    "distinct_states": lambda stats: float(stats.distinct_states),
}

# Per completion of a batch: each term's reward and the episode's counts.
Scored = tuple[dict[str, float], EpisodeStats]
ScoreBatch = Callable[[Sequence[Any], dict[str, Any]], list[Scored]]


def trl_reward_functions(
    task: Task,
    reward_weights: Mapping[str, float] | None = None,
    *,
    problem_column: str = "problem",
    metrics: bool = False,
    **env_settings: Any,
) -> list[RewardFunc]:
    """One TRL reward function per term of the env's weights, named ``<task>_<term>`` for TRL's logs.

    Each completion is played against the problem in ``problem_column`` in
    :func:`completion_env` ``(task, reward_weights=reward_weights, **env_settings)``,
    so the rewards are that env's return, term by term: same step budget, action
    cap, backtracking and invalid policy (its defaults are the env's too). The terms
    are the env's ``reward_weights``, which under ``invalid_policy="penalize"`` (the
    default) include ``format`` and ``validity`` at ``invalid_penalty``. The weights
    are folded into each function, so give them to TRL unweighted; one term per
    function makes TRL log each term as its own curve. With ``metrics`` the functions
    of :data:`METRICS` follow (give them weight 0: they are curves, not rewards).
    """
    env = completion_env(task, reward_weights=reward_weights, **env_settings)

    def score_batch(completions: Sequence[Any], columns: dict[str, Any]) -> list[Scored]:
        problems = _column(columns, problem_column, len(completions))
        played = [play_completion(env, p, completion_text(c)) for p, c in zip(problems, completions, strict=True)]
        return [(result.terms, stats_from_info(result.info)) for result in played]

    return _functions(task.name, env.reward_weights, metrics, _LastBatch(score_batch, problem_column))


def episode_reward_functions(
    task_name: str,
    weights: Mapping[str, float] | None = None,
    *,
    info_column: str = "episode_info",
    metrics: bool = False,
) -> list[RewardFunc]:
    """Like :func:`trl_reward_functions` for multi-turn rollouts: each episode is scored from
    its final ``info`` (a column the rollout passes), not by replaying the text, which
    interleaves the env's observations. ``weights`` must be the envs' ``reward_weights``
    (which fold in an invalid penalty) for the rewards to be their returns."""
    checked = check_weights(weights if weights is not None else {"correct": 1.0})

    def score_batch(completions: Sequence[Any], columns: dict[str, Any]) -> list[Scored]:
        stats = [stats_from_info(info) for info in _column(columns, info_column, len(completions))]
        return [({term: score(s, {term: w}) for term, w in checked.items()}, s) for s in stats]

    return _functions(task_name, checked, metrics, _LastBatch(score_batch, info_column))


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
        # An info from before the labels (a saved rollout's) has none of their counts.
        **{name: int(info.get(name, 0)) for name in SEARCH_COUNTS},
    )


def _column(columns: dict[str, Any], name: str, size: int) -> Sequence[Any]:
    if name not in columns:
        raise KeyError(f"the data set needs a {name!r} column; columns given: {sorted(columns)}")
    values = columns[name]
    if len(values) != size:
        raise ValueError(f"{size} completions but {len(values)} values in column {name!r}")
    return values


class _LastBatch:
    """Scores a batch once for all the functions of one call: TRL calls each on the same batch."""

    def __init__(self, score_batch: ScoreBatch, column: str):
        self.score_batch = score_batch
        self.column = column
        self.key: tuple[list[Any], list[Any]] | None = None
        self.scored: list[Scored] = []

    def __call__(self, completions: Sequence[Any], columns: dict[str, Any]) -> list[Scored]:
        key = (list(completions), list(columns.get(self.column, ())))
        if key != self.key:
            self.scored = self.score_batch(completions, columns)
            self.key = key
        return self.scored


def _functions(prefix: str, weights: Mapping[str, float], metrics: bool, scored_of: _LastBatch) -> list[RewardFunc]:
    scorers: dict[str, Callable[[Scored], float]] = {term: partial(_term, term) for term in weights}
    if metrics:
        scorers.update({name: partial(_metric, metric) for name, metric in METRICS.items()})
    return [_named(f"{prefix}_{name}", scorer, scored_of) for name, scorer in scorers.items()]


def _term(term: str, scored: Scored) -> float:
    return scored[0][term]


def _metric(metric: Callable[[EpisodeStats], float], scored: Scored) -> float:
    return metric(scored[1])


def _named(name: str, scorer: Callable[[Scored], float], scored_of: _LastBatch) -> RewardFunc:
    def reward(prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **columns: Any) -> list[float]:
        return [scorer(scored) for scored in scored_of(completions, columns)]

    reward.__name__ = name
    return reward
