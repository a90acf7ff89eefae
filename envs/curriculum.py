"""An adaptive curriculum: a task's difficulty moves up or down a ladder by the recent solve rate.

A *ladder* is an ordered tuple of *levels*, easiest first; a level is a mapping of the
task's config fields (``CountDownConfig``, ``SudokuConfig``, ``MathConfig``) laid over
the env's own settings. :data:`LADDERS` holds each task's registered default
(:func:`register_ladder` adds or replaces one); a :class:`CurriculumConfig` may give its
own.

The rule is reasoning-gym's (open-thought/reasoning-gym, ``training/trainers/ray_grpo_trainer.py``
and ``training/utils/datasets.py``; its mini-sudoku curriculum config
``training/configs/curriculum-experiments/mini_sukoku/curriculum.yaml``):

- the solve rate is the mean score of the last ``last_k`` scored samples; the level moves
  only once that many have been scored (``total_samples >= last_k``);
- up one level when the rate is strictly above ``success_threshold`` (0.70 there), down one
  when strictly below ``failure_threshold`` (0.10 there);
- every move clears the scores (``score_board.clear``), so the next decision is taken on
  samples of the new level only.

Here a sample is one episode, scored 1 when solved; ``window`` is ``last_k``. At either
end of the ladder the level stays and the window keeps rolling.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec, register
from gymnasium.envs.registration import registry as gym_registry
from gymnasium.utils import seeding

from backtrack_gym.envs.core import TextEnv
from backtrack_gym.envs.registry import TASK_ENV_IDS, task_spec
from backtrack_gym.envs.text_space import TextSpace

Level = Mapping[str, Any]
CURRICULUM_ENV_ID = "backtrack_gym/Curriculum-v0"
ENTRY_POINT = "backtrack_gym.envs.curriculum:CurriculumEnv"

_LADDERS: dict[str, tuple[Level, ...]] = {}
LADDERS: Mapping[str, tuple[Level, ...]] = MappingProxyType(_LADDERS)
"""Each task's default ladder by task name (read-only; see :func:`register_ladder`)."""


def register_ladder(task: str, levels: Sequence[Level]) -> None:
    """Make ``levels`` (easiest first) the default ladder of the registered task ``task``."""
    _LADDERS[task_spec(task).name] = _checked_levels(task, levels)


def default_ladder(task: str) -> tuple[Level, ...]:
    """The registered default ladder of ``task``; a ``ValueError`` if it has none."""
    if task not in _LADDERS:
        raise ValueError(f"task {task!r} has no default curriculum ladder; give CurriculumConfig.levels")
    return _LADDERS[task]


def _checked_levels(task: str, levels: Sequence[Level]) -> tuple[Level, ...]:
    if isinstance(levels, (str, Mapping)) or not levels:
        raise ValueError(f"levels must be a non-empty sequence of config mappings, got {levels!r}")
    known = {field.name for field in dataclasses.fields(task_spec(task).config_class)}
    checked = []
    for number, level in enumerate(levels):
        if not isinstance(level, Mapping):
            raise ValueError(f"levels[{number}] must be a mapping of {task} config fields, got {level!r}")
        unknown = sorted(set(level) - known)
        if unknown:
            raise ValueError(f"levels[{number}]: {task} has no config fields {unknown}")
        frozen = MappingProxyType(dict(level))
        if frozen in checked:
            raise ValueError(f"levels[{number}] repeats levels[{checked.index(frozen)}]")
        checked.append(frozen)
    return tuple(checked)


