from functools import cache

import gymnasium as gym
import numpy as np
import pytest

import backtrack_gym  # noqa: F401
from backtrack_gym.agents.traces import styles_for, write_trace
from backtrack_gym.agents.traces.sudoku import logical_order
from backtrack_gym.envs import BACKTRACK, make_task
from backtrack_gym.envs.seeding import item_rng
from backtrack_gym.envs.sudoku import SudokuConfig, SudokuProblem, SudokuTask, generate, solver
from backtrack_gym.envs.sudoku.grader import _Logic, grade
from backtrack_gym.train.data import build_sft_dataset

STYLES = sorted(styles_for(make_task("sudoku")))
# Arto Inkala's "world's hardest" puzzle: the search guesses hundreds of times.
INKALA = "8..........36......7..9.2...5...7.......457.....1...3...1....68..85...1..9....4.."
# Generated puzzles whose grading search needs at least 5 guesses.
HARD = {"size": 9, "difficulty": "search", "min_guesses": 5}


@cache
def problems(n: int, **config) -> tuple[SudokuProblem, ...]:
    """Items 0..n-1 of the train split, shared by the tests (9x9 generation is the slow part)."""
    return tuple(generate(SudokuConfig(**config), index) for index in range(n))


@cache
def env(size: int):
    return gym.make("backtrack_gym/Sudoku-v0", size=size, interaction="completion", backtrack=True, max_steps=8192)


def assert_replays(problem, trace):
    """The env replays ``trace`` to the writer's last state with the writer's counts."""
    sudoku = env(problem.size).unwrapped
    sudoku.reset(options={"problem": problem.to_dict()})
    _, reward, _, _, info = sudoku.step(trace.completion)
    assert sudoku.episode.state == trace.final_state
    assert info["solved"] == trace.solved and reward == (1.0 if trace.solved else 0.0)
    assert info["invalid_steps"] == 0 and info["backtracks"] == trace.backtracks
    assert info["valid_steps"] == trace.steps


def cell(problem, step):
    return step.row * problem.size + step.col


def solves(style: str, trace) -> bool:
    """The trace solves its puzzle, or is a self-backtracking back example, which ends at its backtrack."""
    return trace.solved or (style == "self_backtrack" and trace.backtracks == 1 and trace.lines[-1] == BACKTRACK)


@pytest.mark.slow
@pytest.mark.parametrize("style", STYLES)
def test_every_trace_replays_to_the_writer_state(style):
    task = SudokuTask()
    for index, problem in enumerate(problems(1000)):
        trace = write_trace(task, problem, style, rng=item_rng(0, "train", index, 1))
        # The searches may stop at their line budget (512 lines) on the hardest ones.
        assert solves(style, trace) or (style in ("dfs", "think") and len(trace.lines) == 512), (style, index)
        assert_replays(problem, trace)


@pytest.mark.parametrize("style", STYLES)
def test_traces_replay_on_puzzles_that_need_guesses(style):
    task = SudokuTask()
    hard = [*problems(8, **HARD), SudokuProblem.from_dict({"size": 9, "puzzle": INKALA})]
    for index, problem in enumerate(hard):
        trace = write_trace(task, problem, style, rng=np.random.default_rng(index), max_lines=None)
        assert solves(style, trace)
        assert_replays(problem, trace)
    for index, problem in enumerate(problems(100, size=6)):
        assert_replays(
            problem, write_trace(SudokuTask(SudokuConfig(size=6)), problem, style, rng=np.random.default_rng(index))
        )


def test_direct_places_each_blank_once_in_a_logical_order():
    task = SudokuTask()
    for problem in [*problems(20), *problems(8, **HARD)]:
        trace = write_trace(task, problem, "direct")
        assert trace.solved and trace.backtracks == 0 and not trace.masked
        assert trace.steps == len(trace.lines) == problem.puzzle.count(0)
        grid, stalls = problem.puzzle, 0
        for step in logical_order(problem):
            # Logic run from the written grid fixes this cell, or stalls with it among the most constrained.
            cands, queue = solver.start(problem.board, grid)
            assert _Logic()(problem.board, cands, queue)
            mask = cands[cell(problem, step)]
            if mask & (mask - 1):
                stalls += 1
                fewest = min(m.bit_count() for m in cands if m & (m - 1))
                assert mask.bit_count() == fewest
            assert mask >> (step.digit - 1) & 1
            grid = task.apply(problem, grid, step)
        assert (stalls > 0) == (grade(problem.board, problem.puzzle).level == "search")


def test_dfs_backtracks_and_is_several_times_longer_than_direct_where_guesses_are_needed():
    task = SudokuTask()
    ratios = []
    for problem in problems(8, **HARD):
        search = write_trace(task, problem, "dfs", max_lines=None)
        ratios.append(len(search.lines) / len(write_trace(task, problem, "direct").lines))
    assert np.mean(ratios) >= 3 and min(ratios) > 1
    inkala = SudokuProblem.from_dict({"size": 9, "puzzle": INKALA})
    search = write_trace(task, inkala, "dfs", max_lines=None)
    assert search.backtracks > 1000 and len(search.lines) > 40 * inkala.puzzle.count(0)
    assert search.lines.count(BACKTRACK) == search.backtracks


