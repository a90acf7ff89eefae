import itertools
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
from backtrack_gym.envs.countdown.generator import reachable_targets
from backtrack_gym.envs.countdown.rules import apply_step, is_solvable, legal_steps, reachable_values
from backtrack_gym.rewards import trl_reward_functions

ENV_ID = "backtrack_gym/CountDown-v0"
# Solved by 9 - 3 = 6, 6 * 4 = 24 (all numbers used); 3 + 4 = 7 leads nowhere.
PROBLEM = {"numbers": [3, 4, 9], "target": 24}
# The research's held-out targets: KempnerInstitute/Backtrack's val1 results (seed 4, targets 10..100)
# hold every target but these nine (countdown/results/results_val1_b4_t100_n500000_random.json_1000_0).
RESEARCH_HELD_OUT = {14, 39, 41, 57, 62, 81, 87, 89, 96}


def research_combine(a: int, b: int) -> list[int]:
    """``combine_nums`` of KempnerInstitute/Backtrack ``countdown/src/countdown_utils.py``."""
    possible = [a + b, a * b]
    if a <= b:
        possible.append(b - a)
        if a != 0 and b % a == 0:
            possible.append(b // a)
    else:
        possible.append(a - b)
        if b != 0 and a % b == 0:
            possible.append(a // b)
    return possible


def research_solvable(target: int, nums: list[int]) -> bool:
    """``CountDown.search`` of ``countdown/src/countdown.py``: all numbers combined into the target."""
    if len(nums) == 1:
        return nums[0] == target
    for i, j in itertools.combinations(range(len(nums)), 2):
        rest = [nums[k] for k in range(len(nums)) if k not in (i, j)]
        if any(research_solvable(target, [*rest, value]) for value in research_combine(nums[i], nums[j])):
            return True
    return False


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
    # All numbers must be used (the research's goal): 2 3 4 9 -> 24 takes three steps.
    assert len(solve(rules, (2, 3, 4, 9), 24)) == 3
    assert len(solve(rules, (2, 3, 4, 9), 24, use_all=False)) == 2
    assert solve(rules, (1, 1), 10) is None
    assert solve(rules, (2, 2, 2), 100) is None
    assert solve(rules, (1, 2, 6), 6, use_all=False) == []
    assert len(solve(rules, (1, 2, 6), 6)) == 2
    assert solve(rules, (2, 6), 12) == [Step(2, "*", 6, 12)]
    assert solve(rules, (5, 5, 5, 5), 7) is not None and solve(rules, (5, 5, 5, 5), 8) is None


@pytest.mark.parametrize(
    "rules", [Rules(), Rules(allow_negative=True), Rules(allow_fractions=True), Rules(True, True)], ids=str
)
def test_solver_agrees_with_brute_force_on_small_problems(rules):

    def states(numbers):
        found = {tuple(sorted(numbers))}
        for step in legal_steps(rules, numbers):
            rest = list(numbers)
            rest.remove(step.left)
            rest.remove(step.right)
            found |= states((*rest, step.result))
        return found

    rng = np.random.default_rng(0)
    for _ in range(40):
        numbers = tuple(int(x) for x in rng.integers(0, 13, size=3))
        reached = states(numbers)
        anywhere = {n for state in reached for n in state}
        last = {state[0] for state in reached if len(state) == 1}
        assert reachable_values(rules, numbers) == last
        for target in range(-3 if rules.allow_negative else 0, 40):
            assert (solve(rules, numbers, target, use_all=False) is not None) == (target in anywhere), (numbers, target)
            plan = solve(rules, numbers, target)
            assert (plan is not None) == (target in last)
            if rules == Rules():
                assert (plan is not None) == research_solvable(target, list(numbers))
            if plan is not None:
                state = numbers
                for step in plan:
                    state = apply_step(rules, state, step)
                assert state == (target,)


def test_solver_agrees_with_the_research_search_on_four_numbers():
    rules = Rules()
    rng = np.random.default_rng(1)
    for _ in range(150):
        numbers = [int(x) for x in rng.integers(1, 100, size=4)]
        target = int(rng.integers(10, 101))
        assert is_solvable(rules, tuple(numbers), target) == research_solvable(target, numbers), (numbers, target)


# --- generation ------------------------------------------------------------


def test_generation_is_deterministic_per_seed_and_index():
    config = CountDownConfig(seed=3)
    assert [generate(config, i) for i in range(20)] == [generate(config, i) for i in range(20)]
    assert generate(config, 5) != generate(CountDownConfig(seed=4), 5)
    assert generate(config, 5, "train") != generate(config, 5, "test")


@pytest.fixture(scope="module")
def research_problems():
    """2 000 training problems of the default (the research's) config."""
    return [generate(CountDownConfig(), i) for i in range(2000)]


def test_generated_problems_are_distinct(research_problems):
    counts = Counter(research_problems)
    duplicates = sum(c - 1 for c in counts.values())
    # 4 numbers in 1..99 and 82 targets: the space is large, so repeats must be rare.
    assert duplicates < 5, duplicates


def test_chunks_do_not_repeat_items():
    # seed + index derivation would make seed 1 item 0 equal seed 0 item 1.
    assert generate(CountDownConfig(seed=1), 0) != generate(CountDownConfig(seed=0), 1)


def test_every_generated_problem_is_solvable_using_all_numbers_and_follows_the_config(research_problems):
    rules = CountDownConfig().rules
    for problem in research_problems:
        assert len(problem.numbers) == 4 and all(1 <= n <= 99 for n in problem.numbers)
        assert 10 <= problem.target <= 100 and problem.target not in RESEARCH_HELD_OUT
        # The research's own search, not ours, checks each one.
        assert research_solvable(problem.target, list(problem.numbers)), problem
        state = problem.numbers
        for step in solve(rules, problem.numbers, problem.target):
            state = apply_step(rules, state, step)
        assert state == (problem.target,)


def test_a_problem_is_solved_only_when_all_numbers_make_the_target():
    env = CountDownEnv()
    env.reset(options={"problem": {"numbers": [1, 2, 6], "target": 12}})
    _, _, terminated, _, info = env.step("2 * 6 = 12")
    assert not terminated and not info["solved"] and info["state"] == ["1", "12"]
    env.reset(options={"problem": {"numbers": [1, 2, 6], "target": 12}})
    env.step("1 * 2 = 2")
    _, reward, terminated, _, info = env.step("2 * 6 = 12")
    assert terminated and info["solved"] and reward == 1.0
    # The earlier rule stays as an option: the target among the numbers is enough.
    old = CountDownEnv(use_all_numbers=False)
    old.reset(options={"problem": {"numbers": [1, 2, 6], "target": 12}})
    assert old.step("2 * 6 = 12")[4]["solved"]


@pytest.mark.slow
def test_the_research_generator_draws_targets_uniformly():
    # 20 000 held-out problems over the nine held-out targets; the chi-square statistic
    # with 8 degrees of freedom stays below 26.12, its 0.999 quantile (scipy.stats.chi2.ppf).
    config = CountDownConfig()
    counts = Counter(generate(config, i, "test").target for i in range(20_000))
    assert set(counts) == RESEARCH_HELD_OUT
    expected = 20_000 / len(RESEARCH_HELD_OUT)
    chi_square = sum((count - expected) ** 2 / expected for count in counts.values())
    assert chi_square < 26.12, (chi_square, counts)


def test_held_out_targets_are_the_researchs():
    config = CountDownConfig()
    splits = split_targets(config)
    assert splits["test"] == RESEARCH_HELD_OUT
    assert splits["train"] == set(range(10, 101)) - RESEARCH_HELD_OUT
    assert {generate(config, i, "test").target for i in range(300)} <= splits["test"]
    assert not {generate(config, i, "train").target for i in range(300)} & splits["test"]
    # The held-out set is a fixed function of the target range and split_seed, not of the problem seed.
    assert split_targets(CountDownConfig(seed=9))["test"] == splits["test"]
    assert split_targets(CountDownConfig(split_seed=0))["test"] == {17, 18, 21, 29, 36, 39, 51, 54, 86}
    # The earlier hash-ranked split stays as an option.
    assert split_targets(CountDownConfig(held_out_rule="hash"))["test"] == {16, 19, 38, 52, 76, 81, 84, 89, 99}


def test_only_reachable_targets_are_drawn():
    # 3 numbers in 1..9 (the experiments' task) cannot make 92..95 or 97 using all three.
    config = CountDownConfig(num_count=3, number_max=9)
    assert set(range(10, 101)) - reachable_targets(config) == {92, 93, 94, 95, 97}
    expected = {
        t
        for t in range(10, 101)
        if any(research_solvable(t, list(c)) for c in itertools.combinations_with_replacement(range(1, 10), 3))
    }
    assert reachable_targets(config) == expected
    splits = split_targets(config)
    assert splits["train"] | splits["test"] == expected and len(splits["test"]) == 8
    assert all(
        is_solvable(config.rules, generate(config, i, "test").numbers, generate(config, i, "test").target)
        for i in range(50)
    )


def test_split_profile_shows_how_few_problems_a_held_out_set_holds():
    # The earlier generator and rule on 3 numbers in 1..9: 500 held-out draws are mostly targets 16 and 19.
    earlier = CountDownConfig(
        num_count=3, number_max=9, generator="constructive", use_all_numbers=False, held_out_rule="hash"
    )
    small = split_profile(earlier, n=500)
    assert sum(small.target_counts.values()) == 500 and set(small.target_counts) <= {16, 19, 38, 52, 76, 81, 84, 89, 99}
    assert (small.target_counts[16], small.target_counts[19], small.distinct) == (253, 168, 98)
    assert small.effective_targets == pytest.approx(2.7, abs=0.05)
    # The research's generator spreads the same numbers over all eight held-out targets.
    main = split_profile(CountDownConfig(num_count=3, number_max=9), n=500)
    assert set(main.target_counts) == split_targets(CountDownConfig(num_count=3, number_max=9))["test"]
    assert main.effective_targets > 7.5
    # 4 numbers in 1..99 (the research's task) spread over the nine targets evenly.
    wide = split_profile(CountDownConfig(), n=500)
    assert wide.distinct == 500 and wide.effective_targets > 8.5
    assert split_profile(CountDownConfig(), n=1, split="train").effective_targets == 1.0
    with pytest.raises(ValueError, match="at least 1"):
        split_profile(CountDownConfig(), n=0)


def test_a_degenerate_held_out_split_is_refused_unless_overridden():
    earlier = CountDownConfig(
        num_count=3, number_max=9, generator="constructive", use_all_numbers=False, held_out_rule="hash"
    )
    with pytest.raises(ValueError, match=r"degenerate.*2\.7 effective targets.*min_effective_share=0\.7 x 9"):
        earlier.validate()
    with pytest.raises(ValueError, match="degenerate"):
        CountDownTask(earlier)
    assert CountDownConfig(**{**earlier.to_dict(), "min_effective_share": 0.0}).validate()
    assert CountDownConfig(**{**earlier.to_dict(), "min_effective_share": 0.25}).validate()


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
        ({"target_max": 20_000}, "more than 10000 targets"),
        ({"generator": "random"}, "generator must be one of"),
        ({"held_out_rule": "seeded"}, "held_out_rule must be one of"),
        ({"min_effective_share": 1.5}, "min_effective_share"),
        ({"num_count": 2, "number_max": 3, "target_min": 13, "target_max": 20}, "no target in 13..20 is reachable"),
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
    for pinned in (PROBLEM, CountDownProblem((3, 4, 9), 24), '{"numbers": [3, 4, 9], "target": 24}'):
        obs, info = env.reset(options={"problem": pinned})
        assert obs == "Target: 24 | Numbers: 3 4 9"
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
    obs, *_ = env.step("3 + 4 = 7")
    assert obs == "Target: 24 | Numbers: 9 7"
    obs, reward, terminated, truncated, info = env.step(BACKTRACK)
    assert obs == "Target: 24 | Numbers: 3 4 9" and info["backtracks"] == 1 and info["last_valid"]
    _, _, _, _, info = env.step(BACKTRACK)
    assert info["last_reason"] == "nothing to undo" and info["illegal_steps"] == 1
    env.step("9 - 3 = 6")
    obs, reward, terminated, truncated, info = env.step("6 * 4 = 24")
    assert terminated and info["solved"] and reward == 1.0


def test_backtrack_off_is_an_illegal_step():
    env = CountDownEnv(backtrack=False)
    env.reset(options={"problem": PROBLEM})
    env.step("3 + 4 = 7")
    obs, _, _, _, info = env.step(BACKTRACK)
    assert obs == "Target: 24 | Numbers: 9 7"
    assert info["last_reason"] == "backtracking is off in this env"


def test_completion_mode_replays_with_backtracks_and_reports_lines():
    env = CountDownEnv(interaction="completion", backtrack=True)
    env.reset(options={"problem": PROBLEM})
    text = "3 + 4 = 7\n\n7 * 9 = 62\n<backtrack>\n9 - 3 = 6\n6 * 4 = 24\n1 + 1 = 2"
    obs, reward, terminated, truncated, info = env.step(text)
    assert terminated and not truncated and info["solved"] and reward == pytest.approx(1.0 - 0.1)
    assert info["steps"] == 5 and info["backtracks"] == 1 and info["illegal_steps"] == 1
    assert info["invalid_lines"] == [{"line": 3, "text": "7 * 9 = 62", "reason": "wrong result: 7 * 9 is 63"}]
    assert_ended_episode_raises(env, "1 + 1 = 2")


def test_returns_agree_between_modes():
    weights = {"correct": 1.0, "length": 0.05, "backtrack": 0.1}
    lines = ["3 + 4 = 7", "oops", BACKTRACK, "9 - 3 = 6", "6 * 4 = 24"]
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
    obs, reward, terminated, truncated, info = env.step("3 + 3 = 6")
    assert reward == pytest.approx(expected_return)
    assert terminated == terminated_early and info["invalid_steps"] == 1
    assert obs == "Target: 24 | Numbers: 3 4 9"


def test_max_steps_truncates():
    env = CountDownEnv(max_steps=3, backtrack=True)
    env.reset(options={"problem": PROBLEM})
    results = [env.step(line) for line in ("3 + 4 = 7", BACKTRACK, "3 + 4 = 7")]
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
    st.lists(st.sampled_from(["3 + 4 = 7", "9 - 3 = 6", "6 * 4 = 24", BACKTRACK, "9 / 3 = 3", "x", ""]), max_size=20)
)
def test_step_sequences_keep_the_state_consistent(lines):
    env = CountDownEnv(backtrack=True, max_steps=100)
    env.reset(options={"problem": PROBLEM})
    for line in lines:
        obs, _, terminated, truncated, info = env.step(line)
        assert env.observation_space.contains(obs)
        assert info["steps"] == info["valid_steps"] + info["invalid_steps"] + info["backtracks"]
        assert len(info["state"]) == 3 - (info["valid_steps"] - info["backtracks"])
        if terminated or truncated:
            break
