import json
from collections import Counter
from fractions import Fraction

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
from backtrack_gym.envs import BACKTRACK, Invalid
from backtrack_gym.envs.countdown import (
    CountDownConfig,
    CountDownEnv,
    CountDownProblem,
    CountDownTask,
    Rules,
    Step,
    check_answer,
    generate,
    parse_step,
    solve,
    split_profile,
    split_targets,
    verify_answer,
)
from backtrack_gym.envs.countdown.rules import apply_step, legal_steps
from backtrack_gym.rewards import trl_reward_functions

ENV_ID = "backtrack_gym/CountDown-v0"
PROBLEM = {"numbers": [2, 3, 4, 9], "target": 24}


# --- grammar ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "step"),
    [
        ("3 + 5 = 8", Step(3, "+", 5, 8)),
        ("3+5=8", Step(3, "+", 5, 8)),
        ("  12 /4 =  3 ", Step(12, "/", 4, 3)),
        ("(7/2) * 4 = 14", Step(Fraction(7, 2), "*", 4, 14)),
        ("7 / 2 = 7/2", Step(7, "/", 2, Fraction(7, 2))),
        ("(-3) - 4 = -7", Step(-3, "-", 4, -7)),
    ],
)
def test_parse_step(line, step):
    assert parse_step(line) == step
    assert parse_step(str(step)) == step


@pytest.mark.parametrize(
    "line", ["3 + 5", "3 + 5 = 8 = 8", "3 + 4 * 2 = 11", "3 + 4 + 5 = 12", "(3 + 4) = 7", "8 = 3 + 5", "a + b = c"]
)
def test_parse_step_rejects_other_shapes(line):
    result = parse_step(line)
    assert isinstance(result, Invalid) and result.kind == "malformed" and result.reason


def test_apply_step_checks_availability_arithmetic_and_rules():
    rules = Rules()
    numbers = (3, 5, 7, 8)
    assert apply_step(rules, numbers, Step(3, "+", 5, 8)) == (7, 8, 8)
    assert "not an available" in apply_step(rules, numbers, Step(3, "+", 4, 7)).reason
    assert "only once" in apply_step(rules, numbers, Step(3, "+", 3, 6)).reason
    assert "wrong result" in apply_step(rules, numbers, Step(3, "+", 5, 9)).reason
    assert "negative" in apply_step(rules, numbers, Step(3, "-", 5, -2)).reason
    assert "not an integer" in apply_step(rules, numbers, Step(7, "/", 3, Fraction(7, 3))).reason
    assert "division by zero" in apply_step(rules, (0, 5), Step(5, "/", 0, 0)).reason
    loose = Rules(allow_negative=True, allow_fractions=True)
    assert apply_step(loose, numbers, Step(7, "/", 3, Fraction(7, 3))) == (5, 8, Fraction(7, 3))
    assert apply_step(loose, numbers, Step(3, "-", 5, -2)) == (7, 8, -2)


def test_check_answer_full_expression():
    problem = CountDownProblem((94, 4, 61, 6), 309)
    assert verify_answer(problem, "(94*4)-61-6")
    assert verify_answer(problem, " 94 * 4 - (61 + 6) ")
    assert "each exactly once" in check_answer(problem, "94*4-61")
    assert verify_answer(CountDownProblem((94, 4, 61, 6), 315), "94*4-61", use_all=False)
    assert "each exactly once" in check_answer(problem, "94*4-61-6-6")
    assert "each exactly once" in check_answer(problem, "94*4-61-7")
    assert "not an expression" in check_answer(problem, "__import__('os')")
    assert "evaluates to" in check_answer(problem, "94*4+61+6")
    assert "negative" in check_answer(CountDownProblem((1, 2, 3, 4), 1), "(1-2)*(3-4)")
    assert verify_answer(CountDownProblem((1, 2, 3, 4), 1), "(1-2)*(3-4)", Rules(allow_negative=True))
    assert verify_answer(CountDownProblem((1, 2, 3, 4), 8), "-1+2+3+4", Rules(allow_negative=True))
    assert "unary minus" in check_answer(CountDownProblem((1, 2, 3, 4), 8), "-1+2+3+4")


