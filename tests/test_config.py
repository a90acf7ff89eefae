import argparse
from dataclasses import dataclass

import pytest

from backtrack_gym.config import add_config_arguments, config_from_args, field_docs


@dataclass
class ExampleConfig:
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

    def validate(self):
        if self.steps < 0:
            raise ValueError("steps must be non-negative")


def parse(argv):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, ExampleConfig)
    return config_from_args(ExampleConfig, parser.parse_args(argv))


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


def test_main_yaml_holds_the_defaults_of_make_run():
    from pathlib import Path

    from backtrack_gym.train.run import RunConfig

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, RunConfig)
    path = Path(__file__).parents[1] / "configs" / "main.yaml"
    assert config_from_args(RunConfig, parser.parse_args(["--config", str(path)])) == RunConfig()
