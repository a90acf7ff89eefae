"""Env snapshots: restoring one steps as the uninterrupted env and as the replayed prefix do, forks
are independent, the JSON round trip is exact, and bad snapshots are clear errors.

The episodes are random outputs of ``test_scoring.RandomOutputs`` (legal steps, solutions,
illegal and malformed lines, free text, blanks, backtracks, over-long lines, research-format
lines), played under random settings; each is snapshotted at every point and one point is
drawn to check. The main property is also a hypothesis test, on episodes of legal and
other lines that it draws against the state they reach, so that a failure shrinks.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from hypothesis import given, settings
from hypothesis import strategies as st
from test_adding_a_task import PickSumEnv
from test_scoring import BLANKS, FREE_TEXT, ILLEGAL, MALFORMED, TASK_CONFIGS, WEIGHTS, RandomOutputs

import backtrack_gym  # noqa: F401  (registers the envs)
from backtrack_gym.envs import TASK_ENV_IDS, make_task
from backtrack_gym.envs import core as env_core
from backtrack_gym.envs.core import BACKTRACK, INTERACTIONS, INVALID_POLICIES, Episode
from backtrack_gym.envs.snapshot import (
    SNAPSHOT_VERSION,
    FrozenDict,
    SudokuGridSnapshot,
    TextEnvSnapshot,
    TokenEnvSnapshot,
)
from backtrack_gym.envs.sudoku.structured import SudokuGridEnv
from backtrack_gym.envs.terms import EpisodeStats
from backtrack_gym.envs.token_env import TokenEnv

TASKS = sorted(TASK_CONFIGS)
TRIALS = 150
FORK_TRIALS = 40
BUDGETS = (2, 6, 16, 64)  # 64: room for a Sudoku to be solved through the random lines


def make(task_name: str, settings: dict[str, Any]) -> env_core.TextEnv:
    return gym.make(TASK_ENV_IDS[task_name], **TASK_CONFIGS[task_name], **settings).unwrapped


def random_settings(rng: np.random.Generator, interaction: str) -> dict[str, Any]:
    return {
        "interaction": interaction,
        "backtrack": bool(rng.integers(2)),
        "max_steps": int(rng.choice(BUDGETS)),
        "invalid_policy": str(rng.choice(INVALID_POLICIES)),
        "reward_weights": WEIGHTS,
    }


def random_actions(outputs: RandomOutputs, problem: Any, interaction: str) -> list[str]:
    """A random output as the actions of ``interaction``: its lines, or the whole text."""
    lines = outputs.lines(problem) + outputs.lines(problem)
    return lines if interaction == "step" else ["\n".join(lines)]


def play(env: Any, seed: int, problem: Any, actions: list[Any]) -> tuple[list[tuple], list[Any]]:
    """Reset, then step ``actions`` until the episode ends: the outcome and the snapshot at each
    point (outcome 0 is reset's ``(observation, info)``, then each step's five values)."""
    outcomes = [env.reset(seed=seed, options={"problem": problem})]
    snapshots = [env.snapshot()]
    for action in actions:
        if env.done:
            break
        outcomes.append(env.step(action))
        snapshots.append(env.snapshot())
    return outcomes, snapshots


def steps(env: Any, actions: list[Any]) -> list[tuple]:
    """Step ``actions`` until the episode ends; the outcomes."""
    outcomes = []
    for action in actions:
        if env.done:
            break
        outcomes.append(env.step(action))
    return outcomes


def point(outcome: tuple) -> tuple:
    """The observation and info of an outcome: what ``restore`` returns for that point."""
    return outcome[0], outcome[-1]


def step_both(env: Any, ours: list, expected_ours: list, twin: Any, theirs: list, expected_theirs: list) -> None:
    """Step an env and its fork in turn, each through its own actions until its episode ends,
    so that anything the two shared would show; each step's outcome must be the expected one."""
    for i in range(max(len(expected_ours), len(expected_theirs))):
        if i < len(expected_ours):
            assert same(env.step(ours[i]), expected_ours[i])
        if i < len(expected_theirs):
            assert same(twin.step(theirs[i]), expected_theirs[i])


