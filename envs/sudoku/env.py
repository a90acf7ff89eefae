"""The Sudoku task and its Gymnasium env ``backtrack_gym/Sudoku-v0``."""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from backtrack_gym.envs.core import BACKTRACK, Invalid, Task, TextEnv, env_config
from backtrack_gym.envs.sudoku import grammar, rules, solver
from backtrack_gym.envs.sudoku.generator import SudokuConfig, SudokuProblem, generate
from backtrack_gym.envs.sudoku.rules import Step, grid_string, parse_grid_string

State = bytes  # the grid, row-major, 0 = blank (immutable, so the state stack shares nothing)


class SudokuTask(Task[SudokuProblem, State, Step]):
    """Sudoku rules, grammar and generation for one :class:`SudokuConfig`."""

    name = "sudoku"
    charset = string.ascii_letters + string.digits + " .=<>\n"
    max_line_chars = 32

    def __init__(self, config: SudokuConfig | None = None):
        self.config = (config or SudokuConfig()).validate()
        self.size = self.config.size
        self.board = rules.shape(self.size)
        # Room for every cell plus a search's wrong placements and their backtracks.
        self.default_max_steps = 4 * self.board.cells
        # The observation is the board: size rows of size characters, newline separated.
        self.max_observation_chars = self.size * (self.size + 1)

    def generate(self, index: int, split: str = "train") -> SudokuProblem:
        return generate(self.config, index, split)

    def problem_to_dict(self, problem: SudokuProblem) -> dict[str, Any]:
        return problem.to_dict()

    def problem_from_dict(self, data: Mapping[str, Any]) -> SudokuProblem:
        return self._check_size(SudokuProblem.from_dict(data))

    def coerce_problem(self, problem: Any) -> SudokuProblem:
        return self._check_size(super().coerce_problem(problem))

    def _check_size(self, problem: SudokuProblem) -> SudokuProblem:
        if problem.size != self.size:
            raise ValueError(f"this env plays {self.size}x{self.size} boards, got a {problem.size}x{problem.size} one")
        return problem

    def initial_state(self, problem: SudokuProblem) -> State:
        return problem.puzzle

    def apply(self, problem: SudokuProblem, state: State, step: Step) -> State | Invalid:
        return rules.apply_step(self.board, problem.puzzle, state, step)

    def is_solved(self, problem: SudokuProblem, state: State) -> bool:
        return state == problem.solution

    def legal_steps(self, problem: SudokuProblem, state: State) -> list[Step]:
        return rules.legal_steps(self.board, state)

    def solve(self, problem: SudokuProblem, state: State) -> list[Step] | None:
        """The placements from ``state`` to the solution, in the order the solver fixes them.

        None when ``state`` is a dead end (see :meth:`solvable`).
        """
        if not self.solvable(problem, state):
            return None
        return solver.solve(self.board, state)

    def solvable(self, problem: SudokuProblem, state: State, solved: bool | None = None) -> bool:
        """Exact and cheap: the solution is unique, so a state is a dead end exactly when
        a filled cell differs from it."""
        return all(not d or d == s for d, s in zip(state, problem.solution, strict=True))

    def search_trace(self, problem: SudokuProblem, state: State, backtrack_token: str = BACKTRACK) -> list[str] | None:
        """The solver's depth-first search from ``state`` as lines, each ``backtrack_token``
        undoing one placement; None when ``state`` has no solution."""
        events = solver.search_trace(self.board, state)
        if events is None:
            return None
        return [backtrack_token if step is None else self.format_step(step) for step in events]

    def parse_step(self, line: str) -> Step | Invalid:
        return grammar.parse_step(line, self.size)

    def format_step(self, step: Step) -> str:
        return str(step)

    def render(self, problem: SudokuProblem, state: State) -> str:
        return grammar.render(self.size, state)

    def progress(self, problem: SudokuProblem, state: State) -> float:
        """Share of the cells blank in the puzzle that now hold their solution digit (givens earn nothing)."""
        blanks = right = 0
        for given, digit, answer in zip(problem.puzzle, state, problem.solution, strict=True):
            if not given:
                blanks += 1
                right += digit == answer
        return right / blanks if blanks else 1.0

    def state_info(self, state: State) -> str:
        return grid_string(state)

    def state_from_info(self, data: str) -> State:
        return parse_grid_string(data, self.size)


