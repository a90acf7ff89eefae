"""CountDown: combine numbers with + - * / to reach a target."""

from backtrack_gym.envs.countdown.env import CountDownEnv, CountDownTask
from backtrack_gym.envs.countdown.generator import (
    CountDownConfig,
    CountDownProblem,
    SplitProfile,
    generate,
    reachable_targets,
    split_profile,
    split_targets,
)
from backtrack_gym.envs.countdown.grammar import check_answer, parse_step, verify_answer
from backtrack_gym.envs.countdown.rules import Rules, Step, solve

__all__ = [
    "CountDownConfig",
    "CountDownEnv",
    "CountDownProblem",
    "CountDownTask",
    "Rules",
    "SplitProfile",
    "Step",
    "check_answer",
    "generate",
    "parse_step",
    "reachable_targets",
    "solve",
    "split_profile",
    "split_targets",
    "verify_answer",
]
