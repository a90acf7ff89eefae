"""The CountDown task and its Gymnasium env ``backtrack_gym/CountDown-v0``."""

from __future__ import annotations

import json
import string
from collections.abc import Mapping, Sequence
from typing import Any

from backtrack_gym.envs.core import Invalid, Move, Task, TextEnv, env_config
from backtrack_gym.envs.countdown import grammar, rules
from backtrack_gym.envs.countdown.generator import CountDownConfig, CountDownProblem, distinct_problems, generate
from backtrack_gym.envs.expr import Value, evaluate, format_value

State = tuple[Value, ...]


class CountDownTask(Task[CountDownProblem, State, rules.Step]):
    """CountDown rules, grammar and generation for one :class:`CountDownConfig`."""

    name = "countdown"
    # Last, so the older characters keep their token ids: [],#'. appear in the research trace format.
    charset = string.ascii_letters + string.digits + " +-*/=()|:<>\n[],#'."
    max_line_chars = 128
    default_max_steps = 16
    breakdown_key = "target"
    # States the dead-end label's search may expand (states of more than four numbers; ~1 ms for six).
    label_max_nodes = 10_000

    def __init__(self, config: CountDownConfig | None = None):
        self.config = (config or CountDownConfig()).validate()
        self.rules = self.config.rules
        # Every number in a state was typed in a step (or given), so its width is capped.
        number_chars = 2 * grammar.STEP_LIMITS.max_digits + 2
        self.max_observation_chars = 64 + number_chars * self.config.num_count

    def generate(self, index: int, split: str = "train") -> CountDownProblem:
        return generate(self.config, index, split)

    def problem_to_dict(self, problem: CountDownProblem) -> dict[str, Any]:
        return problem.to_dict()

    def problem_key(self, problem: CountDownProblem) -> str:
        # The same numbers in any order make the same problem.
        return json.dumps({"numbers": sorted(problem.numbers), "target": problem.target})

    def split_size(self, split: str) -> int | None:
        return distinct_problems(self.config, split)

    def problem_from_dict(self, data: Mapping[str, Any]) -> CountDownProblem:
        problem = CountDownProblem.from_dict(data)
        if len(problem.numbers) > self.config.num_count:
            raise ValueError(f"this env takes at most {self.config.num_count} numbers, got {len(problem.numbers)}")
        return problem

    def initial_state(self, problem: CountDownProblem) -> State:
        return problem.numbers

    def apply(self, problem: CountDownProblem, state: State, step: rules.Step) -> State | Invalid:
        return rules.apply_step(self.rules, state, step)

    def is_solved(self, problem: CountDownProblem, state: State) -> bool:
        if self.config.use_all_numbers:
            return len(state) == 1 and state[0] == problem.target
        return problem.target in state

    def legal_steps(self, problem: CountDownProblem, state: State) -> list[rules.Step]:
        return rules.legal_steps(self.rules, state)

    def solve(self, problem: CountDownProblem, state: State) -> list[rules.Step] | None:
        return rules.solve(self.rules, state, problem.target, self.config.use_all_numbers)

    def solvable(self, problem: CountDownProblem, state: State, solved: bool | None = None) -> bool | None:
        """Exact (:func:`rules.solvable_within`): always up to four numbers; beyond, None
        when the search would expand more than ``label_max_nodes`` states."""
        return rules.solvable_within(
            self.rules, state, problem.target, self.config.use_all_numbers, max_nodes=self.label_max_nodes
        )

    def state_key(self, state: State) -> State:
        # The numbers left, in any order, are one node of the search.
        return tuple(sorted(state))

    def parse_step(self, line: str) -> rules.Step | Invalid:
        return grammar.parse_step(line)

    def read(self, problem: CountDownProblem, states: Sequence[State], line: str) -> rules.Step | Move | Invalid | None:
        """A bare step, or a line of the research's traces read against the stack (:func:`grammar.read_line`)."""
        return grammar.read_line(problem, states, line, self.rules, lambda state: self.is_solved(problem, state))

    def format_step(self, step: rules.Step) -> str:
        return str(step)

    def render(self, problem: CountDownProblem, state: State) -> str:
        return grammar.render(problem, state)

    def state_info(self, state: State) -> list[str]:
        return [format_value(n) for n in state]

    def state_from_info(self, data: list[str]) -> State:
        return tuple(evaluate(text) for text in data)


