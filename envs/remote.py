"""A Gymnasium env that plays a backtrack-gym env on an OpenEnv server (:mod:`.openenv_server`).

``gym.make("backtrack_gym/Remote-v0", base_url="http://host:8000", env_id="backtrack_gym/CountDown-v0",
interaction="completion", backtrack=True)``: every keyword but the client's own goes to the
server's ``gym.make``. It talks through OpenEnv's ``EnvClient`` (one WebSocket session, so one
env on the server) wrapped by OpenEnv's ``SyncEnvClient``; observations, rewards,
``terminated``, ``truncated`` and ``info`` (as JSON data) are the local env's, and an env's
``ValueError``, ``TypeError`` or ``ResetNeeded`` is raised again here.
"""

from __future__ import annotations

import json
import re
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded
from openenv.core import EnvClient
from openenv.core.client_types import StepResult

from backtrack_gym.envs.openenv_server import BacktrackObservation, BacktrackState, space_from_json

_ERRORS = {"ValueError": ValueError, "TypeError": TypeError, "ResetNeeded": ResetNeeded, "KeyError": ValueError}
_SERVER_ERROR = re.compile(r"^Server error: (\w+): (.*) \(code: \w+\)$", re.S)


class BacktrackClient(EnvClient[dict, BacktrackObservation, BacktrackState]):
    """OpenEnv's async client for :class:`~.openenv_server.BacktrackEnvironment`."""

    def _step_payload(self, action: Any) -> dict[str, Any]:
        return {"action": action}

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[BacktrackObservation]:
        observation = BacktrackObservation(
            **payload.get("observation", {}), reward=payload.get("reward"), done=payload.get("done", False)
        )
        return StepResult(observation=observation, reward=payload.get("reward"), done=payload.get("done", False))

    def _parse_state(self, payload: dict[str, Any]) -> BacktrackState:
        return BacktrackState(**payload)


def _plain(value: Any, name: str) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    try:
        json.dumps(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be JSON data to go to the server: {err}") from None
    return value


class RemoteEnv(gym.Env):
    """One env of an OpenEnv backtrack-gym server, as a local Gymnasium env.

    Args:
        base_url: the server (``http://host:port``).
        env_id: the env id on the server, e.g. ``"backtrack_gym/CountDown-v0"``.
        connect_timeout_s, message_timeout_s: bounds on connecting and on each reply.
        **env_kwargs: what the server's ``gym.make(env_id, ...)`` takes (JSON data).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        base_url: str,
        env_id: str,
        connect_timeout_s: float = 10.0,
        message_timeout_s: float = 60.0,
        **env_kwargs: Any,
    ):
        if not isinstance(base_url, str) or not base_url:
            raise ValueError(f"base_url must be the server's URL, got {base_url!r}")
        if not isinstance(env_id, str):
            raise ValueError(f"env_id must be a str, got {env_id!r}")
        self.env_id = env_id
        self.env_kwargs = {key: _plain(value, key) for key, value in env_kwargs.items()}
        self.client = BacktrackClient(
            base_url=base_url, connect_timeout_s=connect_timeout_s, message_timeout_s=message_timeout_s
        ).sync()
        self.client.connect()
        # The spaces come with a reset; this first one also checks env_id and env_kwargs now.
        result = self._call(self.client.reset, env_id=env_id, env_kwargs=self.env_kwargs)
        self._set_spaces(result.observation.spaces)
        self.last_info: dict[str, Any] = {}

    def _set_spaces(self, data: dict[str, Any]) -> None:
        self.observation_space = space_from_json(data["observation"])
        self.action_space = space_from_json(data["action"])

    def _call(self, method, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except RuntimeError as err:
            match = _SERVER_ERROR.match(str(err))
            if match is None:
                raise
            raise _ERRORS.get(match.group(1), RuntimeError)(match.group(2)) from None

    def _observation(self, value: Any) -> Any:
        if isinstance(self.observation_space, (gym.spaces.MultiDiscrete, gym.spaces.Box)):
            return np.asarray(value, dtype=self.observation_space.dtype)
        return value

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        result = self._call(
            self.client.reset,
            seed=seed,
            options=_plain(options, "options"),
            env_id=self.env_id,
            env_kwargs=self.env_kwargs,
        )
        observation = result.observation
        self.last_info = observation.info
        return self._observation(observation.observation), observation.info

    def step(self, action: Any):
        result = self._call(self.client.step, _plain(action, "action"))
        observation = result.observation
        self.last_info = observation.info
        return (
            self._observation(observation.observation),
            float(observation.reward),
            observation.terminated,
            observation.truncated,
            observation.info,
        )

    def action_masks(self) -> np.ndarray:
        """The last ``info["action_mask"]`` (``SudokuGrid-v0``), for ``MaskablePPO``."""
        if "action_mask" not in self.last_info:
            raise ValueError(f"{self.env_id} gives no action_mask")
        return np.asarray(self.last_info["action_mask"], dtype=bool)

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            self.client = None
            client.close()
