"""CountDown step grammar (``a op b = c``), rendering, and the whole-expression answer check."""

from __future__ import annotations

from dataclasses import replace

from backtrack_gym.envs.core import Invalid
from backtrack_gym.envs.countdown.generator import CountDownProblem
from backtrack_gym.envs.countdown.rules import Rules, Step
from backtrack_gym.envs.expr import ExprError, ExprLimits, Node, Value, format_value, parse

STEP_LIMITS = ExprLimits(max_chars=128, max_depth=4)
ANSWER_LIMITS = ExprLimits(max_chars=256, max_depth=16, unary_minus=False)
SIGNED_ANSWER_LIMITS = replace(ANSWER_LIMITS, unary_minus=True)
DEFAULT_RULES = Rules()
STEP_SHAPE = "a step is 'a op b = c' with op one of + - * /"


def _is_operand(node: Node) -> bool:
    return node.op == "num" or node.grouped or (node.op == "neg" and node.left.op == "num")


def _is_number(node: Node) -> bool:
    if node.op == "num":
        return True
    if node.op == "neg":
        return node.left.op == "num"
    return node.op == "/" and node.left.op == "num" and node.right.op == "num" and not node.left.grouped


def parse_step(line: str) -> Step | Invalid:
    """Parse ``a op b = c``; operands that are fractions or negative are parenthesised."""
    if line.count("=") != 1:
        return Invalid("malformed", STEP_SHAPE)
    lhs, rhs = line.split("=")
    try:
        node = parse(lhs, STEP_LIMITS)
        result = parse(rhs, STEP_LIMITS)
    except ExprError as err:
        return Invalid("malformed", f"{err}; {STEP_SHAPE}")
    if node.grouped or node.op not in ("+", "-", "*", "/") or not (_is_operand(node.left) and _is_operand(node.right)):
        return Invalid("malformed", f"the left side must join exactly two numbers; {STEP_SHAPE}")
    if not _is_number(result):
        return Invalid("malformed", "the right side must be a single number")
    return Step(node.left.value, node.op, node.right.value, result.value)


def render(problem: CountDownProblem, numbers: tuple[Value, ...]) -> str:
    """``Target: 24 | Numbers: 3 5 7 8`` (one line)."""
    return f"Target: {problem.target} | Numbers: {' '.join(format_value(n) for n in numbers)}"


def check_answer(
    problem: CountDownProblem, text: str, rules: Rules = DEFAULT_RULES, use_all: bool = True
) -> str | None:
    """None if the expression ``text`` (e.g. ``(94*4)-61-6``) reaches the target, else why not.

    Each given number may be used once (with ``use_all``: exactly once), and every
    intermediate value must obey ``rules``. The parser runs no code and is bounded.
    """
    try:
        # A leading minus negates a given number, which only signed rules allow.
        node = parse(text, SIGNED_ANSWER_LIMITS if rules.allow_negative else ANSWER_LIMITS)
    except ExprError as err:
        return f"not an expression: {err}"
    used = sorted(node.leaves())
    given = sorted(problem.numbers)
    if used != given and (use_all or not _is_sub_multiset(used, given)):
        return f"uses {' '.join(map(format_value, used))}; the numbers are {' '.join(map(str, given))}" + (
            ", each exactly once" if use_all else ", each at most once"
        )
    if not (rules.allow_negative and rules.allow_fractions):
        for value in node.inner_values():
            reason = rules.admits(value)
            if reason:
                return reason
    if node.value != problem.target:
        return f"evaluates to {format_value(node.value)}, not {problem.target}"
    return None


def verify_answer(problem: CountDownProblem, text: str, rules: Rules = DEFAULT_RULES, use_all: bool = True) -> bool:
    """True when :func:`check_answer` finds nothing wrong."""
    return check_answer(problem, text, rules, use_all) is None


def _is_sub_multiset(small: list[Value], big: list[Value]) -> bool:
    """Whether sorted ``small`` fits inside sorted ``big`` (a multiset inclusion)."""
    rest = iter(big)
    return all(any(x == y for y in rest) for x in small)
