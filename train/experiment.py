"""Research reproductions: train one model per trace style ("arm"), then compare them at equal compute.

Each arm is SFT on its style's traces (optionally followed by GRPO), evaluated with
the methods its ``eval`` section names (:mod:`.evaluate`). Every stage writes its
result to its own directory and is reused when found, so a killed experiment resumes
where it stopped and experiments sharing an ``output_dir`` share their models (the
GRPO experiment reuses the SFT models of the comparison). The results go to
``<name>.json``, ``<name>.md`` (tables) and ``<name>.png`` (solve rate against
compute, one line per arm and method). The main job (``backtrack-gym run``) is the
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
from backtrack_gym.config import Config, build_config, check_choice, load_yaml, prefixed, section_values
from backtrack_gym.settings import EpisodeConfig, TaskConfig, UnsetEpisodeConfig, UnsetTaskConfig
from backtrack_gym.train.data import atomic_write
from backtrack_gym.train.evaluate import EvalConfig, EvalSettings, evaluate
from backtrack_gym.train.grpo_config import GRPORunConfig, GRPOSettings, grpo_trainer_defaults
from backtrack_gym.train.report import plot_experiment, results_markdown
from backtrack_gym.train.sft import SFTRunConfig, SFTSettings, sft_trainer_defaults

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
        episode: how the models act in the env, in SFT data, GRPO and evaluation.
        model: preset size trained from scratch (or a pretrained model path).
        output_dir: run directory; one sub-directory per arm and stage.
        seed: seed of data, weights and sampling.
        arms: arm name -> overrides of the ``sft``, ``grpo`` and ``eval`` sections for that
            arm, e.g. ``{dfs: {sft: {style: dfs, n_train: 6000}}}``; an arm trains GRPO when
            its ``grpo.trainer.optimizer_steps`` is above 0.
        sft: SFT's settings (every arm's, unless it overrides them); an experiment's stages
            always resume, whatever ``trainer.resume`` says.
        grpo: GRPO's settings, after SFT; ``trainer.optimizer_steps`` 0 (the default) runs none.
        eval: how each stage's model is evaluated.
        plot: curve names drawn in ``<name>.png`` (``greedy``, ``sampled``, ``best_of_n``,
            ``maj_of_n``, ``search``).
    """

    name: str = "countdown_backtracking"
    task: TaskConfig = field(default_factory=TaskConfig)
    episode: EpisodeConfig = field(default_factory=EpisodeConfig)
    model: str = "1M"
    output_dir: str = "runs/experiments/countdown"
    seed: int = 0
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

    def arm_has_grpo(self, arm: str) -> bool:
        return self.arm_section(arm, "grpo").trainer.optimizer_steps > 0

    def _shared(self) -> dict[str, Any]:
        return {"task": self.task, "episode": self.episode, "seed": self.seed}

    def sft_config(self, arm: str) -> SFTRunConfig:
        sft = self.arm_section(arm, "sft")
        # An experiment's stages always resume: a killed experiment goes on where it stopped.
        sft = replace(sft, trainer=replace(sft.trainer, resume=True))
        return SFTRunConfig(
            **section_values(sft, SFTSettings),
            **self._shared(),
            model=self.model,
            output_dir=str(Path(self.output_dir) / arm / "sft"),
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
        return EvalConfig(
            **section_values(settings, EvalSettings),
            model=model,
            task=UnsetTaskConfig(**asdict(self.task)),
            episode=UnsetEpisodeConfig(**asdict(self.episode)),
            seed=self.seed,
            # experiments that evaluate a shared model with the same methods share the evaluation
            output_dir=str(Path(self.output_dir) / arm / f"{stage}-{'-'.join(settings.methods)}"),
            label=arm if stage == "sft_eval" else f"{arm}+GRPO",
        )


def main_config() -> ExperimentConfig:
    """The main job's experiment: :data:`MAIN_CONFIG` over the experiment defaults."""
    return build_config(ExperimentConfig, load_yaml(MAIN_CONFIG))


def run_experiment(config: ExperimentConfig, *, progress: bool = False) -> dict[str, Any]:
    """Train and evaluate every arm (reusing finished stages); write and return the results.

    ``progress`` shows the evaluations' progress bars on stderr (the trainers show theirs anyway).
    """
    config.validate()
    results: dict[str, Any] = {"config": asdict(config), "arms": {}}
    for arm in config.arms:
        results["arms"][arm] = arm_results = {}
        model = _stage(
            Path(config.output_dir) / arm / "sft", config.sft_config(arm), lambda arm=arm: _train_sft(config, arm)
        )
        sft_eval = config.eval_config(arm, str(model["path"]), "sft_eval")
        arm_results["sft"] = _evaluate_stage(sft_eval, model, progress)
        if config.arm_has_grpo(arm):
            tuned = _stage(
                Path(config.output_dir) / arm / "grpo",
                config.grpo_config(arm, str(model["path"])),
                lambda arm=arm, path=model["path"]: _train_grpo(config, arm, str(path)),
            )
            grpo_eval = config.eval_config(arm, str(tuned["path"]), "grpo_eval")
            arm_results["grpo"] = _evaluate_stage(grpo_eval, tuned, progress)
    output = Path(config.output_dir)
    text = json.dumps(results, indent=1, default=str)
    atomic_write(output / f"{config.name}.json", lambda path: path.write_text(text))
    plot_experiment(results, output / f"{config.name}.png")
    markdown = results_markdown(results)
    atomic_write(output / f"{config.name}.md", lambda path: path.write_text(markdown))
    return results


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


def _evaluate_stage(eval_config: EvalConfig, stage: dict[str, Any], progress: bool) -> dict[str, Any]:
    """The stage's evaluation summary and curves; an ``eval.json`` of the same config is reused."""
    saved = Path(eval_config.output_dir) / "eval.json"
    if saved.exists():
        report = json.loads(saved.read_text())
        if report.get("config") == json.loads(json.dumps(asdict(eval_config))):
            return _stage_result(report, stage)
    return _stage_result(evaluate(eval_config, progress=progress), stage)


def _stage_result(report: dict[str, Any], stage: dict[str, Any]) -> dict[str, Any]:
    return {"summary": report["summary"], "curves": report["curves"], "train_seconds": stage["train_seconds"]}