# --- solver ----------------------------------------------------------------


def test_solver_finds_shortest_solutions_and_proves_none():
    rules = Rules()
    assert solve(rules, (3, 8), 24) == [Step(3, "*", 8, 24)]
    plan = solve(rules, (2, 3, 4, 9), 24)
    assert len(plan) == 2
    assert solve(rules, (1, 1), 10) is None
    assert solve(rules, (2, 2, 2), 100) is None
    assert solve(rules, (1, 2, 6), 6) == []
    assert len(solve(rules, (1, 2, 6), 6, use_all=True)) == 2


def test_solver_agrees_with_brute_force_on_small_problems():
    rules = Rules()

    def reachable(numbers):
        found = set(numbers)
        for step in legal_steps(rules, numbers):
            rest = list(numbers)
            rest.remove(step.left)
            rest.remove(step.right)
            found |= reachable((*rest, step.result))
        return found

    rng = np.random.default_rng(0)
    for _ in range(40):
        numbers = tuple(int(x) for x in rng.integers(1, 13, size=3))
        values = reachable(numbers)
        for target in range(0, 40):
            plan = solve(rules, numbers, target)
            assert (plan is not None) == (target in values), (numbers, target)


# --- generation ------------------------------------------------------------


def test_generation_is_deterministic_per_seed_and_index():
    config = CountDownConfig(seed=3)
    assert [generate(config, i) for i in range(20)] == [generate(config, i) for i in range(20)]
    assert generate(config, 5) != generate(CountDownConfig(seed=4), 5)
    assert generate(config, 5, "train") != generate(config, 5, "test")


def test_generated_problems_are_distinct():
    config = CountDownConfig()
    counts = Counter(generate(config, i) for i in range(10_000))
    duplicates = sum(c - 1 for c in counts.values())
    # 4 numbers in 1..99 and ~90 targets: the space is large, so repeats must be rare.
    assert duplicates < 100, duplicates


def test_chunks_do_not_repeat_items():
    # seed + index derivation would make seed 1 item 0 equal seed 0 item 1.
    assert generate(CountDownConfig(seed=1), 0) != generate(CountDownConfig(seed=0), 1)


def test_every_generated_problem_is_solvable_and_follows_the_config():
    config = CountDownConfig()
    rules = config.rules
    for i in range(1000):
        problem = generate(config, i)
        assert len(problem.numbers) == 4 and all(1 <= n <= 99 for n in problem.numbers)
        assert 10 <= problem.target <= 100 and problem.target not in problem.numbers
        assert solve(rules, problem.numbers, problem.target, use_all=True) is not None


def test_held_out_targets_split_train_and_test():
    config = CountDownConfig()
    splits = split_targets(config)
    assert not splits["train"] & splits["test"]
    assert len(splits["test"]) == round(0.1 * 91)
    assert splits["train"] | splits["test"] == set(range(10, 101))
    assert {generate(config, i, "test").target for i in range(300)} <= splits["test"]
    assert not {generate(config, i, "train").target for i in range(300)} & splits["test"]
    # The held-out set is a fixed function of the target range, not of the seed.
    assert split_targets(CountDownConfig(seed=9))["test"] == splits["test"]


def test_split_profile_shows_how_few_problems_a_small_held_out_set_holds():
    # 3 numbers in 1..9 (the main job): 500 held-out draws are mostly targets 16 and 19.
    small = split_profile(CountDownConfig(num_count=3, number_max=9), n=500)
    assert sum(small.target_counts.values()) == 500 and set(small.target_counts) <= {16, 19, 38, 52, 76, 81, 84, 89, 99}
    assert (small.target_counts[16], small.target_counts[19], small.distinct) == (253, 168, 98)
    assert small.effective_targets == pytest.approx(2.7, abs=0.05)
    # 4 numbers in 1..99 (the research's task) spread over the nine targets almost evenly.
    wide = split_profile(CountDownConfig(), n=500)
    assert wide.distinct == 500 and wide.effective_targets > 8.5
    assert split_profile(CountDownConfig(), n=1, split="train").effective_targets == 1.0
    with pytest.raises(ValueError, match="at least 1"):
        split_profile(CountDownConfig(), n=0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"num_count": 1}, "num_count"),
        ({"num_count": 9}, "num_count"),
        ({"number_min": 10, "number_max": 5}, "number_min"),
        ({"target_min": 50, "target_max": 10}, "exceeds"),
        ({"number_min": 1, "number_max": 1, "num_count": 2}, "reachable"),
        ({"held_out_fraction": 1.0}, "held_out_fraction"),
        ({"target_min": 10, "target_max": 10}, "too small"),
        ({"target_min": -5}, "allow_negative"),
    ],
)
def test_config_rejects_impossible_settings(fields, message):
    with pytest.raises(ValueError, match=message):
        CountDownConfig(**fields).validate()


