"""Word-problem templates: each writes a question and its exact step-by-step solution.

A template gets a :class:`Dice` (the item's random generator with helpers), the
number of reasoning steps ``n`` to use (one checked ``expression = value`` line
each) and the :class:`Sizes` of the numbers, and returns a :class:`Draft`. Every
value in a solution is computed by the same exact parser that checks the lines,
so a reference solution is right by construction. The templates are written for
this package (GSM8K-like in structure only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from backtrack_gym.envs.expr import ExprLimits, Value, evaluate
from backtrack_gym.envs.math.answers import format_number

# The limits of a checked line (shared with the grammar so references always parse).
LINE_LIMITS = ExprLimits(max_chars=256, max_digits=30, max_depth=16, max_bits=256, decimals=True, percent=True)

NAMES = (
    "Amara", "Ben", "Chloe", "Dario", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kemi", "Liam",
    "Maya", "Nikhil", "Olga", "Pablo", "Quinn", "Rosa", "Sami", "Tariq", "Uma", "Victor", "Wen", "Yara", "Zane",
)  # fmt: skip
# (goods, typical price range in dollars)
GOODS = (
    ("notebooks", 1, 6), ("pens", 1, 3), ("apples", 1, 2), ("books", 5, 25),
    ("mugs", 3, 12), ("candles", 2, 9), ("shirts", 8, 30), ("plants", 4, 20),
    ("tickets", 5, 40), ("batteries", 1, 4), ("towels", 3, 15),
    ("puzzles", 6, 25),
)  # fmt: skip
COLLECTIONS = ("stamps", "marbles", "stickers", "coins", "shells", "trading cards", "postcards", "beads")
PACKED = ("pencils", "eggs", "batteries", "markers", "tea bags", "cupcakes", "light bulbs", "buttons")


@dataclass
class Draft:
    """A problem being written: its question, its solution lines and its answer."""

    question: str = ""
    lines: list[str] = field(default_factory=list)
    answer: Value = 0

    def say(self, text: str) -> None:
        """A free-text line of the solution."""
        self.lines.append(text)

    def calc(self, expression: str) -> Value:
        """A checked line ``expression = value``; returns the exact value."""
        value = evaluate(expression, LINE_LIMITS)
        self.lines.append(f"{expression} = {format_number(value)}")
        return value

    def done(self, question: str, answer: Value) -> Draft:
        self.question, self.answer = question, answer
        return self


@dataclass(frozen=True)
class Sizes:
    """How large the numbers of a problem are; ``number_max`` bounds the given quantities."""

    number_max: int
    decimals: bool

    @property
    def small(self) -> int:
        """Largest count of things bought, packs, hours, multipliers."""
        return max(3, min(12, self.number_max // 5))


class Dice:
    """An item's random generator with the draws the templates need."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def int(self, low: int, high: int) -> int:
        """Uniform in ``low..high`` (inclusive)."""
        return int(self.rng.integers(low, max(low, high) + 1))

    def pick(self, options: Sequence[Any]) -> Any:
        return options[int(self.rng.integers(len(options)))]

    def sample(self, options: Sequence[Any], k: int) -> list[Any]:
        return [options[i] for i in self.rng.choice(len(options), size=k, replace=False)]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)


def num(value: Value) -> str:
    """A number as an operand of a checked line (negatives and ``a/b`` in parentheses)."""
    text = format_number(value)
    return f"({text})" if value < 0 or "/" in text else text


def money(value: Value) -> str:
    """``$1,250`` or ``$4.50`` for the question text."""
    value = Fraction(value)
    if value.denominator == 1:
        return f"${value.numerator:,}"
    return f"${float(value):,.2f}" if (value * 100).denominator == 1 else f"${format_number(value)}"


def price(dice: Dice, sizes: Sizes, low: int, high: int) -> Value:
    """A price in ``low..high`` dollars, in quarters when decimals are on."""
    high = max(low, min(high, sizes.number_max))
    if not sizes.decimals:
        return dice.int(low, high)
    return Fraction(dice.int(4 * low, 4 * high), 4)


