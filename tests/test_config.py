import argparse
from dataclasses import dataclass, field

import pytest

from backtrack_gym.config import Config, add_config_arguments, build_config, config_from_args, convert, field_docs


@dataclass
class ExampleConfig(Config):
    """An example.

    Attributes:
        steps: how many steps
            to take.
        rate: learning rate.
        name: run name.
        flags: switches.
        tags: labels.
        limit: optional cap.
    """

    steps: int = 3
    rate: float = 0.5
    name: str = "run"
    flags: tuple[bool, ...] = (True,)
    tags: tuple[str, ...] = ()
    limit: int | None = None

    def check(self):
        if self.steps < 0:
            raise ValueError("steps must be non-negative")


@dataclass
class NestedConfig(Config):
    """A config with sections.

    Attributes:
        inner: an example section.
        other: a second one, whose default differs from the section's own.
        label: a plain field.
    """

    inner: ExampleConfig = field(default_factory=ExampleConfig)
    other: ExampleConfig = field(default_factory=lambda: ExampleConfig(steps=9, name="other"))
    label: str = "x"


def parse(argv, cls=ExampleConfig):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, cls)
    return config_from_args(cls, parser.parse_args(argv))


def test_docs_come_from_the_docstring():
    docs = field_docs(ExampleConfig)
    assert docs["steps"] == "how many steps to take."
    assert docs["rate"] == "learning rate."


def test_defaults_yaml_and_flags(tmp_path):
    assert parse([]) == ExampleConfig()
    path = tmp_path / "c.yaml"
    path.write_text("steps: 7\nrate: 0.1\ntags: [a, b]\nflags: [false, true]\n")
    config = parse(["--config", str(path), "--rate", "0.2", "--limit", "4"])
    assert config == ExampleConfig(steps=7, rate=0.2, tags=("a", "b"), flags=(False, True), limit=4)
    assert parse(["--flags", "no,yes", "--limit", "none"]).flags == (False, True)


def test_bad_values_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="steps: cannot read 'x' as int"):
        parse(["--steps", "x"])
    with pytest.raises(ValueError, match="flags: cannot read 'maybe' as bool"):
        parse(["--flags", "maybe"])
    with pytest.raises(ValueError, match="non-negative"):
        parse(["--steps", "-1"])
    path = tmp_path / "c.yaml"
    path.write_text("stepz: 1\n")
    with pytest.raises(ValueError, match="unknown fields"):
        parse(["--config", str(path)])
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="mapping"):
        parse(["--config", str(path)])


def test_sections_nest_in_yaml_and_take_dotted_flags(tmp_path):
    assert parse([], NestedConfig) == NestedConfig()
    path = tmp_path / "c.yaml"
    path.write_text("inner: {steps: 7}\nother: {rate: 0.1}\nlabel: y\n")
    config = parse(["--config", str(path), "--other.limit", "4", "--inner.tags", "a,b"], NestedConfig)
    # a section given in part keeps the rest of its default (other's steps=9 and name)
    assert config.inner == ExampleConfig(steps=7, tags=("a", "b"))
    assert config.other == ExampleConfig(steps=9, rate=0.1, name="other", limit=4)
    assert config.label == "y"


def test_section_errors_name_the_dotted_field(tmp_path):
    with pytest.raises(ValueError, match="^inner.steps: cannot read 'x' as int"):
        parse(["--inner.steps", "x"], NestedConfig)
    with pytest.raises(ValueError, match="^other.steps must be non-negative"):
        parse(["--other.steps", "-1"], NestedConfig)
    with pytest.raises(ValueError, match="^inner: unknown fields \\['stepz'\\]"):
        build_config(NestedConfig, {"inner": {"stepz": 1}})
    with pytest.raises(ValueError, match="^inner must be a mapping"):
        build_config(NestedConfig, {"inner": [1]})


def test_help_documents_every_field_of_every_section():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, NestedConfig)
    text = parser.format_help()
    for flag in ("--inner.steps", "--other.limit", "--label"):
        assert flag in text
    assert "how many steps to take. (default: 9)" in " ".join(text.split())