def test_other_sizes_generate():
    for count in (2, 3, 6, 8):
        config = CountDownConfig(num_count=count, verify=True).validate()
        problem = generate(config, 0)
        assert len(problem.numbers) == count


# --- env contract ----------------------------------------------------------


@pytest.mark.parametrize("interaction", ["step", "completion"])
@pytest.mark.parametrize("backtrack", [False, True])
def test_gymnasium_check_env(interaction, backtrack):
    check_env(gym.make(ENV_ID, interaction=interaction, backtrack=backtrack).unwrapped, skip_render_check=False)


def test_make_passes_config_fields():
    env = gym.make(ENV_ID, num_count=3, target_max=50, max_steps=5, render_mode="ansi")
    obs, info = env.reset(seed=0)
    assert len(info["problem"]["numbers"]) == 3 and info["problem"]["target"] <= 50
    assert env.unwrapped.max_steps == 5
    assert "Target:" in env.render()
    with pytest.raises(TypeError):
        gym.make(ENV_ID, no_such_field=1)
    with pytest.raises(ValueError, match="interaction"):
        gym.make(ENV_ID, interaction="chat")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_make_vec_runs_eight_envs(mode):
    envs = gym.make_vec(ENV_ID, num_envs=8, vectorization_mode=mode, vector_kwargs={}, backtrack=True)
    try:
        obs, infos = envs.reset(seed=0)
        assert len(obs) == 8 and len(set(obs)) > 1
        agent = OracleAgent(CountDownTask())
        solved = np.zeros(8, dtype=bool)
        for _ in range(4):
            actions = [agent.act(obs[i], info_at(infos, i)) for i in range(8)]
            obs, rewards, terminated, truncated, infos = envs.step(actions)
            solved |= terminated
            if solved.all():
                break
        assert solved.all()
    finally:
        envs.close()


def test_reset_seed_is_deterministic_and_episodes_repeat():
    def episode(seed):
        env = gym.make(ENV_ID, backtrack=True)
        agent = RandomAgent.for_env(env, seed=1)
        obs, info = env.reset(seed=seed)
        trace = [obs]
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
            trace.append((obs, reward))
            done = terminated or truncated
        return trace

    assert episode(7) == episode(7)
    assert episode(7)[0] != episode(8)[0]


def test_pinned_problem_and_index():
    env = CountDownEnv()
    for pinned in (PROBLEM, CountDownProblem((2, 3, 4, 9), 24), '{"numbers": [2, 3, 4, 9], "target": 24}'):
        obs, info = env.reset(options={"problem": pinned})
        assert obs == "Target: 24 | Numbers: 2 3 4 9"
        assert info["problem"] == PROBLEM
    _, info = env.reset(options={"index": 12})
    assert info["problem"] == generate(CountDownConfig(), 12).to_dict()
    with pytest.raises(ValueError):
        env.reset(options={"problem": {"numbers": "abc"}})
    with pytest.raises(ValueError):
        env.reset(options={"problem": "{not json"})


@pytest.mark.parametrize("interaction", ["step", "completion"])
@pytest.mark.parametrize("problem", ["[1,2,3]", 5, "null", '"abc"', [1, 2, 3], 2.5])
def test_a_pinned_problem_that_is_not_an_object_is_a_value_error(problem, interaction):
    env = CountDownEnv(interaction=interaction)
    with pytest.raises(ValueError, match="a countdown problem is a CountDownProblem, its dict or JSON object"):
        env.reset(options={"problem": problem})


