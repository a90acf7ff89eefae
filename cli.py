"""The ``backtrack-gym`` command line: one subcommand per dataclass config.

A config that does not validate, or a model that cannot be found, is a one-line usage
error (exit status 2) before any work starts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import backtrack_gym
from backtrack_gym.agents.play import PlayConfig, format_table, play_table
from backtrack_gym.config import add_config_arguments, config_from_args
from backtrack_gym.train.data import DataConfig, build_and_export
from backtrack_gym.train.evaluate import EvalConfig
from backtrack_gym.train.experiment import ExperimentConfig, main_config
from backtrack_gym.train.grpo_config import GRPORunConfig
from backtrack_gym.train.models import ModelNotFoundError
from backtrack_gym.train.sft import SFTRunConfig
from backtrack_gym.train.verifiable import VerifiableConfig


def run_play(config: PlayConfig) -> None:
    print(f"{config.env_id}, {config.split} split, {config.episodes} episodes per row")
    print(format_table(play_table(config)))


def run_data(config: DataConfig) -> None:
    table = build_and_export(config)
    print(f"{config.task.name} {config.split} traces, {config.n} per style, written to {config.out_dir}/")
    print(format_table(table))


def run_sft_command(config: SFTRunConfig) -> None:
    from backtrack_gym.train.sft import run_sft

    print(f"model and tokenizer saved to {run_sft(config)}")


def run_grpo_command(config: GRPORunConfig) -> None:
    from backtrack_gym.train.grpo import run_grpo

    print(f"model and tokenizer saved to {run_grpo(config)}")


def run_eval(config: EvalConfig) -> None:
    from backtrack_gym.train.evaluate import evaluate
    from backtrack_gym.train.report import curve_table, problem_set_line, rate

    report = evaluate(config, progress=True)
    task, episode = report["settings"]["task"], report["settings"]["episode"]
    settings = ", ".join([f"{task['name']} {task['config']}", *(f"{name} {value}" for name, value in episode.items())])
    print(f"{config.model} on the {config.split} split ({settings}):")
    print(problem_set_line(report["problem_set"]) + "; intervals: 95% percentile bootstrap over the problems")
    for method, summary in report["summary"].items():
        print(f"\n{method}")
        print(format_table([{key: value for key, value in summary.items() if key != "intervals"}]))
        print(format_table([{stat: rate(summary, stat) for stat in summary["intervals"]}]))
    print("\nsolve rate against compute (mean per problem)")
    print(format_table(curve_table(report["curves"])))
    if report["breakdown"]:
        print(f"\nsolve rate per {report['breakdown']['by']}")
        print(format_table(report["breakdown"]["groups"]))
    if config.output_dir:
        print(f"results, curves.png and TensorBoard scalars in {config.output_dir}/")


def run_main_job(config: ExperimentConfig) -> None:
    import time

    from backtrack_gym.train.common import TENSORBOARD_DIR
    from backtrack_gym.train.experiment import run_experiment
    from backtrack_gym.train.report import problem_set_line, split_title, stage_table, with_interval

    start = time.perf_counter()
    results = run_experiment(config, progress=True)
    evaluation = config.eval
    first = next(iter(results["arms"].values()))["sft"]["problem_set"]
    title = split_title(evaluation.split)
    print(f"\n{title} solve rate after SFT and after GRPO, on {problem_set_line(first)}: greedy, then")
    print(
        f"sampled (pass@1) and pass@k over {evaluation.samples} samples a problem"
        f" at temperature {evaluation.sampling.temperature}; [95% interval: bootstrap over "
        + ("seeds, then problems]" if config.seeds else "problems]")
    )
    for arm in config.arms:
        print(format_table(stage_table(results, arm)))
    for row in results["differences"]:
        if row["stat"] == "solve_rate":
            paired = "paired" if row["paired"] else "unpaired"
            print(f"{row['to']} - {row['from']}, {row['method']}: {with_interval(row['difference'], row)} ({paired})")
    stem = Path(config.output_dir) / config.name
    print(f"wall time {(time.perf_counter() - start) / 60:.1f} min; results in {stem}.json and {stem}.md")
    runs = [Path(config.for_seed(seed).output_dir) for seed in config.seeds] or [Path(config.output_dir)]
    logs = [
        str(run / arm / stage / TENSORBOARD_DIR)
        for run in runs
        for arm in config.arms
        for stage in results["arms"][arm]
    ]
    print("TensorBoard: tensorboard --logdir " + " --logdir ".join(logs))
    print(f"plot: {stem}.png")


def run_experiment_command(config: ExperimentConfig) -> None:
    from backtrack_gym.train.experiment import results_markdown, run_experiment

    results = run_experiment(config, progress=True)
    print(results_markdown(results))
    stem = f"{config.output_dir}/{config.name}"
    print(f"results in {stem}.json, {stem}.md; plot {stem}.png; per-stage TensorBoard under {config.output_dir}/")


def run_verifiable_command(config: VerifiableConfig) -> None:
    from backtrack_gym.train.verifiable import run_verifiable

    kept, paths = run_verifiable(config)
    print(f"{kept} traces verified wrong, then right; written to {', '.join(map(str, paths))}")


# command -> (config class, what runs it, the defaults the flags and --config override: None for the class's)
COMMANDS: dict[str, tuple[type, Callable[[Any], None], Callable[[], Any] | None]] = {
    "play": (PlayConfig, run_play, None),
    "data": (DataConfig, run_data, None),
    "sft": (SFTRunConfig, run_sft_command, None),
    "grpo": (GRPORunConfig, run_grpo_command, None),
    "eval": (EvalConfig, run_eval, None),
    "run": (ExperimentConfig, run_main_job, main_config),
    "experiment": (ExperimentConfig, run_experiment_command, None),
    "verifiable": (VerifiableConfig, run_verifiable_command, None),
}
SUMMARIES = {
    "run": "The main job (configs/main.yaml): SFT on oracle traces, then GRPO, each evaluated on held-out problems."
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="backtrack-gym", description=backtrack_gym.__doc__)
    parser.add_argument("--version", action="version", version=backtrack_gym.__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    subparsers = {}
    for name, (config_class, _, defaults) in COMMANDS.items():
        summary = SUMMARIES.get(name) or config_class.__doc__.split("\n\n")[0]
        subparsers[name] = commands.add_parser(name, help=summary, description=summary)
        add_config_arguments(subparsers[name], config_class, defaults() if defaults else None)
    args = parser.parse_args(argv)
    config_class, run, defaults = COMMANDS[args.command]
    subparser = subparsers[args.command]
    try:
        config = config_from_args(config_class, args, base=defaults() if defaults else None)
    except ValueError as err:
        usage_error(subparser, err)
    try:
        run(config)
    except ModelNotFoundError as err:  # found when loading the model, before any work
        usage_error(subparser, err)
    return 0


def usage_error(parser: argparse.ArgumentParser, err: Exception) -> NoReturn:
    """Exit with status 2 and the one line ``<prog>: error: <message>`` on stderr."""
    message = " ".join(str(err).split())
    parser.exit(2, f"{parser.prog}: error: {message} (see {parser.prog} --help)\n")


if __name__ == "__main__":
    sys.exit(main())
