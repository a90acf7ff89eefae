"""A structured Sudoku view for classic RL: ``backtrack_gym/SudokuGrid-v0``."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from backtrack_gym.envs.snapshot import SudokuGridSnapshot, rng_from_state, rng_state
from backtrack_gym.envs.sudoku.env import SudokuEnv
from backtrack_gym.envs.sudoku.generator import SudokuConfig
from backtrack_gym.envs.sudoku.rules import Step, candidate_masks


class SudokuGridEnv(gym.Env[np.ndarray, np.int64]):
    """Sudoku with the board as numbers and one discrete action per placement.

    ## Description

    The game of :class:`~backtrack_gym.envs.sudoku.SudokuEnv` (same puzzles, rules,
    backtrack stack, invalid-step policy and rewards: each action is played there
    as its ``rRcC=D`` line), seen as arrays for policies such as sb3-contrib's
    ``MaskablePPO``.

    ## Action Space

    ``Discrete(cells * size + 1)``: action ``cell * size + (digit - 1)`` places
    ``digit`` at ``cell`` (row-major); the last action, ``cells * size``, is the
    backtrack. ``action_masks()`` (also ``info["action_mask"]``) marks the actions
    the rules accept now: placements in blank cells that repeat no digit in their
    row, column or box, and the backtrack when it is on and there is a placement
    to undo. An action is a Python or numpy integer: anything else (a float, a
    bool, a string) is a ``TypeError``, an integer out of range a ``ValueError``.

    ## Observation Space

    ``MultiDiscrete([size + 1] * cells)``: the board, row-major, 0 for a blank.

    ## Rewards

    Those of the text env (``reward_weights``, default ``{"correct": 1.0}``; e.g.
    add ``"progress"`` for credit per correct placement).

    ## Starting State

    As the text env: ``reset(seed=s)`` is deterministic, ``options`` may pin a
    ``"problem"`` or an ``"index"``.

    ## Episode End

    Terminated when solved, at an invalid action under
    ``invalid_policy="terminate"``, or when no action is legal (a dead end with
    backtracking off). Truncated after ``max_steps`` actions.

    ## Arguments

    The text env's: ``config`` or its fields as keywords, ``split``, ``backtrack``,
    ``max_steps``, ``invalid_policy``, ``invalid_penalty``, ``reward_weights``,
    ``render_mode``.

    ## Example

    >>> import gymnasium as gym
    >>> import backtrack_gym  # registers the envs
    >>> env = gym.make("backtrack_gym/SudokuGrid-v0", size=4)
    >>> observation, info = env.reset(seed=0)
    >>> observation.reshape(4, 4)[2]
    array([4, 0, 1, 0])
    >>> env.unwrapped.action_line(45)  # cell 11 (row 3, column 4), digit 2
    'r3c4=2'
    >>> observation, reward, terminated, truncated, info = env.step(45)
    >>> observation.reshape(4, 4)[2], reward, terminated
    (array([4, 0, 1, 2]), 0.0, False)
    """

    metadata = SudokuEnv.metadata

    def __init__(self, config: SudokuConfig | Mapping[str, Any] | None = None, **kwargs: Any):
        if "interaction" in kwargs:
            raise TypeError("SudokuGridEnv always acts one placement at a time; it takes no 'interaction'")
        self.text_env = SudokuEnv(config, **kwargs)
        self.task = self.text_env.task
        self.render_mode = self.text_env.render_mode
        size, cells = self.task.size, self.task.board.cells
        self.observation_space = spaces.MultiDiscrete(np.full(cells, size + 1, dtype=np.int64))
        self.action_space = spaces.Discrete(cells * size + 1)
        self.backtrack_action = cells * size
        self.done = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        _, info = self.text_env.reset(seed=seed, options=options)
        self.done = False
        return self._observation(), self._with_mask(info)

    def step(self, action: int | np.integer) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.done:
            raise ResetNeeded("call reset() before step(): the episode has ended or not begun")
        # Only true integers: a float, bool, str or bytes would be truncated or parsed into some other action.
        if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)):
            raise TypeError(f"an action is an int or a numpy integer, got {type(action).__name__} {action!r}")
        if not 0 <= action <= self.backtrack_action:
            raise ValueError(f"action must be in 0..{self.backtrack_action}, got {action!r}")
        _, reward, terminated, truncated, info = self.text_env.step(self.action_line(int(action)))
        info = self._with_mask(info)
        terminated = terminated or not info["action_mask"].any()
        self.done = terminated or truncated
        return self._observation(), float(reward), terminated, truncated, info

    def action_line(self, action: int) -> str:
        """The text-env line of ``action``."""
        if action == self.backtrack_action:
            return self.text_env.backtrack_token
        cell, digit = divmod(action, self.task.size)
        row, col = divmod(cell, self.task.size)
        return str(Step(row, col, digit + 1))

    def action_masks(self) -> np.ndarray:
        """Which actions the rules accept in the current state (``MaskablePPO`` calls this)."""
        episode = self.text_env.episode
        if episode is None:
            raise ResetNeeded("call reset() before action_masks()")
        size = self.task.size
        masks = np.array(candidate_masks(self.task.board, episode.state), dtype=np.int64)
        placements = (masks[:, None] >> np.arange(size)) & 1
        can_undo = self.text_env.backtrack and len(episode.states) > 1
        return np.append(placements.reshape(-1).astype(bool), can_undo)

    def snapshot(self) -> SudokuGridSnapshot:
        """This env's state now: the text env's snapshot, whether the episode has ended, and
        this env's own ``np_random`` (see :mod:`backtrack_gym.envs.snapshot`).

        Raises:
            gymnasium.error.ResetNeeded: before the first ``reset``.
        """
        rng = rng_state(self._np_random, self._np_random_seed)
        return SudokuGridSnapshot(env=self.text_env.snapshot(), done=self.done, rng=rng)

    def restore(self, snapshot: SudokuGridSnapshot | Mapping[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        """Put this env at the point of ``snapshot`` or of its ``to_dict()`` data; returns the
        observation and ``info`` it returned there.

        Raises:
            ValueError: as :meth:`SudokuEnv.restore <backtrack_gym.envs.core.TextEnv.restore>`
                (another config or settings, or a field that does not fit).
        """
        snapshot = SudokuGridSnapshot.from_dict(snapshot)
        generator, seed = rng_from_state(snapshot.rng)
        _, info = self.text_env.restore(snapshot.env)
        self.done = snapshot.done
        self._np_random, self._np_random_seed = generator, seed
        return self._observation(), self._with_mask(info)

    def fork(self) -> SudokuGridEnv:
        """A new grid env at this env's point, stepping and resetting on its own from here.

        Raises:
            gymnasium.error.ResetNeeded: before the first ``reset``.
        """
        snapshot = self.snapshot()
        twin = copy.copy(self)
        twin.text_env = self.text_env.fork()
        twin.action_space = copy.deepcopy(self.action_space)
        twin.observation_space = copy.deepcopy(self.observation_space)
        twin.restore(snapshot)
        return twin

    def render(self) -> str | None:
        return self.text_env.render()

    def _observation(self) -> np.ndarray:
        return np.frombuffer(self.text_env.episode.state, dtype=np.uint8).astype(np.int64)

    def _with_mask(self, info: dict[str, Any]) -> dict[str, Any]:
        info["action_mask"] = self.action_masks()
        return info
