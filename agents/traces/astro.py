"""ASTRO traces: an MCTS search written as one chain of thought (Kim et al. 2025, arXiv 2507.00417).

The search (:func:`backtrack_gym.agents.mcts.mcts`) gives a tree; a linearisation picks
the nodes the trace visits, in order. Going to a node off the current path first writes
a reflection line on the line being left (free text, e.g. "But wait, that gives 36,
which does not lead to the answer."), then one backtrack line per step undone (the
env's ``backtrack_token``, so the env undoes them), then a free-text "go back" line;
then it writes the node's lines. Two linearisations:

- ``solution_path`` (default): the path to the first verified right answer, with up to
  ``max_detours`` detours. A detour leaves the path at a node with a failed child,
  follows that child's most-visited branch to its end (a wrong answer or a dead end),
  reflects and backtracks to the node. This follows ASTRO's selection, which curates
  search paths that recover from wrong terminal nodes and end at a right one; the rule
  choosing the detours (random path nodes, the most-visited failed branch) is ours.
- ``search``: every node the search created, in creation order, up to the solution: the
  whole search, a trace far longer than the paper's (docs/astro.md).

A trace ends on the path of the first verified right answer (a rollout's continuation
written last); an unsolved search writes ``solution_path``'s most-visited path (no
answer found) or the whole search. Every line is in the Math grammar, so a trace
replays in the env (completion mode, backtracking on) to the state it ends in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from backtrack_gym.agents.mcts import MathTaskProposer, MCTSConfig, Node, SearchTree, mcts
from backtrack_gym.agents.traces.core import Trace, TraceFull, TraceWriter
from backtrack_gym.envs.core import BACKTRACK, Task
from backtrack_gym.envs.math.grammar import MAX_LINE_CHARS

REFLECTIONS = (
    "But wait, that gives {value}, which does not lead to the answer.",
    "Hmm, {value} is not consistent with the question.",
    "Wait, {value} cannot be right here.",
    "That gives {value}, but this does not fit the problem.",
)
GO_BACK = (
    "Let me go back to the step where I had {value}.",
    "Let me go back to the step after {value} and try another way.",
)
GO_BACK_TO_START = ("Let me go back to the question and start again.", "Let me start over from the question.")
LINEARISATIONS = ("solution_path", "search")


def _check_phrases(name: str, phrases: Any) -> tuple[str, ...]:
    if isinstance(phrases, str) or not phrases or not all(isinstance(p, str) and p.strip() for p in phrases):
        raise ValueError(f"{name} must be a non-empty list of non-empty phrases, got {phrases!r}")
    for phrase in phrases:
        if "\n" in phrase or phrase.strip().lower().startswith("answer"):
            raise ValueError(f"{name}: {phrase!r} must be one free-text line not starting with 'Answer'")
        if not any(c.isalpha() for c in phrase.replace("{value}", "")):
            raise ValueError(f"{name}: {phrase!r} needs a letter so the grammar reads it as free text")
    return tuple(phrases)


def _value_of(line: str) -> str:
    text = line.split(":", 1)[1] if line.lower().startswith("answer") else line.rsplit("=", 1)[-1]
    return text.strip()[:40]


class _Linearizer:
    def __init__(self, writer: TraceWriter, task: Task, rng: np.random.Generator, phrases: dict[str, Sequence[str]]):
        self.writer, self.task, self.rng, self.phrases = writer, task, rng, phrases
        self.lines: list[str] = []  # the current path's lines
        self.reflections = 0

    def phrase(self, kind: str, value: str) -> str:
        options = self.phrases[kind]
        return options[int(self.rng.integers(len(options)))].format(value=value)[:MAX_LINE_CHARS]

    def go_to(self, target: tuple[str, ...]) -> None:
        common = 0
        while common < min(len(target), len(self.lines)) and target[common] == self.lines[common]:
            common += 1
        if len(self.lines) > common:
            self.writer.note(self.phrase("reflections", _value_of(self.lines[-1])))
            self.reflections += 1
            while len(self.lines) > common:
                self.writer.backtrack()
                self.lines.pop()
            kind, value = ("go_back", _value_of(self.lines[-1])) if self.lines else ("go_back_to_start", "")
            self.writer.note(self.phrase(kind, value))
        for line in target[common:]:
            self.writer.apply(self.task.parse_step(line))
            self.lines.append(line)


def _most_visited_leaf(node: Node) -> Node:
    """The end of ``node``'s most-visited branch (the first created among equals)."""
    while node.children:
        node = max(node.children, key=lambda child: child.visits)
    return node


