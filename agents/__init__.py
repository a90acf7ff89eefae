"""Policies that act in backtrack-gym envs."""

from backtrack_gym.agents.base import Agent, OracleAgent, RandomAgent, TaskAgent, info_at
from backtrack_gym.agents.lm import DecodeConfig, LMAgent, LMEpisode
from backtrack_gym.agents.play import EpisodeRecord, play, summarize
from backtrack_gym.agents.search import (
    Candidate,
    Continuation,
    Expander,
    HFExpander,
    SearchConfig,
    SearchResult,
    self_backtracking_search,
    state_key,
)

__all__ = [
    "Agent",
    "Candidate",
    "Continuation",
    "DecodeConfig",
    "EpisodeRecord",
    "Expander",
    "HFExpander",
    "info_at",
    "LMAgent",
    "LMEpisode",
    "OracleAgent",
    "RandomAgent",
    "TaskAgent",
    "play",
    "SearchConfig",
    "SearchResult",
    "self_backtracking_search",
    "state_key",
    "summarize",
]
