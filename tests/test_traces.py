import gymnasium as gym
import numpy as np
import pytest

import backtrack_gym  # noqa: F401
from backtrack_gym.agents.traces import styles_for, write_trace
from backtrack_gym.agents.traces.countdown import TRACE_FORMATS, bfs, dfs, mult_heuristic, sum_heuristic
from backtrack_gym.envs import BACKTRACK, TASK_ENV_IDS, make_task
from backtrack_gym.envs.countdown import CountDownProblem, parse_step, solve
from backtrack_gym.envs.countdown.rules import is_solvable
from backtrack_gym.envs.seeding import item_rng

TASK = make_task("countdown")


def replay(task_id, problem_dict, completion):
    env = gym.make(task_id, interaction="completion", backtrack=True, max_steps=2048).unwrapped
    env.reset(options={"problem": problem_dict})
    _, reward, terminated, _, info = env.step(completion)
    return env.episode.state, reward, info


CASES = [
    (name, style, trace_format)
    for name, formats in (("countdown", TRACE_FORMATS), ("math", ("compact",)))
    for style in sorted(styles_for(make_task(name)))
    for trace_format in formats
]


@pytest.mark.slow
@pytest.mark.parametrize(("task_name", "style", "trace_format"), CASES)
def test_every_trace_replays_to_the_oracle_state(task_name, style, trace_format):
    task = make_task(task_name)
    for index in range(1000):
        problem = task.generate(index)
        trace = write_trace(task, problem, style, rng=item_rng(0, "train", index, 1), trace_format=trace_format)
        state, reward, info = replay(TASK_ENV_IDS[task_name], task.problem_to_dict(problem), trace.completion)
        assert state == trace.final_state, (style, index)
        assert info["solved"] == trace.solved and reward == (1.0 if trace.solved else 0.0)
        assert info["invalid_steps"] == 0 and info["backtracks"] == trace.backtracks
        assert info["valid_steps"] == trace.steps


def test_direct_is_a_solution_using_every_number():
    for index in range(50):
        problem = TASK.generate(index)
        trace = write_trace(TASK, problem, "direct")
        assert trace.solved and trace.backtracks == 0
        assert len(trace.lines) == len(problem.numbers) - 1 == len(solve(TASK.rules, problem.numbers, problem.target))


def test_heuristics_are_the_researchs():
    # countdown_utils.py: sum_heuristic is the mean distance to the target...
    assert sum_heuristic((20, 30), 24) == 5.0
    # ...and mult_heuristic the sum of the distances to the nearest factor of the target in 2..target:
    # 24's are 2 3 4 6 8 12 24, so 7 is 1 from 6 or 8 and 25 is 1 from 24.
    assert mult_heuristic((7, 25), 24) == 2
    assert mult_heuristic((7, 25, 12), 24) == 2


def test_dfs_orders_children_by_heuristic_and_prunes():
    problem = CountDownProblem((3, 5, 9), 58)
    first = dfs(TASK, problem, heuristic_name="sum", threshold=float("inf")).lines[0]
    # 5 * 9 = 45 leaves (3, 45): mean distance 34, the lowest of all children.
    assert first == "5 * 9 = 45"
    # A zero threshold prunes every child that does not reach the goal at once...
    pruned = dfs(TASK, problem, heuristic_name="sum", threshold=0.0)
    assert pruned.lines == [] and not pruned.solved
    # ...but not the goal itself, which scores 0.
    assert dfs(TASK, CountDownProblem((2, 3), 6), heuristic_name="sum", threshold=0.0).lines == ["2 * 3 = 6"]


def test_dfs_writes_backtracks_out_of_dead_ends():
    trace = dfs(TASK, CountDownProblem((50, 21, 78, 12), 61), heuristic_name="sum")
    assert trace.solved and trace.backtracks > 0
    assert trace.lines.count(BACKTRACK) == trace.backtracks
    assert trace.lines[-2:] == ["78 - 50 = 28", "33 + 28 = 61"]
    # Without a solution the search ends at its last dead end, every other step undone.
    hopeless = CountDownProblem((3, 5, 9), 58)
    assert solve(TASK.rules, hopeless.numbers, hopeless.target) is None
    trace = dfs(TASK, hopeless, heuristic_name="sum", threshold=float("inf"))
    assert not trace.solved and len(trace.final_state) == 1
    assert trace.steps - trace.backtracks == 2 == len(trace.lines) - 2 * trace.backtracks


def test_dfs_needs_a_heuristic_or_a_generator_to_draw_one():
    problem = CountDownProblem((3, 5, 9), 58)
    with pytest.raises(ValueError, match="heuristic_name"):
        dfs(TASK, problem)
    with pytest.raises(ValueError, match="heuristic_name must be one of"):
        dfs(TASK, problem, heuristic_name="product")
    drawn = {tuple(dfs(TASK, problem, rng=np.random.default_rng(seed)).lines) for seed in range(8)}
    named = {tuple(dfs(TASK, problem, heuristic_name=name).lines) for name in ("sum", "mult")}
    assert drawn == named


