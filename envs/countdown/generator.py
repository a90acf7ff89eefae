"""CountDown problems: configuration, held-out targets and per-index generation, as the research defines them."""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from backtrack_gym.envs.countdown.rules import OPS, Rules, combine, is_solvable, reachable_values
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


GENERATORS = ("research", "constructive")
HELD_OUT_RULES = ("research", "hash")
# Targets of a config's range; the split's targets are found by scanning sets of numbers.
MAX_TARGETS = 10_000
MAX_SCANNED_SETS = 20_000
# Sets of numbers distinct_problems checks at most (about 2 s for ten thousand sets of four).
MAX_COUNTED_SETS = 10_000
# How many held-out problems the degenerate-split check profiles (as split_profile does).
PROFILE_SIZE = 500


@dataclass(frozen=True)
class CountDownConfig:
    """Settings of the CountDown task; the defaults are the research's task.

    The research is Stream of Search and To Backtrack or Not to Backtrack, whose code
    is KempnerInstitute/Backtrack (``countdown/src/countdown.py``,
    ``countdown_generate.py``, ``countdown_utils.py``, run by ``scripts/gen_task.sh``
    with ``--seed 4 --min_range 4 --start_range 4`` and ``--max_target 100``).

    Attributes:
        num_count: how many numbers a problem gives (2..8). Research: 4
            (``--start_range 4``).
        number_min: smallest given number. Research: 1 (``random.randint(1, max_target-1)``
            in ``CountDown.generate``).
        number_max: largest given number. Research: ``max_target - 1`` = 99.
        target_min: smallest target. Research: 10 (``range(10, max_target+1)``).
        target_max: largest target. Research: ``--max_target 100``.
        held_out_fraction: share of the targets kept for the test split; train and
            test problems never share a target. Research: 0.1
            (``target_nums[:len(target_nums)//10]``).
        held_out_rule: how the held-out targets are chosen. ``"research"``: the
            reachable targets in increasing order, shuffled by Python's
            ``random.Random(split_seed).shuffle``, the first
            ``floor(held_out_fraction * count)`` held out (at least one), as
            ``countdown_generate.py`` does. ``"hash"`` (differs from the research):
            this project's earlier rule, a fixed hash ranking of the whole target
            range, ``round(held_out_fraction * size)`` held out.
        split_seed: seed of the held-out shuffle. Research: 4 (the ``--seed`` of
            ``gen_task.sh``; its ``val1`` results hold every target of 10..100 but
            14, 39, 41, 57, 62, 81, 87, 89 and 96, the nine this seed holds out). The
            research uses one seed for the shuffle and the problems; here the split
            stays fixed while ``seed`` varies.
        seed: seed of the problem stream; item ``i`` depends only on (seed, split, i).
        allow_negative: steps may produce negative results (differs from the research).
        allow_fractions: division need not be exact (differs from the research).
        use_all_numbers: the goal is that the only number left is the target, as in
            the research (``CountDown.search``). False (differs from the research): the
            target appearing among the numbers is enough, so ``1 2 6 -> 12`` is solved
            by ``2 * 6 = 12``; problems then never give the target.
        generator: ``"research"``: the target uniform over the split's targets, then
            numbers drawn uniformly from ``number_min..number_max`` until the exact
            solver reaches the target using all of them (``CountDown.generate``).
            ``"constructive"`` (differs from the research; this project's earlier
            generator): numbers drawn uniformly and combined by random steps, kept
            when the result is a target of the split and not a given number, so the
            targets that many draws reach are far more common.
        min_effective_share: ``validate()`` refuses a config whose held-out problems
            spread over fewer than this share of the held-out targets, counted as
            effective targets (``1 / sum(p**2)`` over the first 500 held-out problems,
            as :func:`split_profile` reports them); 0 accepts any split.
        verify: check every problem of the constructive generator with the exact
            solver (the research generator checks every draw anyway).
        max_attempts: draws of numbers before generation gives up.
    """

    num_count: int = 4
    number_min: int = 1
    number_max: int = 99
    target_min: int = 10
    target_max: int = 100
    held_out_fraction: float = 0.1
    held_out_rule: str = "research"
    split_seed: int = 4
    seed: int = 0
    allow_negative: bool = False
    allow_fractions: bool = False
    use_all_numbers: bool = True
    generator: str = "research"
    min_effective_share: float = 0.7
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
        if self.target_max - self.target_min + 1 > MAX_TARGETS:
            raise ValueError(
                f"the target range {self.target_min}..{self.target_max} holds more than {MAX_TARGETS} targets"
            )
        if self.generator not in GENERATORS:
            raise ValueError(f"generator must be one of {GENERATORS}, got {self.generator!r}")
        if self.held_out_rule not in HELD_OUT_RULES:
            raise ValueError(f"held_out_rule must be one of {HELD_OUT_RULES}, got {self.held_out_rule!r}")
        if not 0.0 <= self.held_out_fraction < 1.0:
            raise ValueError(f"held_out_fraction must be in [0, 1), got {self.held_out_fraction}")
        if not 0.0 <= self.min_effective_share <= 1.0:
            raise ValueError(f"min_effective_share must be in [0, 1], got {self.min_effective_share}")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not reachable_targets(self):
            raise ValueError(
                f"no target in {self.target_min}..{self.target_max} is reachable using all {self.num_count} numbers "
                f"in {self.number_min}..{self.number_max}"
            )
        splits = split_targets(self)
        if self.held_out_fraction > 0 and not splits["train"]:
            raise ValueError(
                f"the target range is too small to hold out targets and keep some for training "
                f"({len(splits['test'])} reachable targets)"
            )
        if splits["test"] and self.min_effective_share > 0:
            effective = held_out_effective_targets(self)
            if effective < self.min_effective_share * len(splits["test"]):
                raise ValueError(
                    f"the held-out split is degenerate: its {len(splits['test'])} targets amount to {effective:.1f} "
                    f"effective targets (1/sum p^2 of its problems' targets), fewer than "
                    f"min_effective_share={self.min_effective_share} x {len(splits['test'])}; use "
                    "generator='research', widen the number range, or set min_effective_share=0 to accept it"
                )
        return self

    @property
    def rules(self) -> Rules:
        return Rules(allow_negative=self.allow_negative, allow_fractions=self.allow_fractions)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reachable_targets(config: CountDownConfig) -> frozenset[int]:
    """The targets of the range that some draw of numbers reaches using all of them."""
    return _reachable_targets(
        config.rules, config.num_count, config.number_min, config.number_max, config.target_min, config.target_max
    )


