import pytest

from backtrack_gym.envs import make_task
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
    values = {name: term(stats) for name, term in TERMS.items()}
    assert values == {
        "correct": 1.0,
        "progress": 0.5,
        "format": -1.0,
        "validity": -1.0,
        "length": -5.0,
        "backtrack": -1.0,
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
    problem = {"numbers": [2, 3, 4, 9], "target": 24}
    good = "9 - 3 = 6\n6 * 4 = 24"
    bad = "3 + 4 = 8\n9 * 2 = 18"
    correct, validity = trl_reward_functions(task, {"correct": 1.0, "validity": 0.5})
    assert correct.__name__ == "countdown_correct" and validity.__name__ == "countdown_validity"
    assert correct(prompts=["p", "p"], completions=[good, bad], problem=[problem, problem]) == [1.0, 0.0]
    assert validity(prompts=["p", "p"], completions=[good, bad], problem=[problem, problem]) == [0.0, -0.5]


def test_trl_adapter_accepts_json_problems_and_messages():
    task = make_task("countdown")
    (correct,) = trl_reward_functions(task)
    messages = [[{"role": "assistant", "content": "9 - 3 = 6\n6 * 4 = 24"}]]
    assert correct(prompts=None, completions=messages, problem=['{"numbers": [2, 3, 4, 9], "target": 24}']) == [1.0]
    with pytest.raises(KeyError, match="problem"):
        correct(prompts=None, completions=["x"], numbers=[[1]])
    with pytest.raises(TypeError):
        completion_text(42)
