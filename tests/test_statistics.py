"""Bootstrap intervals: coverage of a known rate, paired against unpaired, and over seeds then problems."""

import numpy as np
import pytest

from backtrack_gym.train.statistics import bootstrap_means, difference_interval, mean_interval, ratio_interval


def test_a_95_percent_interval_covers_a_known_solve_rate_95_percent_of_the_time():
    rate, problems, evaluations = 0.3, 100, 1000
    solved = np.random.default_rng(0).random((evaluations, problems)) < rate
    covered = [low <= rate <= high for low, high in (mean_interval(row, resamples=1000) for row in solved)]
    assert 0.93 <= np.mean(covered) <= 0.97


def test_an_interval_is_seeded_and_stays_inside_the_values_range():
    values = np.random.default_rng(1).random(50) < 0.5
    assert mean_interval(values) == mean_interval(values)
    assert not np.array_equal(bootstrap_means(values, seed=1), bootstrap_means(values))
    low, high = mean_interval(values)
    assert low < values.mean() < high
    assert mean_interval(np.zeros(40)) == (0.0, 0.0)
    assert mean_interval(np.ones(40)) == (1.0, 1.0)
    with pytest.raises(ValueError, match="one value per problem"):
        mean_interval([])


def test_a_paired_interval_cancels_the_problems_difficulty():
    rng = np.random.default_rng(2)
    difficulty = rng.random(200)  # how often each problem is solved: shared by both arms
    gain = 0.05
    before = np.clip(difficulty + rng.normal(0, 0.03, 200), 0, 1)
    after = before + gain + rng.normal(0, 0.02, 200)
    paired = difference_interval(before, after)
    unpaired = difference_interval(before, after, paired=False)
    assert paired[0] <= gain <= paired[1]
    assert unpaired[0] <= gain <= unpaired[1]
    assert paired[1] - paired[0] < (unpaired[1] - unpaired[0]) / 5
    # a fixed gain on every problem is known exactly once the problems are paired
    assert difference_interval(before, before + gain) == pytest.approx((gain, gain))
    with pytest.raises(ValueError, match="same shape"):
        difference_interval(before, after[:-1])


def test_the_two_level_bootstrap_counts_the_seeds_spread():
    rng = np.random.default_rng(3)
    solved = rng.random(300) < 0.4
    # the same problems under two seeds that agree: the seeds add nothing
    assert mean_interval(np.stack([solved, solved])) == mean_interval(solved)
    # seeds that differ by a training effect the problems alone cannot show
    offsets = np.array([-0.1, 0.0, 0.1])
    by_seed = np.clip(solved[None, :] + offsets[:, None], 0, 1)
    pooled_low, pooled_high = mean_interval(by_seed.ravel())
    low, high = mean_interval(by_seed)
    assert low <= by_seed.mean() <= high
    assert high - low > 1.5 * (pooled_high - pooled_low)
    assert bootstrap_means(by_seed, resamples=300).shape == (300,)


def test_a_ratio_interval_covers_a_known_backtrack_precision():
    # Each problem's episodes backtrack 0 to 4 times; each backtrack leaves a dead end with chance 0.3.
    precision, problems, evaluations = 0.3, 100, 400
    rng = np.random.default_rng(4)
    backtracks = rng.integers(0, 5, size=(evaluations, problems))
    left = rng.binomial(backtracks, precision)
    intervals = [ratio_interval(a, b, resamples=1000) for a, b in zip(left, backtracks, strict=True)]
    assert 0.93 <= np.mean([low <= precision <= high for low, high in intervals]) <= 0.97
    # The draws are shared: a ratio the same on every problem has no spread at all, over seeds too.
    assert ratio_interval(0.5 * backtracks[0], backtracks[0]) == pytest.approx((0.5, 0.5))
    assert ratio_interval(0.25 * backtracks[:3], backtracks[:3]) == pytest.approx((0.25, 0.25))
    assert ratio_interval(np.zeros(10), np.zeros(10)) is None
    with pytest.raises(ValueError, match="same shape"):
        ratio_interval([1.0, 2.0], [1.0])