def test_inherited_fields_are_documented_from_their_class():
    @dataclass
    class Derived(ExampleConfig):
        """Derived.

        Attributes:
            extra: one more.
        """

        extra: int = 0

    docs = field_docs(Derived)
    assert docs["steps"] == "how many steps to take." and docs["extra"] == "one more."


def test_unset_fields_fill_in_from_a_base():
    from backtrack_gym.settings import EpisodeConfig, UnsetEpisodeConfig

    unset = build_config(UnsetEpisodeConfig, {"env_steps": "4"})
    assert unset.over(EpisodeConfig(max_new_tokens=64)) == EpisodeConfig(env_steps=4, max_new_tokens=64)
    assert UnsetEpisodeConfig().over(EpisodeConfig(backtrack=False)) == EpisodeConfig(backtrack=False)


def test_main_yaml_is_the_main_job():
    """configs/main.yaml sets the main job's stages as they were measured (docs/results.md)."""
    from backtrack_gym.train.experiment import main_config

    config = main_config().validate()
    sft, grpo = config.sft_config("direct"), config.grpo_config("direct", "model")
    evaluation = config.eval_config("direct", "model", "sft_eval")
    assert (config.task.name, config.task.config["number_max"], list(config.arms)) == ("countdown", 12, ["direct"])
    assert (config.episode.interaction, config.episode.env_steps, config.episode.max_new_tokens) == ("step", 2, 64)
    assert (sft.style, sft.n_train, sft.trainer.learning_rate, sft.trainer.lr_scheduler) == (
        "direct",
        40000,
        2e-3,
        "cosine",
    )
    assert (grpo.trainer.optimizer_steps, grpo.trainer.learning_rate, grpo.sampling.temperature) == (300, 1e-4, 0.7)
    assert (grpo.beta, grpo.first_index, grpo.reward_weights["validity"]) == (0.04, 40000, 0.5)
    assert (evaluation.n, evaluation.methods, evaluation.sampling.temperature) == (500, ["greedy", "sample"], 0.7)


def test_an_experiment_evaluates_the_training_split_beside_the_held_out_one():
    """``eval.split: train`` plays training problems, in an evaluation of its own name."""
    from backtrack_gym.train.experiment import ExperimentConfig

    held_out = build_config(ExperimentConfig, {"output_dir": "out"}).validate()
    train = build_config(ExperimentConfig, {"output_dir": "out", "eval": {"split": "train"}}).validate()
    first, second = (c.eval_config("direct", "model", "sft_eval") for c in (held_out, train))
    assert (first.split, first.output_dir) == ("test", "out/direct/sft_eval-greedy-sample")
    assert (second.split, second.output_dir) == ("train", "out/direct/sft_eval-greedy-sample-train")
    with pytest.raises(ValueError, match="eval.split"):
        build_config(ExperimentConfig, {"eval": {"split": "dev"}}).validate()


def test_arms_with_equal_sft_and_eval_sections_share_one_sft_model():
    """Arms that differ only in GRPO train one SFT model and evaluate it once, under the first arm."""
    from backtrack_gym.train.experiment import ExperimentConfig

    arms = {"flat": {}, "curriculum": {"grpo": {"beta": 0.1}}, "direct": {"sft": {"style": "direct"}}}
    config = build_config(ExperimentConfig, {"output_dir": "out", "arms": arms}).validate()
    assert [config.sft_owner(arm) for arm in arms] == ["flat", "flat", "direct"]
    assert config.sft_config("curriculum").output_dir == "out/flat/sft"
    assert config.eval_config("curriculum", "m", "sft_eval").output_dir == "out/flat/sft_eval-greedy-sample"
    assert config.eval_config("curriculum", "m", "grpo_eval").output_dir == "out/curriculum/grpo_eval-greedy-sample"
    assert config.sft_config("direct").output_dir == "out/direct/sft"
    # An arm evaluated otherwise evaluates its own copy of the model.
    apart = {"flat": {}, "more": {"eval": {"n": 50}}}
    assert build_config(ExperimentConfig, {"arms": apart}).validate().sft_owner("more") == "more"


