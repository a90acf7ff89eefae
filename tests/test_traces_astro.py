import numpy as np
import pytest

from backtrack_gym.agents.traces import write_trace
from backtrack_gym.envs.core import Episode
from backtrack_gym.envs.math import MathTask


def replay(task, problem, trace, token="<backtrack>"):
    episode = Episode(task, problem, backtrack=True, backtrack_token=token)
    invalid, _ = episode.run(trace.completion, max_steps=10**6)
    return episode, invalid


def check(n, **options):
    task = MathTask()
    solved = 0
    for index in range(n):
        problem = task.generate(index)
        trace = write_trace(task, problem, "astro", rng=np.random.default_rng(index), **options)
        episode, invalid = replay(task, problem, trace)
        assert not invalid
        assert episode.stats.backtracks == trace.backtracks and episode.state == trace.final_state
        if trace.solved:
            solved += 1
            assert episode.stats.solved and trace.lines[-1].startswith("Answer:")
    return solved


def test_astro_traces_replay_solved_on_100_problems():
    assert check(100) >= 90


def test_whole_search_traces_replay_solved():
    assert check(30, linearisation="search") >= 27


@pytest.mark.slow
def test_astro_traces_replay_solved_on_1000_problems():
    assert check(1000) >= 900


def test_solution_path_detours_are_bounded_and_shorter_than_the_search():
    task = MathTask()
    for index in range(30):
        problem = task.generate(index)
        path = {
            k: write_trace(task, problem, "astro", rng=np.random.default_rng(index), max_detours=k) for k in (0, 1, 3)
        }
        search = write_trace(task, problem, "astro", rng=np.random.default_rng(index), linearisation="search")
        if not search.solved:
            continue
        assert path[0].backtracks == 0 and path[0].reflections == 0 and path[0].solved
        for k, trace in path.items():
            assert trace.reflections <= k and trace.solved and trace.lines[-1] == search.lines[-1]
        assert len(path[3].lines) <= len(search.lines)


def test_linearisation_options_are_checked():
    task = MathTask()
    problem = task.generate(0)
    with pytest.raises(ValueError, match="linearisation"):
        write_trace(task, problem, "astro", linearisation="bfs")
    with pytest.raises(ValueError, match="max_detours"):
        write_trace(task, problem, "astro", max_detours=-1)


def test_astro_trace_reflects_then_backtracks_and_is_deterministic():
    task = MathTask()
    traces = [write_trace(task, task.generate(i), "astro", rng=np.random.default_rng(7)) for i in range(20)]
    again = [write_trace(task, task.generate(i), "astro", rng=np.random.default_rng(7)) for i in range(20)]
    assert [t.lines for t in traces] == [t.lines for t in again]
    with_back = [t for t in traces if t.backtracks]
    assert with_back and all(t.reflections >= 1 for t in with_back)
    for t in with_back:
        k = t.lines.index("<backtrack>")
        assert t.lines[k - 1] != "<backtrack>" and task.parse_step(t.lines[k - 1]) is None  # a reflection line


def test_astro_phrases_are_configurable_and_checked():
    task = MathTask()
    problem = task.generate(1)
    trace = write_trace(
        task, problem, "astro", reflections=["Oops, {value} is off."], backtrack_token="Wait, that's not right."
    )
    episode, invalid = replay(task, problem, trace, "Wait, that's not right.")
    assert not invalid and episode.stats.solved == trace.solved
    assert all(
        line.startswith("Oops")
        for k, line in enumerate(trace.lines)
        if trace.lines[k + 1 :][:1] == ["Wait, that's not right."] and not line.startswith("Wait")
    )
    with pytest.raises(ValueError, match="reflections"):
        write_trace(task, problem, "astro", reflections=["Answer: {value}"])
