"""The OpenEnv server and the Remote-v0 client: episodes equal local ones step for step."""

from __future__ import annotations

import threading
import time

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("openenv", reason="needs the openenv extra (pip install -e .[openenv])")

from gymnasium.error import ResetNeeded  # noqa: E402
from openenv.core import EnvClient  # noqa: E402, F401

from backtrack_gym.envs.openenv_server import bind, make_app, to_json, uvicorn_server  # noqa: E402
from backtrack_gym.envs.remote import BacktrackClient  # noqa: E402

COUNTDOWN = "backtrack_gym/CountDown-v0"
PROBLEM = {"numbers": [3, 5, 7, 8], "target": 24}


@pytest.fixture(scope="module")
def url():
    sock = bind("127.0.0.1", 0)
    server = uvicorn_server(make_app(max_sessions=16))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)


def remote(url, env_id, **kwargs):
    return gym.make("backtrack_gym/Remote-v0", base_url=url, env_id=env_id, message_timeout_s=20, **kwargs)


def same_episode(url, env_id, actions, seed=0, options=None, **kwargs):
    """Play ``actions`` locally and through the server; every step's five values must agree."""
    local, far = gym.make(env_id, **kwargs), remote(url, env_id, **kwargs)
    try:
        assert far.observation_space == local.observation_space and far.action_space == local.action_space
        a, b = local.reset(seed=seed, options=options), far.reset(seed=seed, options=options)
        assert to_json(a) == to_json(b)
        steps = 0
        for action in actions:
            x, y = local.step(action), far.step(action)
            assert to_json(x) == to_json(y), (action, x, y)
            assert type(y[1]) is float and isinstance(y[2], bool)
            steps += 1
            if x[2] or x[3]:
                break
        return steps, y
    finally:
        local.close()
        far.close()


def test_countdown_step_mode_with_backtracking(url):
    actions = ["8 - 5 = 3", "<backtrack>", "<backtrack>", "nonsense", "8 - 5 = 3", "3 * 7 = 21", "21 + 3 = 24"]
    steps, last = same_episode(url, COUNTDOWN, actions, options={"problem": PROBLEM}, backtrack=True)
    assert steps == len(actions) and last[2] and last[4]["solved"] and last[4]["backtracks"] == 1


def test_countdown_completion_mode_with_backtrack_lines(url):
    output = "8 - 5 = 3\n<backtrack>\n7 - 5 = 2\n<backtrack>\n8 - 5 = 3\n3 * 7 = 21\n21 + 3 = 24"
    _, last = same_episode(
        url, COUNTDOWN, [output], options={"problem": PROBLEM}, interaction="completion", backtrack=True
    )
    assert last[4]["solved"] and last[4]["backtracks"] == 2


def test_seeded_episodes_sudoku_and_math(url):
    same_episode(url, COUNTDOWN, ["1 + 2 = 3", "<backtrack>"], seed=7, backtrack=True)
    same_episode(url, "backtrack_gym/Sudoku-v0", ["r1c1=1", "<backtrack>", "r2c2=3"], seed=3, backtrack=True)
    same_episode(
        url, "backtrack_gym/Math-v0", ["1200 * 20% = 240", "<backtrack>", "Answer: 48"], seed=0, backtrack=True
    )
    same_episode(url, "backtrack_gym/SudokuGrid-v0", [np.int64(0), 5, 16], seed=1, backtrack=True)


def test_reset_with_a_seed_reproduces(url):
    env = remote(url, COUNTDOWN)
    try:
        first, again = env.reset(seed=11), env.reset(seed=11)
        other = env.reset(seed=12)
        assert first == again and first[0] != other[0]
    finally:
        env.close()


def test_bad_input_is_a_clear_error_and_the_server_stays_up(url):
    with pytest.raises(ValueError, match="unknown env id"):
        remote(url, "backtrack_gym/NoSuch-v0")
    with pytest.raises(TypeError, match="no_such_field"):  # what the local gym.make raises
        remote(url, COUNTDOWN, no_such_field=1)
    env = remote(url, COUNTDOWN)
    try:
        env.reset(seed=0)
        with pytest.raises(TypeError, match="an action is a str"):
            env.unwrapped.step(3)
        with pytest.raises(ValueError, match="options must be JSON"):
            env.reset(options={"problem": object()})
    finally:
        env.close()
    # A raw OpenEnv client stepping before any reset: a clear error, and the session goes on.
    client = BacktrackClient(base_url=url, message_timeout_s=20).sync()
    with client:
        with pytest.raises(RuntimeError, match="ResetNeeded: call reset"):
            client.step("1 + 2 = 3")
        result = client.reset(env_id=COUNTDOWN, seed=0)
        assert result.observation.observation.startswith("Target:")
    same_episode(url, COUNTDOWN, ["1 + 2 = 3"], seed=1)
    with pytest.raises(ResetNeeded):  # gym.make's order check, as locally
        remote(url, COUNTDOWN).step("1 + 2 = 3")