# --- templates --------------------------------------------------------------


def unit_price(dice: Dice, n: int, sizes: Sizes) -> Draft:
    """Unit prices: the price of one item from a pack, then of a quantity (2-4 steps)."""
    d = Draft()
    thing = dice.pick(PACKED)
    cents = 5 if sizes.decimals else 100
    if n == 4:
        q1, q2 = dice.sample(range(2, sizes.small + 1), 2)
        u1, u2 = sorted(dice.sample(range(1, max(3, sizes.number_max // 2) + 1), 2), reverse=True)
        u1, u2 = Fraction(u1 * cents, 100), Fraction(u2 * cents, 100)
        m = dice.int(2, sizes.number_max)
        question = (
            f"Store A sells {thing} at {q1} for {money(u1 * q1)} and store B sells them at {q2} for "
            f"{money(u2 * q2)}. Both stores also sell single {thing} at that price each. How much less do "
            f"{m} {thing} cost at store B than at store A?"
        )
        d.say(f"At store A one costs {money(u1 * q1)} / {q1}.")
        a = d.calc(f"{num(u1 * q1)} / {q1}")
        d.say(f"At store B one costs {money(u2 * q2)} / {q2}.")
        b = d.calc(f"{num(u2 * q2)} / {q2}")
        d.say("Each one is cheaper at store B by the difference.")
        diff = d.calc(f"{num(a)} - {num(b)}")
        d.say(f"For {m} {thing} the saving is {m} times that.")
        return d.done(question, d.calc(f"{num(diff)} * {m}"))
    name = dice.pick(NAMES)
    q = dice.int(2, sizes.small)
    unit = Fraction(dice.int(1, max(2, sizes.number_max // 2)) * cents, 100)
    m = dice.int(q + 1, q + sizes.number_max)
    question = f"A pack of {q} {thing} costs {money(unit * q)}. How much do {m} {thing} cost at the same price each?"
    d.say(f"One of the {thing} costs {money(unit * q)} / {q}.")
    one = d.calc(f"{num(unit * q)} / {q}")
    d.say(f"{m} of them cost {m} times as much.")
    total = d.calc(f"{num(one)} * {m}")
    if n == 2:
        return d.done(question, total)
    bill = next((b for b in (5, 10, 20, 50, 100) if b > total), 100 * (int(total) // 100 + 1))
    question = (
        f"A pack of {q} {thing} costs {money(unit * q)}. {name} buys {m} {thing} at the same price each and "
        f"hands the cashier {money(bill)}. How much change does {name} get?"
    )
    d.say(f"The change is {money(bill)} minus the cost.")  # never zero: bill > total
    return d.done(question, d.calc(f"{bill} - {num(total)}"))


def totals(dice: Dice, n: int, sizes: Sizes) -> Draft:
    """Totals: several items at a price each, summed (2-8 steps)."""
    d = Draft()
    name = dice.pick(NAMES)
    kinds = dice.sample(GOODS, max(1, n - 1))
    bought, costs = [], []
    for plural, low, high in kinds:
        q = dice.int(2, sizes.small)
        p = price(dice, sizes, low, high)
        bought.append(f"{q} {plural} at {money(p)} each")
        d.say(f"The {plural} cost {q} times {money(p)}.")
        costs.append(d.calc(f"{q} * {num(p)}"))
    if len(kinds) == 1:
        fee = dice.int(2, max(3, sizes.number_max // 10))
        question = f"{name} buys {bought[0]} and pays {money(fee)} for delivery. How much does {name} pay in all?"
        d.say("Add the delivery fee.")
        return d.done(question, d.calc(f"{num(costs[0])} + {fee}"))
    listing = ", ".join(bought[:-1]) + f" and {bought[-1]}"
    question = f"{name} buys {listing}. How much does {name} spend in total?"
    d.say("Add up the costs.")
    return d.done(question, d.calc(" + ".join(num(c) for c in costs)))


def rates(dice: Dice, n: int, sizes: Sizes) -> Draft:
    """Rates: work at a rate, filling a tank, or distance over several legs (1-5 steps)."""
    d = Draft()
    if n == 1:
        r, t = dice.int(2, sizes.number_max), dice.int(2, sizes.small * 5)
        question = f"A printer prints {r} pages per minute. How many pages does it print in {t} minutes?"
        d.say("Pages are the rate times the time.")
        return d.done(question, d.calc(f"{r} * {t}"))
    if n == 2:
        rate, minutes = dice.int(2, sizes.number_max), dice.int(2, sizes.small * 5)
        have = dice.int(1, rate * minutes)
        capacity = have + rate * minutes
        question = (
            f"A tank holds {capacity:,} liters and already has {have:,} liters in it. A pipe adds {rate} liters "
            "per minute. How many minutes does it take to fill the tank?"
        )
        d.say("First find how much water is missing.")
        missing = d.calc(f"{capacity} - {have}")
        d.say(f"At {rate} liters per minute that takes:")
        return d.done(question, d.calc(f"{missing} / {rate}"))
    name, vehicle = dice.pick(NAMES), dice.pick(("bike", "car", "boat", "scooter"))
    legs, distances, parts = n - 1, [], []
    for _ in range(legs):
        speed = dice.int(4, max(5, sizes.number_max))
        hours = Fraction(dice.int(1, 2 * sizes.small), 2) if sizes.decimals else dice.int(1, sizes.small)
        parts.append(f"{speed} km per hour for {format_number(hours)} hours")
        d.say(f"At {speed} km per hour for {format_number(hours)} hours {name} covers:")
        distances.append(d.calc(f"{speed} * {num(hours)}"))
    question = f"{name} rides a {vehicle} at {', then at '.join(parts)}. How many km does {name} travel?"
    d.say("Add the distances of the legs.")
    return d.done(question, d.calc(" + ".join(num(x) for x in distances)))


def difference(dice: Dice, n: int, sizes: Sizes) -> Draft:
    """Differences: a chain of 'more than' / 'times as many' relations (2-8 steps)."""
    d = Draft()
    thing = dice.pick(COLLECTIONS)
    people = dice.sample(NAMES, n)
    counts = [dice.int(5, sizes.number_max)]
    sentences = [f"{people[0]} has {counts[0]} {thing}."]
    for person, before in zip(people[1:], people[:-1], strict=True):
        current = counts[-1]
        options = ["more"]
        if current > 3:
            options.append("fewer")
        if current <= 10 * sizes.number_max:  # keep the numbers from running away
            options.append("times")
        if current % 2 == 0:
            options.append("half")
        kind = dice.pick(options)
        if kind == "more":
            k = dice.int(2, sizes.number_max)
            sentences.append(f"{person} has {k} more {thing} than {before}.")
            d.say(f"{person} has {k} more than {before}.")
            counts.append(d.calc(f"{current} + {k}"))
        elif kind == "fewer":
            k = dice.int(1, current - 1)
            sentences.append(f"{person} has {k} fewer {thing} than {before}.")
            d.say(f"{person} has {k} fewer than {before}.")
            counts.append(d.calc(f"{current} - {k}"))
        elif kind == "times":
            k = dice.int(2, 4)
            sentences.append(f"{person} has {k} times as many {thing} as {before}.")
            d.say(f"{person} has {k} times as many as {before}.")
            counts.append(d.calc(f"{current} * {k}"))
        else:
            sentences.append(f"{person} has half as many {thing} as {before}.")
            d.say(f"{person} has half as many as {before}.")
            counts.append(d.calc(f"{current} / 2"))
    first, last = counts[0], counts[-1]
    if first == last or dice.chance(0.4):
        question = " ".join(sentences) + f" How many {thing} do {people[0]} and {people[-1]} have together?"
        d.say(f"Together {people[0]} and {people[-1]} have:")
        return d.done(question, d.calc(f"{first} + {last}"))
    big, small = (people[-1], people[0]) if last > first else (people[0], people[-1])
    question = " ".join(sentences) + f" How many more {thing} does {big} have than {small}?"
    d.say(f"The difference between {big} and {small} is:")
    return d.done(question, d.calc(f"{max(first, last)} - {min(first, last)}"))


# Fractions a/b that read well, with their percentage where it is a whole number.
_FRACTIONS = ((1, 2), (1, 3), (2, 3), (1, 4), (3, 4), (1, 5), (2, 5), (3, 5), (3, 8), (5, 8), (1, 10), (3, 10))
# (opening, the things, what each share does, the closing question about the rest)
_WHOLES = (
    (
        "A school has {total} students.", "students", ("walk to school", "cycle", "take the bus"),
        "The others come by car. How many students come by car?",
    ),
    (
        "A baker makes {total} cookies.", "cookies",
        ("are sold in the morning", "are sold in the afternoon", "are given to a cafe"), "How many cookies are left?",
    ),
    (
        "A farm has {total} trees.", "trees", ("are apple trees", "are pear trees", "are plum trees"),
        "The others are cherry trees. How many cherry trees are there?",
    ),
)  # fmt: skip


def fractions(dice: Dice, n: int, sizes: Sizes) -> Draft:
    """Fractions and percentages of a whole, then of the rest (1-6 steps)."""
    d = Draft()
    stages = (n + 1) // 2
    picked = [dice.pick(_FRACTIONS) for _ in range(stages)]
    total = dice.int(1, max(2, sizes.number_max // 10)) * int(np.prod([b for _, b in picked]))
    intro, things, labels, closing = dice.pick(_WHOLES)
    sentences, current = [intro.format(total=f"{total:,}")], total
    for k, ((a, b), label) in enumerate(zip(picked, labels, strict=False)):
        percent = 100 * a // b if (100 * a) % b == 0 and dice.chance(0.5) else None
        share_text = f"{percent}%" if percent is not None else f"{a}/{b}"
        share_expr = f"{percent}%" if percent is not None else f"{a} / {b}"
        whole = "them" if k == 0 else "the rest"
        sentences.append(f"{share_text} of {whole} {label}.")
        d.say(f"{share_text} of {current:,} {label}.")
        part = d.calc(f"{current} * {share_expr}")
        if 2 * k + 2 > n:
            question = " ".join(sentences) + f" How many {things} {label}?"
            return d.done(question, part)
        d.say(f"That leaves the rest of the {things}.")
        current = d.calc(f"{current} - {part}")
    return d.done(" ".join(sentences) + " " + closing, current)


def percentages(dice: Dice, n: int, sizes: Sizes) -> Draft:
    """Percentage changes of a price: discounts, tax, tips (1-6 steps)."""
    d = Draft()
    changes = (n + 1) // 2
    item = dice.pick(("bike", "laptop", "sofa", "camera", "guitar", "tent", "printer", "jacket"))
    # A multiple of 20**changes keeps every step's result a whole number of dollars.
    price_now = dice.int(1, max(2, sizes.number_max // 20)) * 20**changes
    sentences = [f"A {item} costs {money(price_now)}."]
    for k in range(changes):
        percent = 5 * dice.int(1, 10)
        up = dice.chance(0.4)
        word = ("raised" if up else "lowered") if k else ("marked up" if up else "discounted")
        sentences.append(f"{'Then the' if k else 'The'} price is {word} by {percent}%.")
        d.say(f"{percent}% of {money(price_now)} is:")
        change = d.calc(f"{price_now} * {percent}%")
        if 2 * k + 2 > n:
            question = " ".join(sentences) + " By how many dollars did the price change in that last step?"
            return d.done(question, change)
        d.say("The new price is:")
        price_now = d.calc(f"{price_now} {'+' if up else '-'} {change}")
    return d.done(" ".join(sentences) + " What is the final price in dollars?", price_now)


def linear_equation(dice: Dice, n: int, sizes: Sizes) -> Draft:
    """Linear equations in one unknown, as symbols or as a number riddle (2-4 steps)."""
    d = Draft()
    x = dice.int(1, sizes.number_max)
    a = dice.int(2, sizes.small)
    if n == 2:
        b = dice.int(1, sizes.number_max)
        c = a * x + b
        if dice.chance(0.5):
            question = f"Solve for x: {a}x + {b} = {c}. What is x?"
        else:
            question = f"I think of a number, multiply it by {a} and add {b}. The result is {c}. What is my number?"
        d.say(f"Take {b} away from both sides.")
        rest = d.calc(f"{c} - {b}")
        d.say(f"Then divide by {a}.")
        return d.done(question, d.calc(f"{rest} / {a}"))
    if n == 3:
        c = dice.int(1, a - 1)
        b = dice.int(1, sizes.number_max)
        e = b + (a - c) * x
        question = f"Solve for x: {a}x + {b} = {_times_x(c)} + {e}. What is x?"
        d.say("Collect the x terms on the left and the numbers on the right.")
        coefficient = d.calc(f"{a} - {c}")
        right = d.calc(f"{e} - {b}")
        d.say("Divide.")
        return d.done(question, d.calc(f"{right} / {coefficient}"))
    c = dice.int(1, a - 1)
    b = dice.int(1, sizes.small)
    e = (a - c) * x + a * b
    question = f"Solve for x: {a}(x + {b}) = {_times_x(c)} + {e}. What is x?"
    d.say("Expand the brackets.")
    product = d.calc(f"{a} * {b}")
    d.say("Collect the x terms on the left and the numbers on the right.")
    coefficient = d.calc(f"{a} - {c}")
    right = d.calc(f"{e} - {product}")
    d.say("Divide.")
    return d.done(question, d.calc(f"{right} / {coefficient}"))


def _times_x(coefficient: int) -> str:
    return "x" if coefficient == 1 else f"{coefficient}x"


_WORDS = {"+": "add", "-": "subtract", "*": "multiply by", "/": "divide by"}


def arithmetic_chain(dice: Dice, n: int, sizes: Sizes) -> Draft:
    """A chain of operations, as one expression or as instructions (1-8 steps)."""
    d = Draft()
    value = dice.int(2, sizes.number_max)
    expression, top, words = str(value), "num", [f"Start with {value}."]
    for _ in range(n):
        divisors = [k for k in range(2, 13) if value % k == 0]
        options = ["+"]
        options += ["*"] if value <= 100 * sizes.number_max else []
        options += ["-"] if value > 2 else []
        options += ["/"] if divisors else []
        op = dice.pick(options)
        if op == "+":
            b = dice.int(1, sizes.number_max)
        elif op == "-":
            b = dice.int(1, value - 1)
        elif op == "*":
            b = dice.int(2, 9)
        else:
            b = dice.pick(divisors)
        if op in "*/" and top in "+-":
            expression = f"({expression})"
        expression, top = f"{expression} {op} {b}", op
        words.append(f"{_WORDS[op].capitalize()} {b}.")
        value = d.calc(f"{value} {op} {b}")
    question = f"Compute {expression}." if dice.chance(0.5) else " ".join(words) + " What number do you get?"
    return d.done(question, value)


@dataclass(frozen=True)
class Template:
    """A template and the numbers of reasoning steps it can write."""

    write: Callable[[Dice, int, Sizes], Draft]
    min_steps: int
    max_steps: int


TEMPLATES: dict[str, Template] = {
    "unit_price": Template(unit_price, 2, 4),
    "totals": Template(totals, 2, 8),
    "rates": Template(rates, 1, 5),
    "difference": Template(difference, 2, 8),
    "fractions": Template(fractions, 1, 6),
    "percentages": Template(percentages, 1, 6),
    "linear_equation": Template(linear_equation, 2, 4),
    "arithmetic_chain": Template(arithmetic_chain, 1, 8),
}
MAX_REASONING_STEPS = max(t.max_steps for t in TEMPLATES.values())