@lru_cache(maxsize=64)
def _reachable_targets(
    rules: Rules, num_count: int, number_min: int, number_max: int, target_min: int, target_max: int
) -> frozenset[int]:
    """Scan the sets of numbers in increasing order until every target has a solution.

    Exact: the scan ends when no target is left without one, or when every set has
    been tried; it refuses to go past ``MAX_SCANNED_SETS`` sets (small numbers reach
    most targets, so the research's range needs about a hundred). Beyond four numbers
    the targets of two fewer numbers come first (``t + (a - a)``), and of one fewer
    when 1 may be drawn (``t * 1``).
    """
    found: set[int] = set()
    if num_count > 4:
        smaller = [num_count - 2] + ([num_count - 1] if number_min <= 1 <= number_max else [])
        for count in smaller:
            found |= _reachable_targets(rules, count, number_min, number_max, target_min, target_max)
    missing = set(range(target_min, target_max + 1)) - found
    sets = itertools.combinations_with_replacement(range(number_min, number_max + 1), num_count)
    for scanned, numbers in enumerate(sets):
        if not missing:
            break
        if scanned == MAX_SCANNED_SETS:
            raise ValueError(
                f"cannot tell whether targets {sorted(missing)[:10]}{'...' if len(missing) > 10 else ''} are "
                f"reachable: the first {MAX_SCANNED_SETS} sets of {num_count} numbers in {number_min}..{number_max} "
                "reach none of them; narrow the target range"
            )
        if num_count <= 4:
            hits = missing & reachable_values(rules, numbers)
        else:
            hits = {target for target in missing if is_solvable(rules, numbers, target)}
        missing -= hits
        found |= hits
    return frozenset(found)


def held_out_count(config: CountDownConfig) -> int:
    """How many targets the test split holds (at least one unless ``held_out_fraction`` is 0)."""
    if config.held_out_fraction == 0:
        return 0
    if config.held_out_rule == "hash":
        return max(1, round(config.held_out_fraction * (config.target_max - config.target_min + 1)))
    # The research's len(targets) // 10: 0.1 is stored a little above 1/10, so the floor never falls short.
    return max(1, math.floor(config.held_out_fraction * len(reachable_targets(config))))


def _target_rank(target: int) -> bytes:
    # A fixed hash, so the held-out set depends on nothing but the target range.
    return hashlib.blake2b(b"countdown-held-out:%d" % target, digest_size=8).digest()


@lru_cache(maxsize=64)
def split_targets(config: CountDownConfig) -> dict[str, frozenset[int]]:
    """The targets of each split, chosen by ``config.held_out_rule``.

    The research's rule (``countdown_generate.py``): ``random.seed(seed)``, then
    ``random.shuffle`` of the targets in increasing order, the first tenth held out.
    Here the targets are those some draw reaches (all of 10..100 for the research's
    numbers) and the seed is ``split_seed``.
    """
    if config.held_out_rule == "hash":
        targets = sorted(range(config.target_min, config.target_max + 1), key=_target_rank)
    else:
        targets = sorted(reachable_targets(config))
        random.Random(config.split_seed).shuffle(targets)
    count = held_out_count(config)
    return {"test": frozenset(targets[:count]), "train": frozenset(targets[count:])}


