"""Play episodes with an agent and summarise them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from backtrack_gym.agents.base import Agent, OracleAgent, RandomAgent
from backtrack_gym.config import Config, prefixed
from backtrack_gym.envs import TASK_ENV_IDS
from backtrack_gym.envs.core import INTERACTIONS
from backtrack_gym.settings import EpisodeConfig, UnsetEpisodeConfig

NAMESPACE = "backtrack_gym/"


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
class PlayConfig(Config):
    """Play episodes with the oracle and the random agent and tabulate the results.

    Attributes:
        env_id: the text env of a registered task (a value of
            :data:`~backtrack_gym.envs.TASK_ENV_IDS`; the ``backtrack_gym/`` prefix may be left out).
        episodes: episodes per table row.
        seed: episode ``k`` of a row starts with ``reset(seed=seed + k)``.
        split: ``train`` or ``test`` (held-out) problems.
        agents: agents to compare (``oracle``, ``random``).
        episode: the episodes played: an unset ``interaction`` or ``backtrack`` compares both
            values, an unset ``env_steps`` plays the env's own budget (16 steps for CountDown,
            4 a cell for Sudoku, 64 for Math); ``max_new_tokens`` does not apply (the agents
            write steps, not tokens).
    """

    env_id: str = "backtrack_gym/CountDown-v0"
    episodes: int = 200
    seed: int = 0
    split: str = "test"
    agents: tuple[str, ...] = ("oracle", "random")
    episode: UnsetEpisodeConfig = field(default_factory=UnsetEpisodeConfig)

    def check(self) -> None:
        from backtrack_gym.config import check_at_least, check_choice
        from backtrack_gym.envs.core import SPLITS

        full_env_id(self.env_id)
        check_at_least(self, 1, "episodes")
        check_at_least(self, 0, "seed")
        check_choice("split", self.split, SPLITS)
        if not self.agents:
            raise ValueError(f"agents must name at least one of {sorted(AGENTS)}")
        check_choice("agents", self.agents, AGENTS)
        if self.episode.max_new_tokens is not None:
            raise ValueError("episode.max_new_tokens does not apply to play (the agents write steps, not tokens)")
        try:
            self.episode.over(EpisodeConfig()).validate()
            check_at_least(self.episode, 1, "env_steps")  # no token budget to derive one from
        except ValueError as err:
            raise prefixed(err, "episode") from None


def full_env_id(env_id: str) -> str:
    """The registered id of a text env, given with or without its namespace (``Sudoku-v0``)."""
    known = TASK_ENV_IDS.values()
    full = env_id if env_id.startswith(NAMESPACE) else NAMESPACE + env_id
    if full not in known:
        raise ValueError(f"env_id must be one of {sorted(known)} ({NAMESPACE} may be left out), got {env_id!r}")
    return full


AGENTS = {"oracle": OracleAgent, "random": RandomAgent}


def play_table(config: PlayConfig) -> list[dict[str, Any]]:
    """One row per (agent, interaction, backtrack): solve rate, mean steps and backtracks."""
    rows = []
    episode = config.episode
    interactions = INTERACTIONS if episode.interaction is None else (episode.interaction,)
    backtracks = (False, True) if episode.backtrack is None else (episode.backtrack,)
    budget = {} if episode.env_steps is None else {"max_steps": episode.env_steps}
    for interaction in interactions:
        for backtrack in backtracks:
            env = gym.make(
                full_env_id(config.env_id), interaction=interaction, backtrack=backtrack, split=config.split, **budget
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