class SudokuEnv(TextEnv):
    """Fill a Sudoku grid, one digit per step, with an optional backtrack.

    ## Description

    A ``size`` x ``size`` board (4, 6 or 9; boxes 2x2, 2x3, 3x3) with some digits
    given has exactly one solution: every row, column and box holds each digit
    ``1..size`` once. A step places one digit in a blank cell. A placement that
    repeats a digit in its row, column or box is illegal, as is writing over a
    given or a filled cell; a placement that breaks no rule but is wrong is legal
    and leads to a dead end, which is where backtracking helps. Puzzles are graded
    by the logic their solution needs (see :class:`SudokuConfig`).

    ## Action Space

    ``Text`` over the env's charset. A step is one line ``rRcC=D`` (1-based row
    and column, e.g. ``r3c5=7``; spaces allowed). The line ``<backtrack>`` undoes
    the last placement when the env is made with ``backtrack=True``. In
    ``interaction="step"`` one action is one line; in ``interaction="completion"``
    one action is a whole output replayed line by line, blank lines skipped,
    stopping when the grid is solved. (A whole-grid answer is checked by
    :func:`backtrack_gym.envs.sudoku.check_grid`.)

    ## Observation Space

    ``Text``: the board as ``size`` lines of ``size`` characters, a digit or ``.``
    for a blank, e.g. for 4x4 ``"2.4.\\n...1\\n4...\\n...."``. The first observation
    is the puzzle.

    ## Rewards

    From :mod:`backtrack_gym.rewards`: ``correct`` (1 once solved) by default;
    ``progress`` is the partial credit, the share of the puzzle's blank cells that
    hold their solution digit (copying givens earns nothing); ``format``,
    ``validity``, ``length``, ``backtrack`` and ``process`` (from the dead-end
    labels: a wrong digit is a dead end) terms by weight. Each step's reward
    is the change of the weighted total, so an episode's return is the same in
    both interaction modes. Under ``invalid_policy="penalize"`` each malformed or
    illegal step costs ``invalid_penalty``.

    ## Starting State

    The puzzle is drawn from the split's stream: ``reset(seed=s)`` picks the same
    puzzle for the same ``s``; ``options={"index": i}`` takes item ``i`` and
    ``options={"problem": {"size": 4, "puzzle": "2.4....14......."}}`` pins a
    puzzle (row-major, ``.`` or ``0`` for a blank; it must have one solution).

    ## Episode End

    Terminated when the grid is solved, after the one action of completion mode,
    or at an invalid step under ``invalid_policy="terminate"``. Truncated when
    ``max_steps`` steps have been taken. ``step`` after the end raises
    ``gymnasium.error.ResetNeeded``; a non-``str`` action raises ``TypeError``.
    Any string is a defined outcome: an invalid step with its reason in
    ``info["last_reason"]`` (and ``info["invalid_lines"]`` in completion mode).

    ## Arguments

    ``config`` (a :class:`SudokuConfig`) or any of its fields as keywords
    (``size``, ``difficulty``, ``min_guesses``, ``max_guesses``, ``min_clues``,
    ``max_clues``, ``held_out_fraction``, ``seed``, ``max_attempts``);
    ``max_steps`` (default: 4 steps per cell); and ``split``, ``interaction``,
    ``backtrack``, ``invalid_policy``, ``invalid_penalty``, ``reward_weights``,
    ``max_action_chars``, ``labels``, ``render_mode`` as described in
    :class:`backtrack_gym.envs.core.TextEnv`.

    ## Example

    >>> import gymnasium as gym
    >>> import backtrack_gym  # registers the envs
    >>> env = gym.make("backtrack_gym/Sudoku-v0", size=4)
    >>> observation, info = env.reset(seed=0)
    >>> observation.splitlines()
    ['....', '..23', '4.1.', '....']
    >>> observation, reward, terminated, truncated, info = env.step("r3c4=4")
    >>> reward, terminated, info["last_reason"]
    (-0.1, False, '4 is already in row 3')
    >>> observation, reward, terminated, truncated, info = env.step("r3c4=2")
    >>> reward, terminated, observation.splitlines()[2]
    (0.0, False, '4.12')
    """

    def __init__(self, config: SudokuConfig | Mapping[str, Any] | None = None, **kwargs: Any):
        super().__init__(SudokuTask(env_config(SudokuConfig, config, kwargs)), **kwargs)