@pytest.mark.parametrize("use_all_numbers", [False, True])
def test_a_problem_solved_at_reset_is_a_value_error_everywhere(use_all_numbers):
    # The target given among the numbers (or, using all numbers, as the only one) leaves nothing to do.
    solved = {"numbers": [24, 3], "target": 24} if not use_all_numbers else {"numbers": [24], "target": 24}
    for interaction in ("step", "completion"):
        env = CountDownEnv(interaction=interaction, use_all_numbers=use_all_numbers)
        with pytest.raises(ValueError, match="already solved at the start"):
            env.reset(options={"problem": solved})
    task = CountDownTask(CountDownConfig(use_all_numbers=use_all_numbers))
    (correct,) = trl_reward_functions(task, invalid_policy="ignore")
    with pytest.raises(ValueError, match="already solved at the start"):
        correct(completions=["24 - 3 = 21"], problem=[json.dumps(solved)])
    # Using all numbers, 24 and 3 still need a step: that problem plays.
    if use_all_numbers:
        env.reset(options={"problem": {"numbers": [24, 3], "target": 24}})
        assert not env.step("24 * 3 = 72")[4]["solved"]


def test_backtrack_round_trip():
    env = CountDownEnv(backtrack=True)
    env.reset(options={"problem": PROBLEM})
    obs, *_ = env.step("2 + 3 = 5")
    assert obs == "Target: 24 | Numbers: 4 9 5"
    obs, reward, terminated, truncated, info = env.step(BACKTRACK)
    assert obs == "Target: 24 | Numbers: 2 3 4 9" and info["backtracks"] == 1 and info["last_valid"]
    _, _, _, _, info = env.step(BACKTRACK)
    assert info["last_reason"] == "nothing to undo" and info["illegal_steps"] == 1
    env.step("9 - 3 = 6")
    obs, reward, terminated, truncated, info = env.step("6 * 4 = 24")
    assert terminated and info["solved"] and reward == 1.0


def test_backtrack_off_is_an_illegal_step():
    env = CountDownEnv(backtrack=False)
    env.reset(options={"problem": PROBLEM})
    env.step("2 + 3 = 5")
    obs, _, _, _, info = env.step(BACKTRACK)
    assert obs == "Target: 24 | Numbers: 4 9 5"
    assert info["last_reason"] == "backtracking is off in this env"


def test_completion_mode_replays_with_backtracks_and_reports_lines():
    env = CountDownEnv(interaction="completion", backtrack=True)
    env.reset(options={"problem": PROBLEM})
    text = "2 + 3 = 5\n\n4 * 5 = 21\n<backtrack>\n9 - 3 = 6\n6 * 4 = 24\n1 + 1 = 2"
    obs, reward, terminated, truncated, info = env.step(text)
    assert terminated and not truncated and info["solved"] and reward == pytest.approx(1.0 - 0.1)
    assert info["steps"] == 5 and info["backtracks"] == 1 and info["illegal_steps"] == 1
    assert info["invalid_lines"] == [{"line": 3, "text": "4 * 5 = 21", "reason": "wrong result: 4 * 5 is 20"}]
    assert_ended_episode_raises(env, "1 + 1 = 2")


def test_returns_agree_between_modes():
    weights = {"correct": 1.0, "length": 0.05, "backtrack": 0.1}
    lines = ["2 + 3 = 5", "oops", BACKTRACK, "9 - 3 = 6", "6 * 4 = 24"]
    step_env = CountDownEnv(backtrack=True, reward_weights=weights)
    step_env.reset(options={"problem": PROBLEM})
    step_return = sum(step_env.step(line)[1] for line in lines)
    completion_env = CountDownEnv(backtrack=True, reward_weights=weights, interaction="completion")
    completion_env.reset(options={"problem": PROBLEM})
    completion_return = completion_env.step("\n".join(lines))[1]
    assert step_return == pytest.approx(completion_return) == pytest.approx(1.0 - 0.25 - 0.1 - 0.1)


