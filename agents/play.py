"""Play episodes with an agent and summarise them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
from backtrack_gym.agents.base import Agent


@dataclass
class EpisodeRecord:
    """The outcome of one episode."""

    solved: bool
    steps: int
    backtracks: int
    invalid: int
    ret: float


def play(
    env: gym.Env, agent: Agent, episodes: int, *, seed: int = 0, options: dict[str, Any] | None = None
) -> list[EpisodeRecord]:
    """Play ``episodes`` episodes; episode ``k`` starts with ``reset(seed=seed + k)``."""
    records = []
    for k in range(episodes):
        observation, info = env.reset(seed=seed + k, options=options)
        total, done = 0.0, False
        while not done:
            observation, reward, terminated, truncated, info = env.step(agent.act(observation, info))
            total += float(reward)
            done = terminated or truncated
        records.append(EpisodeRecord(info["solved"], info["steps"], info["backtracks"], info["invalid_steps"], total))
    return records


def summarize(records: list[EpisodeRecord]) -> dict[str, float]:
    """Solve rate and mean steps, backtracks, invalid steps and return."""
    n = max(len(records), 1)
    return {
        "episodes": len(records),
        "solve_rate": sum(r.solved for r in records) / n,
        "steps": sum(r.steps for r in records) / n,
        "backtracks": sum(r.backtracks for r in records) / n,
        "invalid": sum(r.invalid for r in records) / n,
        "return": sum(r.ret for r in records) / n,
    }
