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
from backtrack_gym.envs.registry import register_task

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

register_task(
    "countdown",
    CountDownTask,
    CountDownConfig,
    {"backtrack_gym/CountDown-v0": "backtrack_gym.envs.countdown.env:CountDownEnv"},
    trace_styles="backtrack_gym.agents.traces.countdown",
)
