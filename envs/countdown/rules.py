"""CountDown rules: steps combine two available numbers, and an exact solver."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import cache

from backtrack_gym.envs.core import Invalid
from backtrack_gym.envs.expr import ExprError, Value, apply_op, format_value

OPS = ("+", "-", "*", "/")


@dataclass(frozen=True)
class Rules:
    """Which results a step may produce.

    Attributes:
        allow_negative: results below zero are allowed.
        allow_fractions: division need not be exact.
    """

    allow_negative: bool = False
    allow_fractions: bool = False

    def admits(self, value: Value) -> str | None:
        """None if ``value`` may be a result, else why not."""
        if not self.allow_negative and value < 0:
            return f"result {format_value(value)} is negative"
        if not self.allow_fractions and isinstance(value, Fraction):
            return f"result {format_value(value)} is not an integer"
        return None


@dataclass(frozen=True)
class Step:
    """``left op right = result``."""

    left: Value
    op: str
    right: Value
    result: Value

    def __str__(self) -> str:
        return f"{_operand(self.left)} {self.op} {_operand(self.right)} = {format_value(self.result)}"


def _operand(value: Value) -> str:
    text = format_value(value)
    return f"({text})" if isinstance(value, Fraction) or value < 0 else text


def combine(rules: Rules, op: str, left: Value, right: Value) -> Value | str:
    """The result of ``left op right`` under ``rules``, or why it is not allowed."""
    try:
        value = apply_op(op, left, right)
    except ExprError as err:
        return str(err)
    return rules.admits(value) or value


def remove_pair(numbers: tuple[Value, ...], left: Value, right: Value) -> tuple[Value, ...] | None:
    """``numbers`` without one ``left`` and one ``right``, or None if they are not there."""
    rest = list(numbers)
    for value in (left, right):
        try:
            rest.remove(value)
        except ValueError:
            return None
    return tuple(rest)


def apply_step(rules: Rules, numbers: tuple[Value, ...], step: Step) -> tuple[Value, ...] | Invalid:
    """The numbers after ``step``, or why the rules reject it."""
    rest = remove_pair(numbers, step.left, step.right)
    if rest is None:
        missing = step.left if step.left not in numbers else step.right
        if step.left == step.right and numbers.count(step.left) == 1:
            return Invalid("illegal", f"{format_value(step.left)} is available only once")
        return Invalid("illegal", f"{format_value(missing)} is not an available number")
    value = combine(rules, step.op, step.left, step.right)
    if isinstance(value, str):
        return Invalid("illegal", value)
    if value != step.result:
        return Invalid(
            "illegal", f"wrong result: {_operand(step.left)} {step.op} {_operand(step.right)} is {format_value(value)}"
        )
    return (*rest, value)


def _moves(rules: Rules, numbers: tuple[Value, ...]) -> Iterator[tuple[Value, str, Value, Value, tuple[Value, ...]]]:
    """Each allowed ``(a, op, b, result, numbers after)``, commutative pairs and duplicates once."""
    seen = set()
    count = len(numbers)
    for i in range(count):
        for j in range(count):
            if i == j:
                continue
            a, b = numbers[i], numbers[j]
            rest = None
            for op in OPS:
                if (op in "+*" and i > j) or (a, op, b) in seen:
                    continue
                seen.add((a, op, b))
                value = combine(rules, op, a, b)
                if isinstance(value, str):
                    continue
                if rest is None:
                    rest = tuple(x for k, x in enumerate(numbers) if k != i and k != j)
                yield a, op, b, value, (*rest, value)


def legal_steps(rules: Rules, numbers: tuple[Value, ...]) -> list[Step]:
    """Every step allowed from ``numbers`` (each unordered pair once for ``+`` and ``*``)."""
    return [Step(a, op, b, value) for a, op, b, value, _ in _moves(rules, numbers)]


def step_results(rules: Rules, a: Value, b: Value) -> frozenset[Value]:
    """The values one step on ``a`` and ``b`` (in either order) may produce under ``rules``.

    Under the default rules these are the results of the research's ``combine_nums``
    (KempnerInstitute/Backtrack, ``countdown/src/countdown_utils.py``): ``a+b``, ``a*b``,
    the larger minus the smaller, and the larger over the smaller when that is exact.
    """
    if not (rules.allow_negative or rules.allow_fractions) and type(a) is int and type(b) is int and a >= 0 and b >= 0:
        # Computed directly: this case is most of the solver's and the generator's time.
        high, low = (a, b) if a >= b else (b, a)
        if low and high % low == 0:
            return frozenset((high + low, high * low, high - low, high // low))
        return frozenset((high + low, high * low, high - low))
    results = set()
    for op in OPS:
        for left, right in ((a, b), (b, a)):
            value = combine(rules, op, left, right)
            if not isinstance(value, str):
                results.add(value)
    return frozenset(results)


@cache
def _split_indices(count: int) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
    """Each split of ``count`` positions into two non-empty parts, once; the smaller part first."""
    splits = []
    for mask in range(1, (1 << count) - 1, 2):  # the first position on one side: each split once
        inside = tuple(i for i in range(count) if mask >> i & 1)
        outside = tuple(i for i in range(count) if not mask >> i & 1)
        splits.append((inside, outside) if len(inside) <= len(outside) else (outside, inside))
    return tuple(splits)


class _ValueTable:
    """The values each set of numbers (a sorted tuple) can be combined into, under one ``Rules``.

    The last step joins the values of two parts of the numbers, so the values of a set
    are those of its splits: exact, and fast for up to four numbers. Pairs are kept
    (there are few distinct ones); larger sets are recomputed.
    """

    def __init__(self, rules: Rules):
        self.rules = rules
        self.pairs: dict[tuple[Value, ...], frozenset[Value]] = {}

    def values(self, numbers: tuple[Value, ...]) -> Collection[Value]:
        if len(numbers) == 1:
            return numbers
        if len(numbers) == 2:
            found = self.pairs.get(numbers)
            if found is None:
                if len(self.pairs) >= 1 << 16:
                    self.pairs.clear()
                found = self.pairs[numbers] = step_results(self.rules, *numbers)
            return found
        values: set[Value] = set()
        for inside, outside in _split_indices(len(numbers)):
            left = self.values(tuple([numbers[i] for i in inside]))
            right = self.values(tuple([numbers[i] for i in outside]))
            for a in left:
                for b in right:
                    values.update(step_results(self.rules, a, b))
        return values


@cache
def _value_table(rules: Rules) -> _ValueTable:
    return _ValueTable(rules)


def reachable_values(rules: Rules, numbers: tuple[Value, ...]) -> frozenset[Value]:
    """Every value that combining all of ``numbers`` can end in (fast for up to four numbers)."""
    return frozenset(_value_table(rules).values(tuple(sorted(numbers))))


# Above this many numbers the value sets of the parts grow too large; search steps instead.
_SPLIT_SEARCH_LIMIT = 4


def _quotient(x: Value, y: Value, fractions: bool) -> Value | None:
    """``x / y`` when a step may give it: exact, and an integer unless ``fractions``."""
    if type(x) is int and type(y) is int:
        quotient, remainder = divmod(x, y)
        if remainder == 0:
            return quotient
        if not fractions:
            return None
    return apply_op("/", x, y)


def _makes(a: Value, target: Value, others: Collection[Value], fractions: bool) -> bool:
    """Whether one step on ``a`` and some value in ``others`` gives ``target``.

    The only candidates are the inverses of the operations; whether the step is
    allowed is settled by ``target`` being allowed and ``others`` holding allowed values.
    """
    if a == 0:
        # 0 * b = 0 / b = 0; 0 + b = b - 0 = b; 0 - b = -b.
        return target == 0 or target in others or -target in others
    if target - a in others or a - target in others or target + a in others or target * a in others:
        return True
    if _quotient(target, a, fractions) in others:  # a * b = target
        return True
    return target != 0 and _quotient(a, target, fractions) in others  # a / b = target


class NodeCapReached(Exception):
    """The search expanded more states than its node cap allowed."""


def _reaches(
    table: _ValueTable,
    numbers: tuple[Value, ...],
    target: Value,
    dead: set[tuple[Value, ...]],
    budget: list[int] | None = None,
) -> bool:
    """Whether combining all of ``numbers`` (a sorted tuple) can end in ``target``.

    ``dead`` holds the states of this search already known not to reach it. ``budget``,
    ``[states left, cap]`` shared by the whole search, limits how many states of more
    than ``_SPLIT_SEARCH_LIMIT`` numbers are expanded; past it :class:`NodeCapReached`
    (smaller sets are settled by their splits, whose work is bounded).
    """
    if len(numbers) == 1:
        return numbers[0] == target
    rules = table.rules
    if numbers in dead or rules.admits(target) is not None:
        return False
    if len(numbers) <= _SPLIT_SEARCH_LIMIT:
        for inside, outside in _split_indices(len(numbers)):
            others = table.values(tuple([numbers[i] for i in outside]))
            for a in table.values(tuple([numbers[i] for i in inside])):
                if _makes(a, target, others, rules.allow_fractions):
                    return True
    else:
        if budget is not None:
            budget[0] -= 1
            if budget[0] < 0:
                raise NodeCapReached(f"more than {budget[1]} states expanded")
        if any(_reaches(table, tuple(sorted(child)), target, dead, budget) for *_, child in _moves(rules, numbers)):
            return True
    dead.add(numbers)
    return False


def _sub_multisets(numbers: tuple[Value, ...]) -> list[tuple[Value, ...]]:
    """The distinct non-empty sub-multisets of ``numbers`` (a sorted tuple), smallest first."""
    found = {tuple(n for i, n in enumerate(numbers) if mask >> i & 1) for mask in range(1, 1 << len(numbers))}
    return sorted(found, key=len)


def is_solvable(rules: Rules, numbers: tuple[Value, ...], target: Value, use_all: bool = True) -> bool:
    """Whether any steps reach ``target``; exact.

    With ``use_all`` (the research's goal: ``CountDown.search`` in
    KempnerInstitute/Backtrack ``countdown/src/countdown.py`` succeeds only when one
    number is left and it is the target) all numbers must be combined into it; without,
    it is enough that the target appears among the numbers, i.e. that some of them
    combine into it.
    """
    return _solvable(rules, numbers, target, use_all, None)


def _solvable(rules: Rules, numbers: tuple[Value, ...], target: Value, use_all: bool, budget: list[int] | None) -> bool:
    start = tuple(sorted(numbers))
    table = _value_table(rules)
    dead: set[tuple[Value, ...]] = set()
    parts = [start] if use_all else _sub_multisets(start)
    return any(_reaches(table, part, target, dead, budget) for part in parts)


def solvable_within(
    rules: Rules, numbers: tuple[Value, ...], target: Value, use_all: bool = True, max_nodes: int = 10_000
) -> bool | None:
    """:func:`is_solvable`, or None when deciding it would expand more than ``max_nodes``
    states (never a wrong answer). Up to four numbers it always answers."""
    try:
        return _solvable(rules, numbers, target, use_all, [max_nodes, max_nodes])
    except NodeCapReached:
        return None


def solve(rules: Rules, numbers: tuple[Value, ...], target: Value, use_all: bool = True) -> list[Step] | None:
    """A shortest list of steps that reaches ``target``, or None if no steps can (a proof).

    With ``use_all`` every solution takes one step fewer than there are numbers: the
    plan takes, at each state, the first legal step (in :func:`legal_steps` order)
    from which :func:`is_solvable` still holds. Without it, iterative deepening over
    all step sequences, states canonicalised (sorted) and memoised per remaining depth.
    """
    start = tuple(sorted(numbers))
    if not is_solvable(rules, start, target, use_all):
        return None
    if use_all:
        plan = []
        state = start
        table = _value_table(rules)
        dead: set[tuple[Value, ...]] = set()
        while len(state) > 1:
            for a, op, b, value, child in _moves(rules, state):
                child = tuple(sorted(child))
                if _reaches(table, child, target, dead):
                    plan.append(Step(a, op, b, value))
                    state = child
                    break
        return plan

    @cache
    def search(state: tuple[Value, ...], depth: int) -> tuple[Step, ...] | None:
        if target in state:
            return ()
        if depth == 0 or len(state) < 2:
            return None
        for a, op, b, value, child in _moves(rules, state):
            rest = search(tuple(sorted(child)), depth - 1)
            if rest is not None:
                return (Step(a, op, b, value), *rest)
        return None

    for depth in range(len(numbers)):
        found = search(start, depth)
        if found is not None:
            return list(found)
    return None
