"""Sudoku trace styles: direct (logical order), DFS, think (pruned DFS) and self-backtracking.

Every line places a digit (``rRcC=D``) or is ``<backtrack>``. The searches are the
solver's own (:func:`backtrack_gym.envs.sudoku.solver.search_trace`): naked and
hidden singles after each guess, guesses on the first blank cell with fewest
candidates, digits in ascending order.
"""

from __future__ import annotations

import numpy as np

from backtrack_gym.agents.traces.core import Trace, TraceWriter
from backtrack_gym.agents.traces.self_backtracking import check_self_backtrack_options
from backtrack_gym.envs.sudoku import solver
from backtrack_gym.envs.sudoku.env import SudokuTask
from backtrack_gym.envs.sudoku.generator import SudokuProblem
from backtrack_gym.envs.sudoku.grader import _Logic
from backtrack_gym.envs.sudoku.rules import Shape, Step
from backtrack_gym.envs.sudoku.solver import Candidates, Trail


def logical_order(problem: SudokuProblem) -> list[Step]:
    """The solution's placements in the order logic fixes them, guessing nothing.

    The grader's logic (naked and hidden singles, then naked pairs and locked
    candidates) runs to a fixed point and its placements are written in the order
    it makes them. Where it stalls (a puzzle that needs search), the solution's
    digit is placed at the first blank cell with fewest candidates (the cell the
    search would guess on) and logic resumes. So every placement is either forced
    by logic given the earlier ones, or the known answer of the most constrained cell.
    """
    board = problem.board
    started = solver.start(board, problem.puzzle)
    assert started is not None, "a generated puzzle has a solution"
    cands, queue = started
    trail: Trail = []
    logic = _Logic()
    while True:
        # Logic is sound and every placement is the solution's, so no contradiction can arise.
        consistent = logic(board, cands, queue, trail)
        assert consistent, "logic contradicted the solution"
        cell = solver.pick_cell(board, cands)
        if cell < 0:
            return [Step(*divmod(cell, board.size), digit) for cell, digit in trail]
        cands[cell] = 1 << (problem.solution[cell] - 1)
        queue = [cell]


def direct(task: SudokuTask, problem: SudokuProblem, **_: object) -> Trace:
    """The placements of :func:`logical_order`: no wrong step, no backtrack."""
    writer = TraceWriter(task, problem)
    for step in logical_order(problem):
        writer.apply(step)
    return writer.finish()


def _write_events(writer: TraceWriter, events: list[Step | None]) -> Trace:
    """Write the solver's events (a placement, or None to undo one) until the line budget."""
    for event in events:
        if writer.full:
            break  # a prefix of the search, as if it stopped here: replays to the same state
        if event is None:
            writer.backtrack()
        else:
            writer.apply(event)
    return writer.finish()


def dfs(task: SudokuTask, problem: SudokuProblem, *, max_lines: int | None = 512, **_: object) -> Trace:
    """Depth-first search: singles, then a guess on the cell with fewest candidates, and so on;
    a contradiction is followed by one backtrack per placement back to the wrong guess.

    Every placement the search makes is a line, failed guesses and the singles they
    forced included; the trace stops at the solution or after ``max_lines`` lines.
    """
    writer = TraceWriter(task, problem, max_lines=max_lines)
    events = solver.search_trace(problem.board, writer.state)
    assert events is not None, "a generated puzzle has a solution"
    return _write_events(writer, events)


def _quiet_failures(board: Shape, cands: Candidates, queue: list[int], trail: Trail | None = None) -> bool:
    """Singles propagation that takes its placements back out of the trail when it fails."""
    mark = len(trail) if trail is not None else 0
    if solver.propagate(board, cands, queue, trail):
        return True
    if trail is not None:
        del trail[mark:]
    return False


def think(task: SudokuTask, problem: SudokuProblem, *, max_lines: int | None = 512, **_: object) -> Trace:
    """DFS that leaves out the guesses singles refute at once (with what they forced).

    A guess is written only when its singles reach no contradiction; it is undone by
    backtracks when the search below it fails.
    """
    writer = TraceWriter(task, problem, max_lines=max_lines)
    events = solver.search_trace(problem.board, writer.state, propagator=_quiet_failures)
    assert events is not None, "a generated puzzle has a solution"
    return _write_events(writer, events)


def refuted_placement(board: Shape, grid: bytes, solution: bytes, rng: np.random.Generator) -> Step | None:
    """A plausible wrong placement in ``grid``: legal, and refuted by singles.

    Cells are tried fewest candidates first (ties in random order), each cell's
    wrong candidates in random order; the first whose singles propagation reaches a
    contradiction is returned. None when no wrong candidate is refuted so.
    """
    started = solver.start(board, grid)
    assert started is not None, "the grid agrees with the solution"
    cands, forced = started
    blanks = [cell for cell in range(board.cells) if not grid[cell] and cands[cell] & (cands[cell] - 1)]
    ties = rng.random(len(blanks))
    for _, cell in sorted(zip(ties, blanks, strict=True), key=lambda item: (cands[item[1]].bit_count(), item[0])):
        right = 1 << (solution[cell] - 1)
        wrong = solver.digits_of(cands[cell] & ~right)
        for k in rng.permutation(len(wrong)):
            child = cands.copy()
            child[cell] = wrong[k]
            # The grid's own singles go in too: alone they agree with the solution, so a
            # contradiction is the wrong digit's.
            if not solver.propagate(board, child, [*forced, cell]):
                return Step(*divmod(cell, board.size), wrong[k].bit_length())
    return None


def self_backtrack(
    task: SudokuTask,
    problem: SudokuProblem,
    *,
    rng: np.random.Generator,
    wrong_step_rate: float = 0.5,
    example_form: str = "ended",
    **_: object,
) -> Trace:
    """Self-backtracking data as for CountDown (:func:`backtrack_gym.agents.traces.countdown.self_backtrack`).

    A share ``wrong_step_rate`` of the traces are back examples: the
    :func:`logical_order` solution up to a random step (the next ones tried in random
    order when none fits; a puzzle where none does gets the plain solution), a wrong
    placement there that :func:`refuted_placement` picks (masked, so the SFT loss
    teaches when to backtrack, not the mistake), then a backtrack, where the trace
    ends (``example_form="ended"``, the paper's form). In the ``"continued"`` form the
    right digit goes into the same cell after the backtrack and the solution goes on
    without that cell (solution digits never clash, in any order). The others are
    the :func:`logical_order` solution.
    """
    check_self_backtrack_options(wrong_step_rate, example_form)
    board = problem.board
    plan = logical_order(problem)
    grids = [problem.puzzle]
    for step in plan[:-1]:
        grids.append(task.apply(problem, grids[-1], step))
    positions = [int(k) for k in rng.permutation(len(plan))]
    if wrong_step_rate < 1.0 and rng.random() >= wrong_step_rate:
        positions = []  # this trace is the solution
    chosen, wrong = None, None
    for k in positions:
        wrong = refuted_placement(board, grids[k], problem.solution, rng)
        if wrong is not None:
            chosen = k
            break
    writer = TraceWriter(task, problem)
    for k, step in enumerate(plan):
        if k == chosen:
            writer.apply(wrong, masked=True)
            writer.backtrack()
            if example_form == "ended":
                break
            writer.apply(Step(wrong.row, wrong.col, problem.solution[wrong.row * board.size + wrong.col]))
        if writer.state[step.row * board.size + step.col] == 0:
            writer.apply(step)
    return writer.finish()


STYLES = {
    "direct": direct,
    "dfs": dfs,
    "think": think,
    "self_backtrack": self_backtrack,
}
