"""The Sudoku solver: constraint propagation plus depth-first guessing.

Candidates are bit masks (bit ``d - 1`` for digit ``d``), one int per cell.
Propagation places naked singles (a cell with one candidate) and hidden singles (a
digit with one place in a unit) until nothing changes; search then guesses on the
blank cell with fewest candidates and reverts on a contradiction. The same engine
is the oracle (:func:`solve`), the uniqueness check of the generator
(:func:`count_solutions`, :func:`has_solution`) and the trace writer
(:func:`search_trace`).

A *trail* lists ``(cell, digit)`` in the order cells were fixed; every prefix of a
trail is a sequence of placements the rules accept, which makes traces replayable.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from backtrack_gym.envs.sudoku.rules import Shape, Step

Candidates = list[int]
Trail = list[tuple[int, int] | None]


class SearchBudgetExceeded(ValueError):
    """The search made more guesses than its budget allowed."""


def start(board: Shape, grid: bytes) -> tuple[Candidates, list[int]] | None:
    """Candidates of ``grid`` (a blank cell keeps the digits no filled peer holds) and the
    blank cells left with one candidate; None if two filled peers clash or a blank cell
    has no candidate."""
    # The digits in each unit, so a blank cell's candidates take three lookups, not a peer scan.
    seen = [0] * len(board.units)
    for cell, digit in enumerate(grid):
        if digit:
            bit = 1 << (digit - 1)
            for unit in board.cell_units[cell]:
                if seen[unit] & bit:
                    return None
                seen[unit] |= bit
    full = board.full
    cands, forced = [], []
    for cell, digit in enumerate(grid):
        if digit:
            cands.append(1 << (digit - 1))
            continue
        row, col, box = board.cell_units[cell]
        mask = full & ~(seen[row] | seen[col] | seen[box])
        if not mask:
            return None
        if not mask & (mask - 1):
            forced.append(cell)
        cands.append(mask)
    return cands, forced


def propagate(board: Shape, cands: Candidates, queue: list[int], trail: Trail | None = None) -> bool:
    """Fix naked and hidden singles until none is left; False on a contradiction.

    ``queue`` holds the cells just fixed whose digit is not yet removed from their
    peers; cells are appended to ``trail`` as they are fixed.
    """
    peers, units, full = board.peers, board.units, board.full
    while True:
        while queue:
            cell = queue.pop()
            bit = cands[cell]
            if trail is not None:
                trail.append((cell, bit.bit_length()))
            for peer in peers[cell]:
                mask = cands[peer]
                if mask & bit:
                    mask &= ~bit
                    if not mask:
                        return False
                    cands[peer] = mask
                    if not mask & (mask - 1):
                        queue.append(peer)
        for unit in units:
            once = twice = 0
            for cell in unit:
                mask = cands[cell]
                twice |= once & mask
                once |= mask
            if once != full:
                return False  # a digit has no place left in this unit
            only = once & ~twice
            if not only:
                continue
            for cell in unit:
                mask = cands[cell] & only
                if mask and mask != cands[cell]:
                    if mask & (mask - 1):
                        return False  # one cell is the only place for two digits
                    cands[cell] = mask
                    queue.append(cell)
        if not queue:
            return True


def pick_cell(board: Shape, cands: Candidates) -> int:
    """The first blank cell with fewest candidates, or -1 when every cell is fixed."""
    best, fewest = -1, board.size + 1
    for cell, mask in enumerate(cands):
        count = mask.bit_count()
        if 1 < count < fewest:
            best, fewest = cell, count
            if count == 2:
                break
    return best


def digits_of(mask: int) -> list[int]:
    """The bits set in ``mask``, lowest first, each as a one-bit mask."""
    bits = []
    while mask:
        low = mask & -mask
        bits.append(low)
        mask ^= low
    return bits


class Search:
    """Depth-first search over propagated candidates.

    Args:
        board: the geometry.
        max_nodes: most guesses before :class:`SearchBudgetExceeded` (None: no limit).
        order: reorders a cell's candidate bits before they are tried (default: lowest first).
        propagator: the logic run after each guess (default: singles).
        trace: keep failed placements in the trail, each undone by a None entry.
    """

    def __init__(
        self,
        board: Shape,
        max_nodes: int | None = None,
        order: Callable[[list[int]], list[int]] | None = None,
        propagator: Callable[[Shape, Candidates, list[int], Trail | None], bool] = propagate,
        trace: bool = False,
    ):
        self.board = board
        self.max_nodes = max_nodes
        self.order = order
        self.propagator = propagator
        self.trace = trace
        self.guesses = 0

    def guess(self, cands: Candidates, cell: int, bit: int, trail: Trail | None) -> Candidates | None:
        """A copy of ``cands`` with ``bit`` placed at ``cell`` and propagated, or None on a contradiction."""
        self.guesses += 1
        if self.max_nodes is not None and self.guesses > self.max_nodes:
            raise SearchBudgetExceeded(f"the search needed more than {self.max_nodes} guesses")
        child = cands.copy()
        child[cell] = bit
        return child if self.propagator(self.board, child, [cell], trail) else None

    def first(self, cands: Candidates, trail: Trail | None = None) -> Candidates | None:
        """A solution below ``cands`` (already propagated), or None."""
        cell = pick_cell(self.board, cands)
        if cell < 0:
            return cands
        bits = digits_of(cands[cell])
        for bit in self.order(bits) if self.order else bits:
            mark = len(trail) if trail is not None else 0
            child = self.guess(cands, cell, bit, trail)
            if child is not None:
                found = self.first(child, trail)
                if found is not None:
                    return found
            if trail is None:
                continue
            if self.trace:
                # Undo what this branch still has on the board (its failed sub-branches undid their own).
                trail.extend([None] * sum(1 if entry else -1 for entry in trail[mark:]))
            else:
                del trail[mark:]
        return None

    def count(self, cands: Candidates, limit: int) -> int:
        """Solutions below ``cands``, counting no further than ``limit``."""
        cell = pick_cell(self.board, cands)
        if cell < 0:
            return 1
        total = 0
        for bit in digits_of(cands[cell]):
            child = self.guess(cands, cell, bit, None)
            if child is not None:
                total += self.count(child, limit - total)
                if total >= limit:
                    break
        return total


def to_grid(cands: Candidates) -> bytes:
    """The grid of fully fixed candidates."""
    return bytes(mask.bit_length() for mask in cands)


def _propagated(board: Shape, grid: bytes, trail: Trail | None = None) -> Candidates | None:
    started = start(board, grid)
    if started is None:
        return None
    cands, queue = started
    return cands if propagate(board, cands, queue, trail) else None


def _steps(board: Shape, trail: Trail) -> list[Step | None]:
    return [None if entry is None else Step(*divmod(entry[0], board.size), entry[1]) for entry in trail]


def solve(board: Shape, grid: bytes, max_nodes: int | None = None) -> list[Step] | None:
    """Placements from ``grid`` to the first solution found, in the order the search fixed them.

    None when ``grid`` has no solution. Raises :class:`SearchBudgetExceeded` after
    ``max_nodes`` guesses.
    """
    trail: Trail = []
    cands = _propagated(board, grid, trail)
    if cands is None or Search(board, max_nodes).first(cands, trail) is None:
        return None
    return _steps(board, trail)


def search_trace(
    board: Shape,
    grid: bytes,
    propagator: Callable[[Shape, Candidates, list[int], Trail | None], bool] = propagate,
) -> list[Step | None] | None:
    """The whole depth-first search from ``grid`` as steps: every placement it made, and
    None for each placement undone (one ``<backtrack>`` line each).

    Replaying it from ``grid`` reaches the solution :func:`solve` finds; None when
    ``grid`` has no solution. ``propagator`` runs after each guess (see :class:`Search`);
    one that takes its placements back out of the trail when it fails leaves such
    guesses out of the trace.
    """
    trail: Trail = []
    cands = _propagated(board, grid, trail)
    if cands is None or Search(board, propagator=propagator, trace=True).first(cands, trail) is None:
        return None
    return _steps(board, trail)


def count_solutions(board: Shape, grid: bytes, limit: int = 2, max_nodes: int | None = None) -> int:
    """How many solutions ``grid`` has, counting no further than ``limit``."""
    cands = _propagated(board, grid)
    if cands is None:
        return 0
    return Search(board, max_nodes).count(cands, limit)


def has_solution(board: Shape, grid: bytes, cell: int, excluded: int) -> bool:
    """Whether ``grid`` has a solution without digit ``excluded`` at blank ``cell``.

    If a puzzle with ``excluded`` at ``cell`` has a unique solution, blanking
    ``cell`` keeps it unique exactly when this is False: cheaper than counting.
    """
    started = start(board, grid)
    if started is None:
        return False
    cands, queue = started
    mask = cands[cell] & ~(1 << (excluded - 1))
    if not mask:
        return False
    cands[cell] = mask
    if not mask & (mask - 1):
        queue.append(cell)
    return propagate(board, cands, queue) and Search(board).first(cands) is not None


def random_solution(board: Shape, rng: np.random.Generator) -> bytes:
    """A random full grid: the search from a blank board, trying digits in random order."""
    search = Search(board, order=lambda bits: [bits[i] for i in rng.permutation(len(bits))])
    found = search.first([board.full] * board.cells)
    assert found is not None, "a blank board always has a solution"
    return to_grid(found)
