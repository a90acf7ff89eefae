"""Sudoku rules, grammar, solver, grader and generator."""

import itertools
import time

import numpy as np
import pytest

from backtrack_gym.envs import Invalid
from backtrack_gym.envs.sudoku import (
    LEVELS,
    Step,
    SudokuConfig,
    SudokuProblem,
    check_grid,
    count_solutions,
    generate,
    grade,
    parse_step,
    render,
    search_trace,
    shape,
    solve,
)
from backtrack_gym.envs.sudoku.generator import grid_split
from backtrack_gym.envs.sudoku.rules import apply_step, legal_steps, parse_grid_string
from backtrack_gym.envs.sudoku.solver import Search, SearchBudgetExceeded, propagate, start

# Well-known hard published 9x9 puzzles, typed in by hand.
HARD_PUZZLES = {
    "inkala_worlds_hardest": "".join(
        (
            "8........",
            "..36.....",
            ".7..9.2..",
            ".5...7...",
            "....457..",
            "...1...3.",
            "..1....68",
            "..85...1.",
            ".9....4..",
        )
    ),
    "easter_monster": "".join(
        (
            "1.......2",
            ".9.4...5.",
            "..6...7..",
            ".5.9.3...",
            "....7....",
            "...85..4.",
            "7.....6..",
            ".3...9.8.",
            "..2.....1",
        )
    ),
    "golden_nugget": "".join(
        (
            ".......39",
            ".....1..5",
            "..3.5.8..",
            "..8.9...6",
            ".7...2...",
            "1..4.....",
            "..9.8..5.",
            ".2....6..",
            "4..7.....",
        )
    ),
    "platinum_blonde": "".join(
        (
            ".......12",
            "........3",
            "..23..4..",
            "..18....5",
            ".6..7.8..",
            ".....9...",
            "..85.....",
            "9...4.5..",
            "47...6...",
        )
    ),
    "ai_escargot": "".join(
        (
            "1....7.9.",
            ".3..2...8",
            "..96..5..",
            "..53..9..",
            ".1..8...2",
            "6....4...",
            "3......1.",
            ".4......7",
            "..7...3..",
        )
    ),
}


def exact_cover_count(size: int, grid: bytes, limit: int = 2) -> int:
    """Solutions of ``grid`` counted by Knuth's Algorithm X on dicts of sets (independent of the solver)."""
    box_rows, box_cols = {4: (2, 2), 6: (2, 3), 9: (3, 3)}[size]
    choices = {}
    for r, c, d in itertools.product(range(size), range(size), range(1, size + 1)):
        box = (r // box_rows) * (size // box_cols) + c // box_cols
        choices[(r, c, d)] = [("cell", r, c), ("row", r, d), ("col", c, d), ("box", box, d)]
    columns = {}
    for choice, cols in choices.items():
        for col in cols:
            columns.setdefault(col, set()).add(choice)

    def select(choice):
        removed = []
        for col in choices[choice]:
            for other in columns[col]:
                for k in choices[other]:
                    if k != col:
                        columns[k].remove(other)
            removed.append(columns.pop(col))
        return removed

    def search():
        if not columns:
            yield 1
            return
        col = min(columns, key=lambda c: len(columns[c]))
        for choice in list(columns[col]):
            removed = select(choice)
            yield from search()
            for c in reversed(choices[choice]):
                columns[c] = removed.pop()
                for other in columns[c]:
                    for k in choices[other]:
                        if k != c:
                            columns[k].add(other)

    for cell, digit in enumerate(grid):
        if digit:
            r, c = divmod(cell, size)
            if any((r, c, digit) not in columns.get(col, ()) for col in choices[(r, c, digit)]):
                return 0  # two givens clash
            select((r, c, digit))
    return sum(itertools.islice(search(), limit))


def oracle_guesses(size: int, grid: bytes) -> int:
    """Guesses the oracle's search (singles propagation) makes before it finds the solution."""
    board = shape(size)
    cands, queue = start(board, grid)
    assert propagate(board, cands, queue)
    search = Search(board)
    assert search.first(cands) is not None
    return search.guesses


def replay(problem: SudokuProblem, steps: list[Step | None], grid: bytes | None = None) -> bytes:
    """Apply ``steps`` (None undoes one) with the rules; every step must be legal."""
    board = problem.board
    stack = [problem.puzzle if grid is None else grid]
    for step in steps:
        if step is None:
            stack.pop()
            continue
        after = apply_step(board, problem.puzzle, stack[-1], step)
        assert not isinstance(after, Invalid), (step, after)
        stack.append(after)
    return stack[-1]


PUZZLE_4 = "2.4....14......."  # solution 2143 3421 4312 1234


def puzzle(text: str) -> SudokuProblem:
    return SudokuProblem.from_dict({"size": 9, "puzzle": text})


# --- grammar ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "step"),
    [
        ("r1c2=3", Step(0, 1, 3)),
        (" R9 C9 = 9 ", Step(8, 8, 9)),
        ("r3c5=7", Step(2, 4, 7)),
        ("r 1 c 1=1", Step(0, 0, 1)),
    ],
)
def test_parse_step(line, step):
    assert parse_step(line, 9) == step
    assert parse_step(str(step), 9) == step


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("r1c2", "a step is"),
        ("r1c2=3=3", "a step is"),
        ("c1r2=3", "a step is"),
        ("r١c2=3", "a step is"),
        ("r0c1=1", "row 0 is not in 1..4"),
        ("r1c5=1", "column 5 is not in 1..4"),
        ("r1c1=5", "digit 5 is not in 1..4"),
        ("r1c1=0", "digit 0"),
        ("r" + "9" * 30 + "c1=1", "not in 1..4"),
    ],
)
def test_parse_step_rejects_other_shapes(line, reason):
    result = parse_step(line, 4)
    assert isinstance(result, Invalid) and result.kind == "malformed" and reason in result.reason