def test_dfs_stops_at_its_line_budget():
    task = SudokuTask()
    problem = SudokuProblem.from_dict({"size": 9, "puzzle": INKALA})
    full = write_trace(task, problem, "dfs", max_lines=None)
    cut = write_trace(task, problem, "dfs", max_lines=300)
    assert len(cut.lines) == 300 and cut.lines == full.lines[:300] and not cut.solved
    assert_replays(problem, cut)
    assert write_trace(task, problem, "dfs").lines == full.lines[:512]  # the default budget


def test_think_leaves_out_guesses_that_singles_refute_at_once():
    task = SudokuTask()
    problem = SudokuProblem.from_dict({"size": 9, "puzzle": INKALA})
    full = write_trace(task, problem, "dfs", max_lines=None)
    pruned = write_trace(task, problem, "think", max_lines=None)
    assert pruned.solved and pruned.backtracks < full.backtracks and len(pruned.lines) < len(full.lines) / 3
    # The same search with the refuted branches cut out: its lines are a subsequence of the DFS's.
    remaining = iter(full.lines)
    assert all(line in remaining for line in pruned.lines)
    for problem in problems(8, **HARD):
        assert len(write_trace(task, problem, "think").lines) <= len(write_trace(task, problem, "dfs").lines)


# self_backtrack's earlier form, a wrong placement in every trace and the solution after it
# (the paper's form, back examples that end at the backtrack, is tested in test_data.py)
CONTINUED_IN_EVERY_TRACE = {"wrong_step_rate": 1.0, "example_form": "continued"}


def test_self_backtrack_masks_exactly_one_refuted_placement():
    task = SudokuTask()
    board_problems = [(task, p) for p in [*problems(30), *problems(8, **HARD)]]
    board_problems += [(SudokuTask(SudokuConfig(size=6)), p) for p in problems(100, size=6)]
    for index, (sudoku, problem) in enumerate(board_problems):
        trace = write_trace(
            sudoku, problem, "self_backtrack", rng=item_rng(0, "train", index, 1), **CONTINUED_IN_EVERY_TRACE
        )
        assert trace.solved and trace.backtracks == 1
        (start, end), *rest = trace.mask_spans()
        assert not rest
        wrong_line = trace.completion[start:end]
        (position,) = trace.masked
        assert wrong_line == trace.lines[position] + "\n" and wrong_line.count("\n") == 1
        assert trace.lines[position + 1] == BACKTRACK
        grid = problem.puzzle
        for line in trace.lines[:position]:
            grid = sudoku.apply(problem, grid, sudoku.parse_step(line))
        wrong = sudoku.parse_step(wrong_line)
        after = sudoku.apply(problem, grid, wrong)
        assert isinstance(after, bytes), "the wrong placement is legal when written"
        assert problem.solution[cell(problem, wrong)] != wrong.digit
        # Singles from the wrong placement reach a contradiction.
        started = solver.start(problem.board, after)
        assert started is None or not solver.propagate(problem.board, *started)
        # After the backtrack the same cell gets its right digit; unmasked, every blank is placed once.
        right = sudoku.parse_step(trace.lines[position + 2])
        assert cell(problem, right) == cell(problem, wrong) and right.digit == problem.solution[cell(problem, right)]
        kept = trace.lines[:position] + trace.lines[position + 2 :]
        assert len(set(kept)) == len(kept) == problem.puzzle.count(0)


def test_traces_are_deterministic_per_rng():
    task = SudokuTask()
    problem = problems(1)[0]
    for style in STYLES:
        first = write_trace(task, problem, style, rng=np.random.default_rng(3))
        assert first.lines == write_trace(task, problem, style, rng=np.random.default_rng(3)).lines


def test_search_trace_takes_a_propagator():
    problem = SudokuProblem.from_dict({"size": 9, "puzzle": INKALA})
    calls = []

    def counting(board, cands, queue, trail=None):
        calls.append(len(queue))
        return solver.propagate(board, cands, queue, trail)

    assert solver.search_trace(problem.board, problem.puzzle, propagator=counting) == solver.search_trace(
        problem.board, problem.puzzle
    )
    assert calls and all(count == 1 for count in calls)  # one call per guess, from the guessed cell


@pytest.mark.parametrize("style", STYLES)
def test_data_builder_writes_sudoku_rows(style):
    options = CONTINUED_IN_EVERY_TRACE if style == "self_backtrack" else None
    dataset = build_sft_dataset("sudoku", style, 3, seed=0, trace_options=options)
    assert len(dataset) == 3 and all(dataset["solved"])
    row = dataset[0]
    assert row["style"] == style and row["completion"].endswith("\n")
    assert (row["mask_spans"] != []) == (style == "self_backtrack")
    assert row["num_backtracks"] == row["completion"].count(BACKTRACK + "\n")