class CountDownEnv(TextEnv):
    """Reach a target number by combining the given numbers with ``+ - * /``.

    ## Description

    A problem gives ``num_count`` numbers and a target, e.g. target 24 from
    ``3 5 7 8``. A step takes two available numbers, combines them with one
    operation and puts the result back in their place. As in the research
    (KempnerInstitute/Backtrack, ``countdown/src/countdown.py``) the problem is solved
    when all numbers have been combined into the target: ``1 2 6 -> 12`` takes
    ``1 * 2 = 2`` and ``2 * 6 = 12``. With ``use_all_numbers=False`` (differs from the
    research) it is enough that the target appears among the numbers. By default
    every result must be a non-negative integer, so division must be exact. Every
    problem is solvable: the exact solver checks each draw of the default generator.

    ## Action Space

    ``Text`` over the env's charset. A step is one line ``a op b = c`` (spaces are
    optional; fraction or negative operands are written ``(7/2)``, ``(-3)``). The
    line ``<backtrack>`` undoes the last applied step when the env is made with
    ``backtrack=True``. In ``interaction="step"`` one action is one line; in
    ``interaction="completion"`` one action is a whole output that is replayed line
    by line, blank lines skipped, stopping when the target is reached.

    The env also reads the lines of the research's search traces (Stream of Search,
    ``countdown_dfs.py``; ``trace_format="research"`` of
    :func:`backtrack_gym.agents.traces.write_trace`; :mod:`~backtrack_gym.envs.countdown.grammar`
    says how): ``Exploring Operation: 8-5=3, Resulting Numbers: [3, 7, 3]`` is a step,
    ``Current State: ...`` and ``Moving to Node #0`` lines may go to another node (each
    step undone a backtrack), and the other lines are checked against the state and
    are no steps. A line that contradicts the state (wrong ``Resulting Numbers``) is
    illegal, with the reason. Which format to use: in step mode the compact one (bare
    steps), because the observation after each action already shows the numbers left;
    in completion mode either, the research format writing the numbers left with every
    step (as the research's models were trained), the compact one leaving them to the
    model. A research trace is about three times as long: its step budget must cover
    its characters, ``max_steps * (max_line_chars + 1)`` (16 steps take a direct trace,
    the 512-line search traces of ``backtrack-gym data`` up to 260; the experiments'
    budget is ``max_env_steps``).

    ## Observation Space

    ``Text``: ``Target: 24 | Numbers: 3 5 7 8`` - the target and the numbers now
    available. The first observation is the same line for the initial numbers.

    ## Rewards

    From :mod:`backtrack_gym.rewards`: ``correct`` (1 once solved) by default;
    ``format``, ``validity``, ``length``, ``backtrack`` and ``process`` (each step
    into a dead end and each needless backtrack, from the dead-end labels) terms by
    weight. Each
    step's reward is the change of the weighted total, so an episode's return is
    the same in both interaction modes. Under ``invalid_policy="penalize"`` each
    malformed or illegal step costs ``invalid_penalty``.

    ## Starting State

    The problem is drawn from the split's stream: ``reset(seed=s)`` picks the same
    problem for the same ``s``; ``options={"index": i}`` takes item ``i`` and
    ``options={"problem": {"numbers": [...], "target": t}}`` pins a problem.

    ## Episode End

    Terminated when the target is reached, after the one action of completion
    mode, or at an invalid step under ``invalid_policy="terminate"``. Truncated
    when ``max_steps`` steps have been taken. ``step`` after the end raises
    ``gymnasium.error.ResetNeeded``; a non-``str`` action raises ``TypeError``.
    Any string is a defined outcome: an invalid step with its reason in
    ``info["last_reason"]`` (and ``info["invalid_lines"]`` in completion mode).

    ## Arguments

    ``config`` (a :class:`CountDownConfig`, whose defaults are the research's task)
    or any of its fields as keywords (``num_count``, ``number_min``, ``number_max``,
    ``target_min``, ``target_max``, ``held_out_fraction``, ``held_out_rule``,
    ``split_seed``, ``seed``, ``allow_negative``, ``allow_fractions``,
    ``use_all_numbers``, ``generator``, ``min_effective_share``, ...);
    ``max_steps`` (default 16); and ``split``,
    ``interaction``, ``backtrack``, ``invalid_policy``, ``invalid_penalty``, ``reward_weights``,
    ``max_action_chars``, ``labels``, ``render_mode`` as described in
    :class:`backtrack_gym.envs.core.TextEnv`.

    ## Example

    >>> import gymnasium as gym
    >>> import backtrack_gym  # registers the envs
    >>> env = gym.make("backtrack_gym/CountDown-v0", num_count=3)
    >>> observation, info = env.reset(seed=0)
    >>> observation
    'Target: 35 | Numbers: 75 14 96'
    >>> observation, reward, terminated, truncated, info = env.step("14 + 96 = 110")
    >>> observation, reward, terminated
    ('Target: 35 | Numbers: 75 110', 0.0, False)
    >>> observation, reward, terminated, truncated, info = env.step("110 - 75 = 35")
    >>> reward, terminated, info["solved"]
    (1.0, True, True)
    """

    def __init__(self, config: CountDownConfig | Mapping[str, Any] | None = None, **kwargs: Any):
        super().__init__(CountDownTask(env_config(CountDownConfig, config, kwargs)), **kwargs)