def same(a: Any, b: Any) -> bool:
    """Equal, arrays by value (the token and grid envs' observations and masks)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b) and a.dtype == b.dtype
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def draw_point(rng: np.random.Generator, snapshots: list[Any]) -> int:
    """A point to check: the last (where the episode ended) a quarter of the time, else any."""
    return len(snapshots) - 1 if rng.random() < 0.25 else int(rng.integers(len(snapshots)))


def json_round_trip(snapshot: Any) -> dict[str, Any]:
    return json.loads(json.dumps(snapshot.to_dict()))


def note(seen: Counter, snapshot: TextEnvSnapshot, k: int) -> None:
    """Count the kinds of point drawn, to show the random mix reaches each."""
    stats = snapshot.stats
    seen["after reset"] += k == 0
    seen["a backtrack"] += stats["backtracks"] > 0
    seen["an invalid step"] += stats["malformed"] + stats["illegal"] > 0
    seen["solved"] += stats["solved"]
    seen["ended"] += snapshot.done


@pytest.mark.parametrize("interaction", INTERACTIONS)
@pytest.mark.parametrize("task_name", TASKS)
def test_restoring_steps_as_the_uninterrupted_env_and_the_replayed_prefix(task_name, interaction):
    rng = np.random.default_rng([TASKS.index(task_name), INTERACTIONS.index(interaction)])
    task = make_task(task_name, **TASK_CONFIGS[task_name])
    problems = [task.generate(index) for index in range(20)]
    outputs = RandomOutputs(task, rng)
    seen: Counter[str] = Counter()
    for trial in range(TRIALS):
        settings = random_settings(rng, interaction)
        problem = problems[int(rng.integers(len(problems)))]
        actions = random_actions(outputs, problem, interaction)
        env = make(task_name, settings)
        outcomes, snapshots = play(env, trial, problem, actions)
        k = draw_point(rng, snapshots)
        rest = actions[k : len(outcomes) - 1]
        note(seen, snapshots[k], k)

        fresh = make(task_name, settings)  # never reset: the snapshot is all it knows
        assert fresh.restore(snapshots[k]) == point(outcomes[k])
        assert steps(fresh, rest) == outcomes[k + 1 :]
        assert fresh.snapshot() == snapshots[-1]

        _, replayed = play(make(task_name, settings), trial, problem, actions[:k])
        assert replayed[-1] == snapshots[k]

        data = json_round_trip(snapshots[k])
        assert TextEnvSnapshot.from_dict(data) == snapshots[k]
        assert env.restore(data) == point(outcomes[k])  # rewinds the env the snapshots came from
        assert steps(env, rest) == outcomes[k + 1 :]
        if env.done:
            with pytest.raises(ResetNeeded):
                env.step(actions[0])
    for kind in ("after reset", "a backtrack", "an invalid step", "solved", "ended"):
        assert 0 < seen[kind] < TRIALS or (kind == "ended" and interaction == "completion"), (kind, seen)


PROBLEMS = {name: [make_task(name, **TASK_CONFIGS[name]).generate(index) for index in range(10)] for name in TASKS}


@st.composite
def episodes(draw: st.DrawFn, task_name: str, interaction: str) -> tuple[dict[str, Any], Any, list[str]]:
    """Settings, a problem and the actions of an episode: lines each drawn from the legal steps of
    the state the lines so far reach, or from lines that are not steps of it."""
    task = make_task(task_name, **TASK_CONFIGS[task_name])
    env_settings = {
        "interaction": interaction,
        "backtrack": draw(st.booleans()),
        "max_steps": draw(st.sampled_from(BUDGETS)),
        "invalid_policy": draw(st.sampled_from(INVALID_POLICIES)),
        "reward_weights": WEIGHTS,
    }
    problem = draw(st.sampled_from(PROBLEMS[task_name]))
    others = st.sampled_from([BACKTRACK, *ILLEGAL[task_name], *MALFORMED[task_name], *FREE_TEXT, *BLANKS])
    reached = Episode(task, problem, backtrack=True)
    lines = []
    for _ in range(draw(st.integers(0, 14))):
        legal = [task.format_step(step) for step in task.legal_steps(problem, reached.state)]
        line = draw(st.sampled_from(legal) | others if legal else others)
        reached.step(line)
        lines.append(line)
    return env_settings, problem, lines if interaction == "step" else ["\n".join(lines)]


@pytest.mark.parametrize("interaction", INTERACTIONS)
@pytest.mark.parametrize("task_name", TASKS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_hypothesis_restoring_at_any_point_steps_as_the_uninterrupted_env(task_name, interaction, data):
    """The same property as above, on episodes hypothesis draws (and shrinks when one fails)."""
    env_settings, problem, actions = data.draw(episodes(task_name, interaction))
    outcomes, snapshots = play(make(task_name, env_settings), 0, problem, actions)
    k = data.draw(st.integers(0, len(snapshots) - 1), label="point")
    fresh = make(task_name, env_settings)
    assert fresh.restore(json_round_trip(snapshots[k])) == point(outcomes[k])
    assert steps(fresh, actions[k:]) == outcomes[k + 1 :]
    _, replayed = play(make(task_name, env_settings), 0, problem, actions[:k])
    assert replayed[-1] == snapshots[k]


@pytest.mark.parametrize("interaction", INTERACTIONS)
@pytest.mark.parametrize("task_name", TASKS)
def test_forks_step_and_reset_on_their_own(task_name, interaction):
    rng = np.random.default_rng([7, TASKS.index(task_name), INTERACTIONS.index(interaction)])
    task = make_task(task_name, **TASK_CONFIGS[task_name])
    problems = [task.generate(index) for index in range(20)]
    outputs = RandomOutputs(task, rng)
    for trial in range(FORK_TRIALS):
        settings = random_settings(rng, interaction)
        problem = problems[int(rng.integers(len(problems)))]
        ours, theirs = (random_actions(outputs, problem, interaction) for _ in range(2))
        outcomes, snapshots = play(make(task_name, settings), trial, problem, ours)
        k = draw_point(rng, snapshots)
        expected_ours = outcomes[k + 1 :]
        reference = make(task_name, settings)
        reference.restore(snapshots[k])
        expected_theirs = steps(reference, theirs)

        env = make(task_name, settings)
        play(env, trial, problem, ours[:k])
        twin = env.fork()
        assert type(twin) is type(env) and twin is not env and twin.episode is not env.episode
        assert twin.snapshot() == env.snapshot() == snapshots[k]
        step_both(env, ours[k:], expected_ours, twin, theirs, expected_theirs)
        assert env.snapshot() == snapshots[-1]
        # Each has its own copy of the generator: the same next problem, drawn once each.
        assert twin.reset()[1]["problem"] == env.reset()[1]["problem"]
        assert twin.reset()[1]["problem"] == env.reset()[1]["problem"]


@pytest.mark.parametrize("make_env", [lambda: make("math", {}), lambda: SudokuGridEnv(size=4)])
def test_a_fork_samples_its_spaces_on_its_own(make_env):
    env = make_env()
    env.reset(seed=0)
    env.action_space.seed(1)
    env.observation_space.seed(2)
    twin = env.fork()
    for space in ("action_space", "observation_space"):
        ours, theirs = getattr(env, space), getattr(twin, space)
        assert ours is not theirs and ours == theirs
        # Copied generators: the same draws, each advancing only its own.
        assert same([theirs.sample() for _ in range(3)], [ours.sample() for _ in range(3)])


def test_snapshots_are_immutable_hashable_and_their_dicts_are_new_data():
    env = make("countdown", {"backtrack": True})
    env.reset(seed=0)
    env.step(env.task.format_step(env.task.legal_steps(env.problem, env.episode.state)[0]))
    snapshot = env.snapshot()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.turns = 0
    with pytest.raises(TypeError):
        snapshot.stats["steps"] = 0
    assert isinstance(snapshot.stack, FrozenDict) and isinstance(snapshot.stack["states"], tuple)
    assert hash(snapshot) == hash(TextEnvSnapshot.from_dict(json_round_trip(snapshot)))
    assert len({snapshot, env.snapshot(), env.fork().snapshot()}) == 1
    data = snapshot.to_dict()
    assert data["version"] == SNAPSHOT_VERSION and data["kind"] == "text"
    data["stack"]["states"].append(["1"])
    data["stats"]["steps"] = 99
    assert snapshot.to_dict() != data and len(snapshot.stack["states"]) == 2
    # Stepping the env afterwards changes nothing in the snapshot taken before.
    env.step("<backtrack>")
    assert snapshot.stats["backtracks"] == 0 and env.snapshot().stats["backtracks"] == 1


def test_a_task_with_tuple_states_and_the_default_stack_hooks_round_trips():
    """A fourth task (docs/adding-a-task.md's) gets snapshots from state_info alone."""
    env = PickSumEnv(backtrack=True)
    env.reset(seed=3)
    for _ in range(2):
        step = env.task.legal_steps(env.problem, env.episode.state)[0]
        env.step(env.task.format_step(step))
    snapshot = env.snapshot()
    fresh = PickSumEnv(backtrack=True)
    fresh.restore(json_round_trip(snapshot))
    assert fresh.episode.states == env.episode.states and isinstance(fresh.episode.state, tuple)
    assert fresh.step("<backtrack>") == env.step("<backtrack>")
    with pytest.raises(ValueError, match="config.*count"):
        PickSumEnv(backtrack=True, count=3).restore(snapshot)


def test_math_states_share_one_restored_latex_budget():
    env = make("math", {"backtrack": True})
    env.reset(seed=0)
    env.step("2 + 2 = 4")
    env.step("Answer: 4")
    env.episode.state.latex_budget.charge(1.25)
    snapshot = env.snapshot()
    assert snapshot.stack["latex_spent"] == 1.25
    twin = env.fork()
    budgets = {id(state.latex_budget) for state in twin.episode.states}
    assert len(budgets) == 1 and twin.episode.state.latex_budget.spent == 1.25
    assert twin.episode.state.latex_budget is not env.episode.state.latex_budget
    twin.episode.state.latex_budget.charge(1.0)
    assert env.episode.state.latex_budget.spent == 1.25


def test_new_counters_on_episode_and_stats_are_captured_without_snapshot_code(monkeypatch):
    """What the labels of #25 add (plain counters on Episode and EpisodeStats) is snapshotted as it is."""

    @dataclasses.dataclass
    class CountingStats(EpisodeStats):
        odd_lines: int = 0
        lengths: list = dataclasses.field(default_factory=list)

    class CountingEpisode(Episode):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.stats = CountingStats(**dataclasses.asdict(self.stats))
            self.lines_read = 0
            self.by_kind = {"valid": 0, "other": 0}

        def step(self, line: str):
            result = super().step(line)
            self.lines_read += 1
            self.by_kind["valid" if result.invalid is None else "other"] += 1
            self.stats.odd_lines += len(line) % 2
            self.stats.lengths.append(len(line))
            return result

    monkeypatch.setattr(env_core, "Episode", CountingEpisode)
    env = make("countdown", {"backtrack": True, "max_steps": 16})
    env.reset(seed=1)
    for line in ["hello", "<backtrack>", "1 + 1 = 3"]:
        env.step(line)
    snapshot = env.snapshot()
    assert snapshot.episode["lines_read"] == 3 and snapshot.episode["by_kind"] == {"valid": 0, "other": 3}
    assert snapshot.stats["odd_lines"] == 3 and snapshot.stats["lengths"] == (5, 11, 9)
    fresh = make("countdown", {"backtrack": True, "max_steps": 16})
    fresh.restore(json_round_trip(snapshot))
    assert fresh.episode.lines_read == 3 and fresh.episode.stats.lengths == [5, 11, 9]
    assert fresh.step("<backtrack>") == env.step("<backtrack>")
    assert fresh.snapshot() == env.snapshot() and fresh.snapshot().episode["lines_read"] == 4
    # A counter that is no JSON data is named, not dropped.
    env.episode.seen = {1, 2}
    with pytest.raises(ValueError, match="'episode'.seen holds a set"):
        env.snapshot()


class VisitRecord:
    """State of its own that is no JSON data (the set of states visited), kept as a search record is."""

    def __init__(self, task: Any, state: Any):
        self.task, self.order, self.seen = task, [state], {state}

    def visit(self, state: Any) -> None:
        if state not in self.seen:
            self.seen.add(state)
            self.order.append(state)

    def snapshot_data(self) -> list[Any]:
        return [self.task.state_info(state) for state in self.order]

    def restore_data(self, data: list[Any]) -> None:
        self.order = [self.task.state_from_info(info) for info in data]
        self.seen = set(self.order)


def test_an_object_with_state_of_its_own_takes_part_through_its_two_methods(monkeypatch):
    class RecordingEpisode(Episode):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.visits = VisitRecord(self.task, self.state)

        def step(self, line: str):
            result = super().step(line)
            self.visits.visit(self.state)
            return result

    monkeypatch.setattr(env_core, "Episode", RecordingEpisode)
    env = make("sudoku", {"backtrack": True})
    env.reset(seed=2)
    rng = np.random.default_rng(0)
    for _ in range(6):
        legal = env.task.legal_steps(env.problem, env.episode.state)
        env.step(env.task.format_step(legal[int(rng.integers(len(legal)))]) if rng.random() < 0.7 else "<backtrack>")
    snapshot = env.snapshot()
    assert snapshot.episode["visits"] == tuple(env.task.state_info(state) for state in env.episode.visits.order)
    fresh = make("sudoku", {"backtrack": True})
    fresh.restore(json_round_trip(snapshot))
    assert fresh.episode.visits.seen == env.episode.visits.seen and len(env.episode.visits.seen) > 2
    for line in ["<backtrack>", "r1c1=1", "<backtrack>"]:
        assert fresh.step(line) == env.step(line)
    assert fresh.snapshot() == env.snapshot()
    with pytest.raises(ValueError, match="snapshot field 'episode.visits' does not fit this env"):
        data = snapshot.to_dict()
        fresh.restore({**data, "episode": {**data["episode"], "visits": [["no grid"]]}})


def _countdown_snapshot(**settings: Any) -> tuple[env_core.TextEnv, TextEnvSnapshot]:
    env = make("countdown", {"backtrack": True, **settings})
    env.reset(seed=0)
    env.step(env.task.format_step(env.task.legal_steps(env.problem, env.episode.state)[0]))
    return env, env.snapshot()


def _edited(snapshot: TextEnvSnapshot, **changes: Any) -> dict[str, Any]:
    """The snapshot's dict with top-level ``changes``; a key ``a__b`` sets ``data[a][b]``."""
    data = snapshot.to_dict()
    for key, value in changes.items():
        *path, last = key.split("__")
        target = data
        for name in path:
            target = target[name]
        target[last] = value
    return data


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"version": 2}, "snapshot version 2 is not 1"),
        ({"version": 2, "labels": []}, "snapshot version 2 is not 1"),
        ({"version": None}, "snapshot version None is not 1"),
        ({"version": True}, "snapshot version True is not 1"),
        ({"kind": "token"}, "has kind 'text', got 'token'"),
        ({"turns": -1}, "'turns' must be a non-negative integer"),
        ({"turns": True}, "'turns' must be a non-negative integer"),
        ({"done": "no"}, "'done' must be true or false"),
        ({"stats": [1, 2]}, "'stats' must be a JSON object"),
        ({"stats__steps": "one"}, "'stats.steps' must be like"),
        ({"stats__solved": 0}, "'stats.solved' must be like"),
        ({"stats__mistakes": 0}, r"'stats' does not fit this env: missing \[\], unknown \['mistakes'\]"),
        ({"episode__mistakes": 0}, r"'episode' does not fit this env: missing \[\], unknown \['mistakes'\]"),
        ({"stack__states": [["1", "2"]]}, "does not start at the problem's initial state"),
        ({"stack__states": []}, "does not start at the problem's initial state"),
        ({"stack__states": [[{"x": 1}]]}, "'stack' is no countdown state stack"),
        ({"stack": {}}, "'stack' is no countdown state stack"),
        ({"problem__numbers": "many"}, "'problem' is no countdown problem"),
        ({"reward_terms__correct": 1.0}, "'reward_terms' does not follow from its 'stats'"),
        ({"reward_terms__length": "a lot"}, "'reward_terms.length' must be a number"),
        ({"last__surprise": 1}, "'last' is no step result"),
        ({"rng__bit_generator__bit_generator": "random"}, "'rng' is no generator state"),
        ({"rng": {"seed": 0}}, "'rng' is no generator state"),
        ({"task": "sudoku"}, "the snapshot is of a 'sudoku' env; this env plays 'countdown'"),
        ({"config__num_count": 3}, r"config is not this env's \(snapshot != env\): num_count: 3 != 4"),
        ({"settings__max_steps": 5}, "settings is not this env's .*max_steps: 5 != 16"),
        ({"settings__reward_weights": {}}, "settings is not this env's .*reward_weights"),
    ],
)
def test_bad_snapshots_are_clear_errors_and_leave_the_env_as_it_was(changes, message):
    env, snapshot = _countdown_snapshot(max_steps=16, reward_weights=WEIGHTS)
    env.step("hello")
    before = env.snapshot()
    with pytest.raises(ValueError, match=message):
        env.restore(_edited(snapshot, **changes))
    assert env.snapshot() == before


