"""Difficulty grading: solve as a person would, and count the guesses a search needs.

The grader applies logic techniques, always the simplest that makes progress:
naked and hidden singles first, then naked pairs and locked candidates (pointing
and claiming). A puzzle the singles solve is ``"singles"``; one that also needs a
stronger technique is ``"advanced"``; one where logic stalls is ``"search"``, and
its ``guesses`` count the trial placements that a depth-first search (the same
logic after each guess, fewest-candidate cell first, digits in ascending order)
makes before it reaches the solution. Labels are thus monotone with guesses:
``singles`` and ``advanced`` need none, ``search`` at least one.
"""

from __future__ import annotations

from dataclasses import dataclass

from backtrack_gym.envs.sudoku.rules import Shape
from backtrack_gym.envs.sudoku.solver import Candidates, Search, Trail, propagate, start

LEVELS = ("singles", "advanced", "search")


@dataclass(frozen=True)
class Grade:
    """How hard a puzzle is.

    Attributes:
        level: ``"singles"``, ``"advanced"`` or ``"search"`` (see :data:`LEVELS`).
        guesses: trial placements the grader's search makes (0 unless ``"search"``).
    """

    level: str
    guesses: int

    @property
    def rank(self) -> int:
        return LEVELS.index(self.level)


def _eliminate(cands: Candidates, cells: tuple[int, ...], mask: int, fixed: list[int]) -> bool | None:
    """Remove ``mask`` from ``cells``; None on a contradiction, else whether anything changed.

    Cells left with one candidate go to ``fixed`` for propagation.
    """
    changed = False
    for cell in cells:
        before = cands[cell]
        if before & mask:
            after = before & ~mask
            if not after:
                return None
            cands[cell] = after
            changed = True
            if not after & (after - 1):
                fixed.append(cell)
    return changed


def naked_pairs(board: Shape, cands: Candidates, fixed: list[int]) -> bool | None:
    """Two cells of a unit with the same two candidates own those digits in that unit."""
    for unit in board.units:
        seen: dict[int, int] = {}
        for cell in unit:
            mask = cands[cell]
            if mask.bit_count() != 2:
                continue
            if mask not in seen:
                seen[mask] = cell
                continue
            others = tuple(c for c in unit if c != cell and c != seen[mask])
            changed = _eliminate(cands, others, mask, fixed)
            if changed is None or changed:
                return changed
    return False


def locked_candidates(board: Shape, cands: Candidates, fixed: list[int]) -> bool | None:
    """Pointing and claiming: a digit confined, within a box or a line, to where they cross
    cannot be elsewhere in the other one."""
    for shared, box_rest, line_rest in board.intersections:
        here = box = line = 0
        for cell in shared:
            here |= cands[cell]
        for cell in box_rest:
            box |= cands[cell]
        for cell in line_rest:
            line |= cands[cell]
        for mask, cells in ((here & ~box, line_rest), (here & ~line, box_rest)):
            if mask:
                changed = _eliminate(cands, cells, mask, fixed)
                if changed is None or changed:
                    return changed
    return False


ADVANCED = (naked_pairs, locked_candidates)


class _Logic:
    """Singles to a fixed point, then one stronger elimination at a time; remembers if any was needed."""

    def __init__(self) -> None:
        self.advanced = False

    def __call__(self, board: Shape, cands: Candidates, queue: list[int], trail: Trail | None = None) -> bool:
        while propagate(board, cands, queue, trail):
            for technique in ADVANCED:
                changed = technique(board, cands, queue)
                if changed is None:
                    return False
                if changed:
                    self.advanced = True
                    break
            else:
                return True  # stalled (or solved): nothing more to deduce
        return False


def grade(board: Shape, grid: bytes) -> Grade:
    """The :class:`Grade` of the puzzle ``grid``; raises ``ValueError`` if it has no solution."""
    started = start(board, grid)
    logic = _Logic()
    if started is not None:
        cands, queue = started
        if logic(board, cands, queue):
            if all(not mask & (mask - 1) for mask in cands):
                return Grade("advanced" if logic.advanced else "singles", 0)
            search = Search(board, propagator=logic)
            if search.first(cands) is not None:
                return Grade("search", search.guesses)
    raise ValueError("the puzzle has no solution")


def solved_by_logic(board: Shape, grid: bytes, advanced: bool) -> bool:
    """Whether singles (and with ``advanced`` the stronger techniques) alone solve ``grid``.

    Logic only makes sound deductions, so a puzzle it solves has exactly one solution.
    """
    started = start(board, grid)
    if started is None:
        return False
    cands, queue = started
    ok = _Logic()(board, cands, queue) if advanced else propagate(board, cands, queue)
    return ok and all(not mask & (mask - 1) for mask in cands)