@pytest.mark.parametrize(
    ("policy", "expected_return", "terminated_early"),
    [("penalize", -0.1, False), ("ignore", 0.0, False), ("terminate", -0.0, True)],
)
def test_invalid_step_policies(policy, expected_return, terminated_early):
    env = CountDownEnv(invalid_policy=policy, reward_weights={"correct": 1.0})
    env.reset(options={"problem": PROBLEM})
    obs, reward, terminated, truncated, info = env.step("2 + 2 = 4")
    assert reward == pytest.approx(expected_return)
    assert terminated == terminated_early and info["invalid_steps"] == 1
    assert obs == "Target: 24 | Numbers: 2 3 4 9"


def test_max_steps_truncates():
    env = CountDownEnv(max_steps=3, backtrack=True)
    env.reset(options={"problem": PROBLEM})
    results = [env.step(line) for line in ("2 + 3 = 5", BACKTRACK, "2 + 3 = 5")]
    assert results[-1][3] and not results[-1][2]
    assert_ended_episode_raises(env, BACKTRACK)


def test_step_before_reset_and_non_str_actions():
    env = CountDownEnv()
    assert_ended_episode_raises(env, "1 + 1 = 2")
    env.reset(seed=0)
    with pytest.raises(TypeError):
        env.step(42)


# --- agents ----------------------------------------------------------------


@pytest.mark.parametrize("interaction", ["step", "completion"])
@pytest.mark.parametrize("backtrack", [False, True])
def test_oracle_solves_every_problem(interaction, backtrack):
    env = gym.make(ENV_ID, interaction=interaction, backtrack=backtrack)
    records = play(env, OracleAgent.for_env(env), 1000, seed=0)
    assert summarize(records)["solve_rate"] == 1.0
    assert all(r.invalid == 0 for r in records)


def test_oracle_backtracks_out_of_a_dead_end():
    env = CountDownEnv(backtrack=True)
    obs, info = env.reset(options={"problem": {"numbers": [2, 3, 4], "target": 24}})
    obs, _, _, _, info = env.step("2 + 3 = 5")
    agent = OracleAgent(env.task)
    assert agent.act(obs, info) == BACKTRACK
    for _ in range(4):
        obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
        if terminated:
            break
    assert info["solved"]


def test_random_agent_plays_legal_steps():
    env = gym.make(ENV_ID, backtrack=True)
    records = play(env, RandomAgent.for_env(env, seed=0, backtrack_prob=0.3), 100)
    assert all(r.invalid == 0 for r in records)
    assert 0.0 < summarize(records)["solve_rate"] < 1.0
    assert summarize(records)["backtracks"] > 0


# --- bad input -------------------------------------------------------------


@pytest.mark.parametrize("interaction", ["step", "completion"])
@pytest.mark.parametrize("name", sorted(NAMED_BAD_INPUTS))
def test_named_bad_inputs(name, interaction, no_code_execution):  # noqa: F811
    env = CountDownEnv(interaction=interaction, backtrack=True, max_steps=64)
    env.reset(options={"problem": PROBLEM})
    info = assert_defined_outcome(env, NAMED_BAD_INPUTS[name])
    assert not info["solved"]
    if interaction == "completion":
        assert_ended_episode_raises(env, NAMED_BAD_INPUTS[name])


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=400), interaction=st.sampled_from(["step", "completion"]))
def test_any_text_is_a_defined_outcome(text, interaction):
    env = CountDownEnv(interaction=interaction, backtrack=True)
    env.reset(options={"problem": PROBLEM})
    with forbid_code_execution():
        assert_defined_outcome(env, text)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["2 + 3 = 5", "9 - 3 = 6", "6 * 4 = 24", BACKTRACK, "4 / 2 = 2", "x", ""]), max_size=20)
)
def test_step_sequences_keep_the_state_consistent(lines):
    env = CountDownEnv(backtrack=True, max_steps=100)
    env.reset(options={"problem": PROBLEM})
    for line in lines:
        obs, _, terminated, truncated, info = env.step(line)
        assert env.observation_space.contains(obs)
        assert info["steps"] == info["valid_steps"] + info["invalid_steps"] + info["backtracks"]
        assert len(info["state"]) == 4 - (info["valid_steps"] - info["backtracks"])
        if terminated or truncated:
            break
