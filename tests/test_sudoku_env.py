"""The Sudoku envs: the text env contract, bad input, rewards, the structured view and its example."""

import importlib.util
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from bad_inputs import (
    NAMED_BAD_INPUTS,
    assert_defined_outcome,
    assert_ended_episode_raises,
    forbid_code_execution,
    no_code_execution,  # noqa: F401  (fixture)
)
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import backtrack_gym  # noqa: F401  (registers the envs)
from backtrack_gym.agents import OracleAgent, RandomAgent, info_at, play, summarize
from backtrack_gym.envs import BACKTRACK, make_task
from backtrack_gym.envs.sudoku import SudokuConfig, SudokuEnv, SudokuProblem, SudokuTask, generate, verify_grid
from backtrack_gym.envs.sudoku.structured import SudokuGridEnv
from backtrack_gym.rewards import replay_stats, sudoku_grid_reward, trl_reward_functions

ENV_ID = "backtrack_gym/Sudoku-v0"
GRID_ID = "backtrack_gym/SudokuGrid-v0"
PROBLEM = {"size": 4, "puzzle": "2.4....14......."}
SOLUTION = "2143\n3421\n4312\n1234"
# Every blank of PROBLEM filled with its solution digit, row by row.
SOLUTION_LINES = [
    f"r{cell // 4 + 1}c{cell % 4 + 1}={digit}"
    for cell, (given, digit) in enumerate(zip(PROBLEM["puzzle"], SOLUTION.replace("\n", ""), strict=True))
    if given == "."
]
# Arto Inkala's "world's hardest Sudoku": the oracle's search takes wrong turns on it.
INKALA = "8..........36......7..9.2...5...7.......457.....1...3...1....68..85...1..9....4.."
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sudoku_maskable_ppo.py"


def env4(**kwargs) -> SudokuEnv:
    env = SudokuEnv(size=4, **kwargs)
    env.reset(options={"problem": PROBLEM})
    return env


# --- env contract ----------------------------------------------------------


@pytest.mark.parametrize("interaction", ["step", "completion"])
@pytest.mark.parametrize("backtrack", [False, True])
@pytest.mark.parametrize("size", [4, 9])
def test_gymnasium_check_env(interaction, backtrack, size):
    env = gym.make(ENV_ID, size=size, interaction=interaction, backtrack=backtrack)
    check_env(env.unwrapped, skip_render_check=False)


def test_make_passes_config_fields():
    env = gym.make(ENV_ID, size=6, difficulty="singles", max_steps=5, render_mode="ansi")
    obs, info = env.reset(seed=0)
    assert info["problem"]["size"] == 6 and len(obs.split("\n")) == 6
    assert env.unwrapped.max_steps == 5 and env.observation_space.contains(obs)
    assert "[step 0/5" in env.render()
    assert gym.make(ENV_ID, size=4).unwrapped.max_steps == 64
    with pytest.raises(TypeError):
        gym.make(ENV_ID, no_such_field=1)
    with pytest.raises(ValueError, match="size"):
        gym.make(ENV_ID, size=5)
    assert isinstance(make_task("sudoku", size=6), SudokuTask)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_make_vec_runs_four_envs(mode):
    envs = gym.make_vec(ENV_ID, num_envs=4, vectorization_mode=mode, vector_kwargs={}, size=4)
    try:
        obs, infos = envs.reset(seed=0)
        assert len(set(obs)) > 1
        agent = OracleAgent(SudokuTask(SudokuConfig(size=4)))
        solved = np.zeros(4, dtype=bool)
        for _ in range(16):
            actions = [agent.act(obs[i], info_at(infos, i)) for i in range(4)]
            obs, rewards, terminated, truncated, infos = envs.step(actions)
            solved |= terminated
            if solved.all():
                break
        assert solved.all()
    finally:
        envs.close()


def test_reset_seed_is_deterministic():
    def episode(seed):
        env = gym.make(ENV_ID, size=4, backtrack=True)
        agent = RandomAgent.for_env(env, seed=1)
        obs, info = env.reset(seed=seed)
        trace, done = [obs], False
        while not done:
            obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
            trace.append((obs, reward))
            done = terminated or truncated
        return trace

    assert episode(7) == episode(7)
    assert episode(7)[0] != episode(8)[0]


