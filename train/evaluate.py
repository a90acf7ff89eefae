"""Held-out evaluation of a trained model: episodes played by the LM agent in the env."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from backtrack_gym.envs import TASK_ENV_IDS


@dataclass
class EvalConfig:
    """Evaluate a model on held-out problems and print solve rate, tokens and backtracks.

    Attributes:
        model: path of the model directory (with its tokenizer).
        task: task name (``countdown``, ``sudoku``, ``math``).
        task_config: task config fields (as in training).
        n: problems (items ``0..n-1`` of the split).
        split: ``test`` (held out) or ``train``.
        interaction: ``completion`` or ``step``.
        backtrack: whether ``<backtrack>`` lines undo steps.
        greedy: decode greedily (else sample at ``temperature``).
        temperature: sampling temperature.
        samples: episodes per problem (solve rate averages them).
        max_tokens: most model tokens per episode.
        max_env_steps: step budget of an episode in the env.
        batch_size: episodes decoded together.
        seed: seed of the sampler.
    """

    model: str = "runs/grpo/final"
    task: str = "countdown"
    task_config: dict[str, Any] = field(default_factory=dict)
    n: int = 500
    split: str = "test"
    interaction: str = "completion"
    backtrack: bool = True
    greedy: bool = True
    temperature: float = 1.0
    samples: int = 1
    max_tokens: int = 256
    max_env_steps: int = 64
    batch_size: int = 100
    seed: int = 0

    def validate(self) -> EvalConfig:
        if self.task not in TASK_ENV_IDS:
            raise ValueError(f"task must be one of {sorted(TASK_ENV_IDS)}, got {self.task!r}")
        for name in ("n", "samples", "max_tokens", "max_env_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        return self


def evaluate(config: EvalConfig, model: Any = None, tokenizer: Any = None) -> dict[str, float]:
    """Solve rate, mean model tokens, backtracks and invalid steps per episode over the problems."""
    import gymnasium as gym
    import torch
    from transformers import AutoModelForCausalLM

    from backtrack_gym.agents.lm import LMAgent, SamplingConfig
    from backtrack_gym.train.tokenizer import load_tokenizer

    config.validate()
    tokenizer = tokenizer or load_tokenizer(config.model)
    model = model or AutoModelForCausalLM.from_pretrained(config.model)
    model.eval()
    jobs = [index for index in range(config.n) for _ in range(config.samples)]
    episodes = []
    for start in range(0, len(jobs), config.batch_size):
        batch = jobs[start : start + config.batch_size]
        envs = [
            gym.make(
                TASK_ENV_IDS[config.task],
                interaction=config.interaction,
                backtrack=config.backtrack,
                split=config.split,
                max_steps=config.max_env_steps,
                **config.task_config,
            )
            for _ in batch
        ]
        sampling = SamplingConfig(
            greedy=config.greedy,
            temperature=config.temperature,
            max_episode_tokens=config.max_tokens,
            seed=config.seed + start,
        )
        with torch.inference_mode():
            episodes += LMAgent(model, tokenizer, sampling).rollout(
                envs, seed=config.seed, options=[{"index": index} for index in batch]
            )
    return {
        "episodes": len(episodes),
        "solve_rate": statistics.fmean(e.info["solved"] for e in episodes),
        "mean_tokens": statistics.fmean(sum(e.model_mask) for e in episodes),
        "backtracks": statistics.fmean(e.info["backtracks"] for e in episodes),
        "backtrack_rate": statistics.fmean(e.info["backtracks"] > 0 for e in episodes),
        "invalid_steps": statistics.fmean(e.info["invalid_steps"] for e in episodes),
    }
