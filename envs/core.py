"""The small core every task env composes.

A :class:`Task` supplies what is particular to a puzzle: problem generation, the
rules (state transitions and the goal), and the step grammar (parse a line, render
a state). :class:`Episode` replays lines through a task with the backtrack stack
and counts what happened; :class:`TextEnv` is the one Gymnasium env class built on
both. An episode's reward is a weighted sum of the terms of :mod:`backtrack_gym.envs.terms`
(:mod:`backtrack_gym.rewards` adapts them to trainers).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Generic, Literal, TypeVar, get_args, get_origin

import gymnasium as gym
from gymnasium.error import ResetNeeded

from backtrack_gym.envs.labels import SearchRecord
from backtrack_gym.envs.snapshot import (
    FrozenDict,
    TextEnvSnapshot,
    check_same,
    field_values,
    rng_from_state,
    rng_state,
    set_fields,
    thaw,
)
from backtrack_gym.envs.terms import (
    DEFAULT_WEIGHTS,
    LABEL_TERMS,
    EpisodeStats,
    breakdown,
    check_weights,
    search_info,
)
from backtrack_gym.envs.text_space import TextSpace

# The two backtracking actions: a line that undoes the last step, and a token that deletes the one before it.
BACKTRACK = "<backtrack>"
BKSP = "<bksp>"
ACTION_TOKENS = (BACKTRACK, BKSP)
SPLITS = ("train", "test")
INTERACTIONS = ("step", "completion")
INVALID_POLICIES = ("penalize", "terminate", "ignore")
MAX_REPORTED_LINES = 16


def check_interaction(interaction: str) -> str:
    """``interaction`` if it is one of :data:`INTERACTIONS`; a clear ``ValueError`` if not."""
    if interaction not in INTERACTIONS:
        raise ValueError(f"interaction must be one of {INTERACTIONS}, got {interaction!r}")
    return interaction


def action_token_ids(tokenizer: Any) -> dict[str, int]:
    """The ids of ``<backtrack>`` and ``<bksp>`` in an HF tokenizer; a ``ValueError`` when it lacks one."""
    vocab = tokenizer.get_vocab()
    missing = [token for token in ACTION_TOKENS if token not in vocab]
    if missing:
        raise ValueError(f"the tokenizer has no {missing}; call add_special_tokens_to(tokenizer, model) first")
    return {token: vocab[token] for token in ACTION_TOKENS}


Problem = TypeVar("Problem")
Config = TypeVar("Config")
State = TypeVar("State")
Step = TypeVar("Step")


@dataclass(frozen=True)
class Invalid:
    """Why a line was not applied: ``kind`` is ``"malformed"`` or ``"illegal"``."""

    kind: Literal["malformed", "illegal"]
    reason: str


@dataclass(frozen=True)
class Move:
    """A line that moves through the search tree instead of taking one step (see :meth:`Task.read`).

    The episode keeps the first ``depth + 1`` states of its stack (each state above
    them undone counts as one backtrack), then pushes ``states`` in order (each one
    state reached by a valid step, which the task has checked).
    """

    depth: int
    states: tuple[Any, ...] = ()


class Task(ABC, Generic[Problem, State, Step]):
    """Rules, grammar and generation of one puzzle family.

    Subclasses set ``name``, ``charset`` (every character an observation or a
    well-formed action may contain), ``max_line_chars`` and ``default_max_steps``
    (an env's step budget unless it is given one). ``problem_type``, the class of a
    problem object, is read from the ``Task[Problem, State, Step]`` base.
    """

    name: str
    charset: str
    problem_type: type
    max_line_chars: int = 256
    max_observation_chars: int = 1024
    default_max_steps: int = 64
    # The field of problem_to_dict held-out results are broken down by (CountDown's target); None: none.
    breakdown_key: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            if get_origin(base) is Task and isinstance(get_args(base)[0], type):
                cls.problem_type = get_args(base)[0]

    # generation
    @abstractmethod
    def generate(self, index: int, split: str = "train") -> Problem:
        """The problem at ``index`` of ``split``; the same arguments give the same problem."""

    @abstractmethod
    def problem_to_dict(self, problem: Problem) -> dict[str, Any]:
        """A JSON-serialisable form of ``problem``."""

    @abstractmethod
    def problem_from_dict(self, data: Mapping[str, Any]) -> Problem:
        """Inverse of :meth:`problem_to_dict`; raises ``ValueError`` on bad data."""

    def problem_key(self, problem: Problem) -> str:
        """A canonical text of ``problem``: two problems are the same exactly when their keys are
        equal (an evaluation counts each once). By default the sorted JSON of :meth:`problem_to_dict`."""
        return json.dumps(self.problem_to_dict(problem), sort_keys=True)

    def split_size(self, split: str) -> int | None:
        """How many distinct problems (by :meth:`problem_key`) ``split`` holds, where that is finite
        and cheap to count exactly; None otherwise (the default)."""
        return None

    # rules
    @abstractmethod
    def initial_state(self, problem: Problem) -> State: ...

    @abstractmethod
    def apply(self, problem: Problem, state: State, step: Step) -> State | Invalid:
        """The state after ``step``, or why the rules reject it."""

    @abstractmethod
    def is_solved(self, problem: Problem, state: State) -> bool: ...

    @abstractmethod
    def legal_steps(self, problem: Problem, state: State) -> list[Step]:
        """Every step the rules accept in ``state`` (used by random and search agents)."""

    @abstractmethod
    def solve(self, problem: Problem, state: State) -> list[Step] | None:
        """Steps from ``state`` to the goal, or None when there are none."""

    def solvable(self, problem: Problem, state: State, solved: bool | None = None) -> bool | None:
        """Whether the goal can still be reached from ``state`` (its dead-end label, step
        budget aside): exact, or None where the task cannot tell cheaply (a solver's
        node cap hit), never a wrong answer. By default None: no labels.

        ``solved`` is :meth:`is_solved` of ``state`` when the caller has it (an episode
        checks its goal after every step), so a task whose check is costly (Math's
        math-verify, which spends the episode's time budget) need not repeat it.
        """
        return None

    def state_key(self, state: State) -> Hashable:
        """What makes two states the same node of a search (for the search's shape); the state itself by default."""
        return state

    # grammar
    @abstractmethod
    def parse_step(self, line: str) -> Step | Invalid | None:
        """Parse one stripped, non-empty line; None means free text that is no step."""

    def read(self, problem: Problem, states: Sequence[State], line: str) -> Step | Move | Invalid | None:
        """Read one stripped, non-empty line of an episode whose state stack is ``states`` (start first).

        By default a line is read on its own (:meth:`parse_step`). A grammar whose lines
        also state or move between nodes of a search (CountDown's research format)
        reads them against the stack: a line that agrees with it and changes nothing is
        None (no step, like free text), one that contradicts it an ``"illegal"``
        :class:`Invalid`, and one that moves a :class:`Move`. ``states`` is not to be
        changed.
        """
        return self.parse_step(line)

    @abstractmethod
    def format_step(self, step: Step) -> str: ...

    @abstractmethod
    def render(self, problem: Problem, state: State) -> str:
        """The current state as text (the step-mode observation)."""

    def progress(self, problem: Problem, state: State) -> float:
        """Share of the goal reached in ``state``, in [0, 1] (for partial-credit rewards)."""
        return 1.0 if self.is_solved(problem, state) else 0.0

    def prompt(self, problem: Problem) -> str:
        """The text a policy sees first; by default the rendered initial state."""
        return self.render(problem, self.initial_state(problem))

    def state_info(self, state: State) -> Any:
        """A JSON-serialisable view of ``state`` for ``info``."""
        return state

    def state_from_info(self, data: Any) -> State:
        """Inverse of :meth:`state_info`, so agents can act from ``info`` alone."""
        return data

    def stack_info(self, states: Sequence[State]) -> dict[str, Any]:
        """A JSON-serialisable view of an episode's state stack (start first), for env snapshots.

        By default ``{"states": [state_info(state), ...]}``; a task whose states share
        something of the episode (Math's math-verify budget) adds it.
        """
        return {"states": [self.state_info(state) for state in states]}

    def stack_from_info(self, problem: Problem, data: Mapping[str, Any]) -> list[State]:
        """Inverse of :meth:`stack_info`; raises ``ValueError``, ``KeyError`` or ``TypeError`` on bad data."""
        return [self.state_from_info(state) for state in data["states"]]

    def coerce_problem(self, problem: Any) -> Problem:
        """Accept a problem object, its dict, or its JSON text (as a data set column).

        Raises ``ValueError`` for anything else (JSON that is not an object included).
        """
        if isinstance(problem, str):
            try:
                problem = json.loads(problem)
            except json.JSONDecodeError as err:
                raise ValueError(f"problem is not valid JSON: {err}") from None
        if isinstance(problem, Mapping):
            return self.problem_from_dict(problem)
        if not isinstance(problem, self.problem_type):
            raise ValueError(
                f"a {self.name} problem is a {self.problem_type.__name__}, its dict or JSON object, "
                f"got {type(problem).__name__}"
            )
        return problem


@dataclass
class StepResult:
    """What one line did: ``invalid`` is None when it was applied (or was free text)."""

    line: str
    invalid: Invalid | None = None
    counted: bool = True


class Episode(Generic[Problem, State, Step]):
    """Replays lines through a task's rules, keeping the backtrack stack and the counts.

    Each line the task reads (:meth:`Task.read`) as a step, a move or an invalid line
    is one step of the budget; a move counts each state it undoes as a backtrack and
    each state it pushes as a valid step.

    Args:
        task: the task whose rules and grammar apply.
        problem: the problem being solved.
        backtrack: whether ``backtrack_token`` lines may undo steps.
        backtrack_token: the line that undoes the last applied step.
        labels: whether to label each state reached as solvable or a dead end
            (:meth:`Task.solvable`; the counts are in :attr:`stats`, the last step's
            labels in ``record.step``). The search's shape is counted either way.

    Raises:
        ValueError: when ``problem`` is solved before any step (there would be
            nothing to do; generated problems never are).
    """

    def __init__(
        self,
        task: Task,
        problem: Problem,
        *,
        backtrack: bool = True,
        backtrack_token: str = BACKTRACK,
        labels: bool = False,
    ):
        self.task = task
        self.problem = problem
        self.backtrack = backtrack
        self.backtrack_token = backtrack_token
        self.states: list[State] = [task.initial_state(problem)]
        self.stats = EpisodeStats()
        self._update_goal()
        if self.stats.solved:
            raise ValueError(f"the {task.name} problem is already solved at the start: {task.problem_to_dict(problem)}")
        self.record = SearchRecord(task, problem, self.state, self.stats, labels=labels)

    @property
    def state(self) -> State:
        return self.states[-1]

    def step(self, line: str) -> StepResult:
        """Act on one line; blank lines and grammar-allowed free text count as no step."""
        text = line.strip()
        if not text:
            return StepResult(line, counted=False)
        if len(text) > self.task.max_line_chars:
            self.stats.steps += 1
            return self.reject(line, Invalid("malformed", f"line longer than {self.task.max_line_chars} characters"))
        if text == self.backtrack_token:
            self.stats.steps += 1
            if not self.backtrack:
                return self.reject(line, Invalid("illegal", "backtracking is off in this env"))
            if len(self.states) == 1:
                return self.reject(line, Invalid("illegal", "nothing to undo"))
            self.states.pop()
            self.stats.backtracks += 1
            self._update_goal()
            self.record.begin()
            self.record.pop(self.stats, 1)
            return StepResult(line)
        step = self.task.read(self.problem, self.states, text)
        if step is None:
            return StepResult(line, counted=False)
        self.stats.steps += 1
        if isinstance(step, Invalid):
            return self.reject(line, step)
        if isinstance(step, Move):
            return self._move(line, step)
        new_state = self.task.apply(self.problem, self.state, step)
        if isinstance(new_state, Invalid):
            return self.reject(line, new_state)
        self.states.append(new_state)
        self.stats.valid += 1
        self._update_goal()
        self.record.begin()
        self.record.push(self.stats, new_state, self.stats.solved)
        return StepResult(line)

    def _move(self, line: str, move: Move) -> StepResult:
        """One line that undoes the states above ``move.depth`` and pushes ``move.states``."""
        if not 0 <= move.depth < len(self.states):
            raise ValueError(f"{self.task.name} read a move to depth {move.depth} of a stack of {len(self.states)}")
        undone = len(self.states) - 1 - move.depth
        if undone and not self.backtrack:
            return self.reject(line, Invalid("illegal", "backtracking is off in this env"))
        del self.states[move.depth + 1 :]
        self.states.extend(move.states)
        self.stats.backtracks += undone
        self.stats.valid += len(move.states)
        self._update_goal()
        record = self.record
        record.begin()
        if undone:
            record.pop(self.stats, undone)
        for number, state in enumerate(move.states, start=1):
            record.push(self.stats, state, self.stats.solved if number == len(move.states) else None)
        return StepResult(line)

    def _update_goal(self) -> None:
        self.stats.solved = self.task.is_solved(self.problem, self.state)
        self.stats.progress = self.task.progress(self.problem, self.state)

    def run(
        self, text: str, *, max_steps: int, stop_on_invalid: bool = False
    ) -> tuple[list[dict[str, Any]], StepResult | None]:
        """Replay a whole output line by line until solved, out of steps, or (optionally) invalid.

        Returns the first invalid lines (number, text, reason) and the last step's result.
        """
        invalid_lines: list[dict[str, Any]] = []
        last = None
        for number, line in enumerate(text.split("\n"), start=1):
            if self.stats.steps >= max_steps or self.stats.solved:
                break
            result = self.step(line)
            if not result.counted:
                continue
            last = result
            if result.invalid is not None:
                if len(invalid_lines) < MAX_REPORTED_LINES:
                    invalid_lines.append({"line": number, "text": line[:80], "reason": result.invalid.reason})
                if stop_on_invalid:
                    break
        return invalid_lines, last

    def reject(self, line: str, invalid: Invalid) -> StepResult:
        """Count ``line`` as an invalid step that leaves the state as it was."""
        self.record.begin()
        if invalid.kind == "malformed":
            self.stats.malformed += 1
        else:
            self.stats.illegal += 1
        return StepResult(line, invalid=invalid)


class TextEnv(gym.Env[str, str]):
    """Shared Gymnasium machinery of the text envs; see each task's env for its docs.

    Both interaction modes count alike, so an output earns the same return whether it
    is sent whole (``"completion"``) or one line per action (``"step"``, see
    :func:`step_actions`): blank lines and free text the grammar allows are no steps
    and cost nothing; every other line is one step of the budget. In step mode a
    blank action is one malformed step, and an episode also ends (truncated) after
    :attr:`max_turns` actions, so endless free text ends too.

    Args:
        task: the task (rules, grammar, generation).
        split: ``"train"`` or ``"test"`` (held-out) problems.
        interaction: ``"step"`` (one action is one line) or ``"completion"`` (one
            action is a whole output, replayed line by line).
        backtrack: whether the backtrack line undoes the last step.
        backtrack_token: the line that backtracks (default ``<backtrack>``).
        max_steps: step budget of an episode; default the task's ``default_max_steps``.
        invalid_policy: ``"penalize"`` (an invalid step costs ``invalid_penalty``
            and the episode goes on), ``"terminate"`` (the episode ends at the
            first invalid step) or ``"ignore"`` (no cost; the step still uses the
            budget). Invalid steps never change the state.
        invalid_penalty: the cost of one invalid step under ``"penalize"``; added to
            the ``format`` and ``validity`` term weights.
        reward_weights: weights of the terms in :mod:`backtrack_gym.rewards`;
            default ``{"correct": 1.0}``.
        max_action_chars: longest action accepted; a longer one is one malformed step.
            Default: one line in step mode, :func:`completion_chars` in completion mode.
        labels: whether each state is labelled solvable or a dead end by the task's
            exact solver (:meth:`Task.solvable`, see :mod:`backtrack_gym.envs.labels`):
            ``info`` then has the last step's labels and the episode's counts of them,
            and the ``process`` reward term may be weighted. On by default: it adds
            at most about 0.0014 ms a step to CountDown and Sudoku (``bench/label_bench.py``).
        render_mode: ``"ansi"`` or ``"human"``.

    Pinning a problem that is solved before any step raises ``ValueError`` (see
    :class:`Episode`).
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 4}

    def __init__(
        self,
        task: Task,
        *,
        split: str = "train",
        interaction: str = "step",
        backtrack: bool = False,
        backtrack_token: str = BACKTRACK,
        max_steps: int | None = None,
        invalid_policy: str = "penalize",
        invalid_penalty: float = 0.1,
        reward_weights: Mapping[str, float] | None = None,
        max_action_chars: int | None = None,
        labels: bool = True,
        render_mode: str | None = None,
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        check_interaction(interaction)
        if invalid_policy not in INVALID_POLICIES:
            raise ValueError(f"invalid_policy must be one of {INVALID_POLICIES}, got {invalid_policy!r}")
        if max_steps is None:
            max_steps = task.default_max_steps
        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.task = task
        self.split = split
        self.interaction = interaction
        self.backtrack = backtrack
        self.backtrack_token = backtrack_token
        self.max_steps = max_steps
        self.invalid_policy = invalid_policy
        self.render_mode = render_mode
        weights = dict(DEFAULT_WEIGHTS if reward_weights is None else check_weights(reward_weights))
        if invalid_policy == "penalize":
            for term in ("format", "validity"):
                weights[term] = weights.get(term, 0.0) + invalid_penalty
        unlabelled = sorted(term for term in LABEL_TERMS if weights.get(term) and not labels)
        if unlabelled:
            raise ValueError(f"reward_weights: the terms {unlabelled} read the dead-end labels; they need labels=True")
        self.reward_weights = weights
        self.labels = labels
        if max_action_chars is None:
            max_action_chars = task.max_line_chars + 1 if interaction == "step" else completion_chars(task, max_steps)
        self.max_action_chars = max_action_chars
        # As many actions as the lines of the longest completion: a step-mode episode of
        # an output never ends before the completion-mode replay of it would.
        self.max_turns = completion_chars(task, max_steps)
        self.action_space = TextSpace(max_length=max_action_chars, charset=task.charset)
        self.observation_space = TextSpace(max_length=task.max_observation_chars, charset=task.charset)
        self.problem: Any = None
        self.episode: Episode | None = None
        self.done = False
        self.turns = 0
        self.reward_terms: dict[str, float] = {}  # the weighted terms now (their sum is the return so far)
        self.last: StepResult | None = None
        self.invalid_lines: list[dict[str, Any]] = []

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode.

        ``options`` may hold ``"problem"`` (a problem, its dict or JSON) to pin the
        problem, or ``"index"`` to take that item of the split. Otherwise an index is
        drawn from the env's seeded generator, so ``reset(seed=s)`` is deterministic.
        """
        super().reset(seed=seed)
        options = options or {}
        if options.get("problem") is not None:
            problem = self.task.coerce_problem(options["problem"])
        else:
            index = options.get("index")
            if index is None:
                index = int(self.np_random.integers(0, 2**62))
            problem = self.task.generate(int(index), self.split)
        self.episode = Episode(
            self.task, problem, backtrack=self.backtrack, backtrack_token=self.backtrack_token, labels=self.labels
        )
        self.problem = problem
        self.done = False
        self.turns = 0
        self.reward_terms = breakdown(self.episode.stats, self.reward_weights)
        self.last = None
        self.invalid_lines = []
        return self.task.prompt(self.problem), self._info()

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Act; see the class docstring for the outcome of each kind of action.

        Raises:
            gymnasium.error.ResetNeeded: when called before ``reset`` or after the
                episode ended.
            TypeError: when ``action`` is not a ``str``.
        """
        if self.episode is None or self.done:
            raise ResetNeeded("call reset() before step(): the episode has ended or not begun")
        if not isinstance(action, str):
            raise TypeError(f"an action is a str, got {type(action).__name__}")
        episode = self.episode
        before = sum(self.reward_terms.values())
        self.turns += 1
        self.invalid_lines = []
        episode.record.begin()  # an action that takes no step (free text) has no step labels
        if len(action) > self.max_action_chars:
            episode.stats.steps += 1
            reason = f"action longer than {self.max_action_chars} characters"
            self.last = episode.reject(action[:80], Invalid("malformed", reason))
        elif self.interaction == "step":
            self.last = self._act_line(action.rstrip("\n"))
        else:
            self.invalid_lines, self.last = episode.run(
                action, max_steps=self.max_steps, stop_on_invalid=self.invalid_policy == "terminate"
            )
        terminated = episode.stats.solved or self._stops(self.last) or self.interaction == "completion"
        truncated = not terminated and (episode.stats.steps >= self.max_steps or self.turns >= self.max_turns)
        self.done = terminated or truncated
        self.reward_terms = breakdown(episode.stats, self.reward_weights)
        reward = sum(self.reward_terms.values()) - before
        if self.render_mode == "human":
            self.render()
        return self.task.render(self.problem, episode.state), reward, terminated, truncated, self._info()

    def _act_line(self, line: str) -> StepResult:
        """One step-mode action: a step as in completion mode; free text is no step (it
        uses a turn only), and a blank or multi-line action is one malformed step."""
        episode = self.episode
        if "\n" in line:
            episode.stats.steps += 1
            return episode.reject(line, Invalid("malformed", "a step-mode action is one line"))
        if not line.strip():
            episode.stats.steps += 1
            return episode.reject(line, Invalid("malformed", "empty step"))
        return episode.step(line)

    def _stops(self, result: StepResult | None) -> bool:
        return result is not None and result.invalid is not None and self.invalid_policy == "terminate"

    def _info(self) -> dict[str, Any]:
        stats = self.episode.stats
        last = self.last
        return {
            "problem": self.task.problem_to_dict(self.problem),
            "state": self.task.state_info(self.episode.state),
            "interaction": self.interaction,
            "backtrack": self.backtrack,
            "backtrack_token": self.backtrack_token,
            "steps": stats.steps,
            "turns": self.turns,
            "valid_steps": stats.valid,
            "invalid_steps": stats.invalid,
            "malformed_steps": stats.malformed,
            "illegal_steps": stats.illegal,
            "backtracks": stats.backtracks,
            "solved": stats.solved,
            "progress": stats.progress,
            "last_valid": last is not None and last.invalid is None,
            "last_reason": None if last is None or last.invalid is None else last.invalid.reason,
            "invalid_lines": list(self.invalid_lines),
            "reward_terms": dict(self.reward_terms),
            "labels": self.labels,
            **self.episode.record.step.to_info(),
            **search_info(stats),
            "backtrack_branching": self.episode.record.backtrack_branching(),
        }

    def render(self) -> str | None:
        if self.render_mode is None or self.episode is None:
            return None
        stats = self.episode.stats
        status = "solved" if stats.solved else f"step {stats.steps}/{self.max_steps}"
        counts = f"[{status}, {stats.backtracks} backtracks, {stats.invalid} invalid]"
        text = f"{self.task.render(self.problem, self.episode.state)}\n{counts}"
        if self.last is not None and self.last.invalid is not None:
            text += f"\n\x1b[31minvalid: {self.last.invalid.reason}\x1b[0m"
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def snapshot(self) -> TextEnvSnapshot:
        """This env's state now, immutable and JSON-able (see :mod:`backtrack_gym.envs.snapshot`).

        Raises:
            gymnasium.error.ResetNeeded: before the first ``reset``.
            ValueError: when a counter holds something that is no JSON data (it is named).
        """
        if self.episode is None:
            raise ResetNeeded("call reset() before snapshot(): there is no episode yet")
        episode = self.episode
        return TextEnvSnapshot(
            task=self.task.name,
            config=task_config(self.task),
            settings=self._settings(),
            problem=self.task.problem_to_dict(self.problem),
            stack=self.task.stack_info(episode.states),
            stats=field_values(episode.stats),
            episode=field_values(episode, EPISODE_OWN),
            turns=self.turns,
            done=self.done,
            last=None if self.last is None else _result_data(self.last),
            invalid_lines=self.invalid_lines,
            reward_terms=self.reward_terms,
            rng=rng_state(self._np_random, self._np_random_seed),
        )

    def restore(self, snapshot: TextEnvSnapshot | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """Put this env at the point of ``snapshot`` (or of its ``to_dict()`` data), taken from
        this env or from one made with the same task, config and settings.

        Returns the observation and ``info`` the env returned at that point; from there it
        steps as the env the snapshot was taken from did, step for step. (Through
        ``gym.make``'s wrappers, step only after a first ``reset``: they check the order.)

        Raises:
            ValueError: when the snapshot is of another task, config or settings, or a field
                of it is not what this env could have held (the field is named). The env is
                unchanged then.
        """
        snapshot = TextEnvSnapshot.from_dict(snapshot)
        task = self.task
        if snapshot.task != task.name:
            raise ValueError(f"the snapshot is of a {snapshot.task!r} env; this env plays {task.name!r}")
        check_same("config", snapshot.config, task_config(task))
        check_same("settings", snapshot.settings, self._settings())
        try:
            problem = task.coerce_problem(thaw(snapshot.problem))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"snapshot field 'problem' is no {task.name} problem: {err}") from None
        episode = Episode(task, problem, **self._episode_options())
        try:
            states = task.stack_from_info(problem, thaw(snapshot.stack))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"snapshot field 'stack' is no {task.name} state stack: {err!r}") from None
        if not states or states[0] != episode.states[0]:
            raise ValueError("snapshot field 'stack' does not start at the problem's initial state")
        episode.states = list(states)
        set_fields(episode.stats, snapshot.stats, "stats")
        set_fields(episode, snapshot.episode, "episode", EPISODE_OWN)
        reward_terms = thaw(snapshot.reward_terms)
        if reward_terms != breakdown(episode.stats, self.reward_weights):
            raise ValueError("snapshot field 'reward_terms' does not follow from its 'stats' under this env's weights")
        last = None if snapshot.last is None else _result_from_data(snapshot.last)
        generator, seed = rng_from_state(snapshot.rng)
        # Every check passed: only now does the env change.
        self.problem, self.episode, self.turns, self.done = problem, episode, snapshot.turns, snapshot.done
        self.last, self.invalid_lines, self.reward_terms = last, thaw(snapshot.invalid_lines), reward_terms
        self._np_random, self._np_random_seed = generator, seed
        return self._observation(), self._info()

    def fork(self) -> TextEnv:
        """A new env at this env's point: the same task, settings and state, stepping and
        resetting on its own from here (the task, which keeps no episode state, is shared).

        Raises:
            gymnasium.error.ResetNeeded: before the first ``reset``.
        """
        twin = copy.copy(self)
        twin.action_space, twin.observation_space = _space_copy(self.action_space), _space_copy(self.observation_space)
        twin.reward_weights = dict(self.reward_weights)
        twin.restore(self.snapshot())
        return twin

    def _observation(self) -> str:
        """The observation the last ``reset`` or ``step`` returned."""
        if self.turns == 0:
            return self.task.prompt(self.problem)
        return self.task.render(self.problem, self.episode.state)

    def _episode_options(self) -> dict[str, Any]:
        # Each option of an Episode is the env's setting of that name (as reset passes them).
        return {name: getattr(self, name) for name in EPISODE_OPTIONS}

    def _settings(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SNAPSHOT_SETTINGS}


# What an Episode holds that a snapshot keeps in fields of its own; its other public
# attributes are counters, copied as they are.
EPISODE_OWN = frozenset({"task", "problem", "backtrack", "backtrack_token", "states", "stats"})
EPISODE_OPTIONS = tuple(
    name
    for name, parameter in inspect.signature(Episode.__init__).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
)
# The TextEnv settings that decide what a step does, so a snapshot restores only where they are
# equal: every argument of TextEnv, which the env keeps under its name (so a new one is taken in
# as it comes), but invalid_penalty, which is in reward_weights, and render_mode, which changes no step.
_NOT_SETTINGS = ("self", "task", "invalid_penalty", "render_mode")
SNAPSHOT_SETTINGS = (
    *(name for name in inspect.signature(TextEnv.__init__).parameters if name not in _NOT_SETTINGS),
    "max_turns",
)


def task_config(task: Task) -> FrozenDict:
    """The fields of ``task.config`` (every task here has one), frozen; empty for a task without one."""
    config = getattr(task, "config", None)
    if not dataclasses.is_dataclass(config):
        return FrozenDict()
    try:
        hash(config)
    except TypeError:  # a config that is not frozen: nothing to cache by
        return FrozenDict(dataclasses.asdict(config), "config")
    return _frozen_config(config)


@functools.lru_cache(maxsize=64)
def _frozen_config(config: Any) -> FrozenDict:
    # A snapshot is taken at every node of a search: the config, which does not change, is frozen once.
    return FrozenDict(dataclasses.asdict(config), "config")


def _space_copy(space: TextSpace) -> TextSpace:
    """A text space that samples on its own: its character tables (never changed) are shared,
    its generator copied (a deep copy of the tables would be most of a fork's time)."""
    twin = copy.copy(space)
    twin._np_random = copy.deepcopy(space._np_random)
    return twin


def _result_data(result: StepResult) -> dict[str, Any]:
    invalid = None if result.invalid is None else field_values(result.invalid)
    return {**field_values(result, frozenset({"invalid"})), "invalid": invalid}


def _result_from_data(data: Mapping[str, Any]) -> StepResult:
    values = thaw(data)
    try:
        invalid = values.pop("invalid")
        return StepResult(**values, invalid=None if invalid is None else Invalid(**invalid))
    except (KeyError, TypeError) as err:
        raise ValueError(f"snapshot field 'last' is no step result: {err}") from None


def env_config(
    config_class: type[Config], config: Config | Mapping[str, Any] | None, keywords: dict[str, Any]
) -> Config:
    """The config a task's env is made with, so ``gym.make(id, num_count=3)`` sets a config field.

    ``config`` is a ``config_class``, its fields as a dict, or None for the defaults; the
    items of ``keywords`` that are config fields replace its values and are removed from
    ``keywords``, which keeps the :class:`TextEnv` keywords.
    """
    names = {field.name for field in fields(config_class)}
    given = {name: keywords.pop(name) for name in list(keywords) if name in names}
    if isinstance(config, Mapping):
        config = config_class(**config)
    return replace(config_class() if config is None else config, **given)


def completion_chars(task: Task, max_steps: int) -> int:
    """The longest output a completion-mode env takes by default: ``max_steps`` full lines."""
    return (task.max_line_chars + 1) * max_steps


def step_actions(env: TextEnv, completion: str) -> list[str]:
    """The actions that play a whole output in a step-mode ``env``: its non-blank lines,
    stripped, one action each (the lines completion mode acts on, in order).

    An output longer than :func:`completion_chars` is one action, as in completion
    mode: an over-long action, so one malformed step in either mode. With the default
    action caps, the step-mode return of these actions is the completion-mode return
    of the output under the same settings (``tests/test_scoring.py`` checks it).
    """
    if len(completion) > completion_chars(env.task, env.max_steps):
        return [completion]
    return [line.strip() for line in completion.split("\n") if line.strip()]


@dataclass(frozen=True)
class Played:
    """What one output earned in an env: its return, each weighted term's share of it
    (every term of the env's ``reward_weights``), and the last ``info``."""

    total: float
    terms: dict[str, float]
    info: dict[str, Any]


def play_completion(env: TextEnv, problem: Any, completion: str) -> Played:
    """Play ``completion`` against ``problem`` (object, dict or JSON) in ``env`` from reset.

    In completion mode the output is the one action; in step mode it is sent as
    :func:`step_actions` until the episode ends. The env's own settings (budget,
    caps, invalid policy, weights) decide everything, so this is the one way an
    output is scored: the TRL reward functions call it too.
    """
    if not isinstance(completion, str):
        raise TypeError(f"a completion is a str, got {type(completion).__name__}")
    if problem is None:  # reset() would draw a problem of its own
        task = env.task
        raise ValueError(f"a {task.name} problem is a {task.problem_type.__name__}, its dict or JSON object, got None")
    _, info = env.reset(options={"problem": problem})
    start = info["reward_terms"]
    actions = [completion] if env.interaction == "completion" else step_actions(env, completion)
    total = 0.0
    for action in actions:
        if env.done:
            break
        _, reward, _, _, info = env.step(action)
        total += reward
    end = info["reward_terms"]
    terms = {term: end.get(term, 0.0) - start.get(term, 0.0) for term in env.reward_weights}
    return Played(total, terms, info)
