"""CountDown trace styles: direct, DFS, BFS, mix, think (pruned) and self-backtracking.

The searches are those of Stream of Search as its code runs them (KempnerInstitute/Backtrack,
``countdown/src/countdown_dfs.py``, ``countdown_bfs.py``, ``countdown_utils.py``,
``countdown_generate.py``):

- children of a node: each pair of its numbers in ``itertools.combinations`` order, and for
  each pair ``a+b``, ``a*b``, the larger minus the smaller and the larger over the smaller
  when exact (``combine_nums``), the result appended to the other numbers;
- heuristics of a child's numbers: ``sum``, their mean distance to the target (``sum_heuristic``),
  and ``mult``, the *sum* of each number's distance to the nearest factor of the target in
  2..target (``mult_heuristic``); children are tried best first (a stable sort);
- ``dfs`` prunes children scoring above ``threshold=target`` and recurses into each child in
  turn; ``bfs`` keeps each expanded node's best ``width`` children, shuffled, on one heap and
  expands the best ``width`` nodes of the heap in each round, without a threshold;
- ``dfs``, ``bfs`` and ``mix`` choose their heuristic per problem (``random.choice([sum, mult])``
  in ``countdown_generate.py``), ``bfs`` its width in 1..5, and ``mix`` DFS or BFS (its
  ``--search random``).

A search is written in one of :data:`TRACE_FORMATS`: ``"research"``, the research's
node lines (``Current State: ...``, ``Exploring Operation: ...``, ``Generated Node #0,1: ...``,
``Moving to Node #0``, ``... equal: Goal Reached``), the same search line by line; or
``"compact"``, bare steps (``8 - 5 = 3``) and a ``<backtrack>`` line for each step undone,
so a model must keep the numbers left in mind. Both replay in the env
(:mod:`backtrack_gym.envs.countdown.grammar` reads the research lines).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from backtrack_gym.agents.traces.core import Trace, TraceFull, TraceWriter
from backtrack_gym.agents.traces.self_backtracking import check_self_backtrack_options
from backtrack_gym.envs.countdown.env import CountDownTask
from backtrack_gym.envs.countdown.generator import CountDownProblem
from backtrack_gym.envs.countdown.grammar import NO_SOLUTION_FOUND, format_numbers, format_operation
from backtrack_gym.envs.countdown.rules import Step, _moves, is_solvable
from backtrack_gym.envs.expr import Value

Heuristic = Callable[[Sequence[Value], int], float]
HEURISTICS = ("sum", "mult")
TRACE_FORMATS = ("compact", "research")
BEAM_WIDTHS = (1, 2, 3, 4, 5)


def sum_heuristic(numbers: Sequence[Value], target: int) -> float:
    """Mean distance of the numbers to the target (``sum_heuristic`` of ``countdown_utils.py``)."""
    return sum(abs(n - target) for n in numbers) / len(numbers)


@cache
def _factors(target: int) -> tuple[int, ...]:
    factors = tuple(f for f in range(2, target + 1) if target % f == 0)
    return factors or (target,)  # below 2 there are none; the research's targets start at 10


def mult_heuristic(numbers: Sequence[Value], target: int) -> float:
    """Sum over the numbers of the distance to the nearest factor of the target in 2..target.

    As ``mult_heuristic`` of ``countdown_utils.py`` computes it: a sum, not a mean, so
    it grows with the numbers left.
    """
    factors = _factors(int(target))
    return sum(min(abs(n - f) for f in factors) for n in numbers)


def heuristic(name: str) -> Heuristic:
    """The heuristic called ``name`` (one of :data:`HEURISTICS`)."""
    if name == "sum":
        return sum_heuristic
    if name == "mult":
        return mult_heuristic
    raise ValueError(f"heuristic_name must be one of {HEURISTICS}, got {name!r}")


def _choose_heuristic(name: str | None, rng: np.random.Generator | None) -> Heuristic:
    """``name``'s heuristic, or one drawn from ``rng`` per problem, as the research does, when ``name`` is None."""
    if name is not None:
        return heuristic(name)
    if rng is None:
        raise ValueError("heuristic_name=None draws the heuristic per problem: pass rng, or name the heuristic")
    return heuristic(HEURISTICS[int(rng.integers(len(HEURISTICS)))])


