"""The ``backtrack-gym`` command line: one subcommand per dataclass config."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import backtrack_gym
from backtrack_gym.agents.play import PlayConfig, format_table, play_table
from backtrack_gym.config import add_config_arguments, config_from_args
from backtrack_gym.train.data import DataConfig, build_and_export


def run_play(config: PlayConfig) -> None:
    print(f"{config.env_id}, {config.split} split, {config.episodes} episodes per row")
    print(format_table(play_table(config)))


def run_data(config: DataConfig) -> None:
    table = build_and_export(config)
    print(f"{config.task} {config.split} traces, {config.n} per style, written to {config.out_dir}/")
    print(format_table(table))


COMMANDS: dict[str, tuple[type, Callable[[Any], None]]] = {
    "play": (PlayConfig, run_play),
    "data": (DataConfig, run_data),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="backtrack-gym", description=backtrack_gym.__doc__)
    parser.add_argument("--version", action="version", version=backtrack_gym.__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (config_class, _) in COMMANDS.items():
        summary = config_class.__doc__.split("\n\n")[0]
        add_config_arguments(commands.add_parser(name, help=summary, description=summary), config_class)
    args = parser.parse_args(argv)
    config_class, run = COMMANDS[args.command]
    try:
        config = config_from_args(config_class, args)
    except ValueError as err:
        parser.error(str(err))
    run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
