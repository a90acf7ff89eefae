"""The envs :class:`~backtrack_gym.agents.lm.LMAgent` plays: a list of envs or a Gymnasium vector env, as one batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym

from backtrack_gym.agents.base import info_at


class EnvBatch:
    """A list of envs or a Gymnasium vector env behind one interface."""

    def __init__(self, envs: gym.vector.VectorEnv | Sequence[gym.Env]):
        self.vector = envs if isinstance(envs, gym.vector.VectorEnv) else None
        if self.vector is not None:
            mode = self.vector.metadata.get("autoreset_mode")
            mode = getattr(mode, "value", mode)
            if mode not in ("NextStep", "SameStep"):
                raise ValueError(f"a vector env must autoreset in NextStep or SameStep mode, got {mode!r}")
            self.same_step = mode == "SameStep"
            self.size = self.vector.num_envs
        else:
            self.envs = list(envs)
            if not self.envs:
                raise ValueError("no envs given")
            self.size = len(self.envs)
        self.interaction = self._attribute("interaction")

    def _attribute(self, name: str) -> Any:
        if self.vector is not None:
            values = self.vector.get_attr(name)
        else:
            values = [env.get_wrapper_attr(name) for env in self.envs]
        if len(set(values)) != 1:
            raise ValueError(f"all envs must share one {name}, got {values}")
        return values[0]

    def reset(
        self, seed: int | Sequence[int] | None, options: dict[str, Any] | Sequence[dict[str, Any]] | None
    ) -> tuple[list[str], list[dict[str, Any]]]:
        if self.vector is not None:
            if options is not None and not isinstance(options, dict):
                raise ValueError("a vector env takes one options dict for all its envs")
            observations, infos = self.vector.reset(seed=seed, options=options)
            return list(observations), [info_at(infos, i) for i in range(self.size)]
        seeds = (
            [None if seed is None else seed + i for i in range(self.size)] if not isinstance(seed, Sequence) else seed
        )
        per_env = options if isinstance(options, Sequence) else [options] * self.size
        if len(seeds) != self.size or len(per_env) != self.size:
            raise ValueError(f"give one seed and one options dict per env ({self.size})")
        results = [env.reset(seed=s, options=o) for env, s, o in zip(self.envs, seeds, per_env, strict=True)]
        return [r[0] for r in results], [r[1] for r in results]

    def step(self, actions: dict[int, str]) -> dict[int, tuple[str, float, bool, bool, dict[str, Any]]]:
        """Step the envs in ``actions``; a vector env steps the others with an ignored empty action."""
        if self.vector is None:
            return {i: self.envs[i].step(action) for i, action in actions.items()}
        observations, rewards, terminated, truncated, infos = self.vector.step(
            [actions.get(i, "") for i in range(self.size)]
        )
        out = {}
        for i in actions:
            done = bool(terminated[i] or truncated[i])
            # SameStep has already reset a finished env: its episode's last info is in final_info.
            info = info_at(infos["final_info"], i) if done and self.same_step else info_at(infos, i)
            out[i] = (observations[i], float(rewards[i]), bool(terminated[i]), bool(truncated[i]), info)
        return out
