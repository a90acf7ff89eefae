"""Sudoku rules: board geometry, placements, and which placements the rules accept.

A grid is ``bytes`` of length ``size * size`` in row-major order; ``0`` is a blank
and ``1..size`` a digit. ``bytes`` is immutable and hashable, so the env's state
stack stores grids as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from backtrack_gym.envs.core import Invalid

# Box height x width for each supported board size.
BOX_SHAPES = {4: (2, 2), 6: (2, 3), 9: (3, 3)}
SIZES = tuple(BOX_SHAPES)


@dataclass(frozen=True)
class Shape:
    """The geometry of one board size, precomputed once (see :func:`shape`).

    Attributes:
        size: digits, rows and columns (4, 6 or 9).
        box_rows: rows of one box.
        box_cols: columns of one box.
        cells: ``size * size``.
        units: every row, then every column, then every box, as cell indices.
        peers: for each cell, the other cells that share a unit with it.
        cell_units: for each cell, its row, column and box as indices into ``units``.
        intersections: for each box and each row or column crossing it, the shared
            cells, the rest of the box and the rest of the line (for pointing).
    """

    size: int
    box_rows: int
    box_cols: int
    cells: int
    units: tuple[tuple[int, ...], ...]
    peers: tuple[tuple[int, ...], ...]
    cell_units: tuple[tuple[int, int, int], ...]
    intersections: tuple[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...]

    @property
    def full(self) -> int:
        """The candidate mask with every digit."""
        return (1 << self.size) - 1

    def box_of(self, cell: int) -> int:
        row, col = divmod(cell, self.size)
        return (row // self.box_rows) * (self.size // self.box_cols) + col // self.box_cols


@cache
def shape(size: int) -> Shape:
    """The :class:`Shape` of a ``size`` x ``size`` board; raises ``ValueError`` for other sizes."""
    if size not in BOX_SHAPES:
        raise ValueError(f"board size must be one of {SIZES}, got {size!r}")
    box_rows, box_cols = BOX_SHAPES[size]
    rows = [tuple(r * size + c for c in range(size)) for r in range(size)]
    cols = [tuple(r * size + c for r in range(size)) for c in range(size)]
    boxes = [
        tuple((top + r) * size + left + c for r in range(box_rows) for c in range(box_cols))
        for top in range(0, size, box_rows)
        for left in range(0, size, box_cols)
    ]
    units = (*rows, *cols, *boxes)
    peers = tuple(
        tuple(sorted({p for unit in units if cell in unit for p in unit} - {cell})) for cell in range(size * size)
    )
    intersections = []
    for box in boxes:
        for line in rows + cols:
            shared = tuple(c for c in box if c in line)
            if shared:
                box_rest = tuple(c for c in box if c not in shared)
                line_rest = tuple(c for c in line if c not in shared)
                intersections.append((shared, box_rest, line_rest))
    cell_units = tuple(tuple(u for u, unit in enumerate(units) if cell in unit) for cell in range(size * size))
    return Shape(size, box_rows, box_cols, size * size, units, peers, cell_units, tuple(intersections))


@dataclass(frozen=True)
class Step:
    """Place ``digit`` at 0-based ``row``, ``col`` (written ``r{row+1}c{col+1}={digit}``)."""

    row: int
    col: int
    digit: int

    def __str__(self) -> str:
        return f"r{self.row + 1}c{self.col + 1}={self.digit}"


def conflict(board: Shape, grid: bytes, cell: int, digit: int) -> str | None:
    """Why ``digit`` cannot go at ``cell`` because a peer already holds it, or None."""
    for peer in board.peers[cell]:
        if grid[peer] == digit:
            row, col = divmod(cell, board.size)
            peer_row, peer_col = divmod(peer, board.size)
            if peer_row == row:
                return f"{digit} is already in row {row + 1}"
            if peer_col == col:
                return f"{digit} is already in column {col + 1}"
            return f"{digit} is already in box {board.box_of(cell) + 1}"
    return None


def apply_step(board: Shape, puzzle: bytes, grid: bytes, step: Step) -> bytes | Invalid:
    """The grid after ``step``, or why the rules reject it.

    A placement must go into a blank cell (givens and filled cells are fixed; undo
    a placement with a backtrack) and must not repeat a digit in a row, column or box.
    """
    cell = step.row * board.size + step.col
    where = f"r{step.row + 1}c{step.col + 1}"
    if puzzle[cell]:
        return Invalid("illegal", f"{where} is a given")
    if grid[cell]:
        return Invalid("illegal", f"{where} is already filled")
    reason = conflict(board, grid, cell, step.digit)
    if reason:
        return Invalid("illegal", reason)
    return grid[:cell] + bytes((step.digit,)) + grid[cell + 1 :]


def candidate_masks(board: Shape, grid: bytes) -> list[int]:
    """For each blank cell, the bit mask of digits no peer holds (bit ``d - 1`` for ``d``); 0 for filled cells."""
    masks = []
    for cell in range(board.cells):
        if grid[cell]:
            masks.append(0)
            continue
        used = 0
        for peer in board.peers[cell]:
            digit = grid[peer]
            if digit:
                used |= 1 << (digit - 1)
        masks.append(board.full & ~used)
    return masks


def legal_steps(board: Shape, grid: bytes) -> list[Step]:
    """Every placement the rules accept in ``grid``, in cell then digit order."""
    steps = []
    for cell, mask in enumerate(candidate_masks(board, grid)):
        row, col = divmod(cell, board.size)
        steps.extend(Step(row, col, d) for d in range(1, board.size + 1) if mask >> (d - 1) & 1)
    return steps


def grid_string(grid: bytes) -> str:
    """The grid as one line in row-major order, ``.`` for a blank (e.g. ``"1.3.....2..."``)."""
    return "".join(str(d) if d else "." for d in grid)


def parse_grid_string(text: str, size: int) -> bytes:
    """Inverse of :func:`grid_string` (``0`` is also a blank); raises ``ValueError`` on bad text."""
    if not isinstance(text, str):
        raise ValueError(f"a grid is a string of {size * size} characters, got {type(text).__name__}")
    if len(text) != size * size:
        raise ValueError(f"a {size}x{size} grid has {size * size} cells, got {len(text)} characters")
    allowed = {".": 0, "0": 0} | {str(d): d for d in range(1, size + 1)}
    bad = sorted({ch for ch in text if ch not in allowed})
    if bad:
        raise ValueError(f"a {size}x{size} grid holds '.' or the digits 1..{size}, got {bad[:5]}")
    return bytes(allowed[ch] for ch in text)
