"""Shared bad-input checks for every text env (imported by the env test modules)."""

from __future__ import annotations

import builtins
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import gymnasium as gym
import pytest
from gymnasium.error import ResetNeeded

SENTINEL = Path("/tmp/backtrack_gym_code_ran")

NAMED_BAD_INPUTS = {
    "empty": "",
    "one_megabyte": "7" * 1_000_000,
    "one_megabyte_of_newlines": "\n" * 1_000_000,
    "unicode": "数字 ½ ٣ + ٤ = ٧ 𝟙+𝟚=𝟛 é",
    "control_characters": "\x00\x01\x1b[31m\r\t\x7f1 + 2 = 3\x00",
    "python_import": f"__import__('os').system('touch {SENTINEL}')",
    "power_tower": "9**9**9",
    "power_tower_step": "9**9**9 = 1",
    "nested_parentheses": "(" * 10_000 + "1" + ")" * 10_000,
    "nested_parentheses_step": "(" * 10_000 + "1" + ")" * 10_000 + " + 1 = 2",
    "huge_integer": "1" + "0" * 400,
    "huge_integer_step": "1" + "0" * 400 + " + 1 = 1" + "0" * 399 + "1",
    "division_by_zero": "5 / 0 = 0",
    "division_by_zero_expr": "(3-3)/(2-2) = 1",
    "lambda": "(lambda: 0)() = 0",
    "format_string": "{0.__class__} = 1",
    "many_lines": "1 + 1 = 2\n" * 20_000,
}

# Only a hang guard: the CPU seconds of this process, so other jobs sharing the cores
# cannot fail it. How fast hostile steps are is measured by bench/hostile_input_bench.py.
HANG_LIMIT_CPU_S = 2.0


class CodeRan(AssertionError):
    pass


@contextlib.contextmanager
def forbid_code_execution() -> Iterator[None]:
    """Fail if anything calls eval or exec inside the block, or a payload touched the sentinel."""

    def forbidden(*args, **kwargs):
        raise CodeRan("model text reached eval or exec")

    SENTINEL.unlink(missing_ok=True)
    with mock.patch.object(builtins, "eval", forbidden), mock.patch.object(builtins, "exec", forbidden):
        yield
    assert not SENTINEL.exists(), "a payload ran code"


@pytest.fixture
def no_code_execution():
    with forbid_code_execution():
        yield


def assert_defined_outcome(env: gym.Env, action: str) -> dict:
    """One step with ``action`` gives a well-typed result and does not hang; returns info."""
    start = time.process_time()
    obs, reward, terminated, truncated, info = env.step(action)
    cpu_seconds = time.process_time() - start
    assert cpu_seconds < HANG_LIMIT_CPU_S, f"step took {cpu_seconds:.2f} CPU seconds"
    assert env.observation_space.contains(obs)
    assert isinstance(reward, float)
    assert isinstance(terminated, bool) and isinstance(truncated, bool)
    if not info["solved"]:
        # Either the step was applied, or it was rejected with a reason, or it held no step at all.
        assert info["last_valid"] or info["last_reason"] or info["steps"] == 0, info
    return info


def assert_ended_episode_raises(env: gym.Env, action: str) -> None:
    """``step`` after the end is ``ResetNeeded``, never a silent extra step."""
    with pytest.raises(ResetNeeded):
        env.step(action)
