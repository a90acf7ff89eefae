import importlib.util
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("transformers")

import backtrack_gym  # noqa: E402, F401  (registers the envs)
from backtrack_gym.envs.countdown import CountDownTask  # noqa: E402
from backtrack_gym.envs.token_env import TokenEnv  # noqa: E402
from backtrack_gym.train import build_tokenizer  # noqa: E402

ENV_ID = "backtrack_gym/CountDown-v0"
PROBLEM = {"numbers": [3, 8], "target": 24}


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(CountDownTask())


def make(tokenizer, **kwargs):
    token_kwargs = {k: kwargs.pop(k) for k in ("max_length", "max_action_tokens") if k in kwargs}
    return TokenEnv(gym.make(ENV_ID, **kwargs), tokenizer, **token_kwargs)


def play(env, tokenizer, text):
    """Step every token of ``text``; the outcomes of the steps that sent something to the env."""
    sent = []
    for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
        observation, reward, terminated, truncated, info = env.step(token)
        assert env.observation_space.contains(observation)
        if info["steps"] > len(sent):
            sent.append((reward, terminated, truncated, info))
    return sent


def test_passes_sb3_check_env(tokenizer):
    from stable_baselines3.common.env_checker import check_env

    check_env(make(tokenizer), warn=True)
    check_env(make(tokenizer, interaction="completion", max_length=16), warn=True)


def test_spaces_and_observation_window(tokenizer):
    env = make(tokenizer, max_length=64)
    assert env.action_space == gym.spaces.Discrete(len(tokenizer))
    observation, info = env.reset(options={"problem": PROBLEM})
    prompt = tokenizer("Target: 24 | Numbers: 3 8\n")["input_ids"]
    assert observation["length"][0] == len(prompt) and list(observation["tokens"][: len(prompt)]) == prompt
    assert (observation["tokens"][len(prompt) :] == tokenizer.pad_token_id).all()
    play(env, tokenizer, "3 +<bksp>*")
    observation, *_, info = env.step(tokenizer.convert_tokens_to_ids("9"))
    assert info["pending"] == "3 *9"
    assert list(observation["tokens"][: observation["length"][0]]) == prompt + tokenizer("3 *9")["input_ids"]
    small = make(tokenizer, max_length=8)
    observation, _ = small.reset(options={"problem": PROBLEM})
    assert observation["length"][0] == 8 and list(observation["tokens"]) == prompt[-8:]


def test_scripted_tokens_with_backspace_and_backtrack_solve_countdown(tokenizer):
    env = make(tokenizer, backtrack=True)
    env.reset(options={"problem": PROBLEM})
    sent = play(env, tokenizer, "3 + 8 = 11\n<backtrack>\n3 * 9<bksp>8 = 24\n")
    assert [s[0] for s in sent] == [0.0, 0.0, 1.0]
    reward, terminated, truncated, info = sent[-1]
    assert terminated and not truncated and info["solved"] and info["backtracks"] == 1
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)


def test_completion_mode_sends_the_whole_output_at_eos(tokenizer):
    env = make(tokenizer, interaction="completion", backtrack=True)
    env.reset(options={"problem": PROBLEM})
    assert play(env, tokenizer, "3 + 8 = 11\n<backtrack>\n3 * 9<bksp>8 = 24") == []
    _, reward, terminated, _, info = env.step(tokenizer.eos_token_id)
    assert reward == 1.0 and terminated and info["solved"] and info["backtracks"] == 1


def test_eos_long_lines_and_bad_actions(tokenizer):
    env = make(tokenizer, max_action_tokens=6)
    env.reset(options={"problem": PROBLEM})
    [(reward, terminated, _, info)] = play(env, tokenizer, "3 + 5 = 8")  # "3 + 5 " is sent at 6 tokens
    assert info["last_reason"] and reward == pytest.approx(-0.1) and not terminated
    *_, info = env.step(tokenizer.convert_tokens_to_ids("<bksp>"))
    assert info["pending"] == "= "
    with pytest.raises(ValueError):
        env.step(len(tokenizer))
    _, reward, terminated, truncated, info = env.step(tokenizer.eos_token_id)  # sends "= ", then stops
    assert (reward, terminated, truncated) == (pytest.approx(-0.1), True, False) and info["steps"] == 2
    env.reset(options={"problem": PROBLEM})
    _, reward, terminated, truncated, info = env.step(tokenizer.eos_token_id)  # nothing pending: just stop
    assert (reward, terminated, truncated, info["steps"]) == (0.0, True, False, 0)
    with pytest.raises(TypeError):
        TokenEnv(gym.make("CartPole-v1"), tokenizer)


def test_ppo_example_runs(tmp_path):
    pytest.importorskip("stable_baselines3")
    path = Path(__file__).resolve().parents[1] / "examples" / "token_env_ppo.py"
    spec = importlib.util.spec_from_file_location("token_env_ppo", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    results = example.main(["--steps", "64", "--episodes", "3"])
    assert set(results) == {"ppo", "random"} and all(np.isfinite(v) for v in results.values())
