"""Research reproductions: train one model per trace style ("arm"), then compare them at equal compute.

Each arm is SFT on its style's traces (optionally followed by GRPO), evaluated with
the methods its ``eval`` section names (:mod:`.evaluate`). Every stage writes its
result to its own directory and is reused when found, so a killed experiment resumes
where it stopped and experiments sharing an ``output_dir`` share their models (the
GRPO experiment reuses the SFT models of the comparison). The results go to
``<name>.json``, ``<name>.md`` (tables) and ``<name>.png`` (solve rate against
compute, one line per arm and method, each with its 95% interval as a band). The
results give every rate with its interval and, for SFT against GRPO of an arm and for
two arms' same stage, the difference with a paired interval (the same problems
resampled together; :mod:`.statistics`).

With ``seeds``, the whole experiment runs once per seed, each in
``<output_dir>/seed-<k>/`` with its own results there, and ``<output_dir>/<name>.*``
give each seed's values and their mean, whose intervals come from a two-level
bootstrap: seeds, then problems. The main job (``backtrack-gym run``) is the
experiment :data:`MAIN_CONFIG` describes.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from backtrack_gym.agents.search import SearchConfig
from backtrack_gym.config import (
    Config,
    build_config,
    check_at_least,
    check_choice,
    load_yaml,
    prefixed,
    section_values,
)
from backtrack_gym.settings import EpisodeConfig, TaskConfig, UnsetEpisodeConfig, UnsetTaskConfig
from backtrack_gym.train.common import run_environment
from backtrack_gym.train.data import atomic_write
from backtrack_gym.train.evaluate import EvalConfig, EvalSettings, add_intervals, breakdown, evaluate
from backtrack_gym.train.grpo_config import GRPORunConfig, GRPOSettings, grpo_trainer_defaults
from backtrack_gym.train.report import plot_experiment, results_markdown, stage_label, widest_pass_at
from backtrack_gym.train.sft import SFTRunConfig, SFTSettings, sft_trainer_defaults
from backtrack_gym.train.statistics import difference_interval

PLOT_CURVES = ("greedy", "sampled", "best_of_n", "maj_of_n", "search")
# The sections an arm may override, and the settings class of each.
SECTIONS = {"sft": SFTSettings, "grpo": GRPOSettings, "eval": EvalSettings}
MAIN_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "main.yaml"


def experiment_sft_defaults() -> SFTSettings:
    """SFT as experiments train: SFT's optimiser at a higher learning rate, logged and saved less often."""
    trainer = replace(sft_trainer_defaults(), learning_rate=2e-3, logging_steps=25, save_steps=250)
    return SFTSettings(n_train=12000, trainer=trainer)


def experiment_grpo_defaults() -> GRPOSettings:
    """GRPO's settings at experiments' learning rate; none runs unless ``trainer.optimizer_steps`` is set."""
    return GRPOSettings(trainer=replace(grpo_trainer_defaults(), optimizer_steps=0, learning_rate=1e-4))


def experiment_eval_defaults() -> EvalSettings:
    """Greedy and sampled evaluation of 200 problems; the search, when asked for, with two backtrack rounds."""
    return EvalSettings(n=200, methods=["greedy", "sample"], search=SearchConfig(rounds=2))


