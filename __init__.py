"""backtrack-gym: Gymnasium text environments for reasoning with search and backtracking."""

# Importing the envs registers every task, and with it each of its env ids with Gymnasium.
from backtrack_gym import envs  # noqa: F401

__version__ = "0.1.0"
