"""Safe exact arithmetic: a hand-written tokenizer and recursive-descent parser.

Nothing here runs Python code. Text is scanned over a whitelisted alphabet, numbers
become ``int`` or :class:`fractions.Fraction`, and every size that could make work
grow without bound (text length, digits per number, nesting depth, magnitude of any
intermediate value) is capped, so any string is answered in bounded time with either
a value or an :class:`ExprError`.

Grammar (``%`` and decimals only when enabled)::

    expr    := term (("+" | "-") term)*
    term    := unary (("*" | "/") unary)*
    unary   := "-" unary | postfix
    postfix := primary "%"*
    primary := NUMBER | "(" expr ")"
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

Value = int | Fraction


class ExprError(ValueError):
    """The text is not a well-formed expression that evaluates within the limits."""


@dataclass(frozen=True)
class ExprLimits:
    """What an expression may contain and how large it may get.

    Attributes:
        max_chars: longest accepted text.
        max_digits: most digits in one number literal (``10**400`` cannot be typed).
        max_depth: deepest parenthesis nesting (no recursion blow-up).
        max_bits: largest bit length of any numerator or denominator reached.
        decimals: accept ``1.25`` style literals.
        percent: accept postfix ``%`` (divides by 100).
        unary_minus: accept a leading ``-`` on an operand.
    """

    max_chars: int = 512
    max_digits: int = 30
    max_depth: int = 32
    max_bits: int = 512
    decimals: bool = False
    percent: bool = False
    unary_minus: bool = True


DEFAULT_LIMITS = ExprLimits()

_TOKEN = re.compile(r"[0-9]+(?:\.[0-9]+)?|[-+*/()%]|[ \t]+|.", re.DOTALL)
_SYMBOLS = frozenset("+-*/()%")


class Node:
    """A parsed expression node with its exact value.

    ``op`` is ``"num"`` for a literal, ``"neg"`` for unary minus, ``"%"`` for a
    percentage, or one of ``+ - * /``. ``grouped`` is True when the node was written
    inside parentheses.
    """

    __slots__ = ("op", "left", "right", "value", "grouped")

    def __init__(self, op: str, value: Value, left: Node | None = None, right: Node | None = None):
        self.op = op
        self.value = value
        self.left = left
        self.right = right
        self.grouped = False

    def leaves(self) -> list[Value]:
        """The literal numbers in the order they were written."""
        if self.op == "num":
            return [self.value]
        out = self.left.leaves()
        if self.right is not None:
            out += self.right.leaves()
        return out

    def inner_values(self) -> list[Value]:
        """Every value the expression computes on the way (not the literals)."""
        if self.op == "num":
            return []
        out = self.left.inner_values()
        if self.right is not None:
            out += self.right.inner_values()
        out.append(self.value)
        return out


def _normal(value: Fraction) -> Value:
    return value.numerator if value.denominator == 1 else value


def apply_op(op: str, a: Value, b: Value) -> Value:
    """Exact ``a op b``; raises :class:`ExprError` on division by zero."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        raise ExprError("division by zero")
    if isinstance(a, int) and isinstance(b, int):
        q, r = divmod(a, b)
        return q if r == 0 else Fraction(a, b)
    return _normal(Fraction(a) / b)


def tokenize(text: str, limits: ExprLimits = DEFAULT_LIMITS) -> list[str]:
    """Split ``text`` into number and operator tokens, rejecting anything else."""
    if len(text) > limits.max_chars:
        raise ExprError(f"expression longer than {limits.max_chars} characters")
    tokens: list[str] = []
    for token in _TOKEN.findall(text):
        head = token[0]
        if "0" <= head <= "9":
            if "." in token and not limits.decimals:
                raise ExprError("decimal numbers are not allowed")
            if len(token) > limits.max_digits:
                raise ExprError(f"number longer than {limits.max_digits} digits")
        elif head in " \t":
            continue
        elif head not in _SYMBOLS:
            raise ExprError(f"unexpected character {head!r}")
        elif head == "%" and not limits.percent:
            raise ExprError("'%' is not allowed")
        tokens.append(token)
    return tokens


_END = ""  # sentinel token after the last one, so lookahead needs no bounds check


class _Parser:
    def __init__(self, tokens: list[str], limits: ExprLimits):
        self.tokens = [*tokens, _END]
        self.pos = 0
        self.limits = limits
        self.max_bits = limits.max_bits

    def take(self) -> str:
        token = self.tokens[self.pos]
        if token is _END:
            raise ExprError("expression ends too early")
        self.pos += 1
        return token

    def combine(self, op: str, left: Node, right: Node) -> Node:
        value = apply_op(op, left.value, right.value)
        if isinstance(value, Fraction):
            bits = max(abs(value.numerator).bit_length(), value.denominator.bit_length())
        else:
            bits = abs(value).bit_length()
        if bits > self.max_bits:
            raise ExprError("number too large")
        return Node(op, value, left, right)

    def expr(self, depth: int) -> Node:
        node = self.term(depth)
        tokens = self.tokens
        while tokens[self.pos] in ("+", "-"):
            op = tokens[self.pos]
            self.pos += 1
            node = self.combine(op, node, self.term(depth))
        return node

    def term(self, depth: int) -> Node:
        node = self.unary(depth)
        tokens = self.tokens
        while tokens[self.pos] in ("*", "/"):
            op = tokens[self.pos]
            self.pos += 1
            node = self.combine(op, node, self.unary(depth))
        return node

    def unary(self, depth: int) -> Node:
        tokens = self.tokens
        if tokens[self.pos] == "-":
            if not self.limits.unary_minus:
                raise ExprError("unary minus is not allowed")
            if depth >= self.limits.max_depth:
                raise ExprError("expression nested too deeply")
            self.pos += 1
            operand = self.unary(depth + 1)
            return Node("neg", -operand.value, operand)
        node = self.primary(depth)
        while tokens[self.pos] == "%":
            self.pos += 1
            node = Node("%", apply_op("/", node.value, 100), node)
        return node

    def primary(self, depth: int) -> Node:
        token = self.take()
        if "0" <= token[0] <= "9":
            return Node("num", _normal(Fraction(token)) if "." in token else int(token))
        if token == "(":
            if depth >= self.limits.max_depth:
                raise ExprError("expression nested too deeply")
            node = self.expr(depth + 1)
            if self.take() != ")":
                raise ExprError("expected ')'")
            node.grouped = True
            return node
        raise ExprError(f"unexpected {token!r}")


def parse(text: str, limits: ExprLimits = DEFAULT_LIMITS) -> Node:
    """Parse ``text`` into a :class:`Node` tree carrying exact values.

    Raises:
        ExprError: for any text outside the grammar or the limits.
    """
    tokens = tokenize(text, limits)
    if not tokens:
        raise ExprError("empty expression")
    parser = _Parser(tokens, limits)
    node = parser.expr(0)
    if parser.pos != len(tokens):
        raise ExprError(f"unexpected {tokens[parser.pos]!r}")
    return node


def evaluate(text: str, limits: ExprLimits = DEFAULT_LIMITS) -> Value:
    """The exact value of ``text``; raises :class:`ExprError` if it has none."""
    return parse(text, limits).value


def format_value(value: Value) -> str:
    """Render a value the way the parser reads it back (``7/2`` for fractions)."""
    if isinstance(value, Fraction):
        return f"{value.numerator}/{value.denominator}"
    return str(value)
