"""Every registered backtrack-gym env served through OpenEnv (``openenv-core`` 0.3).

The server is OpenEnv's own: :func:`openenv.core.env_server.create_fastapi_app` wraps
:class:`BacktrackEnvironment` (an OpenEnv ``Environment``), and each WebSocket session
(``/ws``, what OpenEnv's ``EnvClient`` speaks) gets its own instance, so one session's
episode never sees another's. A session's ``reset`` names the env (``env_id`` and
``env_kwargs``, what ``gym.make`` takes) and the ``seed`` and ``options`` of
``Env.reset``; ``step`` sends one action (a string for the text envs, an int for
``SudokuGrid-v0``). Observations carry the Gymnasium step's five values; ``info`` is
made JSON data (numpy arrays become lists). An env's exception reaches the client as
``"<ExceptionType>: <message>"`` so :class:`~backtrack_gym.envs.remote.RemoteEnv` raises
the same type a local env would.

Run: ``python -m backtrack_gym.envs.openenv_server --host 127.0.0.1 --port 8000``
(see docs/openenv.md).
"""

from __future__ import annotations

import argparse
import functools
import json
import socket
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from openenv.core.env_server import Action, Environment, Observation, State, create_fastapi_app
from pydantic import Field

import backtrack_gym  # noqa: F401  (registers the envs)
from backtrack_gym.envs.text_space import TextSpace

REMOTE_ENV_ID = "backtrack_gym/Remote-v0"


def served_env_ids() -> list[str]:
    """Every registered backtrack-gym env id but the remote client's own."""
    return sorted(k for k in gym.registry if k.startswith("backtrack_gym/") and k != REMOTE_ENV_ID)


def to_json(value: Any) -> Any:
    """``value`` as JSON data: numpy arrays and scalars as lists and numbers, tuples as lists."""
    if isinstance(value, Mapping):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def space_to_json(space: gym.Space) -> dict[str, Any]:
    """The spaces the envs use as JSON (``Text``, ``Discrete``, ``MultiDiscrete``)."""
    if isinstance(space, spaces.Text):
        return {
            "type": "text",
            "min_length": space.min_length,
            "max_length": space.max_length,
            "charset": space.characters,
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "multi_discrete", "nvec": space.nvec.tolist(), "start": space.start.tolist()}
    raise ValueError(f"space {space!r} cannot be sent to a client")


def space_from_json(data: Mapping[str, Any]) -> gym.Space:
    """Inverse of :func:`space_to_json`."""
    kind = data.get("type")
    if kind == "text":
        return TextSpace(max_length=data["max_length"], min_length=data["min_length"], charset=data["charset"])
    if kind == "discrete":
        return spaces.Discrete(data["n"], start=data["start"])
    if kind == "multi_discrete":
        return spaces.MultiDiscrete(np.array(data["nvec"]), start=np.array(data["start"]))
    raise ValueError(f"unknown space type {kind!r}")


class BacktrackAction(Action):
    """One action of the session's env: a line or output (text envs) or an action id."""

    action: Any = Field(default=None, description="the Gymnasium action: a str, or an int for SudokuGrid-v0")


class BacktrackObservation(Observation):
    """What ``reset`` or ``step`` returned (``reward`` and ``done`` are OpenEnv's own fields)."""

    observation: Any = Field(default=None, description="the env's observation (str, or a list of ints)")
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = Field(default_factory=dict)
    spaces: dict[str, Any] | None = Field(default=None, description="the env's spaces, sent at each reset")


class BacktrackState(State):
    """The session's env id and settings, and OpenEnv's episode id and step count."""

    env_id: str | None = None
    env_kwargs: dict[str, Any] = Field(default_factory=dict)


class RemoteError(Exception):
    """An env's exception, named by its type, for the client to raise again."""


def _tagged(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as err:  # the client raises it again by its type name
            raise RemoteError(f"{type(err).__name__}: {err}") from err

    return wrapper


class BacktrackEnvironment(Environment[BacktrackAction, BacktrackObservation, BacktrackState]):
    """An OpenEnv ``Environment`` playing any served backtrack-gym env, one per session.

    Args:
        env_ids: the env ids a client may make; default :func:`served_env_ids`.
    """

    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self, env_ids: list[str] | None = None):
        super().__init__()
        self.env_ids = list(env_ids) if env_ids is not None else served_env_ids()
        self.env: gym.Env | None = None
        self._state = BacktrackState()

    @_tagged
    def reset(
        self,
        seed: int | None = None,
        episode_id: str | None = None,
        env_id: str | None = None,
        env_kwargs: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> BacktrackObservation:
        if kwargs:
            raise ValueError(f"reset takes seed, episode_id, env_id, env_kwargs and options; got {sorted(kwargs)}")
        env_kwargs = dict(env_kwargs or {})
        if env_id is None:
            env_id = self._state.env_id
            if env_id is None:
                raise ValueError("env_id: the first reset of a session names the env")
        if env_id not in self.env_ids:
            raise ValueError(f"env_id: unknown env id {env_id!r}; served: {self.env_ids}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an int or None, got {seed!r}")
        if self.env is None or env_id != self._state.env_id or env_kwargs != self._state.env_kwargs:
            env = gym.make(env_id, **env_kwargs)
            if self.env is not None:
                self.env.close()
            self.env = env
        self._state = BacktrackState(env_id=env_id, env_kwargs=env_kwargs, episode_id=episode_id, step_count=0)
        observation, info = self.env.reset(seed=seed, options=options)
        return BacktrackObservation(
            observation=to_json(observation),
            info=to_json(info),
            spaces={
                "observation": space_to_json(self.env.observation_space),
                "action": space_to_json(self.env.action_space),
            },
        )

    @_tagged
    def step(self, action: BacktrackAction, timeout_s: float | None = None, **kwargs: Any) -> BacktrackObservation:
        if self.env is None:
            from gymnasium.error import ResetNeeded

            raise ResetNeeded("call reset() before step(): this session has no env yet")
        observation, reward, terminated, truncated, info = self.env.step(action.action)
        self._state.step_count += 1
        return BacktrackObservation(
            observation=to_json(observation),
            reward=float(reward),
            done=bool(terminated or truncated),
            terminated=bool(terminated),
            truncated=bool(truncated),
            info=to_json(info),
        )

    @property
    def state(self) -> BacktrackState:
        return self._state

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None


def make_app(env_ids: list[str] | None = None, max_sessions: int = 256):
    """OpenEnv's FastAPI app serving the envs; one :class:`BacktrackEnvironment` per session."""
    factory = functools.partial(BacktrackEnvironment, env_ids)
    return create_fastapi_app(factory, BacktrackAction, BacktrackObservation, max_concurrent_envs=max_sessions)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def uvicorn_server(app, log_level: str = "warning"):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, ws_max_size=16 * 2**20))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m backtrack_gym.envs.openenv_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="port (0: a free one, printed)")
    parser.add_argument("--env-ids", default=None, help="comma-separated env ids to serve (default: all)")
    parser.add_argument("--max-sessions", type=int, default=256, help="concurrent WebSocket sessions")
    args = parser.parse_args(argv)
    env_ids = None
    if args.env_ids:
        env_ids = [e.strip() for e in args.env_ids.split(",")]
        unknown = sorted(set(env_ids) - set(served_env_ids()))
        if unknown:
            parser.error(f"--env-ids: unknown {unknown}; known: {served_env_ids()}")
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    print(json.dumps({"url": f"http://{host}:{port}", "env_ids": env_ids or served_env_ids()}), flush=True)
    uvicorn_server(make_app(env_ids, args.max_sessions)).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
