"""CountDown step grammar (``a op b = c``), rendering, and the whole-expression answer check.

Besides bare steps, the env reads the lines of the research's search traces (Stream of
Search; KempnerInstitute/Backtrack, ``countdown/src/countdown_dfs.py``, ``countdown_bfs.py``
and ``countdown.py`` ``convert_to_path``), which state the node being searched with every
step. :func:`read_line` reads them against the episode's stack of states:

- ``Exploring Operation: 8-5=3, Resulting Numbers: [3, 7, 3]`` is the step. It is taken
  from the node on the current path that has one number more than it lists (the node the
  last ``Current State`` line named, in the research's traces), so a sibling tried after
  another returns to their parent first (a backtrack); numbers that are not what the
  step leaves make the line illegal.
- ``Current State: 24:[3, 5, 7, 8], Operations: ['8-5=3']`` names a node by the
  operations from the start: a line that names the current node is no step; one that
  names another goes there (undoing the steps down to the common ancestor, each a
  backtrack, and applying the rest), which is how the research's BFS moves between
  branches. Wrong numbers, target or operations make it illegal.
- ``Moving to Node #0,1`` goes back to the ancestor at that node's depth (ids are the
  path, ``#0`` the start); a node as deep as the current one or deeper (the node just
  generated, or one the next ``Current State`` line names) is no step. Only the depth
  of an id is read: the env cannot know a searcher's numbering of children.
- ``Generated Node #0,1: 24:[5, 8, 21] Operation: 3*7=21`` (``Generated Node #2: [5, 8, 21]
  from Operation: 3*7=21`` in ``convert_to_path``), ``21,24 unequal: No Solution`` and
  ``24,24 equal: Goal Reached`` are checked against the current node and are no steps;
  ``No solution found.`` is free text.

Numbers are compared as multisets: the research lists a node's numbers in the order its
search keeps them, which can differ from the env's when numbers repeat.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace

from backtrack_gym.envs.core import Invalid, Move
from backtrack_gym.envs.countdown.generator import CountDownProblem
from backtrack_gym.envs.countdown.rules import Rules, Step, apply_step
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


State = tuple[Value, ...]
NO_SOLUTION_FOUND = "No solution found."
_CURRENT = re.compile(
    r"Current State:\s*(?P<target>[^:\[]+?)\s*:\s*\[(?P<numbers>[^\]]*)\]"
    r"\s*,\s*Operations:\s*\[(?P<operations>[^\]]*)\]"
)
_EXPLORING = re.compile(
    r"Exploring Operation:\s*(?P<operation>[^,]+?)\s*,\s*Resulting Numbers:\s*\[(?P<numbers>[^\]]*)\]"
)
_GENERATED = re.compile(
    r"Generated Node #(?P<node>\d+(?:,\d+)*)\s*:\s*(?:(?P<target>[^:\[]+?)\s*:\s*)?\[(?P<numbers>[^\]]*)\]"
    r"\s*(?:from\s+)?Operation:\s*(?P<operation>.+)"
)
_MOVING = re.compile(r"Moving to Node #(?P<node>\d+(?:,\d+)*)")
_VERDICT = re.compile(
    r"(?P<value>[^,]+?)\s*,\s*(?P<target>[^,]+?)\s+(?P<verdict>equal: Goal Reached|unequal: No Solution)"
)
_SHAPES = {
    "Current State": "'Current State: 24:[3, 5, 7, 8], Operations: []'",
    "Exploring Operation": "'Exploring Operation: 8-5=3, Resulting Numbers: [3, 7, 3]'",
    "Generated Node": "'Generated Node #0,1: 24:[5, 8, 21] Operation: 3*7=21'",
    "Moving to Node": "'Moving to Node #0,1' (#0 is the start, then ,k for each level)",
    "verdict": "'24,24 equal: Goal Reached' or '21,24 unequal: No Solution'",
}


def read_line(
    problem: CountDownProblem,
    states: Sequence[State],
    line: str,
    rules: Rules = DEFAULT_RULES,
    is_solved: Callable[[State], bool] | None = None,
) -> Step | Move | Invalid | None:
    """Read one stripped line of an episode whose stack of states is ``states`` (see the module docstring).

    ``is_solved`` is the task's goal (default: the target is the only number left).
    """
    if line.startswith("Current State"):
        return _read_current(problem, states, line, rules)
    if line.startswith("Exploring Operation"):
        return _read_exploring(states, line, rules)
    if line.startswith("Generated Node"):
        return _read_generated(problem, states, line, rules)
    if line.startswith("Moving to Node"):
        return _read_moving(states, line)
    if line.endswith(("Goal Reached", "No Solution")):
        return _read_verdict(problem, states[-1], line, is_solved or (lambda state: state == (problem.target,)))
    if line == NO_SOLUTION_FOUND:
        return None
    return parse_step(line)


def format_numbers(numbers: Sequence[Value]) -> str:
    """A list of numbers as the research writes it: ``[3, 5, 7, 8]``."""
    return "[" + ", ".join(format_value(n) for n in numbers) + "]"


def format_operation(step: Step) -> str:
    """A step as the research writes it: ``8-5=3`` (no spaces)."""
    return str(step).replace(" ", "")


def _malformed(kind: str) -> Invalid:
    return Invalid("malformed", f"a {kind} line is {_SHAPES[kind]}")


def _number(text: str) -> Value | None:
    try:
        node = parse(text, STEP_LIMITS)
    except ExprError:
        return None
    return node.value if _is_number(node) else None


def _numbers(text: str) -> list[Value] | None:
    if not text.strip():
        return []
    values = [_number(item) for item in text.split(",")]
    return None if any(value is None for value in values) else values


def _wrong_target(problem: CountDownProblem, target: Value) -> Invalid:
    return Invalid("illegal", f"the target is {problem.target}, not {format_value(target)}")


def _same(numbers: Sequence[Value], state: State) -> bool:
    return sorted(numbers) == sorted(state)


def _read_current(problem: CountDownProblem, states: Sequence[State], line: str, rules: Rules) -> Move | Invalid | None:
    match = _CURRENT.fullmatch(line)
    target = match and _number(match["target"])
    numbers = match and _numbers(match["numbers"])
    if target is None or numbers is None:
        return _malformed("Current State")
    if target != problem.target:
        return _wrong_target(problem, target)
    path = [states[0]]
    operations = match["operations"].strip()
    for item in operations.split(",") if operations else []:
        text = item.strip()
        if len(text) < 2 or text[0] != "'" or text[-1] != "'":
            return Invalid("malformed", f"Operations are quoted steps, as in ['8-5=3', '7*3=21'], got {text!r}")
        step = parse_step(text[1:-1])
        after = step if isinstance(step, Invalid) else apply_step(rules, path[-1], step)
        if isinstance(after, Invalid):
            return Invalid(after.kind, f"Operations: {text}: {after.reason}")
        path.append(after)
    if not _same(numbers, path[-1]):
        return Invalid("illegal", f"the Operations leave {format_numbers(path[-1])}, not {format_numbers(numbers)}")
    common = 0
    while common + 1 < min(len(path), len(states)) and _same(path[common + 1], states[common + 1]):
        common += 1
    if common == len(path) - 1 == len(states) - 1:
        return None  # the current node
    return Move(common, tuple(path[common + 1 :]))


def _read_exploring(states: Sequence[State], line: str, rules: Rules) -> Move | Invalid:
    match = _EXPLORING.fullmatch(line)
    numbers = match and _numbers(match["numbers"])
    if numbers is None:
        return _malformed("Exploring Operation")
    step = parse_step(match["operation"])
    if isinstance(step, Invalid):
        return step
    depth = len(states[0]) - 1 - len(numbers)  # the node the step is taken from has one number more
    if not 0 <= depth < len(states):
        return Invalid(
            "illegal",
            f"Resulting Numbers lists {len(numbers)} numbers; a step from a node on the current path "
            f"leaves {len(states[-1]) - 1} to {len(states[0]) - 1}",
        )
    after = apply_step(rules, states[depth], step)
    if isinstance(after, Invalid):
        if depth == len(states) - 1:
            return after
        where = f"{len(numbers)} Resulting Numbers come from the node {format_numbers(states[depth])}"
        return Invalid(after.kind, f"{where}: {after.reason}")
    if not _same(numbers, after):
        return Invalid("illegal", f"wrong Resulting Numbers: {match['operation']} leaves {format_numbers(after)}")
    return Move(depth, (after,))


def _read_generated(problem: CountDownProblem, states: Sequence[State], line: str, rules: Rules) -> Invalid | None:
    match = _GENERATED.fullmatch(line)
    target = None if not match or match["target"] is None else _number(match["target"])
    numbers = match and _numbers(match["numbers"])
    if numbers is None or (match["target"] is not None and target is None):
        return _malformed("Generated Node")
    if target is not None and target != problem.target:
        return _wrong_target(problem, target)
    if len(states) == 1:
        return Invalid("illegal", "no node has been generated: no step has been taken")
    if not _same(numbers, states[-1]):
        return Invalid("illegal", f"the generated node's numbers are {format_numbers(states[-1])}")
    step = parse_step(match["operation"])
    if isinstance(step, Invalid):
        return step
    after = apply_step(rules, states[-2], step)
    if isinstance(after, Invalid) or not _same(after, states[-1]):
        return Invalid("illegal", f"{match['operation']} is not the step that generated {format_numbers(states[-1])}")
    return None


def _read_moving(states: Sequence[State], line: str) -> Move | Invalid | None:
    match = _MOVING.fullmatch(line)
    if not match or match["node"].split(",")[0] != "0":
        return _malformed("Moving to Node")
    depth = match["node"].count(",")
    return Move(depth) if depth < len(states) - 1 else None


def _read_verdict(
    problem: CountDownProblem, state: State, line: str, is_solved: Callable[[State], bool]
) -> Invalid | None:
    match = _VERDICT.fullmatch(line)
    value = match and _number(match["value"])
    target = match and _number(match["target"])
    if value is None or target is None:
        return _malformed("verdict")
    if target != problem.target:
        return _wrong_target(problem, target)
    if match["verdict"].startswith("equal"):
        if value != target or not is_solved(state):
            return Invalid("illegal", f"the goal is not reached: the numbers are {format_numbers(state)}")
    elif state != (value,) or value == target:
        return Invalid("illegal", f"the numbers are {format_numbers(state)}, not a single number other than the target")
    return None


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
