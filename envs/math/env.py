"""The Math task and its Gymnasium env ``backtrack_gym/Math-v0``."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import lru_cache
from typing import Any

from backtrack_gym.envs.core import Invalid, Task, TextEnv, env_config
from backtrack_gym.envs.expr import ExprError, evaluate
from backtrack_gym.envs.math import grammar
from backtrack_gym.envs.math.answers import answers_match, parse_number
from backtrack_gym.envs.math.generator import MathConfig, MathProblem, generate
from backtrack_gym.envs.math.grammar import Calc, FinalAnswer, MathState, Step
from backtrack_gym.envs.math.latex_verify import LatexBudget
from backtrack_gym.envs.math.templates import LINE_LIMITS, num

_QUESTION_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")
_GUESS_NUMBERS = 5
_TOKEN_CHARS = frozenset(grammar.CHARSET) - {"\n"}


@lru_cache(maxsize=256)
def _guesses(question: str) -> tuple[Calc, ...]:
    """Right calculations on pairs of the question's first numbers (plausible next lines)."""
    numbers = []
    for text in _QUESTION_NUMBER.findall(question):
        value = parse_number(text)
        if value not in numbers:
            numbers.append(value)
    guesses = []
    for a, b in itertools.permutations(numbers[:_GUESS_NUMBERS], 2):
        for op in "+-*/":
            expression = f"{num(a)} {op} {num(b)}"
            try:
                value = evaluate(expression, LINE_LIMITS)
            except ExprError:  # division by zero, or a number too long for a line
                continue
            guesses.append(Calc(expression, value, value))
    return tuple(guesses)