def test_render_and_check_grid():
    problem = SudokuProblem.from_dict({"size": 4, "puzzle": PUZZLE_4})
    assert render(4, problem.puzzle) == "2.4.\n...1\n4...\n...."
    solved = render(4, problem.solution)
    assert solved == "2143\n3421\n4312\n1234"
    assert check_grid(problem, solved) is None
    assert check_grid(problem, "21|43\n34|21\n--+--\n43|12\n12|34\n") is None
    assert check_grid(problem, "2 1 4 3 3 4 2 1 4 3 1 2 1 2 3 4") is None
    assert check_grid(problem, render(4, problem.puzzle)) == "r1c2 is blank"
    assert "has 15 cells" in check_grid(problem, solved[:-1])
    assert "unexpected character" in check_grid(problem, solved.replace("1", "x", 1))
    assert "unexpected character" in check_grid(problem, solved.replace("1", "5", 1))
    assert check_grid(problem, "1" + solved[1:]) == "r1c1 is 1 but the given is 2"
    # Swap two blank cells of row 2: the givens hold but column 1 repeats a 4.
    assert check_grid(problem, solved.replace("3421", "4321")) == "column 1 repeats 4"
    assert "longer than" in check_grid(problem, "1" * 10_000)


# --- rules -----------------------------------------------------------------


def test_apply_step_enforces_the_rules():
    problem = SudokuProblem.from_dict({"size": 4, "puzzle": PUZZLE_4})
    board, grid = problem.board, problem.puzzle
    assert apply_step(board, grid, grid, Step(0, 0, 1)).reason == "r1c1 is a given"
    assert apply_step(board, grid, grid, Step(0, 1, 4)).reason == "4 is already in row 1"
    assert apply_step(board, grid, grid, Step(1, 0, 4)).reason == "4 is already in column 1"
    assert apply_step(board, grid, grid, Step(1, 1, 2)).reason == "2 is already in box 1"
    after = apply_step(board, grid, grid, Step(0, 1, 1))
    assert after == parse_grid_string("214....14.......", 4)
    assert apply_step(board, grid, after, Step(0, 1, 3)).reason == "r1c2 is already filled"
    legal = legal_steps(board, grid)
    assert Step(0, 1, 1) in legal and Step(0, 1, 3) in legal and Step(0, 1, 2) not in legal
    assert all(not isinstance(apply_step(board, grid, grid, s), Invalid) for s in legal)


@pytest.mark.parametrize("size", [4, 6, 9])
def test_shapes(size):
    board = shape(size)
    assert len(board.units) == 3 * size and all(len(unit) == size for unit in board.units)
    peers = {4: 7, 6: 12, 9: 20}[size]
    assert all(len(p) == peers for p in board.peers)
    with pytest.raises(ValueError, match="size"):
        shape(5)


