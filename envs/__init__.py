"""Task environments; :mod:`backtrack_gym.envs.core` is what they share."""

from backtrack_gym.envs.core import BACKTRACK, Episode, Invalid, Task, TextEnv
from backtrack_gym.envs.token_env import TokenEnv

__all__ = ["TASK_ENV_IDS", "BACKTRACK", "Episode", "Invalid", "Task", "TextEnv", "TokenEnv", "make_task"]


# The registered text env of each task (the ids themselves are registered in backtrack_gym/__init__.py).
TASK_ENV_IDS = {
    "countdown": "backtrack_gym/CountDown-v0",
    "sudoku": "backtrack_gym/Sudoku-v0",
    "math": "backtrack_gym/Math-v0",
}


def make_task(name: str, **config: object) -> Task:
    """The task called ``name`` built from its config fields (``countdown``, ...).

    Unknown fields and values not of a field's type (``num_count=2.7``, ``verify=1``) are a
    ``ValueError`` naming the field, as are values the task's config refuses.
    """
    import dataclasses
    import typing

    from backtrack_gym.config import convert
    from backtrack_gym.envs.countdown import CountDownConfig, CountDownTask
    from backtrack_gym.envs.math import MathConfig, MathTask
    from backtrack_gym.envs.sudoku import SudokuConfig, SudokuTask

    tasks = {
        "countdown": (CountDownConfig, CountDownTask),
        "math": (MathConfig, MathTask),
        "sudoku": (SudokuConfig, SudokuTask),
    }
    if name not in tasks:
        raise ValueError(f"unknown task {name!r}; known: {sorted(tasks)}")
    config_class, task_class = tasks[name]
    known = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"{name} has no config fields {unknown}; known: {sorted(known)}")
    hints = typing.get_type_hints(config_class)
    # text=False: the envs take these values as they are, so a string is no number here either.
    fields = {key: convert(value, hints[key], key, text=False) for key, value in config.items()}
    return task_class(config_class(**fields))
