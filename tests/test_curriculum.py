"""The adaptive curriculum: its rule, its env, its default ladders and its errors."""

import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

from backtrack_gym.envs.curriculum import (
    CURRICULUM_ENV_ID,
    LADDERS,
    Curriculum,
    CurriculumConfig,
    CurriculumEnv,
    default_ladder,
    register_ladder,
)
from backtrack_gym.envs.math.grammar import Calc
from backtrack_gym.envs.sudoku import LEVELS, grade, shape

TINY = ({"num_count": 2, "number_max": 9, "target_min": 1, "target_max": 20}, {"num_count": 3, "number_max": 12})


def scripted(config: CurriculumConfig, size: int, outcomes: str) -> list[int]:
    """The level after each outcome of ``outcomes`` ("1" solved, "0" not)."""
    curriculum = Curriculum(config, size)
    return [curriculum.record(mark == "1") for mark in outcomes]


def test_promotes_once_the_window_is_full_and_clears_it():
    config = CurriculumConfig(window=4, success_threshold=0.7, failure_threshold=0.1)
    # Three successes do not fill the window; the fourth (rate 1.0 > 0.7) moves up and clears
    # it, so the next three at level 1 cannot move again.
    assert scripted(config, 3, "1111" + "111" + "1") == [0, 0, 0, 1, 1, 1, 1, 2]


def test_demotes_below_the_failure_threshold():
    config = CurriculumConfig(window=4, start_level=2)
    assert scripted(config, 3, "0000" + "0000") == [2, 2, 2, 1, 1, 1, 1, 0]


def test_thresholds_are_strict_and_the_window_rolls():
    config = CurriculumConfig(window=10, success_threshold=0.7, failure_threshold=0.1)
    curriculum = Curriculum(config, 3)
    for mark in "1110111011":
        curriculum.record(mark == "1")
    assert curriculum.level == 1  # 8/10 = 0.8 > 0.7
    curriculum = Curriculum(config, 3)
    for mark in "1110110101":  # 7/10 = 0.7: not strictly above
        curriculum.record(mark == "1")
    assert (curriculum.level, curriculum.solve_rate) == (0, 0.7)
    curriculum.record(True)  # the oldest (a success) drops out: still 7/10
    assert (curriculum.level, curriculum.solve_rate) == (0, 0.7)
    curriculum.record(True)  # the second oldest (a success) drops: 7/10 again
    curriculum.record(True)  # the third (a success): 7/10
    curriculum.record(True)  # the fourth (a failure) drops: 8/10 moves up
    assert curriculum.level == 1 and curriculum.solve_rate is None


def test_the_level_stays_within_the_ladder():
    config = CurriculumConfig(window=2)
    assert scripted(config, 2, "11" + "11" + "11") == [0, 1, 1, 1, 1, 1]
    top = Curriculum(config, 2)
    top.load_state({"level": 1, "outcomes": [], "last_rate": None})
    for _ in range(6):
        top.record(True)
    assert top.level == 1 and len(top.outcomes) == 2  # at the top the window keeps rolling
    assert scripted(config, 2, "000000") == [0] * 6
    with pytest.raises(ValueError, match="level must be in 0..1"):
        top.load_state({"level": 2, "outcomes": []})


def test_state_round_trips():
    curriculum = Curriculum(CurriculumConfig(window=4), 3)
    for mark in "1101":
        curriculum.record(mark == "1")
    twin = Curriculum(CurriculumConfig(window=4), 3)
    twin.load_state(curriculum.state())
    assert twin.state() == curriculum.state()
    assert twin.record(True) == curriculum.record(True)


def play(env: CurriculumEnv, solve: bool) -> dict:
    """One completion-mode episode: the oracle's steps when ``solve``, else a wrong line."""
    task, problem = env.level_env.task, env.level_env.problem
    lines = [task.format_step(step) for step in task.solve(problem, task.initial_state(problem))]
    _, _, terminated, _, info = env.step("\n".join(lines) if solve else "not a step")
    assert terminated and info["solved"] is solve
    return info