@dataclass
class ExperimentConfig(Config):
    """Train one model per trace style and compare their solve rates at equal test-time compute.

    Attributes:
        name: experiment name (names the result files).
        task: the task, shared by training and evaluation.
        sft_task_config: task config fields laid over ``task.config`` for the SFT stage alone
            (its traces), so the SFT model can learn an easier task than GRPO trains on and
            evaluation scores, e.g. the curriculum experiment's; empty: ``task`` itself.
        episode: how the models act in the env, in SFT data, GRPO and evaluation.
        model: preset size trained from scratch (or a pretrained model path).
        output_dir: run directory; one sub-directory per arm and stage.
        seed: seed of data, weights and sampling.
        seeds: seeds to run the whole experiment with (each as ``seed``), each in
            ``<output_dir>/seed-<k>``; the results then give each seed's values and their
            mean, with intervals over seeds and problems. Empty: one run, with ``seed``,
            in ``output_dir`` itself.
        arms: arm name -> overrides of the ``sft``, ``grpo`` and ``eval`` sections for that
            arm, e.g. ``{dfs: {sft: {style: dfs, n_train: 6000}}}``; an arm trains GRPO when
            its ``grpo.trainer.optimizer_steps`` is above 0.
        sft: SFT's settings (every arm's, unless it overrides them); an experiment's stages
            always resume, whatever ``trainer.resume`` says. Arms whose ``sft`` and ``eval``
            sections are equal share one SFT model and its evaluation, trained and written
            under the first such arm's directory.
        grpo: GRPO's settings, after SFT; ``trainer.optimizer_steps`` 0 (the default) runs none.
        eval: how each stage's model is evaluated.
        plot: curve names drawn in ``<name>.png`` (``greedy``, ``sampled``, ``best_of_n``,
            ``maj_of_n``, ``search``).
    """

    name: str = "countdown_backtracking"
    task: TaskConfig = field(default_factory=TaskConfig)
    sft_task_config: dict[str, Any] = field(default_factory=dict)
    episode: EpisodeConfig = field(default_factory=EpisodeConfig)
    model: str = "1M"
    output_dir: str = "runs/experiments/countdown"
    seed: int = 0
    seeds: list[int] = field(default_factory=list)
    arms: dict[str, Any] = field(
        default_factory=lambda: {"direct": {"sft": {"style": "direct"}}, "dfs": {"sft": {"style": "dfs"}}}
    )
    sft: SFTSettings = field(default_factory=experiment_sft_defaults)
    grpo: GRPOSettings = field(default_factory=experiment_grpo_defaults)
    eval: EvalSettings = field(default_factory=experiment_eval_defaults)
    plot: list[str] = field(default_factory=lambda: ["greedy", "best_of_n", "search"])

    def check(self) -> None:
        """Check this config's own fields, then each arm's stage configs as they will be built."""
        if not self.name or not re.fullmatch(r"[\w.-]+", self.name):
            raise ValueError(f"name must be a file name of letters, digits, '_', '-' and '.', got {self.name!r}")
        if not self.arms:
            raise ValueError("arms: an experiment needs at least one arm")
        check_choice("plot", self.plot, PLOT_CURVES)
        check_at_least(self, 0, "seed", "seeds")
        if len(set(self.seeds)) < len(self.seeds):
            raise ValueError(f"seeds must differ, got {self.seeds}")
        for arm in self.arms:
            stages = [(self.sft_config(arm), "sft"), (self.eval_config(arm, "model", "eval"), "eval")]
            if self.arm_has_grpo(arm):
                stages.append((self.grpo_config(arm, "model"), "grpo"))
            for stage, section in stages:
                try:
                    stage.validate()
                except ValueError as err:
                    # A field of the stage's own settings is set in this experiment's section of them.
                    own = {item.name for item in dataclasses.fields(SECTIONS[section])}
                    named = prefixed(err, section) if str(err).split(".")[0].split(" ")[0] in own else err
                    raise ValueError(f"arms.{arm}: {named}") from None

    def arm_section(self, arm: str, name: str) -> Any:
        """The experiment's section ``name`` with the arm's overrides laid over it."""
        spec = self.arms[arm]
        if not isinstance(spec, dict):
            raise ValueError(f"arms.{arm} must be a mapping of sections ({sorted(SECTIONS)}), got {spec!r}")
        unknown = sorted(set(spec) - set(SECTIONS))
        if unknown:
            raise ValueError(f"arms.{arm}: unknown sections {unknown}; known: {sorted(SECTIONS)}")
        return build_config(SECTIONS[name], spec.get(name, {}), base=getattr(self, name), path=f"arms.{arm}.{name}")

    def for_seed(self, seed: int) -> ExperimentConfig:
        """The run of one of ``seeds``: this experiment with that ``seed``, in ``<output_dir>/seed-<seed>``."""
        return replace(self, seed=seed, seeds=[], output_dir=str(Path(self.output_dir) / f"seed-{seed}"))

    def arm_has_grpo(self, arm: str) -> bool:
        return self.arm_section(arm, "grpo").trainer.optimizer_steps > 0

    def _shared(self) -> dict[str, Any]:
        return {"task": self.task, "episode": self.episode, "seed": self.seed}

    def sft_owner(self, arm: str) -> str:
        """The first arm whose SFT model and its evaluation ``arm`` shares: equal ``sft`` and
        ``eval`` sections train the same model and score it the same way."""
        sections = ("sft", "eval")
        own = [self.arm_section(arm, name) for name in sections]
        return next(other for other in self.arms if [self.arm_section(other, name) for name in sections] == own)

    def sft_config(self, arm: str) -> SFTRunConfig:
        sft = self.arm_section(arm, "sft")
        # An experiment's stages always resume: a killed experiment goes on where it stopped.
        sft = replace(sft, trainer=replace(sft.trainer, resume=True))
        shared = self._shared()
        if self.sft_task_config:
            shared["task"] = replace(self.task, config={**self.task.config, **self.sft_task_config})
        return SFTRunConfig(
            **section_values(sft, SFTSettings),
            **shared,
            model=self.model,
            output_dir=str(Path(self.output_dir) / self.sft_owner(arm) / "sft"),
        )

    def grpo_config(self, arm: str, model: str) -> GRPORunConfig:
        grpo = self.arm_section(arm, "grpo")
        grpo = replace(grpo, trainer=replace(grpo.trainer, resume=True))
        return GRPORunConfig(
            **section_values(grpo, GRPOSettings),
            **self._shared(),
            model=model,
            output_dir=str(Path(self.output_dir) / arm / "grpo"),
            first_index=self.arm_section(arm, "sft").n_train,  # problems the SFT data did not use
        )

    def eval_config(self, arm: str, model: str, stage: str) -> EvalConfig:
        settings = self.arm_section(arm, "eval")
        if stage == "sft_eval":
            arm = self.sft_owner(arm)  # a shared SFT model is evaluated once
        split = "" if settings.split == "test" else f"-{settings.split}"  # the held-out evaluation keeps its name
        return EvalConfig(
            **section_values(settings, EvalSettings),
            model=model,
            task=UnsetTaskConfig(**asdict(self.task)),
            episode=UnsetEpisodeConfig(**asdict(self.episode)),
            seed=self.seed,
            # experiments that evaluate a shared model with the same methods share the evaluation
            output_dir=str(Path(self.output_dir) / arm / f"{stage}-{'-'.join(settings.methods)}{split}"),
            label=arm if stage == "sft_eval" else f"{arm}+GRPO",
        )