def test_pinned_problem_and_index():
    env = SudokuEnv(size=4)
    problem = SudokuProblem.from_dict(PROBLEM)
    for pinned in (PROBLEM, problem, '{"size": 4, "puzzle": "2.4....14......."}'):
        obs, info = env.reset(options={"problem": pinned})
        assert obs == "2.4.\n...1\n4...\n...."
        assert info["problem"] == PROBLEM and info["state"] == PROBLEM["puzzle"]
    _, info = env.reset(options={"index": 12})
    assert info["problem"] == generate(SudokuConfig(size=4), 12).to_dict()
    for bad in ({"size": 4, "puzzle": "1..............."}, {"size": 9, "puzzle": "." * 81}, "{not json", 42):
        with pytest.raises(ValueError):
            env.reset(options={"problem": bad})


@pytest.mark.parametrize("problem", ["[1,2,3]", 5, "null", '"abc"', [1, 2, 3]])
def test_a_pinned_problem_that_is_not_an_object_is_a_value_error(problem):
    with pytest.raises(ValueError, match="a sudoku problem is a SudokuProblem, its dict or JSON object"):
        SudokuEnv(size=4).reset(options={"problem": problem})


def test_a_full_grid_is_solved_at_reset_and_a_value_error_everywhere():
    full = {"size": 4, "puzzle": SOLUTION.replace("\n", "")}
    for interaction in ("step", "completion"):
        with pytest.raises(ValueError, match="already solved at the start"):
            SudokuEnv(size=4, interaction=interaction).reset(options={"problem": full})
    (correct,) = trl_reward_functions(SudokuTask(SudokuConfig(size=4)), invalid_policy="ignore")
    with pytest.raises(ValueError, match="already solved at the start"):
        correct(completions=["r1c1=2"], problem=[full])


def test_placements_backtrack_round_trip_and_solve():
    env = env4(backtrack=True)
    obs, reward, terminated, _, info = env.step("r1c2=3")  # legal, but the solution has 1 there
    assert obs.startswith("234.") and info["last_valid"] and reward == 0.0
    obs, _, _, _, info = env.step(BACKTRACK)
    assert obs == "2.4.\n...1\n4...\n...." and info["backtracks"] == 1
    _, _, _, _, info = env.step(BACKTRACK)
    assert info["last_reason"] == "nothing to undo" and info["illegal_steps"] == 1
    for line in SOLUTION_LINES:
        obs, reward, terminated, truncated, info = env.step(line)
    assert terminated and info["solved"] and obs == SOLUTION and reward == 1.0


def test_illegal_placements_leave_the_state():
    env = env4()
    for line, reason in [
        ("r1c1=1", "r1c1 is a given"),
        ("r1c2=4", "4 is already in row 1"),
        ("r1c2=9", "digit 9 is not in 1..4"),
        ("1 + 1 = 2", "a step is"),
        (BACKTRACK, "backtracking is off in this env"),
    ]:
        obs, _, _, _, info = env.step(line)
        assert obs == "2.4.\n...1\n4...\n...." and reason in info["last_reason"]
    env.step("r1c2=1")
    _, _, _, _, info = env.step("r1c2=3")
    assert info["last_reason"] == "r1c2 is already filled"


def test_completion_mode_replays_with_backtracks_and_reports_lines():
    env = env4(interaction="completion", backtrack=True)
    text = "\n".join(["r1c2=3", "", BACKTRACK, "r1c2=4", *SOLUTION_LINES, "r1c1=1"])
    obs, reward, terminated, truncated, info = env.step(text)
    assert terminated and not truncated and info["solved"] and obs == SOLUTION
    assert reward == pytest.approx(1.0 - 0.1)
    assert info["backtracks"] == 1 and info["illegal_steps"] == 1
    assert info["invalid_lines"] == [{"line": 4, "text": "r1c2=4", "reason": "4 is already in row 1"}]
    assert_ended_episode_raises(env, "r1c1=1")