class MathTask(Task[MathProblem, MathState, Step]):
    """Math rules, grammar and generation for one :class:`MathConfig`."""

    name = "math"
    charset = grammar.CHARSET
    max_line_chars = grammar.MAX_LINE_CHARS

    def __init__(self, config: MathConfig | None = None):
        self.config = (config or MathConfig()).validate()
        self.max_observation_chars = grammar.observation_chars(self.config.max_question_chars)

    def generate(self, index: int, split: str = "train") -> MathProblem:
        return generate(self.config, index, split)

    def problem_to_dict(self, problem: MathProblem) -> dict[str, Any]:
        return problem.to_dict()

    def problem_from_dict(self, data: Mapping[str, Any]) -> MathProblem:
        problem = MathProblem.from_dict(data)
        if len(problem.question) > self.config.max_question_chars:
            raise ValueError(
                f"the question has {len(problem.question)} characters; this env takes at most "
                f"{self.config.max_question_chars} (max_question_chars)"
            )
        return problem

    def coerce_problem(self, problem: Any) -> MathProblem:
        if isinstance(problem, MathProblem):
            problem = problem.to_dict()  # checked like any other pinned problem
        problem = super().coerce_problem(problem)
        if not isinstance(problem, MathProblem):
            raise ValueError(f"a Math problem is a MathProblem, a dict or JSON, got {type(problem).__name__}")
        return problem

    def initial_state(self, problem: MathProblem) -> MathState:
        # One math-verify budget for the whole episode: its states (so its answers) share it.
        return MathState(latex_budget=LatexBudget(self.config.latex_timeout))

    def apply(self, problem: MathProblem, state: MathState, step: Step) -> MathState | Invalid:
        return grammar.apply(state, step)

    def is_solved(self, problem: MathProblem, state: MathState) -> bool:
        if state.answer is None:
            return False
        config = self.config
        return answers_match(
            problem.answer,
            state.answer,
            math_verify=config.math_verify,
            timeout=config.latex_timeout,
            max_chars=config.latex_max_chars,
            budget=state.latex_budget,
        )

    def legal_steps(self, problem: MathProblem, state: MathState) -> list[Step]:
        """The reference's next step, then checked lines combining numbers of the
        question, then (once a line is checked) its value given as the answer."""
        if state.answer is not None:
            return []
        steps: list[Step] = (self.solve(problem, state) or [])[:1]
        steps += _guesses(problem.question)
        if state.lines:
            steps.append(FinalAnswer(state.lines[-1].rsplit("=", 1)[1].strip()))
        return steps

    def solve(self, problem: MathProblem, state: MathState) -> list[Step] | None:
        """The rest of the reference solution after the checked lines it shares with
        ``state`` (every correct line is legal, so it applies from any state with no
        answer); [] once solved, None after a wrong answer (only a backtrack helps)."""
        if state.answer is not None:
            return [] if self.is_solved(problem, state) else None
        reference = list(grammar.reference_steps(problem.solution))
        if not reference or not isinstance(reference[-1], FinalAnswer):
            reference.append(FinalAnswer(problem.answer))
        shared = 0
        while shared < len(state.lines) and grammar.format_step(reference[shared]) == state.lines[shared]:
            shared += 1
        return reference[shared:]

    def solvable(self, problem: MathProblem, state: MathState, solved: bool | None = None) -> bool:
        """Exact: until an answer is given the reference answer is still reachable (every
        checked line applied is arithmetically right, the rules reject the others, and
        any right line is legal, so :meth:`solve` goes on from it); after one, only
        when it is right (``solved``, when given, spares checking it again)."""
        if state.answer is None:
            return True
        return self.is_solved(problem, state) if solved is None else solved

    def parse_step(self, line: str) -> Step | Invalid | None:
        return grammar.parse_step(line)

    def format_step(self, step: Step) -> str:
        return grammar.format_step(step)

    def render(self, problem: MathProblem, state: MathState) -> str:
        return grammar.render(problem.question, state)

    def reference_text(self, problem: MathProblem) -> str:
        """The whole reference solution (free text included), as a completion."""
        return "\n".join(problem.solution) or grammar.format_step(FinalAnswer(problem.answer))

    def state_info(self, state: MathState) -> dict[str, Any]:
        return {"lines": list(state.lines), "answer": state.answer}

    def state_from_info(self, data: Mapping[str, Any]) -> MathState:
        return MathState(tuple(data["lines"]), data["answer"], LatexBudget(self.config.latex_timeout))

    def stack_info(self, states: Sequence[MathState]) -> dict[str, Any]:
        """The states and the seconds of math-verify the episode has spent (its states share one budget)."""
        budget = states[0].latex_budget
        return {**super().stack_info(states), "latex_spent": None if budget is None else budget.spent}

    def stack_from_info(self, problem: MathProblem, data: Mapping[str, Any]) -> list[MathState]:
        spent, budget = data["latex_spent"], None
        if spent is not None:
            if isinstance(spent, bool) or not isinstance(spent, (int, float)) or not spent >= 0:
                raise ValueError(f"latex_spent must be a non-negative number of seconds, got {spent!r}")
            budget = LatexBudget(self.config.latex_timeout)
            budget.charge(spent)
        return [replace(state, latex_budget=budget) for state in super().stack_from_info(problem, data)]


