"""Sudoku problems: configuration and per-index generation with graded difficulty."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from backtrack_gym.envs.seeding import item_rng
from backtrack_gym.envs.sudoku.grader import LEVELS, grade, solved_by_logic
from backtrack_gym.envs.sudoku.rules import SIZES, Shape, grid_string, parse_grid_string, shape
from backtrack_gym.envs.sudoku.solver import SearchBudgetExceeded, count_solutions, has_solution, random_solution, solve

DIFFICULTIES = ("any", *LEVELS)
# Guesses allowed when checking a puzzle typed in by a user (about a second of search).
VERIFY_MAX_NODES = 20_000
# Full grids drawn to find one of the asked split (cheap; 0.1 held out needs about 10).
MAX_GRID_DRAWS = 10_000


@dataclass(frozen=True)
class SudokuProblem:
    """A puzzle (``0`` = blank) and its unique solution, both row-major ``bytes``."""

    size: int
    puzzle: bytes
    solution: bytes

    @property
    def board(self) -> Shape:
        return shape(self.size)

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "puzzle": grid_string(self.puzzle)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SudokuProblem:
        """The problem of ``{"size": 9, "puzzle": "53..7...."}``; raises ``ValueError``
        unless the puzzle has exactly one solution."""
        try:
            size, text = data["size"], data["puzzle"]
        except (KeyError, TypeError) as err:
            raise ValueError(f"a Sudoku problem is {{'size': int, 'puzzle': str}}: missing {err}") from None
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or int(size) not in SIZES:
            raise ValueError(f"size must be one of {SIZES}, got {size!r}")
        return from_puzzle(int(size), parse_grid_string(text, int(size)))


@lru_cache(maxsize=4096)
def from_puzzle(size: int, puzzle: bytes) -> SudokuProblem:
    """The problem of ``puzzle``, solved; raises ``ValueError`` unless it has exactly one solution.

    Cached, because a reward function rebuilds the same problem for every completion.
    """
    board = shape(size)
    try:
        count = count_solutions(board, puzzle, limit=2, max_nodes=VERIFY_MAX_NODES)
    except SearchBudgetExceeded:
        raise ValueError("the puzzle is too hard to check for a unique solution") from None
    if count != 1:
        raise ValueError("the puzzle has no solution" if count == 0 else "the puzzle has more than one solution")
    steps = solve(board, puzzle)
    solution = bytearray(puzzle)
    for step in steps:
        solution[step.row * size + step.col] = step.digit
    return SudokuProblem(size, puzzle, bytes(solution))


@dataclass(frozen=True)
class SudokuConfig:
    """Settings of the Sudoku task.

    Attributes:
        size: board size: 4 (2x2 boxes), 6 (2x3 boxes) or 9 (3x3 boxes).
        difficulty: ``"any"`` (no grading), or the grader's level the puzzle must
            have: ``"singles"`` (naked and hidden singles solve it), ``"advanced"``
            (it also needs naked pairs or locked candidates) or ``"search"`` (logic
            stalls, a search must guess); see :mod:`backtrack_gym.envs.sudoku.grader`.
        min_guesses: fewest guesses the grader's search may need (e.g. 2 for
            "needs at least 2 guesses"); above 0 implies ``"search"``.
        max_guesses: most guesses the grader's search may need (None: no limit).
        min_clues: removing clues stops at this many (None: go on until no clue can
            be removed without losing uniqueness, or the level, i.e. a minimal puzzle).
        max_clues: a puzzle left with more clues than this is redrawn (None: no limit).
        held_out_fraction: share of solution grids kept for the test split, so
            train and test never share a puzzle (0: both splits draw from all grids).
        seed: seed of the problem stream; item ``i`` depends only on (config, split, i),
            and the test split uses a stream of its own.
        max_attempts: puzzles drawn per item before generation gives up with a
            ``RuntimeError`` (a draw fails when it misses the level or the clue bound;
            the rarest level, 6x6 ``"advanced"``, hits about one draw in a hundred).
    """

    size: int = 9
    difficulty: str = "any"
    min_guesses: int = 0
    max_guesses: int | None = None
    min_clues: int | None = None
    max_clues: int | None = None
    held_out_fraction: float = 0.1
    seed: int = 0
    max_attempts: int = 1000

    def validate(self) -> SudokuConfig:
        """Raise ``ValueError`` with a clear message for settings that cannot work."""
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {SIZES}, got {self.size!r}")
        if self.difficulty not in DIFFICULTIES:
            raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {self.difficulty!r}")
        if self.min_guesses < 0:
            raise ValueError(f"min_guesses must be non-negative, got {self.min_guesses}")
        if self.max_guesses is not None and self.max_guesses < self.min_guesses:
            raise ValueError(f"max_guesses {self.max_guesses} is below min_guesses {self.min_guesses}")
        if self.min_guesses > 0 and self.difficulty in ("singles", "advanced"):
            raise ValueError(f"difficulty {self.difficulty!r} needs no guesses, but min_guesses is {self.min_guesses}")
        if self.size == 4 and self.level in ("advanced", "search"):
            # Checked on thousands of random 4x4 puzzles: one solution means singles solve it.
            raise ValueError(f"4x4 puzzles are all solved by singles; difficulty {self.level!r} needs size 6 or 9")
        if self.difficulty == "search" and self.max_guesses == 0:
            raise ValueError("difficulty 'search' needs at least one guess, but max_guesses is 0")
        cells = self.size * self.size
        for name in ("min_clues", "max_clues"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= cells:
                raise ValueError(f"{name} must be in 0..{cells} for a {self.size}x{self.size} board, got {value}")
        if self.min_clues is not None and self.max_clues is not None and self.min_clues > self.max_clues:
            raise ValueError(f"min_clues {self.min_clues} exceeds max_clues {self.max_clues}")
        if not 0.0 <= self.held_out_fraction < 1.0:
            raise ValueError(f"held_out_fraction must be in [0, 1), got {self.held_out_fraction}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        return self

    @property
    def level(self) -> str:
        """The grader level asked for (``"search"`` when guesses are required)."""
        return "search" if self.min_guesses > 0 else self.difficulty

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def grid_split(grid: bytes, held_out_fraction: float) -> str:
    """The split a solution grid belongs to, by a fixed hash of the grid."""
    if held_out_fraction == 0:
        return "both"
    rank = int.from_bytes(hashlib.blake2b(b"sudoku-held-out:" + grid, digest_size=8).digest(), "big")
    return "test" if rank < held_out_fraction * 2**64 else "train"


def _forced(board: Shape, puzzle: bytearray, cell: int, digit: int) -> bool:
    """Whether the givens around blank ``cell`` leave only ``digit`` there (a naked single)."""
    seen = 0
    for peer in board.peers[cell]:
        if puzzle[peer]:
            seen |= 1 << (puzzle[peer] - 1)
    return seen | (1 << (digit - 1)) == board.full


def dig(board: Shape, solution: bytes, rng: np.random.Generator, level: str, min_clues: int | None) -> bytes:
    """Blank the cells of ``solution`` in random order, keeping each blank only while the
    puzzle stays uniquely solvable (for ``"singles"`` and ``"advanced"``: solvable by that logic)."""
    puzzle = bytearray(solution)
    clues = board.cells
    for cell in rng.permutation(board.cells):
        if min_clues is not None and clues <= min_clues:
            break
        digit = puzzle[cell]
        puzzle[cell] = 0
        if _forced(board, puzzle, cell, digit):
            keep = True  # the rest of the puzzle still fixes this cell, so nothing changes
        elif level in ("singles", "advanced"):
            keep = solved_by_logic(board, bytes(puzzle), advanced=level == "advanced")
        else:
            keep = not has_solution(board, bytes(puzzle), cell, digit)
        if keep:
            clues -= 1
        else:
            puzzle[cell] = digit
    return bytes(puzzle)


def _fits(config: SudokuConfig, board: Shape, puzzle: bytes) -> bool:
    if config.max_clues is not None and sum(1 for d in puzzle if d) > config.max_clues:
        return False
    level = config.level
    if level == "singles":
        return True  # dug with singles only
    if level == "advanced":
        return not solved_by_logic(board, puzzle, advanced=False)
    if level == "any" and config.max_guesses is None:
        return True
    guesses = grade(board, puzzle).guesses
    low = max(1, config.min_guesses) if level == "search" else config.min_guesses
    return low <= guesses and (config.max_guesses is None or guesses <= config.max_guesses)


def _split_solution(config: SudokuConfig, board: Shape, rng: np.random.Generator, split: str) -> bytes:
    """A random full grid that belongs to ``split``."""
    for _ in range(MAX_GRID_DRAWS):
        solution = random_solution(board, rng)
        if grid_split(solution, config.held_out_fraction) in (split, "both"):
            return solution
    raise RuntimeError(
        f"no {board.size}x{board.size} grid of the {split} split in {MAX_GRID_DRAWS} draws; "
        f"held_out_fraction={config.held_out_fraction} is too extreme"
    )


def generate(config: SudokuConfig, index: int, split: str = "train") -> SudokuProblem:
    """The problem at ``index`` of ``split``: a random full grid of the split, then clue
    removal that keeps a unique solution, redrawn until it fits the difficulty and clue bounds.

    Raises ``RuntimeError`` after ``config.max_attempts`` draws that do not fit.
    """
    rng = item_rng(config.seed, split, index)
    board = shape(config.size)
    level = config.level
    for _ in range(config.max_attempts):
        solution = _split_solution(config, board, rng, split)
        puzzle = dig(board, solution, rng, level, config.min_clues)
        if _fits(config, board, puzzle):
            return SudokuProblem(config.size, puzzle, solution)
    raise RuntimeError(
        f"no {config.size}x{config.size} puzzle of difficulty {level!r} (guesses {config.min_guesses}.."
        f"{config.max_guesses}, clues {config.min_clues}..{config.max_clues}) in {config.max_attempts} draws; "
        "relax the difficulty or the clue bounds, or raise max_attempts"
    )
