"""One scoring path: TRL rewards, completion-mode rewards and step-mode returns agree, term by term.

A completion is played three ways: by the TRL reward functions, as the one action of
a completion-mode env, and in a step-mode env as :func:`step_actions` (its stripped
non-blank lines, one action each; an output over the completion cap is one action).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from functools import cache
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import pytest

import backtrack_gym  # noqa: F401  (registers the envs)
from backtrack_gym.envs import BACKTRACK, TASK_ENV_IDS, Episode, make_task
from backtrack_gym.envs.core import INVALID_POLICIES, play_completion, step_actions
from backtrack_gym.envs.countdown.grammar import format_numbers, format_operation
from backtrack_gym.envs.math import MathEnv
from backtrack_gym.envs.terms import SEARCH_COUNTS
from backtrack_gym.rewards import METRICS, TERMS, episode_reward_functions, trl_reward_functions
from backtrack_gym.settings import EpisodeConfig
from backtrack_gym.train.grpo_config import GRPORunConfig, episode_settings
from backtrack_gym.train.grpo_rollout import _plain_info

# Every term weighted, each differently, so a disagreement in any one shows.
WEIGHTS = {
    "correct": 1.0,
    "progress": 0.5,
    "format": 0.25,
    "validity": 0.125,
    "length": 0.0625,
    "backtrack": 0.03125,
    "process": 0.015625,
}
TASK_CONFIGS = {"countdown": {}, "sudoku": {"size": 4}, "math": {"math_verify": False}}
COMPLETIONS = 5000
BUDGETS = (2, 6, 16)
COUNTS = ("steps", "valid_steps", "malformed_steps", "illegal_steps", "backtracks", "solved", "progress")
# The dead-end labels' counts and the search's shape, equal in both modes too.
SEARCH = (*SEARCH_COUNTS, "solvable", "backtrack_precision", "dead_ends_never_left", "revisits", "backtrack_branching")
# Lines of each task that are, mostly, illegal steps, malformed lines and free text.
ILLEGAL = {
    "countdown": ["1 + 1 = 3", "99 * 99 = 9801", "2 - 9 = 0", "4 / 3 = 1", "2 + 3 = 6"],
    "sudoku": [f"r{r}c{c}={d}" for r in (1, 2) for c in (1, 3) for d in (1, 4)],
    "math": ["2 + 2 = 5", "3 * 4 = 13", "10 / 4 = 2", "Answer: -1"],
}
MALFORMED = {
    "countdown": ["hello", "1 + = 2", "=", "2 ^ 3 = 8", "(1 + 2 = 3"],
    "sudoku": ["r5c1=1", "rxc1=2", "r1c1", "1 2 3", "r1c1=0"],
    "math": ["Answer:", "1 = = 2", "1 + = 3", "2 * (3 = 6"],
}
FREE_TEXT = ["Let me think.", "so that is the total", "Wait"]
BLANKS = ["", "   ", "\t"]
KINDS = (
    "legal",
    "solution",
    "illegal",
    "malformed",
    "free",
    "blank",
    "backtrack",
    "padded",
    "long",
    "huge",
    "research",
)
MOVES = ("legal", "solution", "backtrack", "padded", "research")  # the kinds of line meant to move the state
KIND_P = (0.22, 0.06, 0.1, 0.1, 0.08, 0.1, 0.12, 0.06, 0.075, 0.005, 0.08)
# Lines of CountDown's research trace format (free text for the other tasks), mostly true of the state.
RESEARCH = ("explore", "current", "moving", "generated", "verdict")


class RandomOutputs:
    """Random outputs for a task's problems: legal steps of the state the output has reached,
    solutions from there, and every kind of line that is not one (illegal, malformed, free
    text, blank, too long). The legal steps and the solution of a state are computed once."""

    def __init__(self, task, rng: np.random.Generator):
        self.task = task
        self.rng = rng
        self.cache: dict[tuple[str, int, str], list] = {}

    def lines(self, problem) -> list[str]:
        task, rng = self.task, self.rng
        reached = Episode(task, problem, backtrack=True)  # tracks the state the lines lead to
        lines: list[str] = []
        for kind in rng.choice(KINDS, size=int(rng.integers(0, 20)), p=KIND_P):
            legal = self._legal(problem, reached.state) if kind in ("legal", "padded") else []
            if legal:
                line = task.format_step(legal[int(rng.integers(len(legal)))])
                new = [line] if kind == "legal" else [" " * int(rng.integers(1, task.max_line_chars)) + line + " "]
            elif kind == "solution":
                new = self._solution(problem, reached.state)
            elif kind in ("illegal", "malformed", "free"):
                choices = {"illegal": ILLEGAL[task.name], "malformed": MALFORMED[task.name], "free": FREE_TEXT}[kind]
                new = [choices[int(rng.integers(len(choices)))]]
            elif kind == "backtrack":
                new = [BACKTRACK]
            elif kind == "long":  # around the line cap
                new = ["1" * (task.max_line_chars - 1 + int(rng.integers(0, 4)))]
            elif kind == "huge":  # past any completion cap here
                new = ["9" * 10_000]
            elif kind == "research":
                new = [self._research(problem, reached.states)]
            else:  # blank (or a legal step where there is none)
                new = [BLANKS[int(rng.integers(len(BLANKS)))]]
            if kind in MOVES:
                for line in new:
                    reached.step(line)
            lines += new
        return lines

    def _research(self, problem, states) -> str:
        """A research-format line about the stack ``states``: a step from a node on it, a node
        named by its operations (on the path or beside it), a move, a node or verdict line;
        about one in five states wrong numbers."""
        task, rng = self.task, self.rng
        if task.name != "countdown":
            return FREE_TEXT[int(rng.integers(len(FREE_TEXT)))]
        kind = RESEARCH[int(rng.integers(len(RESEARCH)))]
        depth = int(rng.integers(len(states)))
        path = self._path(problem, states[: depth + 1])
        legal = self._legal(problem, states[depth])
        step = legal[int(rng.integers(len(legal)))] if legal else None
        numbers = states[-1]
        if kind in ("explore", "current") and step is not None and (kind == "explore" or rng.random() < 0.5):
            path, numbers = [*path, step], task.apply(problem, states[depth], step)
        elif kind in ("explore", "current"):
            numbers = states[depth]
        if rng.random() < 0.2:
            numbers = (*numbers, 1)
        if kind == "explore" and step is not None:
            return f"Exploring Operation: {format_operation(step)}, Resulting Numbers: {format_numbers(numbers)}"
        if kind in ("explore", "current"):
            operations = ", ".join(f"'{format_operation(step)}'" for step in path)
            return f"Current State: {problem.target}:{format_numbers(numbers)}, Operations: [{operations}]"
        if kind == "moving":
            return "Moving to Node #" + ",".join(["0"] * int(rng.integers(1, len(states) + 2)))
        if kind == "generated" and len(states) > 1:
            last = self._path(problem, states)[-1]
            return (
                f"Generated Node #0,1: {problem.target}:{format_numbers(numbers)} Operation: {format_operation(last)}"
            )
        verdict = "equal: Goal Reached" if rng.random() < 0.5 else "unequal: No Solution"
        return f"{numbers[0]},{problem.target} {verdict}"

    def _path(self, problem, states) -> list:
        """The steps from each state of ``states`` to the next (one step leads to each)."""
        return [
            next(step for step in self._legal(problem, before) if self.task.apply(problem, before, step) == after)
            for before, after in zip(states, states[1:], strict=False)
        ]

    def _legal(self, problem, state) -> list:
        key = ("legal", id(problem), repr(self.task.state_info(state)))
        if key not in self.cache:
            self.cache[key] = self.task.legal_steps(problem, state)
        return self.cache[key]

    def _solution(self, problem, state) -> list[str]:
        key = ("solution", id(problem), repr(self.task.state_info(state)))
        if key not in self.cache:
            self.cache[key] = [self.task.format_step(step) for step in self.task.solve(problem, state) or []]
        return self.cache[key]


class Outcome(NamedTuple):
    """An episode's return, each term's return, and its counts (``COUNTS`` of the last info)."""

    total: float
    terms: dict[str, float]
    counts: dict[str, Any]


def play_env(env, problem, actions: list[str]) -> Outcome:
    """Step ``env`` through ``actions`` from reset, as an evaluation would."""
    _, info = env.reset(options={"problem": problem})
    start = info["reward_terms"]
    total = 0.0
    for action in actions:
        _, reward, terminated, truncated, info = env.step(action)
        total += reward
        if terminated or truncated:
            break
    terms = {term: info["reward_terms"].get(term, 0.0) - start.get(term, 0.0) for term in env.reward_weights}
    return Outcome(total, terms, {key: info[key] for key in (*COUNTS, *SEARCH)})


def play_trl(task, settings: dict[str, Any], rows: list[tuple[Any, str]]) -> list[dict[str, float]]:
    """Each row's value of every TRL reward function (terms and metrics), from one batch call as TRL makes."""
    funcs = trl_reward_functions(task, WEIGHTS, metrics=True, **settings)
    columns = {"problem": [json.dumps(task.problem_to_dict(problem)) for problem, _ in rows]}
    completions = [completion for _, completion in rows]
    values = {f.__name__.removeprefix(f"{task.name}_"): f(completions=completions, **columns) for f in funcs}
    return [{name: column[i] for name, column in values.items()} for i in range(len(rows))]


