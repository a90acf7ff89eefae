"""The one place a task is registered; everything that lists tasks reads it.

A task package calls :func:`register_task` once when it is imported (every package
under :mod:`backtrack_gym.envs` is imported with it). From that one call follow
:data:`TASK_ENV_IDS`, :func:`make_task`, the task's Gymnasium ids, its trace styles
(:func:`backtrack_gym.agents.traces.styles_for`) and its reward adapters (exported by
:mod:`backtrack_gym.rewards`). Trace styles and reward adapters are named by import
path and loaded on first use, so that importing the envs never imports the layers above.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from gymnasium.envs.registration import EnvCreator, register
from gymnasium.envs.registration import registry as gym_registry

from backtrack_gym.envs.core import Task


@dataclass(frozen=True)
class TaskSpec:
    """What :func:`register_task` was given for one task (see there)."""

    name: str
    task_class: type[Task]
    config_class: type
    env_ids: Mapping[str, str | EnvCreator]
    trace_styles: str | None = None
    reward_adapters: tuple[str, ...] = ()

    @property
    def text_env_id(self) -> str:
        """The id of the task's text env (the first of its ids)."""
        return next(iter(self.env_ids))

    @property
    def reward_adapter_names(self) -> list[str]:
        """The names its reward adapters are exported by."""
        return [adapter_name(path) for path in self.reward_adapters]


def adapter_name(path: str) -> str:
    """The name a reward adapter at ``"module:function"`` is exported by."""
    return path.rpartition(":")[2]


_TASKS: dict[str, TaskSpec] = {}
TASKS: Mapping[str, TaskSpec] = MappingProxyType(_TASKS)
"""Every registered task by name (read-only)."""


def register_task(
    name: str,
    task_class: type[Task],
    config_class: type,
    env_ids: Mapping[str, str | EnvCreator],
    *,
    trace_styles: str | None = None,
    reward_adapters: tuple[str, ...] = (),
) -> TaskSpec:
    """Register the task ``name`` and its Gymnasium envs.

    Args:
        name: the task's name, as its ``task_class.name``.
        task_class: the :class:`~backtrack_gym.envs.core.Task`, built as
            ``task_class(config_class(...))``.
        config_class: the task's config, a dataclass whose fields are the task's settings.
        env_ids: each Gymnasium id and its entry point, the task's text env first. An
            entry point is what ``gymnasium.register`` takes: ``"module:Class"`` (which
            keeps the env spec JSON-able) or the env class.
        trace_styles: the module holding the task's trace styles (a ``STYLES`` dict
            of writers by name, and ``OPTIONS``, the :func:`~backtrack_gym.agents.traces.write_trace`
            options they take, if any).
        reward_adapters: ``"module:function"`` of each TRL reward factory of the task's
            own (e.g. for free-form answers), exported by :mod:`backtrack_gym.rewards` by name.

    Raises:
        ValueError: when ``name``, an env id or a reward adapter's name is taken, ``name``
            differs from ``task_class.name``, or there is no env id.
        TypeError: when ``task_class`` is no Task or ``config_class`` no dataclass.
    """
    if name in _TASKS:
        raise ValueError(f"task {name!r} is already registered")
    if not (isinstance(task_class, type) and issubclass(task_class, Task)):
        raise TypeError(f"task_class must be a Task subclass, got {task_class!r}")
    if getattr(task_class, "name", None) != name:
        raise ValueError(f"task {name!r}: {task_class.__name__}.name must be {name!r}")
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)):
        raise TypeError(f"config_class must be a dataclass, got {config_class!r}")
    if not env_ids:
        raise ValueError(f"task {name!r} needs at least one env id")
    # An env id names one env, and a reward adapter is exported by its function's name.
    claimed = {key: spec.name for spec in _TASKS.values() for key in [*spec.env_ids, *spec.reward_adapter_names]}
    for key in [*env_ids, *map(adapter_name, reward_adapters)]:
        if key in claimed:
            raise ValueError(f"task {name!r}: {key!r} is task {claimed[key]!r}'s")
    spec = TaskSpec(name, task_class, config_class, dict(env_ids), trace_styles, tuple(reward_adapters))
    for env_id, entry_point in spec.env_ids.items():
        if env_id not in gym_registry:
            register(id=env_id, entry_point=entry_point)
    _TASKS[name] = spec
    return spec


def unregister_task(name: str) -> None:
    """Forget the task ``name`` and its Gymnasium ids (a test's throwaway task, say)."""
    spec = task_spec(name)
    for env_id in spec.env_ids:
        gym_registry.pop(env_id, None)
    del _TASKS[name]


def task_spec(name: str) -> TaskSpec:
    """The registration of the task ``name``; a ``ValueError`` naming the known tasks if none."""
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; known: {sorted(_TASKS)}")
    return _TASKS[name]


class _TaskEnvIds(Mapping[str, str]):
    """Each registered task's text env id, by task name; always up to date with the registry."""

    def __getitem__(self, name: str) -> str:
        if name not in _TASKS:
            raise KeyError(name)
        return _TASKS[name].text_env_id

    def __iter__(self) -> Iterator[str]:
        return iter(_TASKS)

    def __len__(self) -> int:
        return len(_TASKS)

    def __repr__(self) -> str:
        return repr(dict(self))


TASK_ENV_IDS: Mapping[str, str] = _TaskEnvIds()


def make_task(name: str, **config: object) -> Task:
    """The registered task called ``name`` built from its config fields.

    Unknown fields and values not of a field's type (``num_count=2.7``, ``verify=1``) are a
    ``ValueError`` naming the field, as are values the task's config refuses.
    """
    from backtrack_gym.config import convert

    spec = task_spec(name)
    config_class = spec.config_class
    known = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"{name} has no config fields {unknown}; known: {sorted(known)}")
    hints = typing.get_type_hints(config_class)
    # text=False: the envs take these values as they are, so a string is no number here either.
    fields = {key: convert(value, hints[key], key, text=False) for key, value in config.items()}
    return spec.task_class(config_class(**fields))


def load(path: str) -> Any:
    """The object an import path names: ``"package.module"`` or ``"package.module:attribute"``."""
    module_name, _, attribute = path.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module
