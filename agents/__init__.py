"""Policies that act in backtrack-gym envs."""

from backtrack_gym.agents.base import Agent, OracleAgent, RandomAgent, TaskAgent, info_at
from backtrack_gym.agents.play import EpisodeRecord, play, summarize

__all__ = ["Agent", "EpisodeRecord", "info_at", "OracleAgent", "RandomAgent", "TaskAgent", "play", "summarize"]