def generate(config: CountDownConfig, index: int, split: str = "train") -> CountDownProblem:
    """The problem at ``index`` of ``split``, by ``config.generator``; solvable either way.

    ``"research"`` (``CountDown.generate`` in KempnerInstitute/Backtrack
    ``countdown/src/countdown.py``, the target from ``random.choice(target_nums)`` in
    ``countdown_generate.py``): the target is uniform over the split's targets; numbers
    are drawn uniformly until the exact solver reaches the target using all of them
    (and, under ``use_all_numbers=False``, the target is not among them).
    ``"constructive"``: numbers are drawn uniformly, then random steps combine them all
    into one value; a draw is kept when that value is a target of the split and not one
    of the given numbers (which would make the problem trivial).
    """
    rng = item_rng(config.seed, split, index)
    targets = split_targets(config)[split]
    if not targets:
        raise ValueError(f"the {split} split has no targets (held_out_fraction={config.held_out_fraction})")
    if config.generator == "research":
        return _research_problem(config, rng, split)
    return _constructive_problem(config, rng, targets, split)


def _draw_numbers(config: CountDownConfig, rng: np.random.Generator) -> tuple[int, ...]:
    return tuple(int(x) for x in rng.integers(config.number_min, config.number_max + 1, size=config.num_count))


def _research_problem(config: CountDownConfig, rng: np.random.Generator, split: str) -> CountDownProblem:
    drawable = drawable_targets(config, split)
    if not drawable:
        raise ValueError(f"no target of the {split} split is reachable using all {config.num_count} numbers")
    target = drawable[int(rng.integers(len(drawable)))]
    for _ in range(config.max_attempts):
        numbers = _draw_numbers(config, rng)
        if (config.use_all_numbers or target not in numbers) and is_solvable(config.rules, numbers, target):
            return CountDownProblem(numbers, target)
    raise RuntimeError(f"no {split} problem for target {target} in {config.max_attempts} draws; raise max_attempts")


def _constructive_problem(
    config: CountDownConfig, rng: np.random.Generator, targets: frozenset[int], split: str
) -> CountDownProblem:
    rules = config.rules
    for _ in range(config.max_attempts):
        numbers = _draw_numbers(config, rng)
        value = _random_combination(rng, rules, list(numbers))
        if value in targets and value not in numbers:
            problem = CountDownProblem(numbers, int(value))
            if config.verify and not is_solvable(rules, problem.numbers, problem.target, config.use_all_numbers):
                raise AssertionError(f"generated an unsolvable problem {problem}")
            return problem
    raise RuntimeError(
        f"no {split} problem found in {config.max_attempts} draws; widen the target range or the number range"
    )


@lru_cache(maxsize=64)
def drawable_targets(config: CountDownConfig, split: str) -> tuple[int, ...]:
    """The targets of ``split`` the research generator draws from, in increasing order: the
    reachable ones (all of them but under ``held_out_rule="hash"``, which ranks the whole range).
    """
    return tuple(sorted(split_targets(config)[split] & reachable_targets(config)))


def held_out_effective_targets(config: CountDownConfig) -> float:
    """Effective targets (``1 / sum(p**2)``) of the held-out split.

    Exact for the research generator, whose targets are uniform; for the constructive
    one, counted on the split's first ``PROFILE_SIZE`` problems.
    """
    if config.generator == "research":
        return float(len(drawable_targets(config, "test")))
    return _profiled_effective_targets(config)


@lru_cache(maxsize=64)
def _profiled_effective_targets(config: CountDownConfig) -> float:
    return split_profile(config, PROFILE_SIZE, "test").effective_targets


@lru_cache(maxsize=64)
def distinct_problems(config: CountDownConfig, split: str) -> int | None:
    """How many distinct problems (numbers in any order, and a target) ``split`` holds, or None
    where counting them is not cheap and exact.

    Exact for the research generator with up to four numbers, whose problems are every set
    of numbers that reaches one of the split's targets using all of them (any such set is
    drawn with some chance); counted when there are at most ``MAX_COUNTED_SETS`` sets. The
    constructive generator reaches targets by random steps, whose reach is not counted.
    """
    sizes = config.number_max - config.number_min + 1
    if (
        config.generator != "research"
        or config.num_count > 4
        or math.comb(sizes + config.num_count - 1, config.num_count) > MAX_COUNTED_SETS
    ):
        return None
    targets = frozenset(drawable_targets(config, split))
    count = 0
    for numbers in itertools.combinations_with_replacement(
        range(config.number_min, config.number_max + 1), config.num_count
    ):
        reached = targets & reachable_values(config.rules, numbers)
        count += len(reached if config.use_all_numbers else reached - set(numbers))
    return count


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