@pytest.mark.parametrize(
    ("policy", "expected_return", "terminated_early"),
    [("penalize", -0.1, False), ("ignore", 0.0, False), ("terminate", 0.0, True)],
)
def test_invalid_step_policies(policy, expected_return, terminated_early):
    env = env4(invalid_policy=policy)
    obs, reward, terminated, truncated, info = env.step("r1c1=2")
    assert reward == pytest.approx(expected_return)
    assert terminated == terminated_early and info["invalid_steps"] == 1
    assert obs == "2.4.\n...1\n4...\n...."


def test_max_steps_truncates():
    env = env4(max_steps=3, backtrack=True)
    results = [env.step(line) for line in ("r1c2=3", BACKTRACK, "r1c2=1")]
    assert results[-1][3] and not results[-1][2]
    assert_ended_episode_raises(env, BACKTRACK)


def test_step_before_reset_and_non_str_actions():
    env = SudokuEnv(size=4)
    assert_ended_episode_raises(env, "r1c1=1")
    env.reset(seed=0)
    with pytest.raises(TypeError):
        env.step(42)


# --- rewards ---------------------------------------------------------------


def test_progress_counts_correct_blanks_and_not_givens():
    weights = {"correct": 1.0, "progress": 1.0}
    env = env4(reward_weights=weights, backtrack=True)
    assert env.episode.stats.progress == 0.0  # the four givens earn nothing
    _, reward, _, _, info = env.step("r1c2=3")  # wrong digit
    assert reward == 0.0 and info["progress"] == 0.0
    env.step(BACKTRACK)
    _, reward, _, _, info = env.step(SOLUTION_LINES[0])
    assert reward == pytest.approx(1 / 12) and info["progress"] == pytest.approx(1 / 12)
    total = sum(env.step(line)[1] for line in SOLUTION_LINES[1:])
    assert total == pytest.approx(1.0 + 11 / 12)


def test_trl_reward_functions_on_right_and_wrong_completions():
    task = SudokuTask(SudokuConfig(size=4))
    correct, progress = trl_reward_functions(task, {"correct": 1.0, "progress": 1.0}, invalid_policy="ignore")
    assert correct.__name__ == "sudoku_correct" and progress.__name__ == "sudoku_progress"
    right = "\n".join(SOLUTION_LINES)
    half = "\n".join([*SOLUTION_LINES[:6], "r4c4=3"])
    completions = [right, half, [{"role": "assistant", "content": right}], "2143\n3421\n4312\n1234"]
    problems = [PROBLEM, PROBLEM, PROBLEM, '{"size": 4, "puzzle": "2.4....14......."}']
    assert correct(prompts=None, completions=completions, problem=problems) == [1.0, 0.0, 1.0, 0.0]
    assert progress(prompts=None, completions=completions, problem=problems) == pytest.approx([1.0, 0.5, 1.0, 0.0])
    stats = replay_stats(task, PROBLEM, "r1c2=1\n<backtrack>\nr1c2=1")
    assert stats.backtracks == 1 and stats.valid == 2


def test_grid_answer_reward_with_and_without_partial_credit():
    correct, partial = sudoku_grid_reward(), sudoku_grid_reward(partial_credit=True)
    # Givens copied and the first row completed: 2 of the 12 blanks right.
    half = "2143\n...1\n4...\n...."
    completions = [
        f"Thinking...\n{SOLUTION}\n",
        "2143342143121234",
        half,
        SOLUTION.replace("2143", "2341"),
        "no grid here",
        "9" * 1_000_000,
    ]
    problems = [PROBLEM] * len(completions)
    assert correct(prompts=None, completions=completions, problem=problems) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert partial(prompts=None, completions=completions, problem=problems) == pytest.approx(
        [1.0, 1.0, 2 / 12, 10 / 12, 0.0, 0.0]
    )
    copied = partial(prompts=None, completions=["2.4.\n...1\n4...\n...."], problem=[PROBLEM])
    assert copied == [0.0]
    with pytest.raises(KeyError):
        correct(prompts=None, completions=[SOLUTION])