@dataclass(frozen=True)
class CurriculumConfig:
    """How the level moves.

    Attributes:
        levels: the ladder, easiest first, each a mapping of config fields; empty: the
            task's default (:data:`LADDERS`).
        start_level: the level of the first episode.
        window: episodes the solve rate is taken over, and the fewest scored at a level
            before it may move (reasoning-gym's ``last_k``).
        success_threshold: up one level when the window's solve rate is strictly above it
            (reasoning-gym: 0.70).
        failure_threshold: down one level when the rate is strictly below it (reasoning-gym:
            0.10); 0 never moves down.
    """

    levels: tuple[Level, ...] = ()
    start_level: int = 0
    window: int = 32
    success_threshold: float = 0.7
    failure_threshold: float = 0.1

    def __post_init__(self) -> None:
        # A list from YAML or a dict of kwargs: keep it a tuple, so the config stays frozen.
        if not isinstance(self.levels, (str, Mapping)):
            object.__setattr__(self, "levels", tuple(self.levels))

    def to_dict(self) -> dict[str, Any]:
        """The fields, the levels as plain dicts (what ``CurriculumConfig(**d)`` takes back)."""
        return {**dataclasses.asdict(replace(self, levels=())), "levels": [dict(level) for level in self.levels]}

    def ladder(self, task: str) -> tuple[Level, ...]:
        """The ladder of ``task``: ``levels``, or the task's default; checked."""
        task_spec(task)  # an unknown task is named as such, not as one without a ladder
        return _checked_levels(task, self.levels) if self.levels else default_ladder(task)

    def validate(self, task: str) -> CurriculumConfig:
        """Raise ``ValueError`` naming the field for settings that cannot work for ``task``."""
        ladder = self.ladder(task)
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be a positive integer, got {self.window!r}")
        if not 0 <= self.start_level < len(ladder):
            raise ValueError(f"start_level must be in 0..{len(ladder) - 1}, got {self.start_level}")
        if not 0.0 < self.success_threshold < 1.0:
            raise ValueError(f"success_threshold must be in (0, 1), got {self.success_threshold}")
        if not 0.0 <= self.failure_threshold < self.success_threshold:
            raise ValueError(
                f"failure_threshold must be in [0, success_threshold={self.success_threshold}), "
                f"got {self.failure_threshold}"
            )
        return self


