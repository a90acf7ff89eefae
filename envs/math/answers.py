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

import math
import re
from fractions import Fraction

from backtrack_gym.envs.expr import Value
from backtrack_gym.envs.math.latex_verify import LatexBudget, verify_latex

MAX_ANSWER_CHARS = 256
# A decimal is written exactly when its denominator divides 10**MAX_DECIMALS.
MAX_DECIMALS = 8

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_DELIMITERS = (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_TEXT_GROUP = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox|operatorname)\s*\{([^{}]*)\}")
_LATEX_NOISE = re.compile(r"\\[!,;: ]|\\left|\\right|\^\s*\{?\s*\\circ\s*\}?|\\displaystyle")
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([0-9.]+)\s*\}\s*\{\s*([0-9.]+)\s*\}")
# Digits grouped in threes by commas or by (thin, no-break or plain) spaces, the same throughout.
_GROUPED = r"\d{1,3}(?P<separator>[,\u2009\u202f\u00a0\x20])\d{3}(?:(?P=separator)\d{3})*"
_EXPONENT = r"\{\s*[-+]?\d+\s*\}|[-+]?\d+"
_NUMBER = re.compile(
    rf"""
    (?:[A-Za-z]\w*\s*=\s*)?                                 # an optional 'x =' in front
    (?P<sign>[-+\u2212]?)\s*\$?\s*
    (?:
        \\sqrt\s*\{{\s*(?P<radicand>\d+(?:\.\d+)?(?:\s*/\s*\d+)?)\s*\}}  # \sqrt{{9}}
      | (?P<int>{_GROUPED}|\d*)(?P<frac>\.\d+)?
        (?:
            [eE](?P<e>[-+]?\d+)                                # 1e6, 2.5E-3
          | \s*(?:\\times|\\cdot|\*|\u00d7)\s*10\s*\^\s*(?P<times_ten>{_EXPONENT})  # 5 \times 10^{{6}}
          | \s*\^\s*(?P<power>{_EXPONENT})                      # 10^6, 2^{{10}}
          | \s*/\s*(?P<den>\d+(?:\.\d+)?)                      # a/b
        )?
    )
    (?P<space>\s*)(?P<unit>.*)                                # units, checked by _unit_scale
    """,
    re.VERBOSE | re.DOTALL,
)
# Value-preserving words after a number: the unit words, '%' and 'percent' (as GSM8K writes
# percentages, 25% is 25), at most this many.
MAX_UNIT_WORDS = 3
_UNIT_WORD = re.compile(r"(?P<base>[A-Za-z]+)(?:/[A-Za-z]+)*(?:\^\d)?\.?|%")
# Scale words multiply, and only right after the number: '12 million' is 12000000.
_SCALES = {"hundred": 100, "thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12, "dozen": 12}
# Units that may be written against the number ('12cm', '3rd'); other letters there are a
# variable, an exponent or a scale ('12x', '12e', '12k').
_GLUED_UNITS = frozenset(("cm", "mm", "km", "kg", "mg", "ml", "ft", "yd", "mi", "lb", "lbs", "oz", "mph"))
_GLUED_UNITS |= {"hr", "hrs", "min", "mins", "sec", "secs", "am", "pm", "th", "st", "nd", "rd"}
# Words that change, hedge or deny the value: an answer with one of them is no plain number.
_NOT_UNIT_WORDS = {
    "number words": "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety half halves",
    "scales not right after the number": "hundreds thousands millions billions trillions dozens bn mn mln mil "
    "thou lakh lakhs crore crores",
    "operations and constants": "squared cubed factorial power powers root roots sqrt plus minus pi log ln exp mod",
    "denials": "not no nope never wrong incorrect false untrue is are was were isnt",
    "alternatives": "or and but nor either neither than vs versus if unless except else otherwise",
    "hedges": "maybe perhaps probably possibly approximately approx about around roughly nearly almost least most "
    "ish odd",
}
_NOT_UNITS = frozenset(word for words in _NOT_UNIT_WORDS.values() for word in words.split())
# Powers and exponents are read only while the value keeps at most this many digits.
MAX_POWER_DIGITS = MAX_ANSWER_CHARS


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

    Reads, after ``\\boxed{}``, math delimiters and ``\\text{}`` are stripped:

    * integers and decimals, a sign and a leading ``$`` (``-$4.50``), thousands
      grouped by commas or by spaces, the same throughout (``1,250``, ``1 250``,
      ``1\\,250``); ``a/b`` and ``\\frac{a}{b}``; an optional ``x =`` in front;
    * scientific notation and integer powers (``1e6``, ``5 \\times 10^{6}``,
      ``10^6``, ``2^{10}``) while the value has at most :data:`MAX_POWER_DIGITS`
      digits; ``\\sqrt{n}`` when ``n`` is the square of a rational (``\\sqrt{9}``);
    * then up to :data:`MAX_UNIT_WORDS` unit words, which keep the value
      (``12 apples``, ``5 km/h``, ``18 cm^2``, ``90^\\circ``, ``$12 an hour``), with
      ``%`` and ``percent`` among them (GSM8K's ``25%`` is ``25``); a scale word
      right after the number multiplies it (``12 million`` is 12000000, ``2 dozen``
      is 24).

    Not plain numbers (None), as what follows changes, hedges or denies the value:
    a lone letter, a variable or a scale (``12 x``, ``12 m``; a letter in
    ``\\text{}`` is a word, so ``12\\text{ m}`` is 12); letters against the number
    other than a short list of unit abbreviations (``12x``, ``12e``, ``12k``, while
    ``12cm`` is 12 and ``3rd`` is 3); number words, operations, constants, denials,
    alternatives and hedges among the words (``12 or thirteen``, ``12 squared``,
    ``12 pi``, ``12 is wrong``, ``12 not``, ``12 ish``); words before the number
    (``about 12``) or more than :data:`MAX_UNIT_WORDS` after it; number words
    alone (``twelve``); a second number (``12 x 3``, ``1 1/2``); other LaTeX
    (``\\sqrt{2}``, ``12\\pi``).
    """
    if len(text) > MAX_ANSWER_CHARS:
        return None
    original, text = text, _FRAC.sub(r"\1/\2", clean(text))
    match = _NUMBER.fullmatch(text)
    if match is None:
        return None
    if match["radicand"] is not None:
        value = _exact_sqrt(match["radicand"])
    elif match["int"] or match["frac"]:
        value = _magnitude(match)
    else:
        return None
    text_words = {word for group in _TEXT_GROUP.findall(original) for word in group.split()}
    scale = _unit_scale(match["unit"], glued=not match["space"], text_words=text_words)
    if value is None or scale is None:
        return None
    value *= scale
    return -value if match["sign"] in ("-", "\u2212") else value


def _magnitude(match: re.Match[str]) -> Fraction | None:
    """The unsigned value of a matched decimal, with its exponent, power or denominator."""
    digits = re.sub(r"[,\s]", "", match["int"] or "0")
    value = Fraction(digits + (match["frac"] or ""))
    if match["den"] is not None:
        den = Fraction(match["den"])
        return None if den == 0 else value / den
    exponent = match["e"] or match["times_ten"] or match["power"]
    if exponent is None:
        return value
    exponent = int(exponent.strip("{} \t"))
    base = Fraction(10) if match["power"] is None else value
    if base == 0 and exponent < 0:
        return None
    # About the digits of base ** exponent (of its numerator or denominator).
    if abs(exponent) * math.log10(max(base.numerator, base.denominator, 1)) > MAX_POWER_DIGITS:
        return None
    power = base**exponent
    return power if match["power"] is not None else value * power


def _exact_sqrt(radicand: str) -> Fraction | None:
    """The square root of the number ``radicand`` when it is rational, else None."""
    numerator, _, denominator = re.sub(r"\s", "", radicand).partition("/")
    if Fraction(denominator or "1") == 0:
        return None
    value = Fraction(numerator) / Fraction(denominator or "1")
    num, den = math.isqrt(value.numerator), math.isqrt(value.denominator)
    if num * num != value.numerator or den * den != value.denominator:
        return None
    return Fraction(num, den)


def _unit_scale(unit: str, *, glued: bool, text_words: set[str]) -> Fraction | None:
    """What the text after a number multiplies it by (1 for units), or None when it is no
    units (see :func:`parse_number`); ``glued`` when it touches the number, and
    ``text_words`` were written in ``\\text{}``."""
    units = unit.split()
    scale = Fraction(1)
    if units and units[0].lower() in _SCALES and not glued:
        scale = Fraction(_SCALES[units.pop(0).lower()])
    if len(units) > MAX_UNIT_WORDS:
        return None
    for position, word in enumerate(units):
        match = _UNIT_WORD.fullmatch(word)
        if match is None:
            return None
        base = (match["base"] or "").lower()
        parts = {part.lower().rstrip(".^0123456789") for part in word.split("/")}
        if parts & _NOT_UNITS or parts & set(_SCALES):
            return None
        if position == 0 and glued and base not in _GLUED_UNITS and word != "%":
            return None
        # A lone letter is a variable or a scale, unless written as text; 'a' is the article of '$12 a week'.
        if len(base) == 1 and word not in text_words and not (base == "a" and position < len(units) - 1):
            return None
    return scale


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
    gold: str,
    pred: str,
    *,
    math_verify: bool = True,
    timeout: float = 5.0,
    max_chars: int = 1000,
    budget: LatexBudget | None = None,
) -> bool:
    """Whether ``pred`` answers ``gold``.

    A numeric ``gold`` (one :func:`parse_number` reads) is compared exactly with
    ``parse_number(pred)``, never anything else. The rule, as a careful grader
    reads an answer: the same value in another notation matches (``12.0``,
    ``12/1``, ``\\frac{24}{2}``, ``$12``, ``12%``, ``1,250`` and ``1 250`` for
    1250, ``1e6`` and ``10^6`` for 1000000, ``\\sqrt{9}`` for 3), and so do unit
    words, which keep the value (``12 apples``, ``12 km/h``). Whatever changes the
    value does not match: a sign (``-12``), a scale word (``12 million``,
    ``12 thousand``, ``12 dozen``: they multiply), a letter that is a variable, an
    exponent or a scale (``12x``, ``12e``, ``12k``), an operation (``12 squared``,
    ``12^2``); nor does an answer that denies or hedges it (``12 is wrong``,
    ``12 or 13``, ``about 12``) or that :func:`parse_number` does not read
    (``twelve``, ``1 1/2``). A wrong answer scored right is worse than the reverse,
    so what is unclear is no match.

    Otherwise the :func:`canonical` strings are compared, and then (with
    ``math_verify``) math-verify decides in a child process within ``timeout``
    seconds and what is left of ``budget`` (one episode's, shared by its answers;
    see :class:`~backtrack_gym.envs.math.latex_verify.LatexBudget`), for inputs up
    to ``max_chars`` characters; a timeout, a spent budget, an oversized input or a
    missing math-verify all count as "no".
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
    return verify_latex(gold, pred, timeout=timeout, max_chars=max_chars, budget=budget)


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
