"""The ``backtrack-gym`` command line."""

from __future__ import annotations

import argparse
import sys

import backtrack_gym
from backtrack_gym.agents.play import PlayConfig, format_table, play_table
from backtrack_gym.config import add_config_arguments, config_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="backtrack-gym", description=backtrack_gym.__doc__)
    parser.add_argument("--version", action="version", version=backtrack_gym.__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    play = commands.add_parser(
        "play", help=PlayConfig.__doc__.splitlines()[0], description=PlayConfig.__doc__.split("\n\n")[0]
    )
    add_config_arguments(play, PlayConfig)
    args = parser.parse_args(argv)
    try:
        if args.command == "play":
            config = config_from_args(PlayConfig, args)
            print(f"{config.env_id}, {config.split} split, {config.episodes} episodes per row")
            print(format_table(play_table(config)))
    except ValueError as err:
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
