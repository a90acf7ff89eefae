"""docs/adding-a-task.md, proved: a throwaway fourth task built to its shape runs through everything.

The task ("pick_sum": reach a target by taking numbers from a list) is defined here and
registered by a fixture that unregisters it afterwards, so no other test sees it.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from bad_inputs import NAMED_BAD_INPUTS, assert_defined_outcome, no_code_execution  # noqa: F401
from gymnasium.utils.env_checker import check_env

from backtrack_gym.agents import OracleAgent, play, summarize
from backtrack_gym.agents.traces import Trace, TraceWriter, styles_for, write_trace
from backtrack_gym.envs import TASK_ENV_IDS, Invalid, Task, TextEnv, make_task
from backtrack_gym.envs.core import env_config
from backtrack_gym.envs.registry import TASKS, register_task, unregister_task
from backtrack_gym.envs.seeding import item_rng
from backtrack_gym.rewards import trl_reward_functions

ENV_ID = "backtrack_gym_test/PickSum-v0"


# --- the config and the problem (envs/<name>/generator.py) ---------------------------------


@dataclass(frozen=True)
class PickSumConfig:
    """Settings of the task: how many numbers a problem gives, how large, and the stream's seed."""

    count: int = 5
    number_max: int = 20
    seed: int = 0

    def validate(self) -> PickSumConfig:
        if not 2 <= self.count <= self.number_max <= 99:
            raise ValueError(f"need 2 <= count <= number_max <= 99, got {self.count}, {self.number_max}")
        return self


@dataclass(frozen=True)
class PickSumProblem:
    numbers: tuple[int, ...]
    target: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PickSumProblem:
        numbers, target = data.get("numbers"), data.get("target")
        if not isinstance(numbers, list) or not all(type(n) is int and 1 <= n <= 99 for n in numbers):
            raise ValueError("'numbers' must be a list of integers in 1..99")
        if len(set(numbers)) != len(numbers) or type(target) is not int or not 1 <= target <= sum(numbers):
            raise ValueError("'numbers' must be distinct and 'target' an integer in 1..sum(numbers)")
        return cls(tuple(numbers), target)


# --- the task and its env (envs/<name>/env.py) ---------------------------------------------

State = tuple[int, ...]  # the numbers taken so far, in order
STEP = re.compile(r"take (\d{1,2})")


class PickSumTask(Task[PickSumProblem, State, int]):
    """Take numbers of the list, one a step, until they add up to the target."""

    name = "pick_sum"
    charset = string.ascii_letters + string.digits + " :|<>\n"
    max_line_chars = 16
    max_observation_chars = 512
    default_max_steps = 8

    def __init__(self, config: PickSumConfig | None = None):
        self.config = (config or PickSumConfig()).validate()

    def generate(self, index: int, split: str = "train") -> PickSumProblem:
        rng = item_rng(self.config.seed, split, index)
        numbers = rng.choice(np.arange(1, self.config.number_max + 1), self.config.count, replace=False)
        chosen = rng.choice(numbers, int(rng.integers(1, self.config.count + 1)), replace=False)
        return PickSumProblem(tuple(int(n) for n in numbers), int(chosen.sum()))

    def problem_to_dict(self, problem: PickSumProblem) -> dict[str, Any]:
        return {"numbers": list(problem.numbers), "target": problem.target}

    def problem_from_dict(self, data: Mapping[str, Any]) -> PickSumProblem:
        return PickSumProblem.from_dict(data)

    def initial_state(self, problem: PickSumProblem) -> State:
        return ()

    def apply(self, problem: PickSumProblem, state: State, step: int) -> State | Invalid:
        if step not in problem.numbers:
            return Invalid("illegal", f"{step} is not in the list")
        if step in state:
            return Invalid("illegal", f"{step} is already taken")
        if sum(state) + step > problem.target:
            return Invalid("illegal", f"taking {step} goes past {problem.target}")
        return (*state, step)

    def is_solved(self, problem: PickSumProblem, state: State) -> bool:
        return sum(state) == problem.target

    def legal_steps(self, problem: PickSumProblem, state: State) -> list[int]:
        return [n for n in problem.numbers if n not in state and sum(state) + n <= problem.target]

    def solve(self, problem: PickSumProblem, state: State) -> list[int] | None:
        if self.is_solved(problem, state):
            return []
        for step in self.legal_steps(problem, state):
            rest = self.solve(problem, (*state, step))
            if rest is not None:
                return [step, *rest]
        return None

    def parse_step(self, line: str) -> int | Invalid:
        match = STEP.fullmatch(line)
        if match is None:
            return Invalid("malformed", "a step is 'take N'")
        return int(match.group(1))

    def format_step(self, step: int) -> str:
        return f"take {step}"

    def render(self, problem: PickSumProblem, state: State) -> str:
        left = " ".join(str(n) for n in problem.numbers if n not in state)
        return f"Target: {problem.target} | Sum: {sum(state)} | Left: {left}"

    def state_info(self, state: State) -> list[int]:
        return list(state)

    def state_from_info(self, data: list[int]) -> State:
        return tuple(data)