def test_bad_snapshot_shapes_are_clear_errors():
    env, snapshot = _countdown_snapshot()
    data = snapshot.to_dict()
    with pytest.raises(ValueError, match="read from a dict, got list"):
        env.restore([data])
    with pytest.raises(ValueError, match=r"missing \['turns'\], unknown \['turn'\]"):
        env.restore({**{k: v for k, v in data.items() if k != "turns"}, "turn": 1})
    with pytest.raises(ValueError, match="snapshot field 'stats' holds a set"):
        dataclasses.replace(snapshot, stats={1})
    with pytest.raises(ValueError, match="has the key 1"):
        env.restore({**data, "config": {1: 2}})
    with pytest.raises(ValueError, match="TextEnvSnapshot .kind 'text'. is wanted, got a SudokuGridSnapshot"):
        env.restore(SudokuGridSnapshot(env=snapshot, done=False, rng=None))


@pytest.mark.parametrize(
    ("other", "message"),
    [
        ({"task": "sudoku"}, "of a 'countdown' env; this env plays 'sudoku'"),
        ({"task": "countdown", "num_count": 3}, "config .*num_count: 4 != 3"),
        ({"task": "countdown", "interaction": "completion"}, "settings .*interaction: 'step' != 'completion'"),
        ({"task": "countdown", "split": "test"}, "settings .*split: 'train' != 'test'"),
        ({"task": "countdown", "backtrack": False}, "settings .*backtrack: True != False"),
        ({"task": "countdown", "invalid_penalty": 0.5}, "settings .*reward_weights"),
    ],
)
def test_a_snapshot_restores_only_into_the_same_task_config_and_settings(other, message):
    _, snapshot = _countdown_snapshot()
    task_name = other.pop("task")
    env = gym.make(TASK_ENV_IDS[task_name], **{"backtrack": True, **TASK_CONFIGS[task_name], **other}).unwrapped
    with pytest.raises(ValueError, match=message):
        env.restore(snapshot)