def agree(trl: dict[str, float], whole: Outcome, stepped: Outcome) -> bool:
    counts = stepped.counts
    metrics = {"solved": counts["solved"], "backtracks": counts["backtracks"]}
    metrics["invalid_steps"] = counts["malformed_steps"] + counts["illegal_steps"]
    metrics |= {name: counts[name] for name in set(METRICS) - set(metrics)}  # the labels' counts, by their names
    return (
        {term: trl[term] for term in whole.terms} == whole.terms == stepped.terms
        and {name: trl[name] for name in METRICS} == metrics
        and whole.counts == stepped.counts
        and math.isclose(whole.total, stepped.total, abs_tol=1e-9)
        and math.isclose(whole.total, sum(trl[term] for term in whole.terms), abs_tol=1e-9)
    )


@cache
def random_completions(task_name: str) -> dict[tuple[bool, int], list[tuple[Any, str]]]:
    """``COMPLETIONS`` random outputs for the task's problems, grouped by the settings they are played
    with: ``(backtrack, max_steps) -> [(problem, completion), ...]`` (the same for every policy)."""
    task = make_task(task_name, **TASK_CONFIGS[task_name])
    rng = np.random.default_rng(sorted(TASK_CONFIGS).index(task_name))
    problems = [task.generate(index) for index in range(40)]
    outputs = RandomOutputs(task, rng)
    groups: dict[tuple[bool, int], list[tuple[Any, str]]] = {}
    for _ in range(COMPLETIONS):
        problem = problems[int(rng.integers(len(problems)))]
        completion = "\n".join(outputs.lines(problem)) + ("\n" if rng.integers(2) else "")
        groups.setdefault((bool(rng.integers(2)), int(rng.choice(BUDGETS))), []).append((problem, completion))
    return groups


