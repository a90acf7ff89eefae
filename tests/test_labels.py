"""Dead-end labels: ``solvable`` against brute force written here, the step labels, and the episode's counts."""

from __future__ import annotations

from fractions import Fraction
from functools import cache

import gymnasium as gym
import numpy as np
import pytest

import backtrack_gym  # noqa: F401  (registers the envs)
from backtrack_gym.envs import BACKTRACK, Episode, make_task
from backtrack_gym.envs.core import TextEnv, play_completion
from backtrack_gym.envs.countdown.rules import solvable_within

# --- CountDown -------------------------------------------------------------------------


@cache
def countdown_reaches(numbers: tuple[int, ...], target: int, use_all: bool) -> bool:
    """Brute force: try every ordered pair and operation (results non-negative integers)."""
    if (numbers == (target,)) if use_all else target in numbers:
        return True
    for i, a in enumerate(numbers):
        for j, b in enumerate(numbers):
            if i == j:
                continue
            rest = [n for k, n in enumerate(numbers) if k not in (i, j)]
            results = [a + b, a * b, a - b]
            if b and a % b == 0:
                results.append(a // b)
            for value in results:
                if value >= 0 and countdown_reaches(tuple(sorted([*rest, value])), target, use_all):
                    return True
    return False


def random_states(task, problems, count: int, rng: np.random.Generator, max_depth: int) -> list[tuple]:
    """``count`` (problem, state) pairs, each reached by 0 to ``max_depth`` random legal steps."""
    states = []
    while len(states) < count:
        problem = problems[int(rng.integers(len(problems)))]
        state = task.initial_state(problem)
        for _ in range(int(rng.integers(0, max_depth + 1))):
            legal = task.legal_steps(problem, state)
            if not legal or task.is_solved(problem, state):
                break
            state = task.apply(problem, state, legal[int(rng.integers(len(legal)))])
        states.append((problem, state))
    return states


@pytest.mark.parametrize(
    ("config", "count"),
    [({}, 2000), ({"num_count": 3, "number_min": 1, "number_max": 9, "target_min": 10, "target_max": 100}, 500)],
    ids=["research-4", "main-3"],
)
def test_countdown_solvable_is_brute_force(config, count):
    task = make_task("countdown", **config)
    rng = np.random.default_rng(0)
    problems = [task.generate(index) for index in range(200)]
    states = random_states(task, problems, count, rng, max_depth=task.config.num_count - 1)
    labels = [task.solvable(problem, state) for problem, state in states]
    assert None not in labels  # four numbers never reach the default cap
    truth = [countdown_reaches(tuple(sorted(state)), problem.target, True) for problem, state in states]
    assert labels == truth
    # Both labels are common, so agreeing is no accident.
    assert 0.1 < sum(truth) / len(truth) < 0.9


def test_countdown_solvable_without_using_all_numbers():
    task = make_task("countdown", use_all_numbers=False)
    rng = np.random.default_rng(1)
    states = random_states(task, [task.generate(index) for index in range(100)], 300, rng, max_depth=3)
    truth = [countdown_reaches(tuple(sorted(state)), problem.target, False) for problem, state in states]
    assert [task.solvable(problem, state) for problem, state in states] == truth


def test_countdown_node_cap_gives_none_never_a_wrong_label():
    task = make_task("countdown", num_count=6, number_max=30, target_max=200)
    rules = task.rules
    rng = np.random.default_rng(2)
    # Generated problems (solvable, found fast) and ones with a target out of reach (a full search).
    problems = [task.generate(index) for index in range(10)]
    problems += [task.coerce_problem({"numbers": [2, 3, 5, 7, 11, 13], "target": t}) for t in (99991, 77773)]
    labels = []
    for problem, state in random_states(task, problems, 40, rng, max_depth=1):
        capped = solvable_within(rules, state, problem.target, max_nodes=5)
        exact = solvable_within(rules, state, problem.target, max_nodes=10**9)
        assert exact is not None and capped in (None, exact)
        if len(state) == 5:
            assert exact == countdown_reaches(tuple(sorted(state)), problem.target, True)
        labels.append(capped)
    assert None in labels and True in labels  # the cap is hit on the full searches only
    # The episode counts the states it could not label, and labels no event for them.
    task.label_max_nodes = 1
    episode = Episode(task, task.generate(0), labels=True)
    assert episode.record.current is None and episode.stats.unlabelled_states == 1


def test_countdown_fractions_and_negatives_are_labelled_exactly():
    task = make_task("countdown", num_count=3, allow_negative=True, allow_fractions=True)
    problem = task.coerce_problem({"numbers": [3, 8, 8], "target": 24})
    assert task.solvable(problem, (Fraction(8, 3), 3, 3)) is True  # 8/3 * 3 * 3 = 24
    assert task.solvable(problem, (-5, 8)) is False


# --- Sudoku ----------------------------------------------------------------------------


def sudoku_completes(grid: list[int], size: int, box: tuple[int, int]) -> bool:
    """Brute force: fill the blank cell with fewest candidates with each candidate in turn."""
    rows = [set(grid[r * size : (r + 1) * size]) for r in range(size)]
    cols = [set(grid[c::size]) for c in range(size)]
    boxes: dict[tuple[int, int], set[int]] = {}
    for cell, digit in enumerate(grid):
        boxes.setdefault((cell // size // box[0], cell % size // box[1]), set()).add(digit)
    best, best_digits = -1, None
    for cell, digit in enumerate(grid):
        if digit:
            continue
        row, col = divmod(cell, size)
        digits = set(range(1, size + 1)) - rows[row] - cols[col] - boxes[(row // box[0], col // box[1])]
        if best_digits is None or len(digits) < len(best_digits):
            best, best_digits = cell, digits
    if best_digits is None:
        return True
    for digit in best_digits:
        grid[best] = digit
        found = sudoku_completes(grid, size, box)
        grid[best] = 0
        if found:
            return True
    return False


@pytest.mark.parametrize(("size", "count"), [(9, 500), (4, 200)])
def test_sudoku_solvable_is_brute_force(size, count):
    task = make_task("sudoku", size=size)
    rng = np.random.default_rng(3)
    problems = [task.generate(index) for index in range(25)]
    # Random legal placements: mostly wrong digits after the first few, so both labels are common.
    states = random_states(task, problems, count, rng, max_depth=6)
    box = (task.board.box_rows, task.board.box_cols)
    labels = [task.solvable(problem, state) for problem, state in states]
    assert None not in labels
    truth = [sudoku_completes(list(state), size, box) for _, state in states]
    assert labels == truth
    assert 0.1 < sum(truth) / len(truth) < 0.9


# --- Math ------------------------------------------------------------------------------


def test_math_is_solvable_until_a_wrong_answer():
    env = gym.make("backtrack_gym/Math-v0", backtrack=True, math_verify=False).unwrapped
    _, info = env.reset(options={"problem": {"question": "Tom has 3 boxes of 4 pens. How many pens?", "answer": "12"}})
    assert info["solvable"] is True
    seen = []
    for line in ["3 * 5 = 15", "Answer: 15", BACKTRACK, "3 * 4 = 12", "Answer: 12"]:
        *_, info = env.step(line)
        seen.append((info["solvable"], info["entered_dead_end"], info["left_dead_end"]))
    # A right line that leads nowhere is no dead end: the answer can still be written; a wrong answer is one.
    assert seen == [(True, False, False), (False, True, False), (True, False, True), (True, False, False)] + [
        (True, False, False)
    ]
    assert info["solved"] and info["dead_end_steps"] == 1 and info["backtrack_precision"] == 1.0


# --- Step labels and the episode's counts ----------------------------------------------

PROBLEM = {"numbers": [3, 4, 9], "target": 24}  # 9 - 3 = 6, 6 * 4 = 24; 9 + 3 = 12 is a dead end


def countdown_env(**kwargs) -> TextEnv:
    return gym.make("backtrack_gym/CountDown-v0", backtrack=True, **kwargs).unwrapped


def test_step_labels_of_a_search():
    env = countdown_env()
    env.reset(options={"problem": PROBLEM})
    lines = {
        "9 + 3 = 12": (False, True, False, False),  # into a dead end
        "12 * 4 = 48": (False, False, False, False),  # deeper in it: a step in a dead end, no new entry
        BACKTRACK: (False, False, False, False),  # back to 12 4: still a dead end
        "hello": (False, False, False, False),  # malformed: nothing happens
    }
    for line, expected in lines.items():
        *_, info = env.step(line)
        got = (info["solvable"], info["entered_dead_end"], info["left_dead_end"], info["backtracked_from_solvable"])
        assert got == expected, line
    for line, expected in [
        (BACKTRACK, (True, False, True, False)),  # out of it
        ("9 - 3 = 6", (True, False, False, False)),
        (BACKTRACK, (True, False, False, True)),  # needless: 6 4 reaches 24
        ("9 - 3 = 6", (True, False, False, False)),  # the same state again: a revisit
        ("6 * 4 = 24", (True, False, False, False)),
    ]:
        *_, info = env.step(line)
        got = (info["solvable"], info["entered_dead_end"], info["left_dead_end"], info["backtracked_from_solvable"])
        assert got == expected, line
    assert info["solved"]
    assert {key: info[key] for key in ("dead_end_steps", "dead_ends_entered", "dead_ends_left")} == {
        "dead_end_steps": 2,
        "dead_ends_entered": 1,
        "dead_ends_left": 1,
    }
    assert info["backtracks"] == 3 and info["backtracks_from_solvable"] == 1
    assert info["backtrack_precision"] == pytest.approx(1 / 3) and info["dead_ends_never_left"] == 0
    # States: start, 12 4, 48, 6 4, 6 4 again, 24; the start branched to 12 4 and 6 4.
    assert (info["states_visited"], info["distinct_states"], info["revisits"], info["deepest_depth"]) == (6, 5, 1, 2)
    # Backtrack points: 12 4 (one child, 48), then the start (two: 12 4 and 6 4).
    assert info["backtrack_branching"] == [1, 2] and info["mean_backtrack_branching"] == 1.5


def test_a_dead_end_never_left():
    env = countdown_env()
    env.reset(options={"problem": PROBLEM})
    for line in ["9 + 3 = 12", "12 + 4 = 16"]:
        *_, info = env.step(line)
    assert info["dead_ends_never_left"] == 1 and info["backtrack_precision"] is None
    assert info["solvable"] is False and not info["solved"]


def test_research_moves_are_labelled_like_backtracks():
    # One "Moving to Node" line that undoes two states of a dead end counts one dead end left.
    env = countdown_env(interaction="completion", max_steps=64)
    trace = "\n".join(
        [
            "Current State: 24:[3, 4, 9], Operations: []",
            "Exploring Operation: 9+3=12, Resulting Numbers: [4, 12]",
            "Exploring Operation: 12*4=48, Resulting Numbers: [48]",
            "Moving to Node #0",
            "Exploring Operation: 9-3=6, Resulting Numbers: [4, 6]",
            "Exploring Operation: 6*4=24, Resulting Numbers: [24]",
        ]
    )
    _, info = env.reset(options={"problem": PROBLEM})
    *_, info = env.step(trace)
    assert info["solved"] and info["backtracks"] == 2
    assert (info["dead_ends_entered"], info["dead_ends_left"], info["backtracks_from_solvable"]) == (1, 1, 0)
    assert info["backtrack_precision"] == 0.5 and info["dead_end_steps"] == 2


def test_labels_off():
    env = countdown_env(labels=False)
    env.reset(options={"problem": PROBLEM})
    *_, info = env.step("9 + 3 = 12")
    assert info["labels"] is False and info["solvable"] is None and not info["entered_dead_end"]
    assert info["dead_end_steps"] == 0 and info["states_visited"] == 2  # the search's shape is kept
    with pytest.raises(ValueError, match="reward_weights.*process.*labels=True"):
        countdown_env(labels=False, reward_weights={"correct": 1.0, "process": 0.1})


def test_process_reward_charges_mistakes_not_recoveries():
    weights = {"correct": 1.0, "process": 0.25}
    rewards = {}
    for interaction in ("step", "completion"):
        env = countdown_env(interaction=interaction, reward_weights=weights, invalid_policy="ignore")
        rewards[interaction] = [
            play_completion(env, PROBLEM, completion).total
            for completion in (
                "9 - 3 = 6\n6 * 4 = 24",
                "9 + 3 = 12\n<backtrack>\n9 - 3 = 6\n6 * 4 = 24",  # a mistake, left for free
                "9 - 3 = 6\n<backtrack>\n9 - 3 = 6\n6 * 4 = 24",  # a needless backtrack
                "9 + 3 = 12\n12 * 4 = 48",  # one mistake, however deep it goes
            )
        ]
    assert rewards["step"] == pytest.approx(rewards["completion"])
    assert rewards["step"] == pytest.approx([1.0, 0.75, 0.75, -0.25])


def test_math_labels_repeat_no_answer_check(monkeypatch):
    # math-verify spends the episode's time budget, so a label must not repeat the env's goal check.
    import backtrack_gym.envs.math.env as math_env

    calls = {True: 0, False: 0}
    real = math_env.answers_match
    for labels in calls:

        def counted(*args, labels=labels, **kwargs):
            calls[labels] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(math_env, "answers_match", counted)
        env = gym.make("backtrack_gym/Math-v0", backtrack=True, math_verify=False, labels=labels).unwrapped
        env.reset(options={"problem": {"question": "Half of x is 1. What is x over 3?", "answer": "\\frac{2}{3}"}})
        for line in ["Answer: \\frac{1}{3}", BACKTRACK, "Answer: \\frac{2}{3}"]:
            *_, info = env.step(line)
        assert info["solved"] and info["dead_ends_entered"] == (1 if labels else 0)
    assert calls[True] == calls[False] > 0


def test_a_forked_record_goes_on_as_the_replay_does():
    # An env fork carries the search record (through its snapshot data) and leaves the original alone.
    prefix = ["9 + 3 = 12", BACKTRACK, "9 - 3 = 6"]
    rest = [BACKTRACK, "9 + 3 = 12", BACKTRACK, "9 - 3 = 6", "6 * 4 = 24"]
    env, replay = countdown_env(), countdown_env()
    for each in (env, replay):
        each.reset(options={"problem": PROBLEM})
    for line in prefix:
        env.step(line)
    fork = env.fork()
    for line in prefix + rest:
        *_, replay_info = replay.step(line)
    before = env.snapshot()
    for line in rest:
        *_, info = fork.step(line)
    assert info == replay_info and info["solved"]
    assert fork.episode.record.backtrack_branching() == replay.episode.record.backtrack_branching() == [2]
    assert env.snapshot() == before and env.episode.record.backtrack_branching() == [2]  # the original is untouched
    assert len(env.episode.record.keys) == len(env.episode.states) == 2
    assert len(env.episode.record.seen) == 3 and len(fork.episode.record.seen) == 4  # 24 was reached by the fork only