def test_env_moves_up_and_down_and_plays_the_level_it_reports():
    env = CurriculumEnv("countdown", {"levels": TINY, "window": 3}, interaction="completion")
    _, info = env.reset(seed=0)
    assert (info["curriculum_level"], info["curriculum_solve_rate"], info["curriculum_window"]) == (0, None, 0)
    levels, counts = [], []
    for solve in [True, True, True, True, False, False, False, True]:
        _, info = env.reset()
        counts.append(len(info["problem"]["numbers"]))
        end = play(env, solve)
        levels.append(end["curriculum_level"])
        assert end["curriculum_level"] == info["curriculum_level"]  # an episode keeps its level
    assert levels == [0, 0, 0, 1, 1, 1, 1, 0]
    assert counts == [2, 2, 2, 3, 3, 3, 3, 2]  # each episode's problem is of its level
    # Level 1 saw T F F (1/3: neither threshold), then F F F moved it down; level 0 then one success.
    assert (end["curriculum_solve_rate"], end["curriculum_window"], env.level) == (1.0, 1, 0)


def test_an_unfinished_episode_is_not_scored():
    env = CurriculumEnv("countdown", {"levels": TINY, "window": 1}, max_steps=4)
    env.reset(seed=0)
    env.step("1 + 1 = 2")  # a step, not the end
    env.reset()
    assert env.level == 0 and len(env.curriculum.outcomes) == 0


def run(seed: int, pattern: str) -> list[tuple[int, str]]:
    env = CurriculumEnv("countdown", {"window": 2}, interaction="completion")
    seen = []
    for episode, mark in enumerate(pattern):
        observation, info = env.reset(seed=seed if episode == 0 else None)
        seen.append((info["curriculum_level"], observation))
        play(env, mark == "1")
    return seen


def test_deterministic_per_seed():
    pattern = "1111110011"
    first = run(3, pattern)
    assert first == run(3, pattern)
    assert [level for level, _ in first] == [0, 0, 1, 1, 2, 2, 3, 3, 2, 2]
    other = run(4, pattern)
    assert [level for level, _ in other] == [level for level, _ in first]
    assert [obs for _, obs in other] != [obs for _, obs in first]


def countdown_fits(config, problem) -> None:
    assert len(problem["numbers"]) == config.num_count
    assert all(config.number_min <= n <= config.number_max for n in problem["numbers"])
    assert config.target_min <= problem["target"] <= config.target_max


def sudoku_fits(config, env) -> None:
    puzzle = env.level_env.problem.puzzle
    assert env.level_env.problem.size == config.size
    clues = sum(1 for d in puzzle if d)
    if config.min_clues is not None:
        assert clues == config.min_clues
    found = grade(shape(config.size), puzzle)
    assert found.level == config.level
    assert config.min_guesses <= found.guesses <= (config.max_guesses or 10**9)


def math_fits(config, env) -> None:
    problem = env.level_env.problem
    task = env.level_env.task
    calcs = [line for line in problem.solution if isinstance(task.parse_step(line), Calc)]
    assert len(calcs) == config.min_reasoning_steps == config.max_reasoning_steps


@pytest.mark.parametrize("task", ["countdown", "sudoku", "math"])
def test_each_default_level_builds_problems_of_its_difficulty(task):
    ladder = default_ladder(task)
    assert ladder is LADDERS[task] and len(ladder) >= 5
    env = CurriculumEnv(task, {"window": 1})
    for level in range(len(ladder)):
        env.curriculum.load_state({"level": level, "outcomes": []})
        config = env.level_config()
        assert {key: getattr(config, key) for key in ladder[level]} == dict(ladder[level])
        for seed in range(2):
            _, info = env.reset(seed=seed)
            assert info["curriculum_level"] == level
            if task == "countdown":
                countdown_fits(config, info["problem"])
            elif task == "sudoku":
                sudoku_fits(config, env)
            else:
                math_fits(config, env)