def test_think_leaves_failed_last_operations_implicit():
    for index in range(200):
        problem = TASK.generate(index)
        full, pruned = dfs(TASK, problem, heuristic_name="sum"), dfs(TASK, problem, heuristic_name="sum", think=True)
        assert pruned.solved == full.solved or not full.solved
        assert len(pruned.lines) <= len(full.lines)
        state = [problem.numbers]
        for line in pruned.lines:
            if line == BACKTRACK:
                state.pop()
                continue
            state.append(TASK.apply(problem, state[-1], parse_step(line)))
            if len(state[-1]) == 1:
                assert state[-1] == (problem.target,), "a failed last operation was written"


def test_bfs_width_bounds_and_moves_between_branches():
    problem = TASK.generate(3)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="width"):
        bfs(TASK, problem, rng=rng, width=6)
    wide = bfs(TASK, problem, rng=rng, heuristic_name="sum", width=5)
    assert wide.backtracks > 0
    # A move to another branch goes back to the common ancestor and takes its steps again.
    replayed = [line for line in wide.lines if line != BACKTRACK]
    assert len(replayed) > len(set(replayed))


def test_mix_is_seeded_and_varies():
    problem = TASK.generate(0)
    first = write_trace(TASK, problem, "mix", rng=np.random.default_rng(5))
    assert first.lines == write_trace(TASK, problem, "mix", rng=np.random.default_rng(5)).lines
    shapes = {len(write_trace(TASK, problem, "mix", rng=np.random.default_rng(seed)).lines) for seed in range(20)}
    assert len(shapes) > 1


def test_self_backtrack_wrong_step_rate_mixes_in_plain_solutions():
    def backtracks(rate: float) -> list[int]:
        return [
            write_trace(
                TASK, TASK.generate(i), "self_backtrack", rng=item_rng(0, "train", i, 1), wrong_step_rate=rate
            ).lines.count(BACKTRACK)
            for i in range(60)
        ]

    assert set(backtracks(0.0)) == {0}
    half = backtracks(0.5)
    assert set(half) == {0, 1} and 15 <= sum(half) <= 45
    # the default is the half: one back example per optimal path
    default = [write_trace(TASK, TASK.generate(i), "self_backtrack", rng=item_rng(0, "train", i, 1)) for i in range(60)]
    assert [trace.lines.count(BACKTRACK) for trace in default] == half
    with pytest.raises(ValueError, match="wrong_step_rate"):
        write_trace(TASK, TASK.generate(0), "self_backtrack", wrong_step_rate=1.5)


# self_backtrack's earlier form: a wrong step in every trace, and the solution after the backtrack
# (the paper's form, back examples that end at the backtrack, is tested in test_data.py)
CONTINUED = {"wrong_step_rate": 1.0, "example_form": "continued"}


def test_self_backtrack_masks_exactly_the_wrong_step():
    for index in range(200):
        problem = TASK.generate(index)
        trace = write_trace(TASK, problem, "self_backtrack", rng=item_rng(0, "train", index, 1), **CONTINUED)
        assert trace.solved
        (start, end), *rest = trace.mask_spans()
        assert not rest
        masked_text = trace.completion[start:end]
        (position,) = trace.masked
        assert masked_text == trace.lines[position] + "\n"
        assert trace.lines[position + 1] == BACKTRACK
        # The masked step is legal, and after it the target is out of reach: verified wrong.
        state = problem.numbers
        for line in trace.lines[:position]:
            state = TASK.apply(problem, state, parse_step(line))
        after = TASK.apply(problem, state, parse_step(trace.lines[position]))
        assert isinstance(after, tuple) and not is_solvable(TASK.rules, after, problem.target)
        # Unmasked, the rest is a solution.
        kept = trace.completion[:start] + trace.completion[end:]
        assert BACKTRACK in kept


def test_unknown_style_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown style"):
        write_trace(TASK, TASK.generate(0), "astar")


def test_math_traces_follow_the_reference_and_mask_a_wrong_operation():
    task = make_task("math")
    for index in range(100):
        problem = task.generate(index)
        direct = write_trace(task, problem, "direct")
        assert direct.lines == list(problem.solution) and direct.solved
        trace = write_trace(task, problem, "self_backtrack", rng=item_rng(0, "train", index, 1), **CONTINUED)
        (start, end), *rest = trace.mask_spans()
        assert not rest and trace.solved
        (position,) = trace.masked
        wrong = trace.completion[start:end].rstrip("\n")
        assert wrong == trace.lines[position] and trace.lines[position + 1] == BACKTRACK
        # Unmasked, the trace is the reference solution.
        kept = trace.lines[:position] + trace.lines[position + 2 :]
        assert kept == list(problem.solution)
        right = trace.lines[position + 2]
        assert wrong.split("=")[1].strip() != right.split("=")[1].strip()


def test_math_backtrack_phrase():
    task = make_task("math")
    problem = task.generate(7)
    phrase = "Wait, that's not right."
    trace = write_trace(
        task, problem, "self_backtrack", rng=np.random.default_rng(0), backtrack_token=phrase, **CONTINUED
    )
    assert phrase in trace.lines
    env = gym.make("backtrack_gym/Math-v0", interaction="completion", backtrack=True, backtrack_token=phrase).unwrapped
    env.reset(options={"problem": problem.to_dict()})
    _, reward, _, _, info = env.step(trace.completion)
    assert reward == 1.0 and info["backtracks"] == 1 and env.episode.state == trace.final_state
