"""The Math step grammar: checked lines ``expression = value``, free text, ``Answer: X``.

A line is a *checked line* when it has an ``=`` and, once currency signs and
thousands separators are dropped, holds only digits, ``+ - * / ( ) . %``, spaces
and that ``=``: e.g. ``$1,200 * 15% = 180``. Its left side is evaluated exactly by
the safe parser of :mod:`backtrack_gym.envs.expr` and must equal the number on the
right (an integer, a decimal or ``a/b``, optionally negative). A line that starts
with ``Answer:`` gives the final answer. Any other line (it has a letter, or no
``=``) is free text: allowed and unchecked.
"""

from __future__ import annotations

import re
import string
import textwrap
from dataclasses import dataclass, field, replace
from functools import lru_cache

from backtrack_gym.envs.core import Invalid
from backtrack_gym.envs.expr import ExprError, Node, Value, parse
from backtrack_gym.envs.math.answers import MAX_ANSWER_CHARS, format_number
from backtrack_gym.envs.math.latex_verify import LatexBudget
from backtrack_gym.envs.math.templates import LINE_LIMITS

CHARSET = string.ascii_letters + string.digits + string.punctuation + " \n"
MAX_LINE_CHARS = 256
RENDER_LINES = 16
LINE_SHAPE = "a checked line is 'expression = number', e.g. '3 * 4.5 = 13.5'"

_ANSWER = re.compile(r"answer\s*:", re.IGNORECASE)
_CURRENCY = re.compile(r"\$(?=\s*[-(.\d])")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_CHECKED_CHARS = frozenset("0123456789+-*/().% \t=")
# Typographic characters of real data sets, mapped one to one into the charset.
_ASCII = str.maketrans(
    {"\t": " ", "\u00a0": " ", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'}
    | {"\u2013": "-", "\u2014": "-", "\u2212": "-", "\u00d7": "*", "\u00f7": "/"}
)


@dataclass(frozen=True)
class Calc:
    """A checked line ``expression = written``; ``value`` is what the expression is."""

    expression: str
    value: Value
    written: Value

    @property
    def text(self) -> str:
        return f"{self.expression} = {format_number(self.written)}"


@dataclass(frozen=True)
class FinalAnswer:
    """An ``Answer: text`` line."""

    text: str


Step = Calc | FinalAnswer


@dataclass(frozen=True)
class MathState:
    """The checked lines applied so far and the answer (None until given).

    ``latex_budget`` is the math-verify time of the episode, shared by every state
    that follows from its initial state (so by all its answers); None when the state
    was built on its own, and then each comparison has only its own timeout. It is
    not part of the state's value.
    """

    lines: tuple[str, ...] = ()
    answer: str | None = None
    latex_budget: LatexBudget | None = field(default=None, compare=False, repr=False)


def _is_number(node: Node) -> bool:
    if node.op == "neg":
        node = node.left
    if node.op == "/":
        return node.left.op == "num" and node.right.op == "num" and not node.left.grouped
    return node.op == "num" and not node.grouped


def parse_step(line: str) -> Step | Invalid | None:
    """Parse one stripped line: a :class:`Calc`, a :class:`FinalAnswer`, None for free
    text, or :class:`Invalid` for an answer or a checked line that cannot be read."""
    answer = _ANSWER.match(line)
    if answer:
        text = line[answer.end() :].strip()
        if not text:
            return Invalid("malformed", "the answer is empty")
        if len(text) > MAX_ANSWER_CHARS:
            return Invalid("malformed", f"the answer is longer than {MAX_ANSWER_CHARS} characters")
        return FinalAnswer(text)
    if "=" not in line:
        return None
    text = _THOUSANDS.sub("", _CURRENCY.sub("", line))
    if text.endswith("."):
        text = text[:-1]  # the full stop of a sentence
    if not set(text) <= _CHECKED_CHARS or not any(c.isdigit() for c in text):
        return None
    if text.count("=") != 1:
        return Invalid("malformed", f"one '=' per line; {LINE_SHAPE}")
    left, right = (side.strip() for side in text.split("="))
    try:
        node = parse(left, LINE_LIMITS)
        written = parse(right, LINE_LIMITS)
    except ExprError as err:
        return Invalid("malformed", f"{err}; {LINE_SHAPE}")
    if not _is_number(written):
        return Invalid("malformed", f"the right side must be a number; {LINE_SHAPE}")
    return Calc(" ".join(left.split()), node.value, written.value)


def format_step(step: Step) -> str:
    return f"Answer: {step.text}" if isinstance(step, FinalAnswer) else step.text


def apply(state: MathState, step: Step) -> MathState | Invalid:
    """The state after ``step``: a checked line must be right, and nothing follows the answer."""
    if state.answer is not None:
        return Invalid("illegal", "the answer is already given; backtrack to withdraw it first")
    if isinstance(step, FinalAnswer):
        return replace(state, answer=step.text)
    if step.value != step.written:
        expected, written = format_number(step.value), format_number(step.written)
        return Invalid("illegal", f"{step.expression} is {expected}, not {written}")
    return replace(state, lines=(*state.lines, step.text))


def sanitize(text: str) -> str:
    """``text`` with every character in :data:`CHARSET` (typography mapped, the rest '?')."""
    text = text.translate(_ASCII)
    return "".join(c if c in CHARSET else "?" for c in text)


def render(question: str, state: MathState) -> str:
    """``Question: ...`` then the last :data:`RENDER_LINES` checked lines and the answer."""
    out = [f"Question: {sanitize(question)}"]
    hidden = len(state.lines) - RENDER_LINES
    if hidden > 0:
        out.append(f"... ({hidden} earlier lines)")
    out += state.lines[max(hidden, 0) :]
    if state.answer is not None:
        out.append(f"Answer: {sanitize(state.answer)}")
    return "\n".join(out)


def observation_chars(max_question_chars: int) -> int:
    """The longest :func:`render` output for questions up to ``max_question_chars``."""
    # A checked line is re-written with its number in canonical form, which may be longer.
    return len("Question: ") + max_question_chars + (RENDER_LINES + 2) * (MAX_LINE_CHARS + 80)


@lru_cache(maxsize=1024)
def reference_steps(solution: tuple[str, ...]) -> tuple[Step, ...]:
    """The checked lines and the answer of a reference solution, in order (cached: agents
    ask for them at every step)."""
    steps = []
    for line in solution:
        step = parse_step(line.strip()) if line.strip() else None
        if step is not None and not isinstance(step, Invalid):
            steps.append(step)
    return tuple(steps)


def clean_solution(text: str, answer: str) -> tuple[str, ...]:
    """A data set's solution text as lines of the grammar, ending with ``Answer: answer``.

    Long lines are wrapped; pieces that would read as wrong or unreadable checked
    lines, or as a premature answer, are dropped, so the result replays cleanly.
    """
    lines = []
    state = MathState()
    for raw in text.split("\n"):
        for piece in textwrap.wrap(sanitize(raw), MAX_LINE_CHARS):
            step = parse_step(piece.strip())
            if step is None:
                lines.append(piece)
            elif isinstance(step, Calc) and not isinstance(next_state := apply(state, step), Invalid):
                lines.append(piece)
                state = next_state
    return (*lines, f"Answer: {answer}")