def solution_path_targets(tree: SearchTree, rng: np.random.Generator, max_detours: int) -> list[tuple[str, ...]]:
    """The line sequences a ``solution_path`` trace goes to, in order (see the module docstring).

    The branch points are the solution path's tree nodes with a child off the path (the
    solution node too, when the answer came from its rollout); up to ``max_detours`` of
    them, drawn from ``rng``, each get a detour to the end of their most-visited failed
    child's most-visited branch, in path order. An unsolved tree gives its most-visited path.
    """
    if tree.solution_node is None:
        return [_most_visited_leaf(tree.root).lines]
    path = [tree.solution_node]
    while path[-1].parent is not None:
        path.append(path[-1].parent)
    path.reverse()  # root ... solution_node
    on_path = {id(node) for node in path}
    points = [failed for node in path if (failed := [child for child in node.children if id(child) not in on_path])]
    chosen = sorted(rng.choice(len(points), size=min(max_detours, len(points)), replace=False)) if points else []
    detours = [_most_visited_leaf(max(points[k], key=lambda child: child.visits)).lines for k in chosen]
    return [*detours, tree.solution]


def astro(
    task: Task,
    problem: Any,
    *,
    rng: np.random.Generator,
    backtrack_token: str = BACKTRACK,
    max_lines: int | None = None,
    c: float | None = None,
    max_nodes: int = 200,
    rollouts_per_leaf: int = 1,
    max_rollouts: int = 1000,
    max_depth: int = 12,
    slip: float = 0.3,
    slips: int = 2,
    reflections: Sequence[str] = REFLECTIONS,
    go_back: Sequence[str] = GO_BACK,
    go_back_to_start: Sequence[str] = GO_BACK_TO_START,
    proposer: Any = None,
    linearisation: str = "solution_path",
    max_detours: int = 2,
    **_: object,
) -> Trace:
    """An MCTS search of ``problem`` linearised as a chain of thought (see the module docstring).

    ``linearisation`` is ``solution_path`` (with up to ``max_detours`` detours) or
    ``search``. The search's options are :class:`~backtrack_gym.agents.mcts.MCTSConfig`'s (``c``
    defaults to sqrt(2)), the proposer's (``slip``, ``slips``) or a ``proposer``; the
    phrases are lists of one-line templates with ``{value}`` (the value of the line
    left, or the one gone back to), one drawn from ``rng`` each time. The search and the
    phrases both draw from ``rng``, so a trace is deterministic per seed.
    """
    if linearisation not in LINEARISATIONS:
        raise ValueError(f"linearisation must be one of {list(LINEARISATIONS)}, got {linearisation!r}")
    if isinstance(max_detours, bool) or not isinstance(max_detours, int) or max_detours < 0:
        raise ValueError(f"max_detours must be an integer >= 0, got {max_detours!r}")
    phrases = {
        "reflections": _check_phrases("reflections", reflections),
        "go_back": _check_phrases("go_back", go_back),
        "go_back_to_start": _check_phrases("go_back_to_start", go_back_to_start),
    }
    config = MCTSConfig(
        **({} if c is None else {"c": c}),
        max_nodes=max_nodes,
        rollouts_per_leaf=rollouts_per_leaf,
        max_rollouts=max_rollouts,
        max_depth=max_depth,
    )
    tree = mcts(task, problem, proposer or MathTaskProposer(slip=slip, slips=slips), config, rng=rng)
    writer = TraceWriter(task, problem, backtrack_token=backtrack_token, max_lines=max_lines)
    out = _Linearizer(writer, task, rng, phrases)
    if linearisation == "solution_path":
        targets = solution_path_targets(tree, rng, max_detours)
    else:
        stop = tree.solution_node.order if tree.solution_node is not None else len(tree.nodes) - 1
        targets = [node.lines for node in tree.nodes[1 : stop + 1]]
        if tree.solution is not None:
            targets.append(tree.solution)
    try:
        for target in targets:
            out.go_to(target)
    except TraceFull:
        pass
    trace = writer.finish()
    trace.reflections = out.reflections
    return trace