def test_default_ladders_grow_harder():
    countdown = [(lv["num_count"], lv["number_max"], lv["target_max"]) for lv in default_ladder("countdown")]
    assert all(a <= b and a != b for a, b in zip(countdown, countdown[1:], strict=False))
    sudoku = [
        (lv["size"], LEVELS.index(lv["difficulty"]), lv["min_guesses"], -(lv["min_clues"] or 0))
        for lv in default_ladder("sudoku")
    ]
    assert sudoku == sorted(sudoku) and len(set(sudoku)) == len(sudoku)
    depths = [lv["max_reasoning_steps"] for lv in default_ladder("math")]
    assert depths == list(range(1, 9))


@pytest.mark.parametrize(
    ("curriculum", "kwargs", "message"),
    [
        ({"window": 0}, {}, "window must be a positive integer"),
        ({"window": 2.5}, {}, "window must be a positive integer"),
        ({"success_threshold": 1.0}, {}, r"success_threshold must be in \(0, 1\)"),
        ({"failure_threshold": 0.8}, {}, r"failure_threshold must be in \[0, success_threshold"),
        ({"failure_threshold": -0.1}, {}, "failure_threshold"),
        ({"start_level": 6}, {}, r"start_level must be in 0..5"),
        ({"levels": [{"num_count": 3}, {"num_count": 3}]}, {}, r"levels\[1\] repeats levels\[0\]"),
        ({"levels": [{"digits": 3}]}, {}, r"levels\[0\]: countdown has no config fields \['digits'\]"),
        ({"levels": [{"num_count": 9}]}, {}, r"curriculum level 0 .*num_count must be in 2..8"),
        ({"levels": {"num_count": 3}}, {}, "levels must be a non-empty sequence"),
        ({}, {"num_count": 3}, r"the curriculum's levels set \['num_count'\]"),
    ],
)
def test_bad_settings_are_value_errors(curriculum, kwargs, message):
    with pytest.raises(ValueError, match=message):
        CurriculumEnv("countdown", curriculum, **kwargs)


def test_unknown_task_and_ladder():
    with pytest.raises(ValueError, match="unknown task 'chess'"):
        CurriculumEnv("chess")
    with pytest.raises(ValueError, match="unknown task 'chess'"):
        register_ladder("chess", TINY)


def test_a_registered_ladder_is_the_default():
    saved = LADDERS["countdown"]
    try:
        register_ladder("countdown", TINY)
        env = CurriculumEnv("countdown")
        assert len(env.ladder) == 2 and env.level_config().num_count == 2
    finally:
        register_ladder("countdown", saved)


@pytest.mark.parametrize("task", ["countdown", "sudoku", "math"])
def test_check_env(task):
    env = CurriculumEnv(task, {"window": 2}, backtrack=True)
    # Spaces as wide as the widest level: 9x9 Sudoku boards fit the Sudoku ladder's space.
    assert env.observation_space.max_length == max(e.observation_space.max_length for e in env.level_envs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=False)


def test_gym_make_builds_it():
    env = gym.make(CURRICULUM_ENV_ID, task="countdown", curriculum={"levels": TINY, "start_level": 1})
    observation, info = env.reset(seed=0)
    assert info["curriculum_level"] == 1 and len(info["problem"]["numbers"]) == 3
    assert env.spec.make().reset(seed=0)[0] == observation
    # Made directly, its spec rebuilds it too (check_env's close check makes one).
    direct = CurriculumEnv("countdown", {"levels": TINY, "start_level": 1})
    assert direct.spec.kwargs["curriculum"]["levels"] == [dict(level) for level in TINY]
    assert direct.spec.make().reset(seed=0)[0] == observation


