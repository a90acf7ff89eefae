"""Estimators of sampled accuracy: pass@k (unbiased) and maj@k, from n samples per problem."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct: ``1 - C(n-c, k) / C(n, k)``.

    The chance that ``k`` samples drawn without replacement from the ``n`` include a
    correct one (Chen et al., 2021), computed as a product so it never overflows.
    """
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def maj_at_k(samples: Sequence[tuple[Hashable | None, bool]], k: int) -> float:
    """maj@k from ``(answer, correct)`` samples: accuracy of a majority vote over ``k`` samples.

    The samples are split into ``len(samples) // k`` disjoint groups of ``k`` (each an
    independent draw of ``k`` samples, so the mean is unbiased); each group votes among
    its answers (``None``, no answer, does not vote) and a tie is broken uniformly at
    random, so a group scores the share of its tied winners that are correct.
    """
    if not 1 <= k <= len(samples):
        raise ValueError(f"need 1 <= k <= {len(samples)} samples, got k={k}")
    groups = [samples[start : start + k] for start in range(0, len(samples) - k + 1, k)]
    return sum(_vote(group) for group in groups) / len(groups)


def _vote(group: Sequence[tuple[Hashable | None, bool]]) -> float:
    votes = Counter(answer for answer, _ in group if answer is not None)
    if not votes:
        return 0.0
    top = max(votes.values())
    winners = {answer for answer, count in votes.items() if count == top}
    correct = {answer for answer, ok in group if ok and answer in winners}
    return len(correct) / len(winners)