def test_before_reset_there_is_nothing_to_snapshot_or_fork():
    env = make("sudoku", {})
    with pytest.raises(ResetNeeded):
        env.snapshot()
    with pytest.raises(ResetNeeded):
        env.fork()


# --- the token env -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizers():
    pytest.importorskip("transformers")
    from backtrack_gym.train import build_tokenizer

    return {name: build_tokenizer(make_task(name, **TASK_CONFIGS[name])) for name in TASKS}


def random_tokens(tokenizer: Any, text: str, rng: np.random.Generator) -> list[int]:
    """The tokens of ``text`` with some ``<bksp>`` and random tokens mixed in, and eos at the end."""
    bksp = tokenizer.convert_tokens_to_ids("<bksp>")
    tokens = []
    for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
        draw = rng.random()
        if draw < 0.08:
            tokens.append(bksp)
        elif draw < 0.12:
            tokens.append(int(rng.integers(len(tokenizer))))
        tokens.append(token)
    return [*tokens, tokenizer.eos_token_id]


def make_token_env(task_name: str, settings: dict[str, Any], tokenizer: Any) -> TokenEnv:
    return TokenEnv(gym.make(TASK_ENV_IDS[task_name], **TASK_CONFIGS[task_name], **settings), tokenizer)


@pytest.mark.parametrize("interaction", INTERACTIONS)
@pytest.mark.parametrize("task_name", TASKS)
def test_token_env_restores_and_forks(task_name, interaction, tokenizers):
    tokenizer = tokenizers[task_name]
    rng = np.random.default_rng([11, TASKS.index(task_name), INTERACTIONS.index(interaction)])
    task = make_task(task_name, **TASK_CONFIGS[task_name])
    outputs = RandomOutputs(task, rng)
    for trial in range(12):
        settings = random_settings(rng, interaction)
        problem = task.generate(trial)
        ours = random_tokens(tokenizer, "\n".join(outputs.lines(problem)), rng)
        theirs = random_tokens(tokenizer, "\n".join(outputs.lines(problem)), rng)
        env = make_token_env(task_name, settings, tokenizer)
        outcomes, snapshots = play(env, trial, problem, ours)
        k = draw_point(rng, snapshots)
        rest = ours[k : len(outcomes) - 1]

        fresh = make_token_env(task_name, settings, tokenizer)
        fresh.reset(seed=99)  # gym.make's wrappers take steps only after a reset
        assert same(fresh.restore(json_round_trip(snapshots[k])), point(outcomes[k]))
        assert same(steps(fresh, rest), outcomes[k + 1 :])
        assert fresh.snapshot() == snapshots[-1]
        assert TokenEnvSnapshot.from_dict(json_round_trip(snapshots[k])) == snapshots[k]

        reference = make_token_env(task_name, settings, tokenizer)
        reference.reset()
        reference.restore(snapshots[k])
        expected_theirs = steps(reference, theirs)
        env.restore(snapshots[k])
        twin = env.fork()
        step_both(env, rest, outcomes[k + 1 :], twin, theirs, expected_theirs)