def test_problem_from_dict_validates():
    with pytest.raises(ValueError, match="more than one solution"):
        SudokuProblem.from_dict({"size": 4, "puzzle": "1..............."})
    with pytest.raises(ValueError, match="no solution"):
        SudokuProblem.from_dict({"size": 4, "puzzle": "11.............."})
    with pytest.raises(ValueError, match="no solution"):  # r1c2 has no candidate left
        SudokuProblem.from_dict({"size": 4, "puzzle": "1.2.4....3......"})
    with pytest.raises(ValueError, match="16 cells"):
        SudokuProblem.from_dict({"size": 4, "puzzle": "1.3"})
    with pytest.raises(ValueError, match="digits 1..4"):
        SudokuProblem.from_dict({"size": 4, "puzzle": "1.3...1..1..4..5"})
    with pytest.raises(ValueError, match="size"):
        SudokuProblem.from_dict({"size": 5, "puzzle": ""})
    with pytest.raises(ValueError, match="size"):
        SudokuProblem.from_dict({"puzzle": PUZZLE_4})
    with pytest.raises(ValueError, match="string"):
        SudokuProblem.from_dict({"size": 4, "puzzle": list(range(16))})
    problem = SudokuProblem.from_dict({"size": 4, "puzzle": PUZZLE_4})
    assert SudokuProblem.from_dict(problem.to_dict()) == problem


# --- solver ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(HARD_PUZZLES))
def test_solver_solves_hard_published_puzzles(name):
    problem = puzzle(HARD_PUZZLES[name])
    assert exact_cover_count(9, problem.puzzle) == 1
    assert count_solutions(problem.board, problem.puzzle, limit=5) == 1
    start_time = time.perf_counter()
    steps = solve(problem.board, problem.puzzle)
    assert time.perf_counter() - start_time < 1.0
    assert replay(problem, steps) == problem.solution
    assert check_grid(problem, render(9, problem.solution)) is None
    assert grade(problem.board, problem.puzzle).level == "search"


def test_search_trace_replays_with_backtracks():
    problem = puzzle(HARD_PUZZLES["easter_monster"])
    trace = search_trace(problem.board, problem.puzzle)
    assert None in trace  # the search went wrong somewhere and backtracked
    assert replay(problem, trace) == problem.solution
    wrong = next(
        s for s in legal_steps(problem.board, problem.puzzle) if problem.solution[s.row * 9 + s.col] != s.digit
    )
    dead_end = apply_step(problem.board, problem.puzzle, problem.puzzle, wrong)
    assert search_trace(problem.board, dead_end) is None
    assert solve(problem.board, dead_end) is None


def test_search_budget_is_enforced():
    board = shape(9)
    assert count_solutions(board, bytes(81), limit=10) == 10
    with pytest.raises(SearchBudgetExceeded):
        count_solutions(board, bytes(81), limit=10**6, max_nodes=50)


def test_counters_agree_on_grids_with_zero_one_or_many_solutions():
    rng = np.random.default_rng(0)
    counts = set()
    for size in (4, 6):
        config = SudokuConfig(size=size)
        for i in range(40):
            grid = bytearray(generate(config, i).puzzle)
            # Blank or overwrite a few cells: some grids get more solutions, some none.
            for cell in rng.choice(size * size, size=2, replace=False):
                grid[cell] = 0 if rng.random() < 0.7 else int(rng.integers(1, size + 1))
            count = count_solutions(shape(size), bytes(grid), limit=3)
            assert count == exact_cover_count(size, bytes(grid), limit=3)
            counts.add(count)
    assert counts == {0, 1, 2, 3}


# --- generation and grading ------------------------------------------------


@pytest.mark.parametrize(
    ("size", "difficulty", "count"),
    [(4, "any", 200), (6, "any", 60), (6, "search", 10), (9, "any", 15), (9, "singles", 5), (9, "search", 10)],
)
def test_every_generated_puzzle_has_exactly_one_solution(size, difficulty, count):
    config = SudokuConfig(size=size, difficulty=difficulty)
    for i in range(count):
        problem = generate(config, i)
        assert exact_cover_count(size, problem.puzzle) == 1
        assert all(g in (0, s) for g, s in zip(problem.puzzle, problem.solution, strict=True))
        assert check_grid(problem, render(size, problem.solution)) is None


