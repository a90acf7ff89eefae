"""Sudoku: fill a 4x4, 6x6 or 9x9 grid so that every row, column and box holds each digit once."""

from backtrack_gym.envs.registry import register_task
from backtrack_gym.envs.sudoku.env import SudokuEnv, SudokuTask
from backtrack_gym.envs.sudoku.generator import SudokuConfig, SudokuProblem, generate
from backtrack_gym.envs.sudoku.grader import LEVELS, Grade, grade
from backtrack_gym.envs.sudoku.grammar import check_grid, parse_step, render, verify_grid
from backtrack_gym.envs.sudoku.rules import Step, shape
from backtrack_gym.envs.sudoku.solver import count_solutions, search_trace, solve

__all__ = [
    "LEVELS",
    "Grade",
    "Step",
    "SudokuConfig",
    "SudokuEnv",
    "SudokuProblem",
    "SudokuTask",
    "check_grid",
    "count_solutions",
    "generate",
    "grade",
    "parse_step",
    "render",
    "search_trace",
    "shape",
    "solve",
    "verify_grid",
]

register_task(
    "sudoku",
    SudokuTask,
    SudokuConfig,
    {
        "backtrack_gym/Sudoku-v0": "backtrack_gym.envs.sudoku.env:SudokuEnv",
        "backtrack_gym/SudokuGrid-v0": "backtrack_gym.envs.sudoku.structured:SudokuGridEnv",
    },
    trace_styles="backtrack_gym.agents.traces.sudoku",
    reward_adapters=("backtrack_gym.rewards.sudoku:sudoku_grid_reward",),
)
