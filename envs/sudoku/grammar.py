"""Sudoku step grammar (``rRcC=D``), rendering, and the whole-grid answer check."""

from __future__ import annotations

import re

from backtrack_gym.envs.core import Invalid
from backtrack_gym.envs.sudoku.generator import SudokuProblem
from backtrack_gym.envs.sudoku.rules import Step

STEP_SHAPE = "a step is 'rRcC=D', e.g. r3c5=7 places 7 in row 3, column 5"
# ASCII only: str.isdigit() and \d also accept digits such as '٣'.
_STEP = re.compile(r"[rR]\s*([0-9]+)\s*[cC]\s*([0-9]+)\s*=\s*([0-9]+)", re.ASCII)
# Characters a grid answer may use for layout (spaces, newlines, box rules).
_LAYOUT = frozenset(" \t\r\n|-+")
_BLANKS = frozenset(".0")


def parse_step(line: str, size: int) -> Step | Invalid:
    """Parse ``rRcC=D`` (1-based row and column, spaces allowed, ``r``/``c`` in either case)."""
    match = _STEP.fullmatch(line.strip())
    if match is None:
        return Invalid("malformed", STEP_SHAPE)
    row, col, digit = (int(group) for group in match.groups())
    for name, value in (("row", row), ("column", col), ("digit", digit)):
        if not 1 <= value <= size:
            return Invalid("malformed", f"{name} {value} is not in 1..{size}")
    return Step(row - 1, col - 1, digit)


def render(size: int, grid: bytes) -> str:
    """The board as ``size`` lines of digits, ``.`` for a blank."""
    return "\n".join("".join(str(d) if d else "." for d in grid[r * size : (r + 1) * size]) for r in range(size))


def read_grid(text: str, size: int) -> list[int] | str:
    """The cells of a grid written as text (row-major, 0 for a blank), or why it is not one.

    Spaces, newlines and ``| - +`` may lay it out (the rendered board is accepted);
    ``.`` or ``0`` is a blank.
    """
    cells = size * size
    if not isinstance(text, str):
        return f"an answer is text, got {type(text).__name__}"
    if len(text) > 16 * cells:
        return f"the answer is longer than {16 * cells} characters"
    digits = {str(d): d for d in range(1, size + 1)}
    grid = []
    for ch in text:
        if ch in _LAYOUT:
            continue
        if ch not in digits and ch not in _BLANKS:
            return f"unexpected character {ch!r}; a {size}x{size} grid holds the digits 1..{size}"
        grid.append(digits.get(ch, 0))
    if len(grid) != cells:
        return f"the answer has {len(grid)} cells; a {size}x{size} grid has {cells}"
    return grid


def check_grid(problem: SudokuProblem, text: str) -> str | None:
    """None if ``text`` is the solved grid of ``problem`` (see :func:`read_grid`), else why not."""
    size = problem.size
    cells = read_grid(text, size)
    if isinstance(cells, str):
        return cells
    for cell, (given, digit) in enumerate(zip(problem.puzzle, cells, strict=True)):
        row, col = divmod(cell, size)
        if not digit:
            return f"r{row + 1}c{col + 1} is blank"
        if given and digit != given:
            return f"r{row + 1}c{col + 1} is {digit} but the given is {given}"
    kinds = ["row"] * size + ["column"] * size + ["box"] * size
    for number, (kind, unit) in enumerate(zip(kinds, problem.board.units, strict=True)):
        values = [cells[c] for c in unit]
        if len(set(values)) != size:
            repeated = next(d for d in values if values.count(d) > 1)
            return f"{kind} {number % size + 1} repeats {repeated}"
    return None


def verify_grid(problem: SudokuProblem, text: str) -> bool:
    """True when :func:`check_grid` finds nothing wrong."""
    return check_grid(problem, text) is None