def test_grid_reward_needs_the_givens():
    problem = {"size": 4, "puzzle": "....4.3.21......"}
    solution = "1324423121433412"
    wrong_givens = "1324121111433412"  # every blank right, the givens overwritten
    blanked_givens = "1324.2.1..433412"
    correct, partial = sudoku_grid_reward(), sudoku_grid_reward(partial_credit=True)
    completions = [solution, wrong_givens, blanked_givens]
    assert correct(completions=completions, problem=[problem] * 3) == [1.0, 0.0, 0.0]
    assert partial(completions=completions, problem=[problem] * 3) == [1.0, 0.0, 0.0]


def test_grid_reward_agrees_with_check_grid_on_random_grids():
    rng = np.random.default_rng(0)
    problem = SudokuProblem.from_dict(PROBLEM)
    correct = sudoku_grid_reward()
    grids = []
    for _ in range(500):
        cells = list(problem.solution)
        for cell in rng.choice(16, size=int(rng.integers(0, 3)), replace=False):
            cells[cell] = int(rng.integers(0, 5))  # a digit, or 0 for a blank
        grids.append("".join(str(d) if d else "." for d in cells))
    rewards = correct(completions=grids, problem=[PROBLEM] * len(grids))
    assert rewards == [float(verify_grid(problem, grid)) for grid in grids]
    assert 0 < sum(rewards) < len(grids)


# --- agents and traces -----------------------------------------------------


@pytest.mark.parametrize("interaction", ["step", "completion"])
@pytest.mark.parametrize("size", [4, 6, 9])
def test_oracle_agent_solves_every_problem(interaction, size):
    env = gym.make(ENV_ID, size=size, interaction=interaction)
    records = play(env, OracleAgent.for_env(env), 20, seed=0)
    assert summarize(records)["solve_rate"] == 1.0 and all(r.invalid == 0 for r in records)


def test_oracle_backtracks_out_of_a_dead_end():
    env = env4(backtrack=True)
    obs, _, _, _, info = env.step("r1c2=3")
    agent = OracleAgent(env.task)
    assert agent.act(obs, info) == BACKTRACK
    for _ in range(16):
        obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
        if terminated:
            break
    assert info["solved"] and info["invalid_steps"] == 0


def test_search_trace_replays_in_the_env():
    task = SudokuTask()
    problem = task.coerce_problem({"size": 9, "puzzle": INKALA})
    lines = task.search_trace(problem, problem.puzzle)
    assert BACKTRACK in lines
    env = SudokuEnv(interaction="completion", backtrack=True, max_steps=len(lines))
    env.reset(options={"problem": problem})
    _, reward, _, _, info = env.step("\n".join(lines))
    assert info["solved"] and info["invalid_steps"] == 0 and info["backtracks"] == lines.count(BACKTRACK)


# --- bad input -------------------------------------------------------------


@pytest.mark.parametrize("interaction", ["step", "completion"])
@pytest.mark.parametrize("name", sorted(NAMED_BAD_INPUTS))
def test_named_bad_inputs(name, interaction, no_code_execution):  # noqa: F811
    env = SudokuEnv(size=9, interaction=interaction, backtrack=True)
    env.reset(seed=0)
    info = assert_defined_outcome(env, NAMED_BAD_INPUTS[name])
    assert not info["solved"]
    if interaction == "completion":
        assert_ended_episode_raises(env, NAMED_BAD_INPUTS[name])


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=400), interaction=st.sampled_from(["step", "completion"]))
def test_any_text_is_a_defined_outcome(text, interaction):
    env = env4(interaction=interaction, backtrack=True)
    with forbid_code_execution():
        assert_defined_outcome(env, text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([*SOLUTION_LINES[:4], "r1c2=3", "r2c1=1", BACKTRACK, "x", ""]), max_size=30))
def test_step_sequences_keep_the_state_consistent(lines):
    env = env4(backtrack=True, max_steps=100)
    for line in lines:
        obs, _, terminated, truncated, info = env.step(line)
        assert env.observation_space.contains(obs)
        assert info["steps"] == info["valid_steps"] + info["invalid_steps"] + info["backtracks"]
        filled = sum(ch != "." for ch in info["state"])
        assert filled == 4 + info["valid_steps"] - info["backtracks"]
        if terminated or truncated:
            break