@pytest.mark.parametrize("policy", INVALID_POLICIES)
@pytest.mark.parametrize("task_name", sorted(TASK_CONFIGS))
def test_trl_completion_and_step_rewards_agree_on_random_completions(task_name, policy):
    task_config = TASK_CONFIGS[task_name]
    task = make_task(task_name, **task_config)
    disagreements = []
    seen: Counter[str] = Counter()
    labelled: Counter[str] = Counter()
    for (backtrack, max_steps), rows in random_completions(task_name).items():
        settings = {"backtrack": backtrack, "max_steps": max_steps, "invalid_policy": policy}
        trl = play_trl(task, settings, rows)
        completion_env, step_env = (
            gym.make(TASK_ENV_IDS[task_name], interaction=mode, reward_weights=WEIGHTS, **settings, **task_config)
            for mode in ("completion", "step")
        )
        completion_env, step_env = completion_env.unwrapped, step_env.unwrapped
        assert set(WEIGHTS) <= set(completion_env.reward_weights) == set(trl[0]) - set(METRICS)
        for (problem, completion), trl_values in zip(rows, trl, strict=True):
            whole = play_env(completion_env, problem, [completion])
            stepped = play_env(step_env, problem, step_actions(step_env, completion))
            if not agree(trl_values, whole, stepped):
                disagreements.append((backtrack, max_steps, completion[:200], trl_values, whole, stepped))
            counts = whole.counts
            seen["solved"] += counts["solved"]
            seen["an invalid step"] += counts["malformed_steps"] + counts["illegal_steps"] > 0
            seen["a backtrack"] += counts["backtracks"] > 0
            seen["out of steps"] += counts["steps"] >= max_steps and not counts["solved"]
            seen["over the completion cap"] += len(completion) > completion_env.max_action_chars
            labelled["a dead end"] += counts["dead_ends_entered"] > 0
            labelled["a dead end left"] += counts["dead_ends_left"] > 0
            labelled["a backtrack from a solvable state"] += counts["backtracks_from_solvable"] > 0
    assert not disagreements, f"{len(disagreements)} disagreements, e.g. {disagreements[:3]}"
    # The random mix reaches every kind of outcome.
    for outcome, count in seen.items():
        assert 0.01 * COMPLETIONS < count < 0.9 * COMPLETIONS, (outcome, count)
    # And every kind of labelled step, if more rarely (a needless backtrack rarely comes before a stop).
    assert len(labelled) == 3 and min(labelled.values()) > 0.002 * COMPLETIONS, labelled


