"""Play episodes with an agent and summarise them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from backtrack_gym.agents.base import Agent, OracleAgent, RandomAgent


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


@dataclass
class PlayConfig:
    """Play episodes with the oracle and the random agent and tabulate the results.

    Attributes:
        env_id: registered env to play.
        episodes: episodes per table row.
        seed: episode ``k`` of a row starts with ``reset(seed=seed + k)``.
        split: ``train`` or ``test`` (held-out) problems.
        agents: agents to compare (``oracle``, ``random``).
        interactions: interaction modes to compare (``step``, ``completion``).
        backtrack: backtracking settings to compare.
        max_steps: step budget of an episode.
    """

    env_id: str = "backtrack_gym/CountDown-v0"
    episodes: int = 200
    seed: int = 0
    split: str = "test"
    agents: tuple[str, ...] = ("oracle", "random")
    interactions: tuple[str, ...] = ("step", "completion")
    backtrack: tuple[bool, ...] = (False, True)
    max_steps: int = 16

    def validate(self) -> PlayConfig:
        if self.episodes < 1:
            raise ValueError(f"episodes must be at least 1, got {self.episodes}")
        unknown = sorted(set(self.agents) - set(AGENTS))
        if unknown:
            raise ValueError(f"unknown agents {unknown}; known: {sorted(AGENTS)}")
        return self


AGENTS = {"oracle": OracleAgent, "random": RandomAgent}


def play_table(config: PlayConfig) -> list[dict[str, Any]]:
    """One row per (agent, interaction, backtrack): solve rate, mean steps and backtracks."""
    rows = []
    for interaction in config.interactions:
        for backtrack in config.backtrack:
            env = gym.make(
                config.env_id,
                interaction=interaction,
                backtrack=backtrack,
                split=config.split,
                max_steps=config.max_steps,
            )
            for name in config.agents:
                agent = AGENTS[name].for_env(env, **({"seed": config.seed} if name == "random" else {}))
                start = time.perf_counter()
                summary = summarize(play(env, agent, config.episodes, seed=config.seed))
                seconds = time.perf_counter() - start
                rows.append(
                    {
                        "agent": name,
                        "interaction": interaction,
                        "backtrack": backtrack,
                        **summary,
                        "eps/s": config.episodes / seconds,
                    }
                )
            env.close()
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows of equal keys as an aligned text table."""
    if not rows:
        return ""
    columns = list(rows[0])
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if abs(value) >= 1e6:
            return f"{value:.3g}"
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)
