"""ASTRO traces: an MCTS search written as one chain of thought (Kim et al. 2025, arXiv 2507.00417).

The search (:func:`backtrack_gym.agents.mcts.mcts`) creates its nodes in some order;
the trace visits them in that order. Going to a node off the current path first writes
a reflection line on the line being left (free text, e.g. "But wait, that gives 36,
which does not lead to the answer."), then one backtrack line per step undone (the
env's ``backtrack_token``, so the env undoes them), then a free-text "go back" line;
then it writes the node's line. The trace ends on the path of the first verified right
answer (a rollout's continuation written last). Every line is in the Math grammar, so a
trace replays in the env (completion mode, backtracking on) to the state it ends in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from backtrack_gym.agents.mcts import MathTaskProposer, MCTSConfig, mcts
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
    **_: object,
) -> Trace:
    """An MCTS search of ``problem`` linearised as a chain of thought (see the module docstring).

    The search's options are :class:`~backtrack_gym.agents.mcts.MCTSConfig`'s (``c``
    defaults to sqrt(2)), the proposer's (``slip``, ``slips``) or a ``proposer``; the
    phrases are lists of one-line templates with ``{value}`` (the value of the line
    left, or the one gone back to), one drawn from ``rng`` each time. The search and the
    phrases both draw from ``rng``, so a trace is deterministic per seed.
    """
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
    try:
        stop = tree.solution_node.order if tree.solution_node is not None else len(tree.nodes) - 1
        for node in tree.nodes[1 : stop + 1]:
            out.go_to(node.lines)
        if tree.solution is not None:
            out.go_to(tree.solution)
    except TraceFull:
        pass
    trace = writer.finish()
    trace.reflections = out.reflections
    return trace