def test_token_env_snapshots_refuse_other_token_settings(tokenizers):
    tokenizer = tokenizers["countdown"]
    env = make_token_env("countdown", {}, tokenizer)
    env.reset(seed=0)
    env.step(tokenizer.convert_tokens_to_ids("3"))
    snapshot = env.snapshot()
    assert snapshot.pending == (tokenizer.convert_tokens_to_ids("3"),)
    narrow = TokenEnv(gym.make(TASK_ENV_IDS["countdown"]), tokenizer, max_length=16)
    with pytest.raises(ValueError, match="token settings .*max_length: 128 != 16"):
        narrow.restore(snapshot)
    with pytest.raises(ValueError, match="'pending' holds a token id outside"):
        env.restore({**snapshot.to_dict(), "pending": [len(tokenizer)]})
    with pytest.raises(ValueError, match="kind 'token', got 'text'"):
        env.restore(snapshot.env.to_dict())


# --- the Sudoku grid env -------------------------------------------------------------------


def grid_actions(env: SudokuGridEnv, rng: np.random.Generator, count: int) -> list[int]:
    """Random actions, most of them legal in the state they are taken in (replayed on a fork)."""
    probe, actions = env.fork(), []
    for _ in range(count):
        if probe.done:
            break
        legal = np.flatnonzero(probe.action_masks())
        if len(legal) and rng.random() < 0.8:
            action = int(rng.choice(legal))
        else:
            action = int(rng.integers(probe.action_space.n))
        actions.append(action)
        probe.step(action)
    return actions


