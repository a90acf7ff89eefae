"""Policies that act in backtrack-gym envs."""

from backtrack_gym.agents.base import Agent, OracleAgent, RandomAgent, TaskAgent, info_at
from backtrack_gym.agents.lm import LMAgent, LMEpisode, SamplingConfig, replay_batch, replay_logprobs
from backtrack_gym.agents.play import EpisodeRecord, play, summarize

__all__ = [
    "Agent",
    "EpisodeRecord",
    "info_at",
    "LMAgent",
    "LMEpisode",
    "OracleAgent",
    "RandomAgent",
    "TaskAgent",
    "play",
    "replay_batch",
    "replay_logprobs",
    "SamplingConfig",
    "summarize",
]
