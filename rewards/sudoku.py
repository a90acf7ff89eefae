"""A TRL reward for Sudoku completions that answer with the whole solved grid.

For completions written in the Sudoku step grammar (``rRcC=D`` lines and
``<backtrack>``) use ``trl_reward_functions(SudokuTask(config), {"correct": 1.0,
"progress": 0.5})``: it replays every line like the env does, and its ``progress``
term is the partial credit. This reward is for models that write the grid itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from backtrack_gym.envs.sudoku.generator import SudokuProblem
from backtrack_gym.envs.sudoku.grammar import read_grid
from backtrack_gym.rewards.adapters import RewardFunc, completion_text


def final_grid(text: str, size: int) -> list[int] | None:
    """The grid a completion ends with: its last ``size`` non-blank lines, or its last line
    holding all cells (see :func:`~backtrack_gym.envs.sudoku.grammar.read_grid`); None if neither is a grid."""
    tail = text[-32 * size * size :]  # a grid is short: never scan a huge completion
    lines = [line for line in tail.splitlines() if line.strip()]
    for candidate in ("\n".join(lines[-size:]), lines[-1] if lines else ""):
        cells = read_grid(candidate, size)
        if not isinstance(cells, str):
            return cells
    return None


def grid_score(problem: SudokuProblem, text: str, partial_credit: bool = False) -> float:
    """1.0 when ``text`` ends with the solved grid (the grid :func:`~backtrack_gym.envs.sudoku.check_grid`
    accepts), else 0.0; with ``partial_credit`` the share of the puzzle's blank cells the grid fills with
    their solution digit (givens earn nothing). A grid that does not keep every given, changed or
    blanked, answers another puzzle: it scores 0.0 either way."""
    cells = final_grid(text, problem.size)
    if cells is None or any(given and digit != given for given, digit in zip(problem.puzzle, cells, strict=True)):
        return 0.0
    pairs = [
        (digit, answer)
        for given, digit, answer in zip(problem.puzzle, cells, problem.solution, strict=True)
        if not given
    ]
    right = sum(digit == answer for digit, answer in pairs)
    if partial_credit:
        return right / len(pairs) if pairs else 1.0
    return 1.0 if right == len(pairs) else 0.0


def _problem(value: Any) -> SudokuProblem:
    if isinstance(value, SudokuProblem):
        return value
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"problem is not valid JSON: {err}") from None
    if not isinstance(value, Mapping):
        raise ValueError(f"a problem is a SudokuProblem, its dict or JSON, got {type(value).__name__}")
    return SudokuProblem.from_dict(value)


def sudoku_grid_reward(*, problem_column: str = "problem", partial_credit: bool = False) -> RewardFunc:
    """A TRL reward function scoring each completion's final grid with :func:`grid_score`.

    The ``problem_column`` holds each row's problem (``{"size": 9, "puzzle": "53..7...."}``,
    as a dict or JSON).
    """

    def sudoku_grid(
        prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **columns: Any
    ) -> list[float]:
        if problem_column not in columns:
            raise KeyError(f"the data set needs a {problem_column!r} column; columns given: {sorted(columns)}")
        problems = columns[problem_column]
        if len(problems) != len(completions):
            raise ValueError(f"{len(completions)} completions but {len(problems)} problems")
        return [
            grid_score(_problem(problem), completion_text(completion), partial_credit)
            for problem, completion in zip(problems, completions, strict=True)
        ]

    sudoku_grid.__name__ = "sudoku_grid_partial" if partial_credit else "sudoku_grid"
    return sudoku_grid
