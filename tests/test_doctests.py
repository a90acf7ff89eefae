"""The examples in the env classes' docstrings run as written.

The modules are those of every registered env (so a new task's env needs an example
too) and the token env.
"""

import doctest
import importlib

import pytest

from backtrack_gym.envs.registry import TASKS


def module_of(entry_point):
    return entry_point.partition(":")[0] if isinstance(entry_point, str) else entry_point.__module__


ENV_MODULES = sorted({module_of(entry_point) for spec in TASKS.values() for entry_point in spec.env_ids.values()})


@pytest.mark.parametrize("module_name", [*ENV_MODULES, "backtrack_gym.envs.token_env", "backtrack_gym.envs.curriculum"])
def test_docstring_examples_pass(module_name):
    if module_name.endswith("token_env"):
        pytest.importorskip("transformers")  # its example builds a tokenizer
    results = doctest.testmod(importlib.import_module(module_name))
    assert results.attempted > 0, f"{module_name} has no docstring example"
    assert results.failed == 0


def test_the_env_modules_are_those_of_the_registered_envs():
    expected = {
        f"backtrack_gym.envs.{name}" for name in ("countdown.env", "math.env", "sudoku.env", "sudoku.structured")
    }
    assert expected <= set(ENV_MODULES)