def test_grader_labels_are_monotone_with_guesses():
    grades = []
    for size, difficulty, count in [(9, "any", 30), (9, "advanced", 5), (9, "search", 10), (6, "any", 30)]:
        config = SudokuConfig(size=size, difficulty=difficulty, seed=1)
        for i in range(count):
            problem = generate(config, i)
            found = grade(problem.board, problem.puzzle)
            grades.append((found, oracle_guesses(size, problem.puzzle)))
            assert difficulty == "any" or found.level == difficulty
    assert {g.level for g, _ in grades} == set(LEVELS)
    # The grader's own search: levels in order need 0, 0 and then at least 1 guess.
    by_rank = sorted(grades, key=lambda pair: (pair[0].rank, pair[0].guesses))
    assert [g.guesses for g, _ in by_rank] == sorted(g.guesses for g, _ in grades)
    for found, oracle in grades:
        assert (found.guesses > 0) == (found.level == "search")
        # The oracle propagates singles only: it guesses exactly when singles do not suffice.
        assert (oracle > 0) == (found.level != "singles")


def test_guess_bounds_are_met():
    config = SudokuConfig(size=9, min_guesses=3, seed=2)
    for i in range(4):
        problem = generate(config, i)
        assert grade(problem.board, problem.puzzle).guesses >= 3
    capped = SudokuConfig(size=9, max_guesses=0, seed=2)
    for i in range(4):
        problem = generate(capped, i)
        assert grade(problem.board, problem.puzzle).level != "search"


def test_clue_bounds():
    config = SudokuConfig(size=9, min_clues=30, max_clues=30, difficulty="singles")
    for i in range(5):
        assert sum(1 for d in generate(config, i).puzzle if d) == 30
    minimal = generate(SudokuConfig(size=4), 0)
    for cell, digit in enumerate(minimal.puzzle):
        if digit:
            fewer = minimal.puzzle[:cell] + b"\0" + minimal.puzzle[cell + 1 :]
            assert count_solutions(minimal.board, fewer) == 2
    with pytest.raises(RuntimeError, match="relax"):
        generate(SudokuConfig(size=9, max_clues=17, max_attempts=3), 0)


def test_generation_is_deterministic_and_splits_are_held_out():
    config = SudokuConfig(size=6, seed=3)
    items = [generate(config, i) for i in range(10)]
    assert items == [generate(config, i) for i in range(10)]
    assert generate(config, 5) != generate(SudokuConfig(size=6, seed=4), 5)
    # seed + index derivation would make seed 1 item 0 equal seed 0 item 1.
    assert generate(SudokuConfig(size=6, seed=1), 0) != generate(SudokuConfig(size=6, seed=0), 1)
    train = {generate(SudokuConfig(size=4), i).solution for i in range(200)}
    test = {generate(SudokuConfig(size=4), i, "test").solution for i in range(100)}
    assert not train & test
    assert {grid_split(grid, 0.1) for grid in test} == {"test"}
    both = SudokuConfig(size=4, held_out_fraction=0.0)
    assert generate(both, 0, "train") != generate(both, 0, "test")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"size": 5}, "size"),
        ({"difficulty": "hard"}, "difficulty"),
        ({"size": 4, "difficulty": "search"}, "solved by singles"),
        ({"size": 4, "min_guesses": 1}, "solved by singles"),
        ({"difficulty": "singles", "min_guesses": 2}, "needs no guesses"),
        ({"min_guesses": 3, "max_guesses": 2}, "below min_guesses"),
        ({"difficulty": "search", "max_guesses": 0}, "at least one guess"),
        ({"min_clues": 90}, "min_clues"),
        ({"min_clues": 30, "max_clues": 20}, "exceeds"),
        ({"held_out_fraction": 1.0}, "held_out_fraction"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"min_guesses": -1}, "non-negative"),
    ],
)
def test_config_rejects_impossible_settings(fields, message):
    with pytest.raises(ValueError, match=message):
        SudokuConfig(**fields).validate()


@pytest.mark.slow
def test_oracle_solves_1000_generated_9x9_puzzles_including_the_hardest():
    # 800 unconstrained, then each level, the hardest needing at least 2 guesses.
    settings = [("any", 0, 800), ("singles", 0, 100), ("advanced", 0, 50), ("search", 2, 50)]
    solved = 0
    for difficulty, min_guesses, count in settings:
        config = SudokuConfig(size=9, difficulty=difficulty, min_guesses=min_guesses, seed=7)
        for i in range(count):
            problem = generate(config, i)
            steps = solve(problem.board, problem.puzzle)
            solved += replay(problem, steps) == problem.solution
    assert solved == 1000