# --- structured view -------------------------------------------------------


def test_structured_view_passes_sb3_check_env():
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    for backtrack in (False, True):
        sb3_check_env(SudokuGridEnv(size=4, backtrack=backtrack))
    sb3_check_env(gym.make(GRID_ID, size=9).unwrapped)
    check_env(gym.make(GRID_ID, size=6, backtrack=True).unwrapped)


def test_structured_actions_follow_the_masks():
    env = SudokuGridEnv(size=4, backtrack=True, max_steps=200)
    rng = np.random.default_rng(0)
    obs, info = env.reset(options={"problem": PROBLEM})
    assert obs.tolist() == [2, 0, 4, 0, 0, 0, 0, 1, 4, 0, 0, 0, 0, 0, 0, 0]
    assert not info["action_mask"][-1]  # nothing to undo yet
    assert (info["action_mask"] == env.action_masks()).all()
    for _ in range(40):
        mask = env.action_masks()
        # An unmasked action is played as an illegal step; a masked one is accepted.
        bad = int(rng.choice(np.flatnonzero(~mask)))
        _, _, _, _, info = env.step(bad)
        assert not info["last_valid"] and (info["action_mask"] == mask).all()
        obs, _, terminated, truncated, info = env.step(int(rng.choice(np.flatnonzero(mask))))
        assert info["last_valid"] and env.observation_space.contains(obs)
        if terminated or truncated:
            obs, info = env.reset(options={"problem": PROBLEM})
    assert env.action_line(4 * 16) == BACKTRACK and env.action_line(1 * 4 + 0) == "r1c2=1"
    with pytest.raises(ValueError):
        env.step(4 * 16 + 1)


@pytest.mark.parametrize(
    ("action", "error"),
    [
        (2**63, ValueError),
        (-1, ValueError),
        (np.int64(-1), ValueError),
        (float("inf"), TypeError),
        (3.7, TypeError),
        (-0.9, TypeError),
        (np.float64(2.0), TypeError),
        ("5", TypeError),
        (b"1", TypeError),
        (True, TypeError),
        (np.bool_(True), TypeError),
        (None, TypeError),
    ],
)
def test_structured_step_takes_integers_only(action, error):
    env = SudokuGridEnv(size=4, backtrack=True)
    env.reset(options={"problem": PROBLEM})
    with pytest.raises(error, match="action"):
        env.step(action)
    # The refused action changed nothing: a Python int and a numpy integer still act.
    _, _, _, _, info = env.step(int(np.flatnonzero(env.action_masks())[0]))
    assert info["last_valid"] and info["steps"] == 1
    _, _, _, _, info = env.step(np.int32(env.backtrack_action))
    assert info["last_valid"] and info["backtracks"] == 1


def test_structured_dead_end_ends_the_episode_without_backtrack():
    env = SudokuGridEnv(size=4)
    env.reset(options={"problem": PROBLEM})
    # r1c2=3 is allowed but wrong (the solution has 1): r1c4 is left with no candidate.
    _, _, terminated, _, info = env.step((0 * 4 + 1) * 4 + 3 - 1)
    assert info["last_valid"] and not terminated
    while not terminated:
        _, _, terminated, truncated, info = env.step(int(np.flatnonzero(env.action_masks())[0]))
        assert info["last_valid"] and not truncated
    assert not info["solved"] and not env.action_masks().any()
    assert_ended_episode_raises(env, 0)


def test_maskable_ppo_example_runs(capsys):
    pytest.importorskip("sb3_contrib")
    spec = importlib.util.spec_from_file_location("sudoku_maskable_ppo", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    rates = example.main(["--timesteps", "256", "--envs", "2", "--eval-episodes", "5"])
    assert set(rates) == {"maskable_ppo", "masked_random"} and all(0.0 <= r <= 1.0 for r in rates.values())
    assert "held-out" in capsys.readouterr().out