class PickSumEnv(TextEnv):
    """Take numbers from a list until they add up to the target (a test's throwaway task)."""

    def __init__(self, config: PickSumConfig | Mapping[str, Any] | None = None, **kwargs: Any):
        super().__init__(PickSumTask(env_config(PickSumConfig, config, kwargs)), **kwargs)


# --- one trace style (agents/traces/<name>.py) ---------------------------------------------


def direct(task: PickSumTask, problem: PickSumProblem, **_: object) -> Trace:
    """The solver's steps, no search."""
    writer = TraceWriter(task, problem)
    for step in task.solve(problem, writer.state) or []:
        writer.apply(step)
    return writer.finish()


STYLES = {"direct": direct}


# --- the tests ------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def registered():
    register_task("pick_sum", PickSumTask, PickSumConfig, {ENV_ID: PickSumEnv}, trace_styles=__name__)
    yield
    unregister_task("pick_sum")


@pytest.mark.parametrize("interaction", ["step", "completion"])
def test_gym_make_check_env_and_the_oracle(interaction):
    assert TASK_ENV_IDS["pick_sum"] == ENV_ID
    env = gym.make(ENV_ID, interaction=interaction, count=4)
    check_env(env.unwrapped)
    assert len(env.reset(seed=0)[1]["problem"]["numbers"]) == 4
    assert summarize(play(env, OracleAgent.for_env(env), 20))["solve_rate"] == 1.0


def test_make_task_takes_the_config_fields_and_refuses_others():
    assert make_task("pick_sum", count=3).config == PickSumConfig(count=3)
    with pytest.raises(ValueError, match="pick_sum has no config fields"):
        make_task("pick_sum", size=3)


def test_the_trace_style_replays_to_the_goal_and_scores_in_the_trl_rewards():
    task = make_task("pick_sum")
    assert sorted(styles_for(task)) == ["direct"]
    problems = [task.problem_to_dict(task.generate(index)) for index in range(8)]
    traces = [write_trace(task, task.coerce_problem(problem), "direct") for problem in problems]
    assert all(trace.solved for trace in traces)
    functions = trl_reward_functions(task, {"correct": 1.0}, backtrack=False)
    assert [f.__name__ for f in functions] == ["pick_sum_correct", "pick_sum_format", "pick_sum_validity"]
    correct = functions[0]
    completions = [trace.completion for trace in traces]
    assert correct(completions=completions, problem=problems) == [1.0] * 8
    assert correct(completions=["take 0"] * 8, problem=problems) == [0.0] * 8
    with pytest.raises(ValueError, match="trace_format must be 'compact' for pick_sum"):
        write_trace(task, task.generate(0), "direct", trace_format="research")


@pytest.mark.parametrize("interaction", ["step", "completion"])
@pytest.mark.parametrize("name", sorted(NAMED_BAD_INPUTS))
def test_named_bad_inputs(name, interaction, no_code_execution):  # noqa: F811
    env = PickSumEnv(interaction=interaction, backtrack=True)
    env.reset(options={"problem": {"numbers": [3, 5, 8], "target": 11}})
    assert not assert_defined_outcome(env, NAMED_BAD_INPUTS[name])["solved"]


class OtherTask(PickSumTask):
    name = "pick_sum_other"


def test_register_task_refuses_a_taken_name_or_env_id_and_unregister_task_forgets_both():
    other_id = "backtrack_gym_test/PickSumOther-v0"
    with pytest.raises(ValueError, match=f"{ENV_ID!r} is task 'pick_sum'"):
        register_task("pick_sum_other", OtherTask, PickSumConfig, {ENV_ID: PickSumEnv})
    with pytest.raises(ValueError, match="PickSumTask.name must be 'pick_sum_other'"):
        register_task("pick_sum_other", PickSumTask, PickSumConfig, {other_id: PickSumEnv})
    register_task("pick_sum_other", OtherTask, PickSumConfig, {other_id: PickSumEnv})
    with pytest.raises(ValueError, match="already registered"):
        register_task("pick_sum_other", OtherTask, PickSumConfig, {other_id: PickSumEnv})
    assert other_id in gym.registry and "pick_sum_other" in TASK_ENV_IDS
    unregister_task("pick_sum_other")
    assert "pick_sum_other" not in TASKS and other_id not in gym.registry
    with pytest.raises(ValueError, match=r"unknown task 'pick_sum_other'; known: \[.*'pick_sum'"):
        make_task("pick_sum_other")