def main_config() -> ExperimentConfig:
    """The main job's experiment: :data:`MAIN_CONFIG` over the experiment defaults."""
    return build_config(ExperimentConfig, load_yaml(MAIN_CONFIG))


def run_experiment(config: ExperimentConfig, *, progress: bool = False) -> dict[str, Any]:
    """Train and evaluate every arm (reusing finished stages), under each of ``seeds`` when it is
    set; write and return the results.

    ``progress`` shows the evaluations' progress bars on stderr (the trainers show theirs anyway).
    """
    config.validate()
    if not config.seeds:
        return _run_arms(config, progress)[0]
    runs = {seed: _run_arms(config.for_seed(seed), progress) for seed in config.seeds}
    results = aggregate_seeds(config, runs)
    _write_results(config, results)
    return results


def _run_arms(config: ExperimentConfig, progress: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """One run of every arm under ``config.seed``: its results (written) and each stage's
    per-problem outcomes (``outcomes[arm][stage]``, as :func:`~.evaluate.evaluate` gives them)."""
    results: dict[str, Any] = {"config": asdict(config), "environment": run_environment(), "arms": {}}
    outcomes: dict[str, dict[str, Any]] = {}
    for arm in config.arms:
        results["arms"][arm] = arm_results = {}
        outcomes[arm] = {}
        sft = config.sft_config(arm)
        model = _stage(Path(sft.output_dir), sft, lambda arm=arm: _train_sft(config, arm))
        sft_eval = config.eval_config(arm, str(model["path"]), "sft_eval")
        arm_results["sft"], outcomes[arm]["sft"] = _evaluate_stage(sft_eval, model, progress)
        if config.arm_has_grpo(arm):
            tuned = _stage(
                Path(config.output_dir) / arm / "grpo",
                config.grpo_config(arm, str(model["path"])),
                lambda arm=arm, path=model["path"]: _train_grpo(config, arm, str(path)),
            )
            grpo_eval = config.eval_config(arm, str(tuned["path"]), "grpo_eval")
            arm_results["grpo"], outcomes[arm]["grpo"] = _evaluate_stage(grpo_eval, tuned, progress)
    results["differences"] = stage_differences(outcomes)
    _write_results(config, results)
    return results, outcomes


def _write_results(config: ExperimentConfig, results: dict[str, Any]) -> None:
    output = Path(config.output_dir)
    text = json.dumps(results, indent=1, default=str)
    atomic_write(output / f"{config.name}.json", lambda path: path.write_text(text))
    plot_experiment(results, output / f"{config.name}.png")
    markdown = results_markdown(results)
    atomic_write(output / f"{config.name}.md", lambda path: path.write_text(markdown))


def compared_stages(outcomes: dict[str, dict[str, Any]]) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """The ``((arm, stage), (arm, stage))`` pairs an experiment compares: SFT then GRPO of each
    arm, and each two arms' same stage (in the arms' order)."""
    pairs = [((arm, "sft"), (arm, "grpo")) for arm, stages in outcomes.items() if "grpo" in stages]
    arms = list(outcomes)
    for i, first in enumerate(arms):
        for second in arms[i + 1 :]:
            pairs += [
                ((first, s), (second, s)) for s in ("sft", "grpo") if s in outcomes[first] and s in outcomes[second]
            ]
    return pairs


def headline_stats(outcome: dict[str, Any]) -> list[tuple[str, str]]:
    """The ``(method, stat)`` an experiment compares stages on: every solve rate, and the widest
    pass@k and maj@k."""
    stats = []
    for method, values in outcome["summary"].items():
        widest = widest_pass_at(values)
        widest_maj = widest and "maj@" + widest[5:]
        stats += [(method, stat) for stat in values if stat.startswith("solve_rate") or stat in (widest, widest_maj)]
    return stats


def stage_differences(outcomes: dict[str, dict[str, Any]], seeds: list[int] | None = None) -> list[dict[str, Any]]:
    """Each compared pair's difference (``to`` minus ``from``) in each headline stat both have, with
    its 95% interval: paired (the problems resampled together, and within each drawn seed) when
    both evaluated the same problems, else the two resampled independently.

    ``outcomes[arm][stage]`` holds per-problem values, or (seeds, problems) arrays of the same
    problems under each of ``seeds``; each row then also gives each seed's difference.
    """
    import numpy as np

    rows = []
    for (arm_a, stage_a), (arm_b, stage_b) in compared_stages(outcomes):
        first, second = outcomes[arm_a][stage_a], outcomes[arm_b][stage_b]
        paired = first["keys"] == second["keys"]
        shared = [stat for stat in headline_stats(first) if stat in headline_stats(second)]
        for method, stat in shared:
            before = np.atleast_2d(np.asarray(first["summary"][method][stat], dtype=float))
            after = np.atleast_2d(np.asarray(second["summary"][method][stat], dtype=float))
            low, high = difference_interval(before, after, paired=paired)
            row = {
                "from": stage_label(arm_a, stage_a),
                "to": stage_label(arm_b, stage_b),
                "method": method,
                "stat": stat,
                "difference": float(after.mean() - before.mean()),
                "ci_low": low,
                "ci_high": high,
                "paired": paired,
            }
            if seeds:
                by_seed = after.mean(axis=1) - before.mean(axis=1)
                row["seeds"] = {str(seed): float(value) for seed, value in zip(seeds, by_seed, strict=True)}
            rows.append(row)
    return rows


SEEDS_INTERVAL = (
    "95% percentile bootstrap over seeds, then problems: each resample draws the seeds with replacement, "
    "then the (shared) problems with replacement"
)


def aggregate_seeds(config: ExperimentConfig, runs: dict[int, tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """The results of ``runs`` (seed -> ``_run_arms``' results and outcomes) together: per arm and
    stage, the mean over seeds of every value, with two-level bootstrap intervals (seeds, then
    problems; :mod:`.statistics`), and each seed's summary under ``seeds``; the stage differences
    likewise, paired within each seed on the same problems.

    Every seed evaluates the same problems (the held-out set does not depend on the seed); a
    run that did not is an error.
    """
    import numpy as np

    seeds = list(runs)
    first_results = runs[seeds[0]][0]
    arms: dict[str, Any] = {}
    stacked: dict[str, dict[str, Any]] = {}
    for arm, stages in first_results["arms"].items():
        arms[arm], stacked[arm] = {}, {}
        for stage, first in stages.items():
            results = [runs[seed][0]["arms"][arm][stage] for seed in seeds]
            outcomes = [runs[seed][1][arm][stage] for seed in seeds]
            if any(outcome["keys"] != outcomes[0]["keys"] for outcome in outcomes):
                raise ValueError(f"{stage_label(arm, stage)}: the seeds' evaluations hold different problems")
            table = {
                "keys": outcomes[0]["keys"],
                "groups": outcomes[0]["groups"],
                "summary": {
                    method: {stat: np.array([o["summary"][method][stat] for o in outcomes]) for stat in stats}
                    for method, stats in outcomes[0]["summary"].items()
                },
                "curves": {
                    name: [np.array([o["curves"][name][i] for o in outcomes]) for i in range(len(points))]
                    for name, points in outcomes[0]["curves"].items()
                },
            }
            summary = {method: _mean_record([r["summary"][method] for r in results]) for method in first["summary"]}
            curves = {
                name: [_mean_record([r["curves"][name][i] for r in results]) for i in range(len(points))]
                for name, points in first["curves"].items()
            }
            add_intervals(summary, curves, table)
            key = first["breakdown"] and first["breakdown"]["by"]
            arms[arm][stage] = {
                "problem_set": first["problem_set"],
                "summary": summary,
                "curves": curves,
                "breakdown": breakdown(key, table),
                "train_seconds": float(np.mean([r["train_seconds"] for r in results])),
                "seeds": {
                    str(seed): {"summary": r["summary"], "train_seconds": r["train_seconds"]}
                    for seed, r in zip(seeds, results, strict=True)
                },
            }
            stacked[arm][stage] = table
    return {
        "config": asdict(config),
        "environment": run_environment(),
        "seeds": seeds,
        "interval": SEEDS_INTERVAL,
        "arms": arms,
        "differences": stage_differences(stacked, seeds),
    }


# Fields that name a summary's or curve point's setting rather than measure it.
_SETTING_KEYS = ("budget", "n", "rounds", "temperature", "frontier", "vote")


def _mean_record(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean over seeds of each measured number of a summary or curve point (settings as they are;
    intervals are drawn anew from the outcomes)."""
    import statistics

    mean = {}
    for key, value in records[0].items():
        if key in ("intervals", "ci_low", "ci_high"):
            continue
        # A measure may be None in a seed (backtrack precision without a backtrack): the others' mean.
        values = [r[key] for r in records if r.get(key) is not None]
        measured = bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        mean[key] = statistics.fmean(values) if measured and key not in _SETTING_KEYS else value
    return mean


def _stage(directory: Path, config: Any, train: Any) -> dict[str, Any]:
    """A trained model's path and training time, read from ``stage.json`` when the stage already ran.

    A stage trained under another config is an error, never silently reused or overwritten.
    """
    record = directory / "stage.json"
    settings = json.loads(json.dumps(asdict(config)))
    if record.exists():
        stage = json.loads(record.read_text())
        if stage.get("config") != settings:
            raise ValueError(f"{directory} holds a model trained with other settings; remove it or change output_dir")
        return stage
    start = time.perf_counter()
    path = train()
    stage = {"path": str(path), "train_seconds": time.perf_counter() - start, "config": settings}
    atomic_write(record, lambda tmp: tmp.write_text(json.dumps(stage)))
    return stage


def _train_sft(config: ExperimentConfig, arm: str) -> Path:
    from backtrack_gym.train.sft import run_sft

    return run_sft(config.sft_config(arm))


def _train_grpo(config: ExperimentConfig, arm: str, model: str) -> Path:
    from backtrack_gym.train.grpo import run_grpo

    return run_grpo(config.grpo_config(arm, model))


def _evaluate_stage(
    eval_config: EvalConfig, stage: dict[str, Any], progress: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stage's evaluation result (its problems, summary, curves and breakdown) and per-problem
    outcomes; an ``eval.json`` of the same config is reused (unless written before evaluations
    drew distinct problems and kept their outcomes)."""
    saved = Path(eval_config.output_dir) / "eval.json"
    report = json.loads(saved.read_text()) if saved.exists() else {}
    if report.get("config") != json.loads(json.dumps(asdict(eval_config))) or "outcomes" not in report:
        report = evaluate(eval_config, progress=progress)
    result = {key: report[key] for key in ("problem_set", "summary", "curves", "breakdown")}
    return {**result, "train_seconds": stage["train_seconds"]}, report["outcomes"]
