"""Exact answer normalisation: numbers written the ways people write them.

:func:`parse_number` reads an answer such as ``1,250``, ``$4.50``, ``-3/4``,
``\\frac{3}{4}``, ``12 apples``, ``25%`` or ``\\boxed{18\\text{ cm}}`` into an exact
:class:`~fractions.Fraction` (``None`` when the text is not a number). Numeric gold
answers are compared this way only: fast, exact and in-process. A gold answer that
is not a number (``\\frac{\\sqrt{3}}{2}``, ``(1, 2)``) is compared by string after
light LaTeX clean-up and then, if that fails, by math-verify in a child process
(:mod:`backtrack_gym.envs.math.latex_verify`).
"""

from __future__ import annotations

import re
from fractions import Fraction

from backtrack_gym.envs.expr import Value

MAX_ANSWER_CHARS = 256
# A decimal is written exactly when its denominator divides 10**MAX_DECIMALS.
MAX_DECIMALS = 8

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_DELIMITERS = (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_TEXT_GROUP = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox|operatorname)\s*\{([^{}]*)\}")
_LATEX_NOISE = re.compile(r"\\[!,;: ]|\\left|\\right|\^\s*\{?\s*\\circ\s*\}?|\\displaystyle")
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([0-9.]+)\s*\}\s*\{\s*([0-9.]+)\s*\}")
_NUMBER = re.compile(
    r"""
    (?:[A-Za-z]\w*\s*=\s*)?                  # an optional 'x =' in front
    (?P<sign>[-+\u2212]?)\s*\$?\s*
    (?P<int>\d{1,3}(?:,\d{3})+|\d*)          # thousands separators allowed
    (?P<frac>\.\d+)?
    (?:\s*/\s*(?P<den>\d+(?:\.\d+)?))?       # a/b
    \s*(?P<unit>[A-Za-z%][A-Za-z%/.\s]*(?:\^\d)?)?  # trailing units, '%' included
    """,
    re.VERBOSE,
)


def last_boxed(text: str) -> str | None:
    """The contents of the last ``\\boxed{...}`` (balanced braces), or None."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return None
    start = starts[-1]
    depth = 1
    for pos in range(start, len(text)):
        if text[pos] == "{":
            depth += 1
        elif text[pos] == "}":
            depth -= 1
            if depth == 0:
                return text[start:pos]
    return None


def clean(text: str) -> str:
    """Strip ``\\boxed{}``, math delimiters, LaTeX spacing and ``\\text{}`` wrappers."""
    text = text.strip()
    boxed = last_boxed(text)
    if boxed is not None:
        text = boxed.strip()
    for left, right in _DELIMITERS:
        if len(text) >= len(left) + len(right) and text.startswith(left) and text.endswith(right):
            text = text[len(left) : -len(right)].strip()
    text = _TEXT_GROUP.sub(r" \1", text)
    text = _LATEX_NOISE.sub("", text).replace("{,}", ",").replace("\\%", "%").replace("\\$", "$")
    return text.strip().rstrip(".").strip()


def parse_number(text: str) -> Fraction | None:
    """The exact number ``text`` writes, or None when it is not a plain number.

    Accepts integers, decimals, ``a/b`` and ``\\frac{a}{b}``, a sign, thousands
    separators (``1,250``), a leading ``$``, trailing units (``12 apples``, ``5 km/h``,
    ``90^\\circ``) and ``\\boxed{}``. A trailing ``%`` is read as a unit, as GSM8K
    writes percentages (``25%`` equals ``25``).
    """
    if len(text) > MAX_ANSWER_CHARS:
        return None
    text = _FRAC.sub(r"\1/\2", clean(text))
    match = _NUMBER.fullmatch(text)
    if match is None or not (match["int"] or match["frac"]):
        return None
    value = Fraction((match["int"] or "0").replace(",", "") + (match["frac"] or ""))
    if match["den"] is not None:
        den = Fraction(match["den"])
        if den == 0:
            return None
        value /= den
    return -value if match["sign"] in ("-", "\u2212") else value


def canonical(text: str) -> str:
    """A string form for comparing non-numeric answers: cleaned, spaces removed."""
    text = clean(text).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return re.sub(r"\s+", "", text)


def format_number(value: Value) -> str:
    """``12``, ``-4.25`` or ``7/3``: an exact decimal when there is one, else ``a/b``."""
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    scaled = value * 10**MAX_DECIMALS
    if scaled.denominator != 1:
        return f"{value.numerator}/{value.denominator}"
    sign = "-" if value < 0 else ""
    digits = str(abs(scaled.numerator)).rjust(MAX_DECIMALS + 1, "0")
    whole, decimals = digits[:-MAX_DECIMALS], digits[-MAX_DECIMALS:].rstrip("0")
    return f"{sign}{whole}.{decimals}"


def answers_match(
    gold: str, pred: str, *, math_verify: bool = True, timeout: float = 5.0, max_chars: int = 1000
) -> bool:
    """Whether ``pred`` answers ``gold``.

    A numeric ``gold`` is compared exactly with :func:`parse_number`, never anything
    else. Otherwise the :func:`canonical` strings are compared, and then (with
    ``math_verify``) math-verify decides in a child process within ``timeout``
    seconds, for inputs up to ``max_chars`` characters; a timeout, an oversized
    input or a missing math-verify all count as "no".
    """
    if len(pred) > MAX_ANSWER_CHARS:
        return False
    gold_value = parse_number(gold)
    if gold_value is not None:
        return parse_number(pred) == gold_value
    if canonical(gold) == canonical(pred):
        return True
    if not math_verify:
        return False
    from backtrack_gym.envs.math.latex_verify import verify_latex

    return verify_latex(gold, pred, timeout=timeout, max_chars=max_chars)


def extract_final_answer(text: str) -> str | None:
    """The final answer of a free-form solution: the last ``\\boxed{}``, else the text
    after the last ``####``, else after the last ``Answer:``; None when there is none."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    for marker in ("####", "answer:"):
        at = text.lower().rfind(marker)
        if at >= 0:
            rest = text[at + len(marker) :].strip().split("\n", 1)[0].strip()
            return rest or None
    return None
