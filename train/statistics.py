"""Confidence intervals for evaluation results: bootstrap over problems, and over seeds then problems.

An evaluation's results are means over its held-out problems of a per-problem value
(solved or not, a problem's pass@k, ...). How far such a mean would move on another
draw of problems, or another training seed, is estimated by resampling:

- **Percentile bootstrap over problems** (:func:`mean_interval` on one row of values):
  draw the problems with replacement ``resamples`` times, take the mean of each draw,
  and report the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of those means.
  Percentile rather than normal or BCa intervals: they need no variance formula, stay
  inside the values' range (a solve rate's interval never leaves [0, 1]) and follow a
  skewed distribution near 0 or 1; at a few hundred problems their coverage is close
  to nominal (the tests check 93-97% for a 95% interval).
- **Paired differences** (:func:`difference_interval`, ``paired=True``): when two
  evaluations scored the same problems (SFT and GRPO of one arm, two arms' same
  stage), the per-problem differences are resampled, so both sides draw the same
  problems. Which problems are easy is then shared and cancels, and the interval is
  narrower than that of two independent draws (``paired=False``, for evaluations of
  different problems).
- **Ratios of means** (:func:`ratio_interval`, e.g. backtrack precision: dead ends left
  per backtrack): the numerators and denominators of the same problems are resampled
  together (the same draws), and the ratio of their means is taken in each draw, so a
  problem with many backtracks weighs as much in every draw as in the estimate.
- **Two-level bootstrap over seeds and problems** (a 2-D array, one row per seed):
  each resample draws the seeds with replacement, then the problems with replacement,
  and takes the mean over the drawn seeds of each one's mean over the drawn problems.
  The seeds of an experiment are evaluated on the same problems (the held-out set does
  not depend on the training seed), so one draw of problems serves every drawn seed:
  the problems' variation is then counted once for the whole mean, as it is in the
  estimate, rather than shrunk by the number of seeds as independent draws per seed
  would shrink it. With one seed this is the bootstrap over problems.

Every interval is seeded (``seed``, :data:`SEED` by default): the same values give the
same interval on every run and machine. Everything is numpy and vectorised over the
resamples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0


def bootstrap_means(
    values: Sequence[float] | np.ndarray, *, resamples: int = RESAMPLES, seed: int = SEED
) -> np.ndarray:
    """The means of ``resamples`` bootstrap draws of ``values``.

    ``values`` is one value per problem, or a ``(seeds, problems)`` array of the same
    problems under each seed: then each draw resamples the seeds, then the problems
    (see the module docs).
    """
    table = _as_table(values)
    seeds, problems = table.shape
    rng = np.random.default_rng(seed)
    problem_draws = rng.integers(problems, size=(resamples, problems))
    if seeds == 1:
        return table[0][problem_draws].mean(axis=1)
    seed_draws = rng.integers(seeds, size=(resamples, seeds))
    per_problem = table[seed_draws].mean(axis=1)  # (resamples, problems): the drawn seeds' mean of each problem
    return np.take_along_axis(per_problem, problem_draws, axis=1).mean(axis=1)


def _as_table(values: Sequence[float] | np.ndarray) -> np.ndarray:
    table = np.asarray(values, dtype=float)
    if table.ndim == 1:
        table = table[None, :]
    if table.ndim != 2 or table.shape[1] == 0:
        raise ValueError(f"need one value per problem (or a seeds x problems array), got shape {table.shape}")
    return table


def percentile_interval(means: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central ``level`` interval of bootstrap ``means``: their two tail quantiles."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def mean_interval(
    values: Sequence[float] | np.ndarray, *, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = SEED
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of ``values`` (per problem, or seeds x problems)."""
    return percentile_interval(bootstrap_means(values, resamples=resamples, seed=seed), level)


def difference_interval(
    before: Sequence[float] | np.ndarray,
    after: Sequence[float] | np.ndarray,
    *,
    paired: bool = True,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = SEED,
) -> tuple[float, float]:
    """The interval of ``mean(after) - mean(before)``.

    ``paired``: both were scored on the same problems (and seeds), in the same order,
    and the differences are resampled together. Otherwise each side is resampled on its
    own (with independent draws), as two evaluations of different problems must be.
    """
    if paired:
        first, second = _as_table(before), _as_table(after)
        if first.shape != second.shape:
            raise ValueError(f"paired values must have the same shape, got {first.shape} and {second.shape}")
        return mean_interval(second - first, resamples=resamples, level=level, seed=seed)
    low = bootstrap_means(before, resamples=resamples, seed=seed)
    high = bootstrap_means(after, resamples=resamples, seed=seed + 1)
    return percentile_interval(high - low, level)


def ratio_interval(
    numerators: Sequence[float] | np.ndarray,
    denominators: Sequence[float] | np.ndarray,
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = SEED,
) -> tuple[float, float] | None:
    """The percentile bootstrap interval of ``mean(numerators) / mean(denominators)``.

    Both are per problem (or seeds x problems) in the same order and are drawn together;
    draws whose denominators are all 0 have no ratio and are left out. None when no draw
    has one (every denominator is 0).
    """
    top, bottom = _as_table(numerators), _as_table(denominators)
    if top.shape != bottom.shape:
        raise ValueError(f"numerators and denominators must have the same shape, got {top.shape} and {bottom.shape}")
    # The same seed and shape make the same draws of problems (and seeds) for both.
    top_means = bootstrap_means(top, resamples=resamples, seed=seed)
    bottom_means = bootstrap_means(bottom, resamples=resamples, seed=seed)
    defined = bottom_means > 0
    if not defined.any():
        return None
    return percentile_interval(top_means[defined] / bottom_means[defined], level)
