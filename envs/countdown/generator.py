"""CountDown problems: configuration, held-out targets and per-index generation."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any

import numpy as np

from backtrack_gym.envs.countdown.rules import OPS, Rules, combine, is_solvable
from backtrack_gym.envs.seeding import item_rng


@dataclass(frozen=True)
class CountDownProblem:
    """Reach ``target`` by combining ``numbers``."""

    numbers: tuple[int, ...]
    target: int

    def to_dict(self) -> dict[str, Any]:
        return {"numbers": list(self.numbers), "target": self.target}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CountDownProblem:
        try:
            numbers = tuple(_as_int(n) for n in data["numbers"])
            target = _as_int(data["target"])
        except (KeyError, TypeError) as err:
            raise ValueError(f"a CountDown problem is {{'numbers': [int, ...], 'target': int}}: {err}") from None
        if not 1 <= len(numbers) <= 16:
            raise ValueError(f"a CountDown problem has 1 to 16 numbers, got {len(numbers)}")
        return cls(numbers, target)


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"expected an integer, got {value!r}")
    if abs(int(value)) >= 10**18:
        raise TypeError(f"{value} is too large")
    return int(value)


@dataclass(frozen=True)
class CountDownConfig:
    """Settings of the CountDown task.

    Attributes:
        num_count: how many numbers a problem gives (2..8).
        number_min: smallest given number.
        number_max: largest given number.
        target_min: smallest target.
        target_max: largest target.
        held_out_fraction: share of the target range kept for the test split; train
            and test problems never share a target.
        seed: seed of the problem stream; item ``i`` depends only on (seed, split, i).
        allow_negative: steps may produce negative results.
        allow_fractions: division need not be exact.
        use_all_numbers: the goal is that the only number left is the target
            (default: the target appears among the numbers).
        verify: check every generated problem with the exact solver (slower).
        max_attempts: draws of numbers before generation gives up.
    """

    num_count: int = 4
    number_min: int = 1
    number_max: int = 99
    target_min: int = 10
    target_max: int = 100
    held_out_fraction: float = 0.1
    seed: int = 0
    allow_negative: bool = False
    allow_fractions: bool = False
    use_all_numbers: bool = False
    verify: bool = False
    max_attempts: int = 10_000

    def validate(self) -> CountDownConfig:
        """Raise ``ValueError`` with a clear message for settings that cannot work."""
        if not 2 <= self.num_count <= 8:
            raise ValueError(f"num_count must be in 2..8, got {self.num_count}")
        if not 0 <= self.number_min <= self.number_max <= 10**6:
            raise ValueError(f"need 0 <= number_min <= number_max <= 10**6, got {self.number_min}..{self.number_max}")
        if self.target_min > self.target_max:
            raise ValueError(f"target_min {self.target_min} exceeds target_max {self.target_max}")
        if self.target_min < 0 and not self.allow_negative:
            raise ValueError("negative targets need allow_negative=True")
        if max(abs(self.target_min), abs(self.target_max)) > 10**9:
            raise ValueError("targets must lie within +-10**9")
        largest = max(self.number_max**self.num_count, self.number_max * self.num_count)
        if self.target_min > largest:
            raise ValueError(
                f"no target in {self.target_min}..{self.target_max} is reachable with {self.num_count} numbers "
                f"up to {self.number_max} (at most {largest})"
            )
        if not 0.0 <= self.held_out_fraction < 1.0:
            raise ValueError(f"held_out_fraction must be in [0, 1), got {self.held_out_fraction}")
        held_out = held_out_count(self)
        if self.held_out_fraction > 0 and held_out >= self.target_max - self.target_min + 1:
            raise ValueError("the target range is too small to hold out targets and keep some for training")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        return self

    @property
    def rules(self) -> Rules:
        return Rules(allow_negative=self.allow_negative, allow_fractions=self.allow_fractions)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


def held_out_count(config: CountDownConfig) -> int:
    size = config.target_max - config.target_min + 1
    if config.held_out_fraction == 0:
        return 0
    return max(1, round(config.held_out_fraction * size))


def _target_rank(target: int) -> bytes:
    # A fixed hash, so the held-out set depends on nothing but the target range.
    return hashlib.blake2b(b"countdown-held-out:%d" % target, digest_size=8).digest()


@lru_cache(maxsize=64)
def split_targets(config: CountDownConfig) -> dict[str, frozenset[int]]:
    """The targets of each split: a fixed ``held_out_fraction`` of the range is test."""
    targets = sorted(range(config.target_min, config.target_max + 1), key=_target_rank)
    count = held_out_count(config)
    return {"test": frozenset(targets[:count]), "train": frozenset(targets[count:])}


def generate(config: CountDownConfig, index: int, split: str = "train") -> CountDownProblem:
    """The problem at ``index`` of ``split``, solvable by construction.

    Numbers are drawn uniformly; then random steps combine them all into one value.
    A draw is kept when that value is a target of the split and not one of the given
    numbers (which would make the problem trivial).
    """
    rng = item_rng(config.seed, split, index)
    targets = split_targets(config)[split]
    if not targets:
        raise ValueError(f"the {split} split has no targets (held_out_fraction={config.held_out_fraction})")
    rules = config.rules
    for _ in range(config.max_attempts):
        numbers = [int(x) for x in rng.integers(config.number_min, config.number_max + 1, size=config.num_count)]
        value = _random_combination(rng, rules, numbers)
        if value in targets and value not in numbers:
            problem = CountDownProblem(tuple(numbers), int(value))
            if config.verify and not is_solvable(rules, problem.numbers, problem.target, config.use_all_numbers):
                raise AssertionError(f"generated an unsolvable problem {problem}")
            return problem
    raise RuntimeError(
        f"no {split} problem found in {config.max_attempts} draws; widen the target range or the number range"
    )


@dataclass(frozen=True)
class SplitProfile:
    """How the first ``problems`` items of a split spread over targets and distinct problems."""

    problems: int
    distinct: int
    target_counts: dict[int, int]

    @property
    def effective_targets(self) -> float:
        """``1 / sum(p**2)`` over the targets' shares: the number of equally common targets it equals."""
        return 1.0 / sum((count / self.problems) ** 2 for count in self.target_counts.values())


def split_profile(config: CountDownConfig, n: int, split: str = "test") -> SplitProfile:
    """Profile items ``0..n-1`` of ``split``: a held-out set may be far smaller than its size.

    Problems count as the same when they give the same numbers in any order.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    problems = [generate(config, index, split) for index in range(n)]
    counts = Counter(problem.target for problem in problems)
    distinct = {(tuple(sorted(problem.numbers)), problem.target) for problem in problems}
    return SplitProfile(problems=n, distinct=len(distinct), target_counts=dict(sorted(counts.items())))


def _random_combination(rng: np.random.Generator, rules: Rules, numbers: list[int]):
    """Combine all ``numbers`` with random allowed steps and return the last value."""
    pool = list(numbers)
    draws = rng.random(3 * len(pool))
    for k in range(len(pool) - 1):
        i = int(draws[3 * k] * len(pool))
        j = int(draws[3 * k + 1] * (len(pool) - 1))
        j += j >= i
        a, b = pool[i], pool[j]
        if a < b:
            a, b = b, a
        start = int(draws[3 * k + 2] * len(OPS))
        for shift in range(len(OPS)):
            value = combine(rules, OPS[(start + shift) % len(OPS)], a, b)
            if not isinstance(value, str):
                break
        pool = [x for n, x in enumerate(pool) if n not in (i, j)] + [value]
    return pool[0]
