"""Math trace styles: the reference solution, self-backtracking, and ASTRO's MCTS traces (:mod:`.astro`).

A miscalculated line is an illegal step in the Math env (it never enters the state,
so a backtrack could not withdraw it). The self-backtracking trace therefore
inserts a plausible wrong *reasoning* step: the right numbers of the next checked
line combined by a wrong operation, computed correctly. It is masked from the loss
and followed by the backtrack line (and, in the ``"continued"`` form, the right line).
"""

from __future__ import annotations

import numpy as np

from backtrack_gym.agents.traces.astro import astro
from backtrack_gym.agents.traces.core import Trace, TraceWriter
from backtrack_gym.agents.traces.self_backtracking import check_self_backtrack_options
from backtrack_gym.envs.core import BACKTRACK, Invalid
from backtrack_gym.envs.expr import ExprError, evaluate, tokenize
from backtrack_gym.envs.math.env import MathTask
from backtrack_gym.envs.math.generator import MathProblem
from backtrack_gym.envs.math.grammar import Calc, parse_step
from backtrack_gym.envs.math.templates import LINE_LIMITS

OPS = ("+", "-", "*", "/")


def _write_reference(writer: TraceWriter, lines: list[str], before: dict[int, Calc] | None = None) -> None:
    """Write the reference lines; ``before[k]`` is a wrong step to try (and undo) before line ``k``."""
    for k, line in enumerate(lines):
        if before and k in before:
            writer.apply(before[k], masked=True)
            writer.backtrack()
        step = parse_step(line)
        if step is None:
            writer.note(line)
        elif isinstance(step, Invalid):
            raise ValueError(f"reference line {line!r} is invalid: {step.reason}")
        else:
            writer.apply(step)


def _reference_lines(task: MathTask, problem: MathProblem) -> list[str]:
    return task.reference_text(problem).split("\n")


def direct(task: MathTask, problem: MathProblem, *, backtrack_token: str = BACKTRACK, **_: object) -> Trace:
    """The reference solution, free text included."""
    writer = TraceWriter(task, problem, backtrack_token=backtrack_token)
    _write_reference(writer, _reference_lines(task, problem))
    return writer.finish()


def wrong_operation(line: Calc, rng: np.random.Generator) -> Calc | None:
    """The first two numbers of ``line`` joined by another operation (right arithmetic, wrong step)."""
    try:
        tokens = tokenize(line.expression, LINE_LIMITS)
    except ExprError:
        return None
    positions = [k for k, token in enumerate(tokens) if token[0].isdigit()]
    if len(positions) < 2:
        return None
    first, second = tokens[positions[0]], tokens[positions[1]]
    used = tokens[positions[0] + 1] if positions[0] + 1 < len(tokens) else None
    for op in rng.permutation(OPS):
        if op == used:
            continue  # the line's own operation would be a right partial step, not a wrong one
        expression = f"{first} {op} {second}"
        try:
            value = evaluate(expression, LINE_LIMITS)
        except ExprError:
            continue
        if value != line.value:
            return Calc(expression, value, value)
    return None


def self_backtrack(
    task: MathTask,
    problem: MathProblem,
    *,
    rng: np.random.Generator,
    backtrack_token: str = BACKTRACK,
    wrong_step_rate: float = 0.5,
    example_form: str = "ended",
    **_: object,
) -> Trace:
    """Self-backtracking data as for CountDown (:func:`backtrack_gym.agents.traces.countdown.self_backtrack`).

    A share ``wrong_step_rate`` of the traces are back examples: the reference up to a
    random checked line, a wrong-operation line there (masked), then the backtrack
    line, where the trace ends (``example_form="ended"``, the paper's form) or the
    reference goes on from the right line (``"continued"``). The others are the
    reference solution.
    """
    check_self_backtrack_options(wrong_step_rate, example_form)
    lines = _reference_lines(task, problem)
    checked = [k for k, line in enumerate(lines) if isinstance(parse_step(line), Calc)]
    positions = [int(k) for k in rng.permutation(checked)]
    if wrong_step_rate < 1.0 and rng.random() >= wrong_step_rate:
        positions = []  # this trace is the reference solution
    before: dict[int, Calc] = {}
    for k in positions:
        wrong = wrong_operation(parse_step(lines[k]), rng)
        if wrong is not None:
            before[k] = wrong
            break
    writer = TraceWriter(task, problem, backtrack_token=backtrack_token)
    if before and example_form == "ended":
        [(k, wrong)] = before.items()
        _write_reference(writer, lines[:k])
        writer.apply(wrong, masked=True)
        writer.backtrack()
    else:
        _write_reference(writer, lines, before)
    return writer.finish()


STYLES = {"direct": direct, "self_backtrack": self_backtrack, "astro": astro}