def test_math_free_text_is_no_step_in_either_mode():
    problem = {"question": "Tom has 3 boxes of 4 pens and 2 more pens. How many pens?", "answer": "14"}
    lines = ["Let me think.", "3 * 4 = 12", "So twelve pens in boxes.", "12 + 2 = 14", "Answer: 14"]
    weights = {"correct": 1.0, "length": 0.1}
    completion = MathEnv(interaction="completion", reward_weights=weights)
    completion.reset(options={"problem": problem})
    _, completion_return, *_, completion_info = completion.step("\n".join(lines))
    step = MathEnv(interaction="step", reward_weights=weights)
    step.reset(options={"problem": problem})
    results = [step.step(line) for line in lines]
    assert completion_info["steps"] == results[-1][4]["steps"] == 3
    assert completion_return == pytest.approx(sum(result[1] for result in results)) == 1.0 - 0.3
    (length,) = [f for f in trl_reward_functions(make_task("math"), weights) if f.__name__ == "math_length"]
    assert length(completions=["\n".join(lines)], problem=[problem]) == pytest.approx([-0.3])


def test_step_mode_free_text_ends_at_the_turn_limit():
    env = MathEnv(max_steps=2)
    env.reset(options={"problem": {"question": "1 + 1?", "answer": "2"}})
    assert env.max_turns == 2 * (env.task.max_line_chars + 1)
    for turn in range(1, env.max_turns + 1):
        _, reward, terminated, truncated, info = env.step("Still thinking")
        assert reward == 0.0 and not terminated and truncated == (turn == env.max_turns)
    assert info["steps"] == 0 and info["turns"] == env.max_turns


@pytest.mark.parametrize("interaction", ["completion", "step"])
def test_grpo_rewards_are_the_env_returns(interaction):
    # Both paths score with the settings their envs play: an invalid step costs only what reward_weights say.
    weights = {"correct": 1.0, "format": 0.5, "process": 0.25}
    config = GRPORunConfig(reward_weights=weights, episode=EpisodeConfig(env_steps=6))
    settings = episode_settings(config)
    task = make_task("countdown")
    problem = {"numbers": [3, 4, 9], "target": 24}
    completions = [
        "oops\n1 + 1 = 3\n9 - 3 = 6\n6 * 4 = 24",
        "x\n" * 10,
        "9 - 3 = 6\n<backtrack>\n9 - 3 = 6\n6 * 4 = 24",  # a needless backtrack costs 0.25
        "9 + 3 = 12\n<backtrack>\n9 - 3 = 6\n6 * 4 = 24",  # so does the step into a dead end
    ]
    env = gym.make(TASK_ENV_IDS["countdown"], interaction=interaction, **settings).unwrapped
    played = [play_completion(env, problem, completion) for completion in completions]
    if interaction == "completion":
        funcs = trl_reward_functions(task, **settings)
        columns = {"problem": [problem] * len(completions)}
    else:
        funcs = episode_reward_functions(task.name, env.reward_weights)
        columns = {"episode_info": [_plain_info(p.info) for p in played]}
    rewards = [sum(terms) for terms in zip(*(f(completions=completions, **columns) for f in funcs), strict=True)]
    assert rewards == pytest.approx([p.total for p in played])
    assert rewards == pytest.approx([0.5, -3.0, 0.75, 0.75])
    assert set(env.reward_weights) <= set(TERMS)
