"""The research trace format: the same searches as the research's code, and the env reads them.

The expected counts and lines are what KempnerInstitute/Backtrack's own code prints
(``countdown/src/countdown_dfs.py`` run as ``dfs(target, nums, heuristic, threshold=target)``,
as ``countdown_generate.py`` calls it; ``countdown.py`` ``convert_to_path`` of the first
solution ``CountDown.search`` finds).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import backtrack_gym  # noqa: F401  (registers the envs)
from backtrack_gym.agents.traces import write_trace
from backtrack_gym.agents.traces.countdown import bfs
from backtrack_gym.envs import BACKTRACK, make_task
from backtrack_gym.envs.core import play_completion
from backtrack_gym.envs.countdown import CountDownProblem
from backtrack_gym.envs.seeding import item_rng

TASK = make_task("countdown")
P24 = CountDownProblem((3, 5, 7, 8), 24)
P17 = CountDownProblem((15, 12, 35, 40), 17)


def research(problem, style="dfs", **options):
    options.setdefault("max_lines", None)  # the research writes a search to its end
    return write_trace(TASK, problem, style, trace_format="research", **options)


def env(**settings):
    settings = {"interaction": "completion", "backtrack": True, "max_steps": 4096, **settings}
    return gym.make("backtrack_gym/CountDown-v0", **settings).unwrapped


def explored(trace) -> int:
    return sum(line.startswith("Exploring Operation") for line in trace.lines)


def test_dfs_24_from_3_5_7_8_with_sum_is_the_researchs():
    trace = research(P24, heuristic_name="sum")
    assert explored(trace) == 35 and len(trace.lines) == 139 and trace.solved
    assert trace.lines[:10] == [
        "Current State: 24:[3, 5, 7, 8], Operations: []",
        "Exploring Operation: 3*8=24, Resulting Numbers: [5, 7, 24]",
        "Generated Node #0,0: 24:[5, 7, 24] Operation: 3*8=24",
        "Moving to Node #0,0",
        "Current State: 24:[5, 7, 24], Operations: ['3*8=24']",
        "Exploring Operation: 5*7=35, Resulting Numbers: [24, 35]",
        "Generated Node #0,0,0: 24:[24, 35] Operation: 5*7=35",
        "Moving to Node #0,0,0",
        "Current State: 24:[24, 35], Operations: ['3*8=24', '5*7=35']",
        "Exploring Operation: 35-24=11, Resulting Numbers: [11]",
    ]
    assert trace.lines[10:13] == ["11,24 unequal: No Solution", "Moving to Node #0,0", trace.lines[4]]
    assert trace.lines[-8:] == [
        "Moving to Node #0,1",
        "Current State: 24:[5, 8, 21], Operations: ['3*7=21']",
        "Exploring Operation: 8-5=3, Resulting Numbers: [21, 3]",
        "Generated Node #0,1,3: 24:[21, 3] Operation: 8-5=3",
        "Moving to Node #0,1,3",
        "Current State: 24:[21, 3], Operations: ['3*7=21', '8-5=3']",
        "Exploring Operation: 21+3=24, Resulting Numbers: [24]",
        "24,24 equal: Goal Reached",
    ]


def test_the_researchs_own_example_17_from_15_12_35_40():
    # countdown_dfs.py's __main__ example: 72 operations and no solution with sum...
    with_sum = research(P17, heuristic_name="sum")
    assert explored(with_sum) == 72 and len(with_sum.lines) == 287 and not with_sum.solved
    assert not any("Goal Reached" in line for line in with_sum.lines)
    # ...and with mult (17 is prime: every child is far from its one factor) everything is pruned.
    with_mult = research(P17, heuristic_name="mult")
    assert with_mult.lines == ["Current State: 17:[15, 12, 35, 40], Operations: []"]


def test_dfs_24_with_mult_is_the_researchs():
    trace = research(P24, heuristic_name="mult")
    assert explored(trace) == 207 and len(trace.lines) == 827 and trace.solved


def test_direct_is_convert_to_path_of_the_researchs_first_solution():
    assert research(P24, "direct").lines == [
        "Current State: 24:[3, 5, 7, 8], Operations: []",
        "Exploring Operation: 3*7=21, Resulting Numbers: [5, 8, 21]",
        "Generated Node #2: [5, 8, 21] from Operation: 3*7=21",
        "Current State: 24:[5, 8, 21], Operations: ['3*7=21']",
        "Exploring Operation: 8-5=3, Resulting Numbers: [21, 3]",
        "Generated Node #3: [21, 3] from Operation: 8-5=3",
        "Current State: 24:[21, 3], Operations: ['3*7=21', '8-5=3']",
        "Exploring Operation: 21+3=24, Resulting Numbers: [24]",
        "24,24 equal: Goal Reached",
    ]
    assert write_trace(TASK, P24, "direct").lines == ["3 * 7 = 21", "8 - 5 = 3", "21 + 3 = 24"]


def test_the_env_replays_a_research_trace_as_the_same_search():
    trace = research(P24, heuristic_name="sum")
    played = play_completion(env(), P24.to_dict(), trace.completion)
    info = played.info
    assert played.total == 1.0 and info["invalid_steps"] == 0
    # 35 steps tried; the 32 not on the solution undone by Moving to Node lines.
    assert info["valid_steps"] == 35 == trace.steps and info["backtracks"] == 32 == trace.backtracks
    # The budget counts the 35 steps and the 21 Moving to Node lines that return; the other
    # lines are no steps. The compact trace of the same search is 67 lines, one a step each.
    assert info["steps"] == 56
    compact = write_trace(TASK, P24, "dfs", heuristic_name="sum", max_lines=None)
    assert (compact.steps, compact.backtracks, len(compact.lines)) == (trace.steps, trace.backtracks, 67)


@pytest.mark.parametrize("style", ["dfs", "think"])
def test_both_formats_write_the_same_dfs(style):
    for index in range(60):
        problem = TASK.generate(index)
        traces = [
            write_trace(TASK, problem, style, rng=item_rng(0, "train", index, 1), trace_format=trace_format)
            for trace_format in ("compact", "research")
        ]
        if any(len(trace.lines) == 512 for trace in traces):
            continue  # the line budget ends them at different points
        compact, annotated = traces
        assert compact.steps == annotated.steps == explored(annotated)
        assert compact.backtracks == annotated.backtracks and compact.solved == annotated.solved
        assert sorted(compact.final_state) == sorted(annotated.final_state)


def test_bfs_moves_between_branches_by_current_state_lines():
    trace = bfs(TASK, P24, rng=np.random.default_rng(1), heuristic_name="sum", width=3, trace_format="research")
    played = play_completion(env(), P24.to_dict(), trace.completion)
    assert played.info["invalid_steps"] == 0 and played.info["solved"] == trace.solved
    # A move to another branch takes the steps down to it again.
    assert played.info["valid_steps"] == trace.steps > explored(trace)
    unsolved = bfs(TASK, P17, rng=np.random.default_rng(0), heuristic_name="mult", width=1, trace_format="research")
    assert not unsolved.solved and unsolved.lines[-1] == "No solution found."


LINES_AT_0_0_0 = [  # the first lines of the 24 trace: the episode is at node #0,0,0, [24, 35]
    "Current State: 24:[3, 5, 7, 8], Operations: []",
    "Exploring Operation: 3*8=24, Resulting Numbers: [5, 7, 24]",
    "Exploring Operation: 5*7=35, Resulting Numbers: [24, 35]",
]


@pytest.mark.parametrize(
    ("line", "kind", "reason"),
    [
        ("Exploring Operation: 35-24=11, Resulting Numbers: [12]", "illegal", "wrong Resulting Numbers"),
        ("Exploring Operation: 35-24=11, Resulting Numbers: [3, 5, 7, 11]", "illegal", "lists 4 numbers"),
        ("Exploring Operation: 35-24=11, Resulting Numbers: [3, 7, 11]", "illegal", "from the node [3, 5, 7, 8]"),
        ("Exploring Operation: 35-5=30, Resulting Numbers: [30]", "illegal", "5 is not an available number"),
        ("Exploring Operation: 35-24=11, Resulting Numbers: 11", "malformed", "Exploring Operation line"),
        ("Current State: 24:[24, 36], Operations: ['3*8=24', '5*7=35']", "illegal", "leave [24, 35]"),
        ("Current State: 25:[24, 35], Operations: ['3*8=24', '5*7=35']", "illegal", "the target is 24"),
        ("Current State: 24:[24, 35], Operations: ['3*8=24', '5*8=40']", "illegal", "8 is not an available"),
        ("Current State: 24:[24, 35], Operations: [3*8=24]", "malformed", "quoted steps"),
        ("Generated Node #0,0,0: 24:[24, 34] Operation: 5*7=35", "illegal", "numbers are [24, 35]"),
        ("Generated Node #0,0,0: 24:[24, 35] Operation: 5+7=12", "illegal", "not the step"),
        ("Moving to Node #1,0", "malformed", "#0 is the start"),
        ("59,24 unequal: No Solution", "illegal", "not a single number"),
        ("24,24 equal: Goal Reached", "illegal", "the goal is not reached"),
    ],
)
def test_a_line_that_contradicts_the_state_is_invalid_with_a_reason(line, kind, reason):
    played = play_completion(env(), P24.to_dict(), "\n".join([*LINES_AT_0_0_0, line]))
    info = played.info
    assert info[f"{kind}_steps"] == 1 and info["invalid_steps"] == 1, info["invalid_lines"]
    assert reason in info["invalid_lines"][0]["reason"]
    assert info["state"] == ["24", "35"]  # an invalid line changes nothing


def test_moving_to_an_ancestor_is_a_backtrack_and_to_the_current_node_no_step():
    game = env(max_steps=8)
    lines = [*LINES_AT_0_0_0, "Generated Node #0,0,0: 24:[24, 35] Operation: 5*7=35", "Moving to Node #0,0,0"]
    played = play_completion(game, P24.to_dict(), "\n".join(lines))
    assert (played.info["steps"], played.info["backtracks"], played.info["state"]) == (2, 0, ["24", "35"])
    played = play_completion(game, P24.to_dict(), "\n".join([*lines, "Moving to Node #0", "No solution found."]))
    assert (played.info["steps"], played.info["backtracks"], played.info["state"]) == (3, 2, ["3", "5", "7", "8"])
    # A Current State line names a node by its operations and goes there.
    elsewhere = "Current State: 24:[7, 8, 8], Operations: ['3+5=8']"
    played = play_completion(game, P24.to_dict(), "\n".join([*lines, elsewhere]))
    assert (played.info["valid_steps"], played.info["backtracks"], played.info["state"]) == (3, 2, ["7", "8", "8"])
    # Going back is backtracking, which an env without it refuses.
    played = play_completion(env(backtrack=False), P24.to_dict(), "\n".join([*lines, "Moving to Node #0,0"]))
    assert played.info["illegal_steps"] == 1 and played.info["last_reason"] == "backtracking is off in this env"


def test_a_sibling_explored_after_another_returns_to_their_parent():
    lines = [LINES_AT_0_0_0[0], "Exploring Operation: 3*8=24, Resulting Numbers: [5, 7, 24]"]
    sibling = "Exploring Operation: 3*7=21, Resulting Numbers: [5, 8, 21]"
    played = play_completion(env(), P24.to_dict(), "\n".join([*lines, sibling]))
    assert (played.info["valid_steps"], played.info["backtracks"], played.info["state"]) == (2, 1, ["5", "8", "21"])


def test_research_traces_score_alike_in_both_modes():
    weights = {"correct": 1.0, "length": 0.01, "backtrack": 0.02, "format": 0.5, "validity": 0.5}
    trace = research(P24, heuristic_name="sum")
    completion = trace.completion.replace("Resulting Numbers: [26]", "Resulting Numbers: [25]", 1)
    whole, stepped = (
        play_completion(env(interaction=mode, reward_weights=weights), P24.to_dict(), completion)
        for mode in ("completion", "step")
    )
    assert whole.info["solved"] and whole.info["illegal_steps"] > 0
    counts = ("steps", "valid_steps", "illegal_steps", "malformed_steps", "backtracks")
    assert {key: whole.info[key] for key in counts} == {key: stepped.info[key] for key in counts}
    assert whole.total == pytest.approx(stepped.total)


def test_self_backtracking_in_the_research_format_masks_every_line_of_the_wrong_step():
    for index in range(40):
        problem = TASK.generate(index)
        trace = write_trace(
            TASK, problem, "self_backtrack", rng=item_rng(0, "train", index, 1), trace_format="research"
        )
        if not trace.masked:
            continue
        backtrack = trace.lines.index(BACKTRACK)
        assert trace.masked == list(range(trace.masked[0], backtrack))
        assert trace.lines[trace.masked[0]].startswith("Exploring Operation")
        played = play_completion(env(), problem.to_dict(), trace.completion)
        assert played.info["invalid_steps"] == 0 and played.info["backtracks"] == trace.backtracks


def test_write_trace_checks_its_format_and_heuristic():
    with pytest.raises(ValueError, match="trace_format must be one of"):
        write_trace(TASK, P24, "dfs", trace_format="verbose")
    with pytest.raises(ValueError, match="heuristic_name must be one of"):
        write_trace(TASK, P24, "bfs", heuristic_name="max")
    math = make_task("math")
    with pytest.raises(ValueError, match="trace_format must be 'compact' for math"):
        write_trace(math, math.generate(0), "direct", trace_format="research")
    with pytest.raises(ValueError, match="heuristic_name must be None for math"):
        write_trace(math, math.generate(0), "direct", heuristic_name="sum")
    with pytest.raises(ValueError, match="width must be one of"):
        bfs(TASK, P24, rng=np.random.default_rng(0), width=0)
