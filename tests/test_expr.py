from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtrack_gym.envs.expr import ExprError, ExprLimits, evaluate, format_value, parse


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1+2*3", 7),
        ("(1+2)*3", 9),
        ("  7 - 2 -  1 ", 4),
        ("8/2/2", 2),
        ("7/2", Fraction(7, 2)),
        ("-3*-2", 6),
        ("((((5))))", 5),
        ("100000000000000000000 * 10", 10**21),
    ],
)
def test_evaluates_exactly(text, value):
    assert evaluate(text) == value
    assert type(evaluate(text)) is type(value)


def test_decimals_and_percent_only_when_enabled():
    limits = ExprLimits(decimals=True, percent=True)
    assert evaluate("1.25*4", limits) == 5
    assert evaluate("50% * 30", limits) == 15
    assert evaluate("0.1+0.2", limits) == Fraction(3, 10)
    with pytest.raises(ExprError, match="decimal"):
        evaluate("1.5")
    with pytest.raises(ExprError, match="%"):
        evaluate("50%")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("1/0", "division by zero"),
        ("(2-2)/(3-3)", "division by zero"),
        ("9**9**9", "unexpected"),
        ("2^3", "unexpected character"),
        ("__import__('os')", "unexpected character"),
        ("1 + ", "ends too early"),
        ("(1+2", "ends too early"),
        ("(1+2]", "unexpected character"),
        ("1 2", "unexpected"),
        ("1" + "0" * 400, "digits"),
        ("(" * 10_000 + "1" + ")" * 10_000, "longer than"),
        ("(" * 40 + "1" + ")" * 40, "nested too deeply"),
        ("-" * 100 + "1", "nested too deeply"),
        ("٣+٤", "unexpected character"),
        ("1\n+2", "unexpected character"),
    ],
)
def test_rejects_with_reason(text, reason):
    with pytest.raises(ExprError, match=reason):
        evaluate(text)


def test_magnitude_is_capped():
    big = "*".join(["999999999999999999999999999999"] * 15)
    with pytest.raises(ExprError, match="too large"):
        evaluate(big)


def test_tree_keeps_literals_and_grouping():
    node = parse("(94*4)-61-6")
    assert node.leaves() == [94, 4, 61, 6]
    assert node.inner_values() == [376, 315, 309]
    assert node.left.left.grouped and not node.grouped


def test_format_round_trips():
    for value in (0, 17, -4, Fraction(7, 2), Fraction(-1, 3)):
        assert evaluate(format_value(value)) == value


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_gives_a_value_or_expr_error(text):
    try:
        value = evaluate(text, ExprLimits(decimals=True, percent=True))
    except ExprError:
        return
    assert isinstance(value, (int, Fraction))
