"""Traces: what a search did, written in the env's own step grammar.

A :class:`TraceWriter` walks a task's states the way an env replays lines: each
applied step is a line and pushes a state, each ``<backtrack>`` line pops one. So a
trace written here replays in the env (completion mode, backtracking on) to the
state the writer ended in, by construction and by test. A task's writer may add lines
that state or move between nodes (CountDown's research format); it keeps the stack
with :meth:`TraceWriter.pop_to` and :meth:`TraceWriter.push` as the env reads those lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backtrack_gym.envs.core import BACKTRACK, Episode, Invalid, Task


@dataclass
class Trace:
    """One written search.

    Attributes:
        lines: the completion's lines, in order.
        masked: indices of lines to leave out of the SFT loss (inserted wrong steps).
        solved: the last state reaches the goal.
        final_state: the state the writer ended in (what a replay must reach).
        backtracks: states undone (a ``<backtrack>`` line undoes one).
        steps: steps applied (what a replay counts as valid steps).
        reflections: reflection lines written before backtracks (``astro`` traces; 0 for the others).
    """

    lines: list[str]
    masked: list[int]
    solved: bool
    final_state: Any
    backtracks: int
    steps: int
    reflections: int = 0

    @property
    def completion(self) -> str:
        """The lines, each ended by a newline."""
        return "".join(line + "\n" for line in self.lines)

    def mask_spans(self) -> list[tuple[int, int]]:
        """Character spans ``[start, end)`` of the masked lines (newline included) in :attr:`completion`."""
        masked = set(self.masked)
        return _layout([(line + "\n", index in masked) for index, line in enumerate(self.lines)])[1]

    def step_transcript(self, task: Task, problem: Any) -> tuple[str, list[tuple[int, int]]]:
        """The trace as a step-mode agent sees it, and the spans to leave out of the loss.

        After each line the env's observation (the rendered state) follows on its own
        line, until a line solves the problem and the env ends the episode, exactly as
        :class:`~backtrack_gym.agents.lm.LMAgent` writes a step-mode context. The
        observations, which the env writes and not the model, are masked spans, as are
        the masked lines.
        """
        episode = Episode(task, problem, backtrack=True)
        pieces, masked = [], set(self.masked)
        for index, line in enumerate(self.lines):
            pieces.append((line + "\n", index in masked))
            episode.step(line)
            if episode.stats.solved:
                break
            pieces.append((task.render(problem, episode.state) + "\n", True))
        return _layout(pieces)


def _layout(pieces: list[tuple[str, bool]]) -> tuple[str, list[tuple[int, int]]]:
    """The pieces' ``(text, masked)`` joined, and the character span of each masked one."""
    spans, offset = [], 0
    for text, masked in pieces:
        if masked:
            spans.append((offset, offset + len(text)))
        offset += len(text)
    return "".join(text for text, _ in pieces), spans


class TraceFull(Exception):
    """A line was written past the writer's ``max_lines``: the search stops there."""


@dataclass
class TraceWriter:
    """Writes lines while tracking the state stack exactly as :class:`Episode` replays them.

    Writing a line past ``max_lines`` raises :class:`TraceFull` (a search may check
    :attr:`full` instead); the lines written so far stay a trace that replays.
    """

    task: Task
    problem: Any
    backtrack_token: str = BACKTRACK
    max_lines: int | None = None
    lines: list[str] = field(default_factory=list)
    masked: list[int] = field(default_factory=list)
    backtracks: int = 0
    valid: int = 0

    def __post_init__(self) -> None:
        self.states = [self.task.initial_state(self.problem)]
        self.path: list[Any] = []  # the applied steps, root first

    @property
    def state(self) -> Any:
        return self.states[-1]

    @property
    def depth(self) -> int:
        """Steps applied and not undone."""
        return len(self.states) - 1

    @property
    def full(self) -> bool:
        """The line budget is spent."""
        return self.max_lines is not None and len(self.lines) >= self.max_lines

    def solved(self) -> bool:
        return self.task.is_solved(self.problem, self.state)

    def write(self, line: str, *, masked: bool = False) -> None:
        """Append ``line`` (masked from the loss if ``masked``); past ``max_lines`` raise :class:`TraceFull`."""
        if self.full:
            raise TraceFull(f"the trace has its {self.max_lines} lines")
        if masked:
            self.masked.append(len(self.lines))
        self.lines.append(line)

    def push(self, step: Any, state: Any | None = None) -> Any:
        """Take ``step`` (its state ``state``, else the rules' one) without writing a line; it must be legal."""
        if state is None:
            state = self.task.apply(self.problem, self.state, step)
        if isinstance(state, Invalid):
            raise ValueError(f"trace step {self.task.format_step(step)!r} is invalid: {state.reason}")
        self.states.append(state)
        self.path.append(step)
        self.valid += 1
        return state

    def pop_to(self, depth: int) -> None:
        """Return to the state at ``depth`` without writing a line (each step undone is a backtrack)."""
        if not 0 <= depth <= self.depth:
            raise ValueError(f"cannot go back to depth {depth} from depth {self.depth}")
        self.backtracks += self.depth - depth
        del self.states[depth + 1 :]
        del self.path[depth:]

    def apply(self, step: Any, *, masked: bool = False) -> Any:
        """Write ``step`` and move to its state; it must be legal."""
        state = self.task.apply(self.problem, self.state, step)
        if isinstance(state, Invalid):
            raise ValueError(f"trace step {self.task.format_step(step)!r} is invalid: {state.reason}")
        self.write(self.task.format_step(step), masked=masked)
        return self.push(step, state)

    def note(self, line: str) -> None:
        """Write a free-text line (no step; the grammar must read it as text)."""
        self.write(line)

    def backtrack(self) -> None:
        """Write a backtrack line and return to the previous state."""
        if self.depth == 0:
            raise ValueError("nothing to backtrack")
        self.write(self.backtrack_token)
        self.pop_to(self.depth - 1)

    def move_to(self, path: tuple[Any, ...] | list[Any]) -> None:
        """Go to the node at ``path``: backtrack to the common ancestor, then apply the rest."""
        common = 0
        while common < min(len(path), len(self.path)) and path[common] == self.path[common]:
            common += 1
        while self.depth > common:
            self.backtrack()
        for step in path[common:]:
            self.apply(step)

    def finish(self) -> Trace:
        return Trace(list(self.lines), list(self.masked), self.solved(), self.state, self.backtracks, self.valid)