def test_sudoku_grid_env_restores_and_forks():
    rng = np.random.default_rng(5)
    seen: Counter[str] = Counter()
    for trial in range(40):
        settings = {
            "size": 4,
            "backtrack": bool(rng.integers(2)),
            "invalid_policy": str(rng.choice(INVALID_POLICIES)),
            "max_steps": int(rng.choice([6, 20, 64])),
            "reward_weights": WEIGHTS,
        }
        env = SudokuGridEnv(**settings)
        env.reset(seed=trial)
        actions = grid_actions(env, rng, 30)
        outcomes, snapshots = play(env, trial, env.text_env.problem, actions)
        k = draw_point(rng, snapshots)
        rest = actions[k : len(outcomes) - 1]
        seen["ended without the text env"] += snapshots[k].done and not snapshots[k].env.done
        seen["backtracked"] += snapshots[k].env.stats["backtracks"] > 0

        fresh = SudokuGridEnv(**settings)
        assert same(fresh.restore(json_round_trip(snapshots[k])), point(outcomes[k]))
        assert same(steps(fresh, rest), outcomes[k + 1 :])
        assert fresh.snapshot() == snapshots[-1]
        if fresh.done:
            with pytest.raises(ResetNeeded):
                fresh.step(0)
        assert SudokuGridSnapshot.from_dict(json_round_trip(snapshots[k])) == snapshots[k]

        env.restore(snapshots[k])
        twin = env.fork()
        theirs = grid_actions(twin, rng, 30)
        reference = SudokuGridEnv(**settings)
        reference.restore(snapshots[k])
        expected_theirs = steps(reference, theirs)
        step_both(env, rest, outcomes[k + 1 :], twin, theirs, expected_theirs)
        assert twin.reset()[1]["problem"] == env.reset()[1]["problem"]
    assert seen["ended without the text env"] > 0 and seen["backtracked"] > 0, seen
