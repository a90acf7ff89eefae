"""The main job: build data, SFT a model from scratch, GRPO it, evaluate both on held-out problems."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backtrack_gym.train.common import TENSORBOARD_DIR
from backtrack_gym.train.data import atomic_write
from backtrack_gym.train.evaluate import EvalConfig, evaluate
from backtrack_gym.train.grpo import GRPORunConfig, run_grpo
from backtrack_gym.train.sft import SFTRunConfig, run_sft

# 3 numbers in 1..9 with targets 10..100 (9 held out): a 1M model learns it on a 2-core CPU in
# minutes, and the target range is wide enough for it to carry over to the held-out targets.
MAIN_TASK_CONFIG = {"num_count": 3, "number_min": 1, "number_max": 9, "target_min": 10, "target_max": 100}


@dataclass
class RunConfig:
    """The main job: SFT warm-up on oracle traces, then GRPO, each evaluated on held-out problems.

    Attributes:
        task: task name (``countdown``, ``sudoku``, ``math``).
        task_config: task config fields.
        style: trace style of the SFT data.
        model: preset size trained from scratch (or a pretrained model path).
        output_dir: run directory (``sft/``, ``grpo/``, ``results.json``).
        seed: seed of everything.
        n_train: SFT traces.
        sft_epochs: passes over the SFT data.
        sft_learning_rate: SFT peak learning rate.
        grpo_steps: GRPO optimiser steps.
        grpo_learning_rate: GRPO learning rate.
        num_generations: GRPO group size.
        prompts_per_step: GRPO problems per step.
        interaction: GRPO path: ``completion`` (single turn) or ``step`` (multi turn).
        n_eval: held-out problems in each evaluation.
        max_tokens: most tokens per completion (GRPO and evaluation).
        resume: continue a killed run from its checkpoints.
    """

    task: str = "countdown"
    task_config: dict[str, Any] = field(default_factory=lambda: dict(MAIN_TASK_CONFIG))
    style: str = "direct"
    model: str = "1M"
    output_dir: str = "runs/main"
    seed: int = 0
    n_train: int = 24000
    sft_epochs: float = 1.0
    sft_learning_rate: float = 2e-3
    grpo_steps: int = 400
    grpo_learning_rate: float = 1e-4
    num_generations: int = 8
    prompts_per_step: int = 8
    interaction: str = "completion"
    n_eval: int = 500
    max_tokens: int = 64
    resume: bool = False

    def validate(self) -> RunConfig:
        self.sft_config().validate()
        self.grpo_config("").validate()
        return self

    def sft_config(self) -> SFTRunConfig:
        return SFTRunConfig(
            task=self.task,
            style=self.style,
            n_train=self.n_train,
            seed=self.seed,
            task_config=self.task_config,
            model=self.model,
            output_dir=str(Path(self.output_dir) / "sft"),
            epochs=self.sft_epochs,
            learning_rate=self.sft_learning_rate,
            logging_steps=25,
            save_steps=250,
            resume=self.resume,
        )

    def grpo_config(self, model: str) -> GRPORunConfig:
        return GRPORunConfig(
            task=self.task,
            task_config=self.task_config,
            model=model,
            output_dir=str(Path(self.output_dir) / "grpo"),
            interaction=self.interaction,
            seed=self.seed,
            first_index=self.n_train,  # fresh problems: the SFT data is items 0..n_train-1
            max_steps=self.grpo_steps,
            learning_rate=self.grpo_learning_rate,
            num_generations=self.num_generations,
            prompts_per_step=self.prompts_per_step,
            max_completion_length=self.max_tokens,
            save_steps=50,
            resume=self.resume,
        )

    def eval_config(self, model: str, stage: str) -> EvalConfig:
        return EvalConfig(
            model=model,
            task=self.task,
            task_config=self.task_config,
            n=self.n_eval,
            max_tokens=self.max_tokens,
            output_dir=str(Path(self.output_dir) / stage / "eval"),
            label=stage,
        )


def run_main(config: RunConfig) -> dict[str, Any]:
    """Run every stage; returns (and writes to ``results.json``) the held-out results and timings."""
    config.validate()
    start = time.perf_counter()
    sft_model = str(run_sft(config.sft_config()))
    sft_done = time.perf_counter()
    after_sft = evaluate(config.eval_config(sft_model, "sft"))["summary"]["greedy"]
    grpo_model = str(run_grpo(config.grpo_config(sft_model)))
    grpo_done = time.perf_counter()
    after_grpo = evaluate(config.eval_config(grpo_model, "grpo"))["summary"]["greedy"]
    results = {
        "config": asdict(config),
        "sft": {**after_sft, "train_seconds": sft_done - start, "model": sft_model},
        "grpo": {**after_grpo, "train_seconds": grpo_done - sft_done, "model": grpo_model},
        "wall_seconds": time.perf_counter() - start,
    }
    text = json.dumps(results, indent=2)
    atomic_write(Path(config.output_dir) / "results.json", lambda path: path.write_text(text))
    return results


def results_table(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per stage for printing."""
    keys = ("solve_rate", "mean_tokens", "backtrack_rate", "invalid_steps", "train_seconds")
    return [{"stage": stage, **{key: results[stage][key] for key in keys}} for stage in ("sft", "grpo")]


def tensorboard_dirs(config: RunConfig) -> list[str]:
    return [str(Path(config.output_dir) / stage / TENSORBOARD_DIR) for stage in ("sft", "grpo")]


def plot_paths(config: RunConfig) -> list[str]:
    """The solve-rate-against-budget plots of the two evaluations."""
    return [str(Path(config.output_dir) / stage / "eval" / "curves.png") for stage in ("sft", "grpo")]
