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
    """The task called ``name`` built from its config fields (``countdown``, ...)."""
    from backtrack_gym.envs.countdown import CountDownConfig, CountDownTask
    from backtrack_gym.envs.math import MathConfig, MathTask
    from backtrack_gym.envs.sudoku import SudokuConfig, SudokuTask

    factories = {
        "countdown": lambda: CountDownTask(CountDownConfig(**config)),
        "math": lambda: MathTask(MathConfig(**config)),
        "sudoku": lambda: SudokuTask(SudokuConfig(**config)),
    }
    if name not in factories:
        raise ValueError(f"unknown task {name!r}; known: {sorted(factories)}")
    return factories[name]()
