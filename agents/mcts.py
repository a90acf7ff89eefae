"""Monte Carlo Tree Search over a task's step grammar, as ASTRO searches (Kim et al. 2025).

ASTRO ("Autoregressive Search-Taught Reasoner", Kim et al., Meta 2025, arXiv 2507.00417)
runs MCTS over step-by-step solutions of math problems, turns each search into one
chain of thought that keeps the failed branches and the recoveries from them
(:mod:`backtrack_gym.agents.traces.astro`), fine-tunes on those and then runs RL.

Here a node is a partial solution (the lines so far, replayed through the task's rules:
its state), a child is one candidate next line, and a node's value is the mean verified
outcome (1 for a right ``Answer:``, 0 otherwise) of the rollouts through it. One
iteration: *select* from the root by UCT, ``W/N + c * sqrt(ln N_parent / N)``, while a
node has no untried candidate; *expand* the next untried candidate (candidates are
tried in an order drawn from the search's generator); *roll out* from the new child,
``rollouts_per_leaf`` times, each line drawn from the proposer's priors until an answer
or ``max_depth``; *back up* the mean outcome along the path. The search stops at the
first right answer, a tree node's or a rollout's (or when ``max_nodes`` or ``max_rollouts`` are spent).

Differences from the paper: ASTRO's proposer is a Llama policy and its values come from
the policy's self-evaluation and the answer check; here the default proposer is
:class:`MathTaskProposer` (the task's own, below) and values are verified rollouts only.
:class:`PolicyProposer` lets any policy with :class:`~backtrack_gym.agents.lm.LMAgent`'s
``rollout`` interface propose lines, so the same search runs with a trained model.

Math states are immutable values (a frozen dataclass), so a node keeps its state and
the search never replays a prefix: the state is the env snapshot of the node.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from backtrack_gym.envs.core import Invalid, Task
from backtrack_gym.envs.expr import ExprError, evaluate
from backtrack_gym.envs.math.answers import format_number
from backtrack_gym.envs.math.grammar import Calc, FinalAnswer, reference_steps
from backtrack_gym.envs.math.templates import LINE_LIMITS, num

UCT_C = math.sqrt(2)
"""The default exploration constant: Kocsis & Szepesvari's UCT constant for values in
[0, 1] (UCB1's ``sqrt(2 ln N / n)``), the usual choice for 0/1 rewards such as a verified answer."""


@dataclass(frozen=True)
class MCTSConfig:
    """How :func:`mcts` searches.

    Attributes:
        c: UCT exploration constant (default sqrt(2), see :data:`UCT_C`).
        max_nodes: tree nodes the search may create (the root not counted).
        rollouts_per_leaf: rollouts from each new node.
        max_rollouts: rollouts in all (a second budget).
        max_depth: most lines in a path (tree path plus rollout).
        seed: seeds the candidate order and the rollouts when no generator is given.
        stop_at_solution: stop at the first right answer, of a tree node or of a rollout.
    """

    c: float = UCT_C
    max_nodes: int = 200
    rollouts_per_leaf: int = 1
    max_rollouts: int = 1000
    max_depth: int = 12
    seed: int = 0
    stop_at_solution: bool = True

    def validate(self) -> MCTSConfig:
        """Raise ``ValueError`` naming the field for settings that cannot work."""
        if isinstance(self.c, bool) or not isinstance(self.c, (int, float)) or not 0 <= self.c < math.inf:
            raise ValueError(f"c must be a finite number >= 0, got {self.c!r}")
        for name in ("max_nodes", "rollouts_per_leaf", "max_rollouts", "max_depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        return self


@dataclass(frozen=True)
class Proposal:
    """A candidate next line and its prior (the rollout policy's weight)."""

    line: str
    prior: float = 1.0


class Proposer(Protocol):
    """Proposes candidate next lines for a node."""

    def propose(self, task: Task, problem: Any, state: Any) -> list[Proposal]: ...


@dataclass(eq=False)
class Node:
    """A partial solution: ``lines`` applied from the root give ``state``."""

    lines: tuple[str, ...]
    state: Any
    parent: Node | None = None
    order: int = 0
    children: list[Node] = field(default_factory=list)
    untried: list[tuple[str, Any, float]] | None = None  # (line, state, prior), None until proposed
    visits: int = 0
    value_sum: float = 0.0
    terminal: bool = False
    solved: bool = False

    @property
    def value(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0

    @property
    def depth(self) -> int:
        return len(self.lines)


@dataclass
class SearchTree:
    """One search: the nodes in the order it created them (root first) and what it found.

    ``solution`` is the lines of the first right answer: a tree node's, or else (the
    budget spent first) a rollout's that started at ``solution_node``; None if neither.
    """

    root: Node
    nodes: list[Node]
    solution: tuple[str, ...] | None
    solution_node: Node | None
    rollouts: int
    invalid_proposals: int

    @property
    def solved(self) -> bool:
        return self.solution is not None


def uct_score(child: Node, parent_visits: int, c: float) -> float:
    """``W/N + c * sqrt(ln N_parent / N)``; an unvisited child scores infinity."""
    if child.visits == 0:
        return math.inf
    return child.value + c * math.sqrt(math.log(max(parent_visits, 1)) / child.visits)


def select_child(node: Node, c: float) -> Node:
    """The child with the highest UCT score (the first created among equals)."""
    return max(node.children, key=lambda child: uct_score(child, node.visits, c))


def backup(path: Sequence[Node], value: float) -> None:
    """Add one visit of ``value`` to every node of ``path``."""
    for node in path:
        node.visits += 1
        node.value_sum += value


class _Search:
    def __init__(self, task: Task, problem: Any, proposer: Proposer, config: MCTSConfig, rng: np.random.Generator):
        self.task, self.problem, self.proposer, self.config, self.rng = task, problem, proposer, config, rng
        self.rollouts = 0
        self.invalid = 0
        self.rollout_solution: tuple[tuple[str, ...], Node] | None = None

    def candidates(self, lines: tuple[str, ...], state: Any) -> list[tuple[str, Any, float]]:
        """The proposer's lines that apply, each once, with their states and priors."""
        out, seen = [], set()
        for proposal in self.proposer.propose(self.task, self.problem, state):
            step = self.task.parse_step(proposal.line.strip())
            if step is None or isinstance(step, Invalid):
                self.invalid += step is not None
                continue
            line = self.task.format_step(step)
            if line in seen:
                continue
            new_state = self.task.apply(self.problem, state, step)
            if isinstance(new_state, Invalid):
                self.invalid += 1
                continue
            seen.add(line)
            out.append((line, new_state, max(float(proposal.prior), 0.0)))
        return out

    def ends(self, state: Any) -> tuple[bool, bool]:
        """(terminal, solved): an answer was given, and whether it is right."""
        answered = getattr(state, "answer", None) is not None
        solved = self.task.is_solved(self.problem, state)
        return answered or solved, solved

    def rollout(self, node: Node) -> float:
        self.rollouts += 1
        lines, state = node.lines, node.state
        while len(lines) < self.config.max_depth:
            options = self.candidates(lines, state)
            if not options:
                return 0.0
            weights = np.array([prior for _, _, prior in options]) + 1e-12
            line, state, _ = options[int(self.rng.choice(len(options), p=weights / weights.sum()))]
            lines = (*lines, line)
            terminal, solved = self.ends(state)
            if terminal:
                if solved and self.rollout_solution is None:
                    self.rollout_solution = (lines, node)
                return float(solved)
        return 0.0

    def run(self) -> SearchTree:
        config = self.config
        root = Node((), self.task.initial_state(self.problem))
        nodes, found = [root], None
        while len(nodes) - 1 < config.max_nodes and self.rollouts < config.max_rollouts:
            node, path = root, [root]
            while not node.terminal and node.untried == [] and node.children:
                node = select_child(node, config.c)
                path.append(node)
            if node.terminal:
                value = float(node.solved)
            else:
                if node.untried is None:
                    options = self.candidates(node.lines, node.state)
                    node.untried = [options[int(k)] for k in self.rng.permutation(len(options))]
                if node.untried and node.depth < config.max_depth:
                    line, state, _ = node.untried.pop(0)
                    child = Node((*node.lines, line), state, node, len(nodes))
                    child.terminal, child.solved = self.ends(state)
                    node.children.append(child)
                    nodes.append(child)
                    path.append(child)
                    node = child
                if node.terminal:
                    value = float(node.solved)
                elif node.depth >= config.max_depth or (node.untried == [] and not node.children):
                    node.terminal, value = True, 0.0  # a dead end: no line applies, or too deep
                else:
                    value = sum(self.rollout(node) for _ in range(config.rollouts_per_leaf)) / config.rollouts_per_leaf
            backup(path, value)
            if node.solved and found is None:
                found = node
            if config.stop_at_solution and (found is not None or self.rollout_solution is not None):
                break
            if root.terminal or (root.untried == [] and not root.children):
                break
        if found is not None:
            solution, solution_node = found.lines, found
        elif self.rollout_solution is not None:
            solution, solution_node = self.rollout_solution
        else:
            solution, solution_node = None, None
        return SearchTree(root, nodes, solution, solution_node, self.rollouts, self.invalid)


def mcts(
    task: Task,
    problem: Any,
    proposer: Proposer | None = None,
    config: MCTSConfig | None = None,
    *,
    rng: np.random.Generator | None = None,
) -> SearchTree:
    """Search ``problem`` by MCTS (see the module docstring); deterministic given ``config.seed`` or ``rng``."""
    config = (config or MCTSConfig()).validate()
    proposer = proposer if proposer is not None else MathTaskProposer()
    rng = rng if rng is not None else np.random.default_rng(config.seed)
    return _Search(task, problem, proposer, config, rng).run()


# --- the task's proposer for generated Math problems ---------------------------------

_NUMBER = re.compile(r"(?<![\d.])\d+(?:\.\d+)?(?![\d.])")
OPS = ("+", "-", "*", "/")


def _value(text: str) -> Any:
    return evaluate(text, LINE_LIMITS)


def _calc_line(expression: str) -> str | None:
    try:
        value = _value(expression)
    except ExprError:
        return None
    return f"{expression} = {format_number(value)}"


@dataclass(frozen=True)
class MathTaskProposer:
    """Candidate lines for a Math problem with a reference solution (the generated templates).

    At a node with ``j`` checked lines the proposer writes the reference's line ``j``
    *as this path would*: each number in it that is the value of an earlier reference
    line is replaced by the value this path's line ``j`` got there, so a slip earlier on
    the path carries on to a wrong answer, as a reasoner's would. Besides it, slips of
    arithmetic over the numbers known so far (the question's and the path's values): the
    same operands joined by another operation, an operand swapped for another known
    value, and (after a line) an early ``Answer:`` with the last value. Once the
    reference's lines are done it proposes the answer, the last value. The reference's
    own line has prior ``1 - slip``; the slips share ``slip``. Without a reference the
    proposer writes arithmetic over the question's numbers only.

    Attributes:
        slip: the slips' share of the prior (the rollouts' chance of a slip per line).
        slips: most slip candidates a node gets.
    """

    slip: float = 0.3
    slips: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.slip, bool) or not isinstance(self.slip, (int, float)) or not 0 <= self.slip < 1:
            raise ValueError(f"slip must be a number in [0, 1), got {self.slip!r}")
        if isinstance(self.slips, bool) or not isinstance(self.slips, int) or self.slips < 0:
            raise ValueError(f"slips must be an integer >= 0, got {self.slips!r}")

    def propose(self, task: Task, problem: Any, state: Any) -> list[Proposal]:
        if state.answer is not None:
            return []
        reference = [step for step in reference_steps(problem.solution) if isinstance(step, Calc)]
        values = [_line_value(line) for line in state.lines]
        j = len(state.lines)
        known = _question_numbers(problem.question) + [v for v in values if v is not None]
        if j >= len(reference):
            last = values[-1] if values else None
            return [] if last is None else [Proposal(f"Answer: {format_number(last)}", 1.0)]
        ref = reference[j]
        ref_values = [step.value for step in reference[:j]]
        expression = _substitute(ref.expression, ref_values, values)
        main = _calc_line(expression)
        slips: list[str] = []
        for candidate in _slips(expression, known):
            if candidate != main and candidate not in slips and len(slips) < self.slips:
                slips.append(candidate)
        if values and values[-1] is not None and len(slips) < self.slips + 1:
            slips.append(f"Answer: {format_number(values[-1])}")
        out = [] if main is None else [Proposal(main, 1.0 - self.slip if slips else 1.0)]
        out += [Proposal(line, self.slip / len(slips)) for line in slips]
        return out


def _line_value(line: str) -> Any:
    try:
        return _value(line.rsplit("=", 1)[1].strip())
    except (ExprError, IndexError):
        return None


def _question_numbers(question: str) -> list[Any]:
    out = []
    for text in _NUMBER.findall(question.replace(",", "")):
        value = _value(text)
        if value not in out:
            out.append(value)
    return out


def _substitute(expression: str, ref_values: list[Any], values: list[Any]) -> str:
    """``expression`` with each number equal to an earlier reference value replaced by this path's value there."""
    pieces, end = [], 0
    for match in _NUMBER.finditer(expression):
        number = _value(match.group())
        replacement = match.group()
        for k in range(len(ref_values) - 1, -1, -1):
            if ref_values[k] == number and values[k] is not None:
                replacement = num(values[k])
                break
        pieces += [expression[end : match.start()], replacement]
        end = match.end()
    return "".join([*pieces, expression[end:]])


def _slips(expression: str, known: list[Any]) -> list[str]:
    """Right arithmetic, wrong step: another operation on the first two operands, or one operand swapped."""
    matches = list(_NUMBER.finditer(expression))
    out = []
    if len(matches) >= 2:
        a, b = matches[0], matches[1]
        between = expression[a.end() : b.start()].strip()
        for op in OPS:
            if op != between:
                line = _calc_line(f"{a.group()} {op} {b.group()}")
                if line:
                    out.append(line)
    for match in matches[:2]:
        for value in reversed(known):
            text = num(value)
            if text != match.group():
                line = _calc_line(expression[: match.start()] + text + expression[match.end() :])
                if line:
                    out.append(line)
                break
    return out


# --- a policy as proposer ----------------------------------------------------------


class _NodeEnv(gym.Env):
    """A one-line episode at a node: ``reset`` shows the node's observation, one line ends it."""

    metadata: dict[str, Any] = {}
    interaction = "step"

    def __init__(self, task: Task, problem: Any, state: Any, backtrack_token: str):
        self.task, self.problem, self.node_state = task, problem, state
        self.backtrack_token = backtrack_token
        self.line: str | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        self.line = None
        return self.task.render(self.problem, self.node_state), {"backtrack_token": self.backtrack_token}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        self.line = action.split("\n", 1)[0]
        return self.task.render(self.problem, self.node_state), 0.0, True, False, {}


class PolicyProposer:
    """Candidate lines sampled from a policy with :class:`~backtrack_gym.agents.lm.LMAgent`'s interface.

    ``policy.rollout(envs, seed=...)`` plays one episode in each env and returns
    episodes with ``lines``. Each of ``samples`` envs shows the node's observation (the
    rendered state, as a step-mode agent sees it) and ends after one line, so each
    episode's first line is one proposal; a line sampled ``m`` times has prior ``m``.
    """

    def __init__(self, policy: Any, samples: int = 4, *, seed: int = 0, backtrack_token: str = "<backtrack>"):
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
        if not callable(getattr(policy, "rollout", None)):
            raise ValueError("policy must have LMAgent's rollout(envs, seed=...) method")
        self.policy, self.samples, self.seed, self.backtrack_token = policy, samples, seed, backtrack_token
        self.calls = 0

    def propose(self, task: Task, problem: Any, state: Any) -> list[Proposal]:
        envs = [_NodeEnv(task, problem, state, self.backtrack_token) for _ in range(self.samples)]
        episodes = self.policy.rollout(envs, seed=self.seed + self.samples * self.calls)
        self.calls += 1
        counts: dict[str, int] = {}
        for episode in episodes:
            if episode.lines and episode.lines[0].strip():
                line = episode.lines[0].strip()
                counts[line] = counts.get(line, 0) + 1
        return [Proposal(line, float(count)) for line, count in counts.items()]


__all__ = [
    "UCT_C",
    "FinalAnswer",
    "MCTSConfig",
    "MathTaskProposer",
    "Node",
    "PolicyProposer",
    "Proposal",
    "Proposer",
    "SearchTree",
    "backup",
    "mcts",
    "select_child",
    "uct_score",
]
