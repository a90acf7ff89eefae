"""Math: multi-step arithmetic word problems with checked calculation lines."""

from backtrack_gym.envs.math.answers import answers_match, extract_final_answer, format_number, parse_number
from backtrack_gym.envs.math.env import MathEnv, MathTask
from backtrack_gym.envs.math.generator import MathConfig, MathProblem, generate
from backtrack_gym.envs.math.grammar import Calc, FinalAnswer, MathState, parse_step
from backtrack_gym.envs.math.loaders import load_gsm8k, load_math
from backtrack_gym.envs.math.templates import TEMPLATES
from backtrack_gym.envs.registry import register_task

__all__ = [
    "TEMPLATES",
    "Calc",
    "FinalAnswer",
    "MathConfig",
    "MathEnv",
    "MathProblem",
    "MathState",
    "MathTask",
    "answers_match",
    "extract_final_answer",
    "format_number",
    "generate",
    "load_gsm8k",
    "load_math",
    "parse_number",
    "parse_step",
]

register_task(
    "math",
    MathTask,
    MathConfig,
    {"backtrack_gym/Math-v0": "backtrack_gym.envs.math.env:MathEnv"},
    trace_styles="backtrack_gym.agents.traces.math",
    reward_adapters=("backtrack_gym.rewards.math:math_answer_reward",),
)