class Curriculum:
    """The level and the window of recent outcomes; :meth:`record` moves the level.

    Pure bookkeeping (no env), so a trainer that plays episodes its own way can drive it.
    """

    def __init__(self, config: CurriculumConfig, size: int):
        self.config = config
        self.size = size
        self.level = config.start_level
        self.outcomes: collections.deque[bool] = collections.deque(maxlen=config.window)
        self.last_rate: float | None = None

    @property
    def solve_rate(self) -> float | None:
        """The solve rate of the window now (None before any episode at this level)."""
        return sum(self.outcomes) / len(self.outcomes) if self.outcomes else None

    def record(self, solved: bool) -> int:
        """Score one episode of the current level; returns the level of the next episode."""
        self.outcomes.append(bool(solved))
        rate = self.last_rate = self.solve_rate
        if len(self.outcomes) < self.config.window:
            return self.level
        if rate > self.config.success_threshold and self.level + 1 < self.size:
            self._move(+1)
        elif rate < self.config.failure_threshold and self.level > 0:
            self._move(-1)
        return self.level

    def record_many(self, solved: Sequence[bool]) -> int:
        """Score a batch of episodes, all played at the current level, in order; returns the next level.

        Once one moves the level, the rest are dropped: they were played at the level left,
        and the new level's window must hold only its own.
        """
        level = self.level
        for outcome in solved:
            if self.record(outcome) != level:
                break
        return self.level

    def _move(self, by: int) -> None:
        self.level += by
        self.outcomes.clear()  # reasoning-gym's score_board.clear: judge the new level on its own

    def state(self) -> dict[str, Any]:
        """The level and window, JSON-able (see :meth:`load_state`)."""
        return {"level": self.level, "outcomes": list(self.outcomes), "last_rate": self.last_rate}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Take back a :meth:`state`."""
        level = int(state["level"])
        if not 0 <= level < self.size:
            raise ValueError(f"level must be in 0..{self.size - 1}, got {level}")
        self.level = level
        self.outcomes = collections.deque((bool(x) for x in state["outcomes"]), maxlen=self.config.window)
        self.last_rate = state.get("last_rate")


class CurriculumEnv(gym.Env[str, str]):
    """A task's env whose difficulty follows the agent's recent solve rate.

    ## Description

    It wraps one env of the task per level of the ladder (not as a ``gym.Wrapper``, whose
    one inner env and recreatable spec a changing level does not fit), each made as
    ``gym.make(<task's id>, **env_kwargs, **level)``; the wrapper plays the current
    level's. When an episode ends (terminated or truncated) its outcome (``info["solved"]``)
    is scored in a window of ``window`` episodes, and the level moves up or down by the
    rule of :mod:`backtrack_gym.envs.curriculum` (reasoning-gym's). A move takes effect
    at the next ``reset``; an episode left unfinished by a ``reset`` is not scored.

    ## Action Space

    The task's text space, as long as the longest level's (a Sudoku ladder spans 4x4
    to 9x9 boards).

    ## Observation Space

    The task's text space, as long as the longest level's observation.

    ## Rewards

    The task env's, unchanged.

    ## Starting State

    The level's env with an item index drawn from the wrapper's own generator (seeded by
    ``reset(seed=s)``), so the same seed and the same outcomes give the same levels and
    problems. ``options={"index": i}`` or ``{"problem": ...}`` pass through to the level's env.

    ## Episode End

    As the task env's. ``info`` adds ``curriculum_level`` (the level of this episode),
    ``curriculum_solve_rate`` (the window's rate after the last scored episode, before a
    move clears it; None before any) and ``curriculum_window`` (episodes now in the window).

    ## Arguments

    ``task``: a registered task name (``"countdown"``, ``"sudoku"``, ``"math"``).
    ``curriculum``: a :class:`CurriculumConfig` or its fields as a dict (default: the
    task's ladder, reasoning-gym's thresholds). ``env_kwargs``: what ``gym.make`` of the
    task's env takes (config fields the ladder does not set, and the
    :class:`~backtrack_gym.envs.core.TextEnv` settings); a field a level sets is refused
    here, so a level always means the same problems.

    ## Example

    >>> env = CurriculumEnv("countdown", {"window": 1}, interaction="completion")
    >>> observation, info = env.reset(seed=0)
    >>> observation, info["curriculum_level"]
    ('Target: 6 | Numbers: 3 3', 0)
    >>> _, reward, terminated, _, info = env.step("3 + 3 = 6")
    >>> reward, info["curriculum_solve_rate"], env.level
    (1.0, 1.0, 1)
    >>> observation, info = env.reset()
    >>> observation, info["curriculum_level"]
    ('Target: 19 | Numbers: 11 10 3', 1)
    """

    metadata = TextEnv.metadata

    def __init__(self, task: str, curriculum: CurriculumConfig | Mapping[str, Any] | None = None, **env_kwargs: Any):
        if isinstance(curriculum, Mapping):
            curriculum = CurriculumConfig(**curriculum)
        config = (curriculum or CurriculumConfig()).validate(task)
        self.ladder = config.ladder(task)
        clashes = sorted({key for level in self.ladder for key in level} & set(env_kwargs))
        if clashes:
            raise ValueError(f"the curriculum's levels set {clashes}; do not give them to the env too")
        self.level_envs: list[gym.Env] = []
        for number, level in enumerate(self.ladder):
            try:
                env = gym.make(TASK_ENV_IDS[task], disable_env_checker=True, **env_kwargs, **level)
            except ValueError as err:
                raise ValueError(f"curriculum level {number} ({dict(level)}): {err}") from None
            self.level_envs.append(env)
        self.curriculum = Curriculum(config, len(self.ladder))
        self.env = self.level_envs[self.curriculum.level]
        self.task_name = task
        self.render_mode = self.env.render_mode
        self.observation_space = _widest([env.observation_space for env in self.level_envs])
        self.action_space = _widest([env.action_space for env in self.level_envs])
        self.spec = EnvSpec(
            CURRICULUM_ENV_ID,
            entry_point=ENTRY_POINT,
            kwargs={"task": task, "curriculum": config.to_dict(), **env_kwargs},
        )
        self._rng, _ = seeding.np_random()
        self._episode_level = self.curriculum.level
        self._scored = True  # no episode is open before the first reset

    @property
    def level(self) -> int:
        """The level the next episode plays (the current one's until it ends)."""
        return self.curriculum.level

    def level_config(self, level: int | None = None) -> Any:
        """The task config of ``level`` (default: the current one)."""
        env = self.level_envs[self.curriculum.level if level is None else level]
        return env.unwrapped.task.config

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._rng, _ = seeding.np_random(seed)
        options = dict(options or {})
        if options.get("problem") is None and options.get("index") is None:
            options["index"] = int(self._rng.integers(0, 2**62))
        self._episode_level = self.curriculum.level
        self.env = self.level_envs[self._episode_level]
        self._scored = False
        observation, info = self.env.reset(seed=seed, options=options)
        return observation, self._info(info)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        if (terminated or truncated) and not self._scored:
            self._scored = True
            self.curriculum.record(bool(info["solved"]))
        return observation, reward, terminated, truncated, self._info(info)

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        return {
            **info,
            "curriculum_level": self._episode_level,
            "curriculum_solve_rate": self.curriculum.last_rate,
            "curriculum_window": len(self.curriculum.outcomes),
        }

    def render(self) -> str | None:
        return self.env.render()

    def close(self) -> None:
        for env in self.level_envs:
            env.close()

    @property
    def level_env(self) -> TextEnv:
        """The text env of the current episode's level."""
        return self.env.unwrapped


def _widest(spaces: list[Any]) -> TextSpace:
    charsets = {space.characters for space in spaces}
    if len(charsets) != 1:
        raise ValueError("the levels' envs differ in their charset")
    return TextSpace(max_length=max(space.max_length for space in spaces), charset=spaces[0].characters)


# The default ladders. Each step makes one thing harder; the research's task is a rung
# (CountDown level 4, Math's default 2..6 steps spans levels 1..5), not the top.
register_ladder(
    "countdown",
    (
        {"num_count": 2, "number_min": 1, "number_max": 9, "target_min": 1, "target_max": 20},
        {"num_count": 3, "number_min": 1, "number_max": 12, "target_min": 1, "target_max": 40},
        {"num_count": 3, "number_min": 1, "number_max": 25, "target_min": 10, "target_max": 60},
        {"num_count": 4, "number_min": 1, "number_max": 50, "target_min": 10, "target_max": 100},
        {"num_count": 4, "number_min": 1, "number_max": 99, "target_min": 10, "target_max": 100},
        {"num_count": 5, "number_min": 1, "number_max": 99, "target_min": 10, "target_max": 100},
    ),
)
# Sudoku: board size, then blanks (min_clues pins the clues left), then the technique
# the grader needs, then the guesses a search must make.
register_ladder(
    "sudoku",
    tuple(
        {"size": size, "difficulty": difficulty, "min_clues": min_clues, "min_guesses": low, "max_guesses": high}
        for size, difficulty, min_clues, low, high in (
            (4, "singles", 12, 0, None),
            (4, "singles", None, 0, None),
            (6, "singles", 24, 0, None),
            (6, "singles", None, 0, None),
            (9, "singles", 50, 0, None),
            (9, "singles", None, 0, None),
            (9, "advanced", None, 0, None),
            (9, "search", None, 1, 2),
            (9, "search", None, 3, None),
        )
    ),
)
# Math: the template depth, i.e. the checked calculation lines a solution takes.
register_ladder(
    "math",
    tuple({"min_reasoning_steps": depth, "max_reasoning_steps": depth} for depth in range(1, 9)),
)

if CURRICULUM_ENV_ID not in gym_registry:
    register(id=CURRICULUM_ENV_ID, entry_point=ENTRY_POINT)
