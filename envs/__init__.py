"""Task environments; :mod:`backtrack_gym.envs.core` is what they share.

Importing this package imports every task package in it, and each registers itself
(:func:`~backtrack_gym.envs.registry.register_task`): a new task is a new folder here.
"""

import importlib
import pkgutil

from gymnasium.envs.registration import register as gym_register
from gymnasium.envs.registration import registry as gym_registry

from backtrack_gym.envs.core import BACKTRACK, Episode, Invalid, Task, TextEnv
from backtrack_gym.envs.registry import TASK_ENV_IDS, make_task
from backtrack_gym.envs.token_env import TokenEnv

__all__ = ["TASK_ENV_IDS", "BACKTRACK", "Episode", "Invalid", "Task", "TextEnv", "TokenEnv", "make_task"]

for _package in pkgutil.iter_modules(__path__, prefix=f"{__name__}."):
    if _package.ispkg:
        importlib.import_module(_package.name)

# After the tasks: it registers their default curriculum ladders and the curriculum env's id.
from backtrack_gym.envs import curriculum  # noqa: E402, F401

# The OpenEnv client (needs the openenv extra only when made): gym.make(REMOTE, base_url=..., env_id=...).
if "backtrack_gym/Remote-v0" not in gym_registry:
    gym_register(id="backtrack_gym/Remote-v0", entry_point="backtrack_gym.envs.remote:RemoteEnv")