STEP = {"episode": {"interaction": "step", "max_new_tokens": 16, "env_steps": 2}}
GRPO_LEVELS = [dict(level) for level in TINY]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"curriculum": {"enabled": True}}, r"curriculum: applies to the step path"),
        ({**STEP, "curriculum": {"enabled": True, "window": 0}}, "curriculum: window must be a positive integer"),
        (
            {**STEP, "curriculum": {"enabled": True, "levels": [{"num_count": 9}]}},
            r"curriculum: level 0 .*num_count must be in 2..8",
        ),
        ({**STEP, "curriculum": {"enabled": True, "levels": "num_count"}}, "curriculum.levels: cannot read"),
    ],
)
def test_grpo_curriculum_settings_are_checked(fields, message):
    pytest.importorskip("trl")
    from backtrack_gym.config import build_config
    from backtrack_gym.train.grpo_config import GRPORunConfig

    with pytest.raises(ValueError, match=message):
        build_config(GRPORunConfig, {"model": "tiny", **fields}).validate()


def test_grpo_curriculum_levels_win_over_task_config():
    """A ladder may climb to task.config's own difficulty (which evaluation then scores)."""
    pytest.importorskip("trl")
    from backtrack_gym.config import build_config
    from backtrack_gym.train.grpo_config import GRPORunConfig

    fields = {"task": {"config": {"num_count": 4, "number_max": 12}}, "curriculum": {"enabled": True}}
    fields["curriculum"]["levels"] = [{"num_count": 3}, {"num_count": 4}]
    config = build_config(GRPORunConfig, {"model": "tiny", **STEP, **fields})
    config.validate()
    levels = [(task.config.num_count, task.config.number_max) for task in config.level_tasks()]
    assert levels == [(3, 12), (4, 12)]


class FakeTrainer:
    """What a rollout function uses of TRL's trainer."""

    def __init__(self):
        from types import SimpleNamespace

        self.model = SimpleNamespace(training=False, eval=lambda: None, train=lambda mode: None)
        self.accelerator = SimpleNamespace(unwrap_model=lambda model, **_: model, num_processes=1, process_index=0)
        self.state = SimpleNamespace(global_step=0)
        self.metrics = {}

    def _log_metric(self, name, value):
        self.metrics.setdefault(name, []).append(value)


def test_grpo_rollout_plays_the_levels_problems_and_moves_the_level():
    pytest.importorskip("trl")
    import json
    from types import SimpleNamespace

    from backtrack_gym.config import build_config
    from backtrack_gym.envs import make_task
    from backtrack_gym.train.grpo_config import GRPORunConfig
    from backtrack_gym.train.grpo_rollout import EPISODE_PROMPT_COLUMN, StepRollout, prompt_dataset, prompt_row
    from backtrack_gym.train.tokenizer import build_tokenizer

    config = build_config(
        GRPORunConfig,
        {**STEP, "n_prompts": 2, "first_index": 10, "num_generations": 2, "seed": 1},
    )
    config = build_config(
        GRPORunConfig, {"curriculum": {"enabled": True, "levels": GRPO_LEVELS, "window": 4}}, base=config
    )
    task = config.task.build(seed=config.seed)
    dataset = prompt_dataset(task, config.n_prompts, first_index=config.first_index)
    rollout = StepRollout(
        config, build_tokenizer(task), task, dict(zip(dataset["prompt"], dataset["problem"], strict=True))
    )
    played = []
    outcomes = iter([True] * 4 + [False] * 4)

    def fake_play(model, problems, stream):
        played.append([json.loads(problem) for problem in problems])
        info = {"steps": 1, "valid_steps": 1, "malformed_steps": 0, "illegal_steps": 0, "backtracks": 0, "progress": 0}
        tokens = {"prompt_ids": [5], "completion_ids": [6], "logprobs": [0.0], "model_mask": [1]}
        return [
            SimpleNamespace(stop_reason="env", truncated=False, info={**info, "solved": next(outcomes)}, **tokens)
            for _ in problems
        ]

    rollout._play = fake_play
    trainer = FakeTrainer()
    prompts = [prompt for prompt in dataset["prompt"] for _ in range(2)]
    first = rollout(prompts, trainer)
    # Step 0 played level 0's problems 10 and 11 (first_index on), each group its own, not the data set's.
    level0 = make_task("countdown", seed=1, **TINY[0])
    expected = [prompt_row(level0, index)["prompt"] for index in (10, 11)]
    assert first[EPISODE_PROMPT_COLUMN] == [expected[0], expected[0], expected[1], expected[1]]
    assert [len(problem["numbers"]) for problem in played[0]] == [2, 2, 2, 2]
    assert rollout.curriculum.level == 1  # four successes filled the window
    trainer.state.global_step = 1
    rollout(prompts, trainer)
    assert [len(problem["numbers"]) for problem in played[1]] == [3, 3, 3, 3]
    assert rollout.curriculum.level == 0  # four failures at level 1
    assert trainer.metrics["curriculum/level"] == [0.0, 1.0]
    assert trainer.metrics["curriculum/solve_rate"] == [1.0, 0.0]
    trainer.accelerator.num_processes = 2
    with pytest.raises(ValueError, match="curriculum runs on one process"):
        rollout(prompts, trainer)


