import pytest

from backtrack_gym.envs import make_task
from backtrack_gym.envs.countdown import CountDownEnv
from backtrack_gym.rewards import (
    TERMS,
    EpisodeStats,
    breakdown,
    compose,
    score,
    trl_reward_functions,
)
from backtrack_gym.rewards.adapters import completion_text


def test_terms_read_the_stats():
    stats = EpisodeStats(steps=5, valid=2, malformed=1, illegal=1, backtracks=1, solved=True, progress=0.5)
    stats.dead_end_steps, stats.dead_ends_entered, stats.backtracks_from_solvable = 3, 2, 1
    values = {name: term(stats) for name, term in TERMS.items()}
    assert values == {
        "correct": 1.0,
        "progress": 0.5,
        "format": -1.0,
        "validity": -1.0,
        "length": -5.0,
        "backtrack": -1.0,
        "process": -3.0,  # two steps into a dead end and one backtrack from a solvable state
    }


def test_composition_weights_terms():
    stats = EpisodeStats(steps=4, illegal=2, solved=True)
    reward = compose({"correct": 1.0, "validity": 0.25, "length": 0.1})
    assert reward(stats) == pytest.approx(1.0 - 0.5 - 0.4)
    assert breakdown(stats, {"correct": 2.0, "length": 0.0}) == {"correct": 2.0}
    assert score(EpisodeStats()) == 0.0


def test_unknown_term_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown reward terms"):
        compose({"correctness": 1.0})


def test_trl_adapter_scores_columns():
    task = make_task("countdown")
    problem = {"numbers": [3, 4, 9], "target": 24}
    good = "9 - 3 = 6\n6 * 4 = 24"
    bad = "3 + 4 = 8\n9 * 3 = 27"
    correct, validity = trl_reward_functions(task, {"correct": 1.0, "validity": 0.5}, invalid_policy="ignore")
    assert correct.__name__ == "countdown_correct" and validity.__name__ == "countdown_validity"
    assert correct(prompts=["p", "p"], completions=[good, bad], problem=[problem, problem]) == [1.0, 0.0]
    assert validity(prompts=["p", "p"], completions=[good, bad], problem=[problem, problem]) == [0.0, -0.5]


def test_trl_adapter_accepts_json_problems_and_messages():
    task = make_task("countdown")
    (correct,) = trl_reward_functions(task, invalid_policy="ignore")
    messages = [[{"role": "assistant", "content": "9 - 3 = 6\n6 * 4 = 24"}]]
    assert correct(prompts=None, completions=messages, problem=['{"numbers": [3, 4, 9], "target": 24}']) == [1.0]
    with pytest.raises(KeyError, match="problem"):
        correct(prompts=None, completions=["x"], numbers=[[1]])
    with pytest.raises(TypeError):
        completion_text(42)


def test_trl_rewards_are_the_env_return_under_the_env_defaults():
    # The env's defaults: 16 steps, penalize at 0.1 (format and validity terms), an action cap.
    task = make_task("countdown")
    problem = {"numbers": [3, 4, 9], "target": 24}
    solution = "9 - 3 = 6\n6 * 4 = 24"
    completions = [solution, solution + "\n" * 2100, "1 + 1 = 3\n" * 20 + solution, "x\n" * 20 + solution]
    funcs = trl_reward_functions(task)
    assert [f.__name__ for f in funcs] == ["countdown_correct", "countdown_format", "countdown_validity"]
    rewards = [f(completions=completions, problem=[problem] * len(completions)) for f in funcs]
    totals = [sum(terms) for terms in zip(*rewards, strict=True)]
    env = CountDownEnv(interaction="completion")
    returns = []
    for completion in completions:
        env.reset(options={"problem": problem})
        returns.append(env.step(completion)[1])
    assert totals == pytest.approx(returns)
    assert returns == pytest.approx([1.0, -0.1, -1.6, -1.6])


def test_trl_rewards_follow_the_settings_given():
    task = make_task("countdown")
    problem = {"numbers": [3, 4, 9], "target": 24}
    completion = "1 + 1 = 3\n" * 20 + "9 - 3 = 6\n6 * 4 = 24"
    (correct,) = trl_reward_functions(task, invalid_policy="ignore", max_steps=32)
    assert correct(completions=[completion], problem=[problem]) == [1.0]
    (correct,) = trl_reward_functions(task, invalid_policy="terminate", max_steps=32)
    assert correct(completions=[completion], problem=[problem]) == [0.0]
    with pytest.raises(TypeError, match="interaction"):
        trl_reward_functions(task, interaction="step")


def test_trl_rewards_score_each_new_batch():
    # The functions of one call share the scoring of a batch: a new batch is scored afresh.
    task = make_task("countdown")
    correct, length = trl_reward_functions(task, {"correct": 1.0, "length": 1.0}, invalid_policy="ignore")
    problem, other = {"numbers": [3, 4, 9], "target": 24}, {"numbers": [2, 9], "target": 18}
    solves_24, solves_18 = "9 - 3 = 6\n6 * 4 = 24", "9 * 2 = 18"
    assert correct(completions=[solves_24], problem=[problem]) == [1.0]
    assert length(completions=[solves_24], problem=[problem]) == [-2.0]
    assert correct(completions=[solves_18], problem=[problem]) == [0.0]
    assert correct(completions=[solves_18], problem=[other]) == [1.0]
    assert length(completions=[solves_18], problem=[other]) == [-1.0]


@pytest.mark.parametrize("task_name", ["countdown", "sudoku", "math"])
@pytest.mark.parametrize("problem", ["[1,2,3]", 5, "null", '"abc"', None, [1, 2]])
def test_a_problem_that_is_not_an_object_is_a_value_error(task_name, problem):
    correct = trl_reward_functions(make_task(task_name))[0]
    with pytest.raises(ValueError, match=f"a {task_name} problem is a"):
        correct(completions=["1 + 1 = 2"], problem=[problem])
