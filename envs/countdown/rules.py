"""CountDown rules: steps combine two available numbers, and an exact solver."""

from __future__ import annotations

from collections.abc import Iterator
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


def _goal(numbers: tuple[Value, ...], target: Value, use_all: bool) -> bool:
    return target in numbers and (not use_all or len(numbers) == 1)


def is_solvable(rules: Rules, numbers: tuple[Value, ...], target: Value, use_all: bool = False) -> bool:
    """Whether any steps reach ``target``: depth-first with a memo of dead states."""
    dead: set[tuple[Value, ...]] = set()

    def search(state: tuple[Value, ...]) -> bool:
        if _goal(state, target, use_all):
            return True
        if len(state) < 2 or state in dead:
            return False
        if any(search(tuple(sorted(child))) for *_, child in _moves(rules, state)):
            return True
        dead.add(state)
        return False

    return search(tuple(sorted(numbers)))


def solve(rules: Rules, numbers: tuple[Value, ...], target: Value, use_all: bool = False) -> list[Step] | None:
    """A shortest list of steps that reaches ``target``, or None if no steps can.

    Iterative deepening over all step sequences, states canonicalised (sorted) and
    memoised per remaining depth, so None is a proof that there is no solution.
    With ``use_all`` the goal is that the only number left is the target.
    """

    @cache
    def search(state: tuple[Value, ...], depth: int) -> tuple[Step, ...] | None:
        if _goal(state, target, use_all):
            return ()
        if depth == 0 or len(state) < 2:
            return None
        for a, op, b, value, child in _moves(rules, state):
            rest = search(tuple(sorted(child)), depth - 1)
            if rest is not None:
                return (Step(a, op, b, value), *rest)
        return None

    start = tuple(sorted(numbers))
    for depth in range(len(numbers)):
        found = search(start, depth)
        if found is not None:
            return list(found)
    return None