def test_record_many_drops_the_episodes_of_the_level_left():
    curriculum = Curriculum(CurriculumConfig(window=2), 3)
    assert curriculum.record_many([True, True, False, False, False]) == 1
    assert len(curriculum.outcomes) == 0  # the three after the move were level 0's


@pytest.mark.slow
def test_grpo_with_the_curriculum_logs_the_level_and_resumes_it(tmp_path):
    torch = pytest.importorskip("torch")
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from backtrack_gym.config import build_config
    from backtrack_gym.envs import make_task
    from backtrack_gym.train import build_model
    from backtrack_gym.train.common import TRAINER_STATE
    from backtrack_gym.train.grpo import run_grpo, saved_curriculum
    from backtrack_gym.train.grpo_config import GRPORunConfig
    from backtrack_gym.train.tokenizer import build_tokenizer

    torch.set_num_threads(1)
    tokenizer = build_tokenizer(make_task("countdown"))
    model = build_model("tiny", tokenizer, seed=0)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    values = {
        **STEP,
        "model": str(tmp_path / "model"),
        "output_dir": str(tmp_path / "grpo"),
        "n_prompts": 4,
        "prompts_per_step": 2,
        "num_generations": 2,
        # A window of one episode and a failure threshold no rate can be under: an untrained
        # model's unsolved episodes hold the level, and nothing moves it down.
        "curriculum": {"enabled": True, "levels": GRPO_LEVELS, "start_level": 1, "window": 1, "failure_threshold": 0.0},
        "trainer": {"optimizer_steps": 2, "logging_steps": 1, "save_steps": 1},
    }
    run_grpo(build_config(GRPORunConfig, values))
    events = EventAccumulator(str(tmp_path / "grpo" / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("train/curriculum/level")] == [1.0, 1.0]
    saved = saved_curriculum(tmp_path / "grpo" / "checkpoint-2")
    assert saved["level"] == 1 and len(saved["outcomes"]) == 1
    # A resumed run takes the level back from the checkpoint, not from start_level.
    trainer_state = tmp_path / "grpo" / "checkpoint-2" / TRAINER_STATE
    state = json.loads(trainer_state.read_text())
    state["stateful_callbacks"]["CurriculumState"]["attributes"]["curriculum"]["level"] = 0
    trainer_state.write_text(json.dumps(state))
    values["curriculum"] = {**values["curriculum"], "start_level": 1}
    values["trainer"] = {**values["trainer"], "optimizer_steps": 3, "resume": True}
    run_grpo(build_config(GRPORunConfig, values))
    events = EventAccumulator(str(tmp_path / "grpo" / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("train/curriculum/level")][-1] == 0.0