def test_sft_task_config_changes_the_sft_task_alone():
    from backtrack_gym.train.experiment import ExperimentConfig

    fields = {"task": {"config": {"num_count": 4}}, "sft_task_config": {"num_count": 3}, "grpo": {}}
    fields["grpo"] = {"trainer": {"optimizer_steps": 2}}
    config = build_config(ExperimentConfig, fields).validate()
    assert config.sft_config("direct").task.config == {"num_count": 3}
    assert config.grpo_config("direct", "m").task.config == {"num_count": 4}
    assert config.eval_config("direct", "m", "sft_eval").task.config == {"num_count": 4}
    with pytest.raises(ValueError, match="num_count"):
        build_config(ExperimentConfig, {"sft_task_config": {"num_count": 99}}).validate()


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("steps: 2.7", "steps: cannot read 2.7 as int"),
        ("steps: true", "steps: cannot read True as int"),
        ("steps: null", "steps: cannot read None as int"),
        ("rate: .nan", "rate: must be a finite number"),
        ("rate: false", "rate: cannot read False as float"),
        ("flags: [1]", "flags: cannot read 1 as bool"),
        ("name: [a]", "name: cannot read \\['a'\\] as str"),
    ],
)
def test_yaml_values_of_another_type_are_refused(tmp_path, yaml_text, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text + "\n")
    with pytest.raises(ValueError, match=message):
        parse(["--config", str(path)])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "2.7"], "steps: cannot read '2.7' as int"),
        (["--steps", "none"], "steps: cannot read 'none' as int"),
        (["--rate", "nan"], "rate: must be a finite number"),
        (["--rate", "inf"], "rate: must be a finite number"),
        (["--rate=-inf"], "rate: must be a finite number"),
    ],
)
def test_flag_text_of_another_type_is_refused(argv, message):
    with pytest.raises(ValueError, match=message):
        parse(argv)


def test_flag_text_is_read_as_the_field_type():
    config = parse(["--steps", " 3 ", "--rate", "1e-3", "--limit", "null", "--tags", ""])
    assert (config.steps, config.rate, config.limit, config.tags) == (3, 0.001, None, ())
    assert type(config.steps) is int and type(config.rate) is float


def test_convert_without_text_takes_no_strings_for_numbers():
    assert convert(3, int, "n", text=False) == 3
    assert convert(3, float, "x", text=False) == 3.0
    with pytest.raises(ValueError, match="n: cannot read '3' as int"):
        convert("3", int, "n", text=False)
    assert convert({"correct": 1}, dict[str, float], "weights") == {"correct": 1.0}
    with pytest.raises(ValueError, match="weights.correct: cannot read True as float"):
        convert({"correct": True}, dict[str, float], "weights")


@pytest.mark.parametrize(
    "task_config, message",
    [
        ({"num_count": 0}, "num_count must be in 2..8"),
        ({"target_min": 50, "target_max": 10}, "target_min 50 exceeds target_max 10"),
        ({"bogus": 1}, "countdown has no config fields \\['bogus'\\]"),
        ({"num_count": 2.7}, "num_count: cannot read 2.7 as int"),
        ({"verify": 1}, "verify: cannot read 1 as bool"),
        # the envs take task config values as they are, so a number written as a string is refused
        ({"num_count": "3"}, "num_count: cannot read '3' as int"),
    ],
)
def test_make_task_refuses_bad_task_config(task_config, message):
    from backtrack_gym.envs import make_task

    with pytest.raises(ValueError, match=message):
        make_task("countdown", **task_config)


def test_make_task_takes_every_default_of_each_task_config():
    import dataclasses

    from backtrack_gym.envs import make_task
    from backtrack_gym.envs.countdown import CountDownConfig
    from backtrack_gym.envs.math import MathConfig
    from backtrack_gym.envs.sudoku import SudokuConfig

    for name, config_class in (("countdown", CountDownConfig), ("math", MathConfig), ("sudoku", SudokuConfig)):
        assert make_task(name, **dataclasses.asdict(config_class())).config == config_class()