class MathEnv(TextEnv):
    """Solve an arithmetic word problem, writing checked calculation lines and an answer.

    ## Description

    A problem is a question with an exact answer: a generated multi-step word
    problem (rates, totals, differences, fractions and percentages, unit prices),
    a linear equation or an arithmetic chain, or a pinned problem such as one
    loaded from GSM8K or MATH files (:mod:`backtrack_gym.envs.math.loaders`).
    Each calculation line ``expression = value`` is checked exactly; free-text
    lines are allowed and unchecked; the final line is ``Answer: X``. The problem
    is solved when ``X`` equals the answer: numbers are compared exactly after
    normalisation (``1,250``, ``$4.50``, ``3/4``, ``\\frac{3}{4}``, ``1e6``,
    ``12 apples``, ``\\boxed{18}``; but ``12 million`` is no ``12``, see
    :func:`~backtrack_gym.envs.math.answers.answers_match`); non-numeric LaTeX
    answers with math-verify in a child process (never in this process; without
    math-verify only by cleaned-up string), all the answers of an episode within
    ``latex_timeout`` seconds together.

    ## Action Space

    ``Text`` over printable ASCII and newline. A step is one line:
    ``12 * 4.5 = 54`` (digits, ``+ - * / ( ) . %``, an optional ``$`` and thousands
    separators), any line with a letter or no ``=`` (free text, no step), or
    ``Answer: 54``. With ``backtrack=True`` the ``backtrack_token`` line (default
    ``<backtrack>``, or a phrase such as ``Wait, that's not right.``) withdraws the
    last checked line or the answer. After the answer nothing but a backtrack is
    legal. In ``interaction="step"`` one action is one line; in
    ``interaction="completion"`` one action is a whole output replayed line by line.

    ## Observation Space

    ``Text``: ``Question: ...`` followed by the last 16 checked lines and the
    answer, if any (characters outside the charset shown as ``?``).

    ## Rewards

    From :mod:`backtrack_gym.rewards`: ``correct`` (1 once the answer is right) by
    default; ``validity`` (minus each wrong calculation), ``format``, ``length``,
    ``backtrack`` and ``process`` (from the dead-end labels: a wrong answer is a
    dead end) by weight. Each step's reward is the change of the weighted
    total, so an episode's return is the same in both interaction modes. Under
    ``invalid_policy="penalize"`` each malformed or illegal step costs
    ``invalid_penalty``.

    ## Starting State

    The problem is drawn from the split's stream: ``reset(seed=s)`` picks the same
    problem for the same ``s``; ``options={"index": i}`` takes item ``i`` and
    ``options={"problem": {"question": ..., "answer": ...}}`` (or a
    :class:`MathProblem`) pins a problem. The test split is a different stream.

    ## Episode End

    Terminated when the answer is right, after the one action of completion mode,
    or at an invalid step under ``invalid_policy="terminate"``. Truncated when
    ``max_steps`` steps have been taken. ``step`` after the end raises
    ``gymnasium.error.ResetNeeded``; a non-``str`` action raises ``TypeError``.
    Any string is a defined outcome: an invalid step with its reason in
    ``info["last_reason"]`` (e.g. ``3 * 4 is 12, not 13``), and in completion mode
    ``info["invalid_lines"]`` with line numbers.

    ## Arguments

    ``config`` (a :class:`MathConfig`) or any of its fields as keywords (``seed``,
    ``templates``, ``min_reasoning_steps``, ``max_reasoning_steps``,
    ``number_max``, ``decimals``, ``max_question_chars``, ``math_verify``,
    ``latex_timeout``, ``latex_max_chars``); and ``split``, ``interaction``,
    ``backtrack``, ``backtrack_token``, ``max_steps`` (default 64),
    ``invalid_policy``, ``invalid_penalty``, ``reward_weights``,
    ``max_action_chars``, ``labels``, ``render_mode`` as described in
    :class:`backtrack_gym.envs.core.TextEnv`.

    ## Example

    >>> import gymnasium as gym
    >>> import backtrack_gym  # registers the envs
    >>> env = gym.make("backtrack_gym/Math-v0")
    >>> observation, info = env.reset(seed=0)
    >>> observation.split(". ")[0]
    'Question: A printer costs $1,200'
    >>> observation, reward, terminated, truncated, info = env.step("1200 * 20% = 250")
    >>> reward, terminated, info["last_reason"]
    (-0.1, False, '1200 * 20% is 240, not 250')

    In completion mode the one action is the whole output:

    >>> env = gym.make("backtrack_gym/Math-v0", interaction="completion")
    >>> _ = env.reset(seed=0)
    >>> observation, reward, terminated, truncated, info = env.step(
    ...     "1200 * 20% = 240\\n1200 - 240 = 960\\n960 * 5% = 48\\nAnswer: 48"
    ... )
    >>> reward, terminated
    (1.0, True)
    """

    def __init__(self, config: MathConfig | Mapping[str, Any] | None = None, *, max_steps: int = 64, **kwargs: Any):
        config = env_config(MathConfig, config, kwargs)
        token = kwargs.get("backtrack_token")
        if token is not None:
            _check_backtrack_token(token)
        super().__init__(MathTask(config), max_steps=max_steps, **kwargs)


def _check_backtrack_token(token: Any) -> None:
    # The episode compares stripped lines with the token, and policies must be able to write it.
    if not isinstance(token, str) or not token or token != token.strip() or not set(token) <= _TOKEN_CHARS:
        raise ValueError(f"backtrack_token must be one non-empty line of printable ASCII, got {token!r}")
    if grammar.parse_step(token) is not None:
        raise ValueError(f"backtrack_token {token!r} reads as a step of the grammar; pick another")