@dataclass(eq=False)
class Node:
    """A node of a search: the numbers in the order the research's search keeps them, the
    step that made it, the steps from the start and its id (``0`` the start, then ``,k`` per level).

    Nodes compare by heuristic only, as the research's ``CountdownNode`` does, so a heap of
    ``(score, node)`` breaks ties as the research's heap does.
    """

    numbers: list[int]
    score: float
    step: Step | None = None
    index: str = "0"
    depth: int = 0
    steps: tuple[Step, ...] = field(default=(), repr=False)

    def __lt__(self, other: Node) -> bool:
        return self.score < other.score

    def child(self, numbers: list[int], step: Step, score: float) -> Node:
        return Node(numbers, score, step, depth=self.depth + 1, steps=(*self.steps, step))


def combine_pair(a: int, b: int) -> list[tuple[int, Step]]:
    """What ``combine_nums(a, b)`` of ``countdown_utils.py`` returns, in its order, as steps."""
    results = [(a + b, Step(a, "+", b, a + b)), (a * b, Step(a, "*", b, a * b))]
    low, high = (a, b) if a <= b else (b, a)
    results.append((high - low, Step(high, "-", low, high - low)))
    if low != 0 and high % low == 0:
        results.append((high // low, Step(high, "/", low, high // low)))
    return results


def children(node: Node, score: Heuristic, target: int) -> list[Node]:
    """Every child of ``node``, in the order the research generates them."""
    numbers = node.numbers
    found = []
    for i, j in itertools.combinations(range(len(numbers)), 2):
        rest = [numbers[k] for k in range(len(numbers)) if k != i and k != j]
        for value, step in combine_pair(numbers[i], numbers[j]):
            found.append(node.child([*rest, value], step, score([*rest, value], target)))
    return found


def _root(problem: CountDownProblem, score: Heuristic) -> Node:
    numbers = list(problem.numbers)
    return Node(numbers, score(numbers, problem.target))


class CompactWriter(TraceWriter):
    """Writes a search as bare steps and ``<backtrack>`` lines.

    Trying a child goes to its parent first: back to the common ancestor, then the
    parent's remaining steps (so a BFS that moves between branches writes them again).
    """

    def expand(self, node: Node) -> None:
        """The search expands ``node``: nothing to write until a child is tried."""

    def explore(self, child: Node) -> None:
        """The search tries ``child``: its step, from its parent."""
        self.move_to(child.steps[:-1])
        self.apply(child.step)

    def moving_to(self, node: Node) -> None:
        """The search announces the next node: nothing to write."""

    def give_up(self) -> None:
        """The search ends unsolved: nothing to write."""


class ResearchWriter(TraceWriter):
    """Writes a search in the research's node lines, keeping the stack as the env reads them.

    Searches call :meth:`expand`, :meth:`explore` and :meth:`moving_to` (the lines of
    ``countdown_dfs.py`` and ``countdown_bfs.py``); :meth:`apply` and :meth:`backtrack`,
    which ``direct`` and ``self_backtrack`` use, write the lines of ``convert_to_path``
    (``countdown.py``): ``Current State``, ``Exploring Operation``, ``Generated Node #k``
    and ``Current State`` again, or the goal line, and a ``<backtrack>`` line.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self.target = self.problem.target
        self._current_shown = False  # the last Current State line names the current node

    # the research's searches
    def expand(self, node: Node) -> None:
        """``Current State`` of ``node``: the env goes there (to the common ancestor, then down)."""
        self.write(self._current_line(node.numbers, node.steps))
        states = [self.states[0]]
        for step in node.steps:
            states.append(self.task.apply(self.problem, states[-1], step))
        common = 0
        while common < min(len(states), len(self.states)) - 1 and _same(states[common + 1], self.states[common + 1]):
            common += 1
        self.pop_to(common)
        for step, state in zip(node.steps[common:], states[common + 1 :], strict=True):
            self.push(step, state)

    def explore(self, child: Node) -> None:
        """``Exploring Operation`` (the step, from the child's parent), then the goal, dead-end or node line."""
        self.write(
            f"Exploring Operation: {format_operation(child.step)}, Resulting Numbers: {format_numbers(child.numbers)}"
        )
        self.pop_to(child.depth - 1)
        self.push(child.step)
        if self.solved():
            self.write(self._verdict(child.numbers, reached=True))
        elif len(child.numbers) == 1:
            self.write(self._verdict(child.numbers, reached=False))
        else:
            self.write(
                f"Generated Node #{child.index}: {self.target}:{format_numbers(child.numbers)} "
                f"Operation: {format_operation(child.step)}"
            )

    def moving_to(self, node: Node) -> None:
        """``Moving to Node #id``: the env goes back to the ancestor at that depth, if it is above."""
        self.write(f"Moving to Node #{node.index}")
        self.pop_to(min(node.depth, self.depth))

    def give_up(self) -> None:
        """The research's BFS ends an unsolved search with ``No solution found.``"""
        self.note(NO_SOLUTION_FOUND)

    # convert_to_path, for direct and self-backtracking traces
    def apply(self, step: Step, *, masked: bool = False) -> tuple[Value, ...]:
        """``Exploring Operation`` of ``step``, then ``Generated Node`` and ``Current State``, or the goal line.

        A ``Current State`` line comes first when the last one names another node (at
        the start, after a backtrack). Every line of the step is masked if ``masked``.
        """
        if not self._current_shown:
            self.write(self._current_line(self.state, self.path))
        state = self.task.apply(self.problem, self.state, step)
        if not isinstance(state, tuple):
            raise ValueError(f"trace step {self.task.format_step(step)!r} is invalid: {state.reason}")
        operation = format_operation(step)
        self.write(f"Exploring Operation: {operation}, Resulting Numbers: {format_numbers(state)}", masked=masked)
        self.push(step, state)
        self._current_shown = False
        if self.solved() or len(state) == 1:
            self.write(self._verdict(state, reached=self.solved()), masked=masked)
            return state
        self.write(
            f"Generated Node #{self.depth + 1}: {format_numbers(state)} from Operation: {operation}", masked=masked
        )
        self.write(self._current_line(state, self.path), masked=masked)
        self._current_shown = True
        return state

    def backtrack(self) -> None:
        super().backtrack()
        self._current_shown = False

    def _current_line(self, numbers: Sequence[Value], steps: Sequence[Step]) -> str:
        operations = "[" + ", ".join(f"'{format_operation(step)}'" for step in steps) + "]"
        return f"Current State: {self.target}:{format_numbers(numbers)}, Operations: {operations}"

    def _verdict(self, numbers: Sequence[Value], *, reached: bool) -> str:
        shown = numbers[0] if len(numbers) == 1 else self.target  # several numbers: the old goal rule
        return f"{shown},{self.target} {'equal: Goal Reached' if reached else 'unequal: No Solution'}"


def _same(a: Sequence[Value], b: Sequence[Value]) -> bool:
    return sorted(a) == sorted(b)


Writer = CompactWriter | ResearchWriter


def make_writer(
    task: CountDownTask, problem: CountDownProblem, trace_format: str = "compact", max_lines: int | None = None
) -> Writer:
    """The writer of ``trace_format`` (one of :data:`TRACE_FORMATS`) for ``problem``."""
    if trace_format == "compact":
        return CompactWriter(task, problem, max_lines=max_lines)
    if trace_format == "research":
        return ResearchWriter(task, problem, max_lines=max_lines)
    raise ValueError(f"trace_format must be one of {TRACE_FORMATS}, got {trace_format!r}")


def research_solution(numbers: Sequence[int], target: int) -> list[Step] | None:
    """The first solution using all the numbers that ``CountDown.search`` (``countdown.py``) finds.

    The same depth-first order as :func:`children`; states proved dead are remembered
    (which skips work, never a solution). None when the research's operations cannot
    reach the target.
    """
    dead: set[tuple[int, ...]] = set()

    def search(numbers: list[int]) -> list[Step] | None:
        if len(numbers) == 1:
            return [] if numbers[0] == target else None
        key = tuple(sorted(numbers))
        if key in dead:
            return None
        for i, j in itertools.combinations(range(len(numbers)), 2):
            rest = [numbers[k] for k in range(len(numbers)) if k != i and k != j]
            for value, step in combine_pair(numbers[i], numbers[j]):
                found = search([*rest, value])
                if found is not None:
                    return [step, *found]
        dead.add(key)
        return None

    return search(list(numbers))


def direct(task: CountDownTask, problem: CountDownProblem, *, trace_format: str = "compact", **_: object) -> Trace:
    """The research's direct solution (``convert_to_path`` of the first solution ``CountDown.search`` finds).

    Under the old goal rule (``use_all_numbers=False``), or rules whose extra results the
    research's operations lack, a shortest solution from the task's solver instead.
    """
    writer = make_writer(task, problem, trace_format)
    plan = research_solution(problem.numbers, problem.target) if task.config.use_all_numbers else None
    for step in plan if plan is not None else task.solve(problem, writer.state) or []:
        writer.apply(step)
    return writer.finish()


def _kept(children: list[Node], threshold: float, solved: Callable[[Node], bool]) -> list[Node]:
    """``children`` without those scoring above ``threshold``, best first (a stable sort).

    A child that reaches the goal is never pruned; the research's goal, one number left
    that is the target, scores 0 under both heuristics, so this only matters under the old
    goal rule.
    """
    kept = [child for child in children if child.score <= threshold or solved(child)]
    kept.sort(key=lambda child: child.score)
    return kept


def dfs(
    task: CountDownTask,
    problem: CountDownProblem,
    *,
    rng: np.random.Generator | None = None,
    heuristic_name: str | None = None,
    threshold: float | None = None,
    think: bool = False,
    trace_format: str = "compact",
    max_lines: int | None = 512,
    **_: object,
) -> Trace:
    """Depth-first search as ``countdown_dfs.py`` runs it (see the module docstring).

    ``heuristic_name`` None draws ``sum`` or ``mult`` per problem from ``rng``; children
    scoring above ``threshold`` (default: the target, as ``countdown_generate.py`` passes)
    are pruned. With ``think`` (ours) the failed last operations (two numbers left) are
    not tried. ``max_lines`` (ours; the research has no limit) ends the trace unsolved.
    """
    score = _choose_heuristic(heuristic_name, rng)
    limit = float(problem.target) if threshold is None else threshold
    writer = make_writer(task, problem, trace_format, max_lines)
    target = problem.target

    def solved(node: Node) -> bool:
        return task.is_solved(problem, tuple(node.numbers))

    def visit(node: Node) -> bool:
        writer.expand(node)
        tried = _kept(children(node, score, target), limit, solved)
        if think:
            tried = [child for child in tried if len(child.numbers) > 1 or solved(child)]
        for k, child in enumerate(tried):
            child.index = f"{node.index},{k}"
            writer.explore(child)
            if writer.solved():
                return True
            if len(child.numbers) > 1:
                writer.moving_to(child)
                if visit(child):
                    return True
            if k < len(tried) - 1:
                writer.moving_to(node)
                writer.expand(node)
        return False

    with contextlib.suppress(TraceFull):  # the line budget ends the search
        visit(_root(problem, score))
    return writer.finish()


def bfs(
    task: CountDownTask,
    problem: CountDownProblem,
    *,
    rng: np.random.Generator,
    heuristic_name: str | None = None,
    width: int | None = None,
    trace_format: str = "compact",
    max_lines: int | None = 512,
    **_: object,
) -> Trace:
    """Best-first beam search as ``countdown_bfs.py`` runs it (see the module docstring).

    Each round expands the best ``width`` nodes of the heap; each expansion tries its
    best ``width`` children in a random order (``random.shuffle``; here from ``rng``) and
    puts them on the heap, dead ends included, as the research does. ``heuristic_name``
    None draws one per problem, ``width`` None one in 1..5 (``countdown_generate.py``).
    """
    score = _choose_heuristic(heuristic_name, rng)
    if width is None:
        width = BEAM_WIDTHS[int(rng.integers(len(BEAM_WIDTHS)))]
    if width not in BEAM_WIDTHS:
        raise ValueError(f"width must be one of {BEAM_WIDTHS}, got {width}")
    writer = make_writer(task, problem, trace_format, max_lines)
    root = _root(problem, score)
    heap = [(root.score, root)]
    try:
        while heap:
            expanded = [heapq.heappop(heap) for _ in range(min(width, len(heap)))]
            for position, (_, node) in enumerate(expanded):
                writer.expand(node)
                best = sorted(children(node, score, problem.target), key=lambda child: child.score)[:width]
                best = [best[k] for k in rng.permutation(len(best))]
                generated = 0
                for child in best:
                    child.index = f"{node.index},{generated}"
                    writer.explore(child)
                    if writer.solved():
                        return writer.finish()
                    if len(child.numbers) > 1:
                        generated += 1  # dead ends share the next node's number, as in the research
                for child in sorted(best, key=lambda child: child.score):
                    heapq.heappush(heap, (child.score, child))
                if position < len(expanded) - 1:
                    writer.moving_to(expanded[position + 1][1])
            if heap:
                writer.moving_to(heap[0][1])
        writer.give_up()
    except TraceFull:
        pass
    return writer.finish()


def mix(
    task: CountDownTask,
    problem: CountDownProblem,
    *,
    rng: np.random.Generator,
    trace_format: str = "compact",
    max_lines: int | None = 512,
    **_: object,
) -> Trace:
    """Per problem, a heuristic, then DFS or BFS of width 1..5 (``countdown_generate.py --search random``)."""
    name = HEURISTICS[int(rng.integers(len(HEURISTICS)))]
    options = {"rng": rng, "heuristic_name": name, "trace_format": trace_format, "max_lines": max_lines}
    if rng.random() < 0.5:
        return dfs(task, problem, **options)
    return bfs(task, problem, width=BEAM_WIDTHS[int(rng.integers(len(BEAM_WIDTHS)))], **options)


def think(task: CountDownTask, problem: CountDownProblem, **options: object) -> Trace:
    """DFS that does not try the failed last operations (ours; see :func:`dfs`)."""
    return dfs(task, problem, **{**options, "think": True})


def self_backtrack(
    task: CountDownTask,
    problem: CountDownProblem,
    *,
    rng: np.random.Generator,
    wrong_step_rate: float = 0.5,
    example_form: str = "ended",
    trace_format: str = "compact",
    **_: object,
) -> Trace:
    """Self-backtracking data (Yang et al. 2025): a back example, or the optimal path.

    The paper trains on ``D = D_op ∪ D_back``: optimal paths, and back examples
    ``prefix(y) ∘ a_err ∘ <backtrack>`` (a prefix of an optimal path, one erroneous
    step, the backtrack token). Its code (LAMDASZ-ML/Self-Backtracking
    ``src/train.py``) trains each example to its end and masks the wrong step's line
    from the loss; here that line is :attr:`Trace.masked`. Each trace draws which it
    is: a share ``wrong_step_rate`` are back examples, the others the optimal path,
    which is the :func:`direct` trace. The paper's share comes with its data set
    (``yangxw/countdown-backtracking``) and is not stated in its code; 0.5 (one back
    example per optimal path) is ours.

    ``example_form`` says where a back example ends:

    - ``"ended"`` (the paper's): at the ``<backtrack>`` line; the trace replays to the
      prefix's state and does not solve the problem.
    - ``"continued"`` (this project's earlier form): the shortest solution goes on after
      the backtrack, so every trace solves its problem and a model also learns to
      recover in one pass, without the search (:mod:`backtrack_gym.agents.search`).

    The wrong step goes at a random step of the solution (the next positions are tried
    in random order where none fits): a legal step after which the target is out of
    reach (proved by the solver), the best such by the sum heuristic. Where no position
    has one the trace is the plain solution. Lines are written in ``trace_format``
    (in ``"research"`` every line of the wrong step is masked).
    """
    check_self_backtrack_options(wrong_step_rate, example_form)
    writer = make_writer(task, problem, trace_format)
    plan = research_solution(problem.numbers, problem.target) if task.config.use_all_numbers else None
    plan = plan if plan is not None else task.solve(problem, writer.state) or []  # direct's plan
    states = [writer.state]
    for step in plan:
        states.append(task.apply(problem, states[-1], step))
    positions = [int(k) for k in rng.permutation(len(plan))]
    if wrong_step_rate < 1.0 and rng.random() >= wrong_step_rate:
        positions = []  # this trace is the optimal path
    chosen, wrong = None, None
    for k in positions:
        wrong = _plausible_wrong_step(task, problem, states[k])
        if wrong is not None:
            chosen = k
            break
    for k, step in enumerate(plan):
        if k == chosen:
            writer.apply(wrong, masked=True)
            writer.backtrack()
            if example_form == "ended":
                break
        writer.apply(step)
    return writer.finish()


def _plausible_wrong_step(task: CountDownTask, problem: CountDownProblem, state: tuple[Value, ...]) -> Step | None:
    dead = [
        (sum_heuristic(child, problem.target), Step(a, op, b, value))
        for a, op, b, value, child in _moves(task.rules, state)
        if not is_solvable(task.rules, child, problem.target, task.config.use_all_numbers)
    ]
    return min(dead, key=lambda item: item[0])[1] if dead else None


# The write_trace options these styles take besides their own (see backtrack_gym.agents.traces.TASK_OPTIONS).
OPTIONS = ("trace_format", "heuristic_name")

STYLES = {
    "direct": direct,
    "dfs": dfs,
    "bfs": bfs,
    "mix": mix,
    "think": think,
    "self_backtrack": self_backtrack,
}
