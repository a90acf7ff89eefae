"""GRPO with TRL's ``GRPOTrainer``, starting from an SFT checkpoint (settings: :mod:`.grpo_config`).

Two paths:

- ``episode.interaction="completion"`` (single turn): TRL samples whole completions and
  the reward functions of :mod:`backtrack_gym.rewards` replay each one against the
  problem, which travels as a data set column.
- ``episode.interaction="step"`` (multi turn): a ``rollout_func``
  (:class:`~.grpo_rollout.StepRollout`) plays the LM agent against the envs line by
  line; the env's observation tokens are attended to but carry no loss (``env_mask``),
  and rewards are scored from each episode's final ``info``. ``<backtrack>`` lines are
  kept. ``<bksp>`` is not sampled by default (TRL recomputes log-probabilities with a 2D
  attention mask, which cannot express a deleted token); with ``backspace`` it is, and
  the trainer of :mod:`.grpo_backspace` recomputes them through each episode's per-query
  (4D) mask, so TRL's loss sees the probabilities the agent sampled with.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

from backtrack_gym.train.common import (
    TRAINER_STATE,
    checkpoint_step,
    last_checkpoint,
    model_card,
    save_final,
    tensorboard_callback,
    train_from_checkpoint,
    with_model_card,
)
from backtrack_gym.train.grpo_config import GRPORunConfig, episode_settings, grpo_arguments
from backtrack_gym.train.grpo_rollout import (
    EPISODE_PROMPT_COLUMN,
    INFO_COLUMN,
    StepRollout,
    prompt_dataset,
)

# TRL's metrics of completions that end in eos; step-mode episodes end by the env instead, and
# StepRollout logs ``episodes/...`` in their place.
EOS_METRICS = tuple(
    f"completions/{name}"
    for name in ("clipped_ratio", "mean_terminated_length", "min_terminated_length", "max_terminated_length")
)


class SFTAnchor:
    """Supervised batches of fresh oracle traces of training problems, for ``sft_coef``.

    Each batch is drawn from ``(seed, step, micro-step, process)``, so a resumed run sees
    the batches the killed one would have seen.
    """

    def __init__(self, config: GRPORunConfig, tokenizer: Any, task: Any):
        from backtrack_gym.train.data import trace_row

        self.config = config
        self.tokenizer = tokenizer
        interaction = config.episode.interaction
        self.make_row = partial(trace_row, task, config.sft_style, "train", config.seed, {}, interaction)
        self.make_row(0)  # fail fast (an unknown style) before training starts

    def batch(self, step: int, micro_step: int, process_index: int) -> dict[str, Any]:
        """``input_ids``, ``attention_mask`` and ``labels`` (prompt and masked spans at -100), right-padded."""
        import numpy as np
        import torch

        from backtrack_gym.train.sft import IGNORE, tokenize_row

        rng = np.random.default_rng([self.config.seed, step, micro_step, process_index])
        rows = [self.make_row(int(index)) for index in rng.integers(0, 2**31, size=self.config.sft_batch_size)]
        encoded = [tokenize_row(self.tokenizer, r["prompt"], r["completion"], r["mask_spans"]) for r in rows]
        width = max(len(e["input_ids"]) for e in encoded)

        def padded(key: str, fill: int) -> Any:
            return torch.tensor([e[key] + [fill] * (width - len(e[key])) for e in encoded])

        ids = padded("input_ids", self.tokenizer.pad_token_id)
        lengths = torch.tensor([len(e["input_ids"]) for e in encoded])
        mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
        return {"input_ids": ids, "attention_mask": mask, "labels": padded("labels", IGNORE)}


def grpo_trainer_class(anchor: SFTAnchor | None, step_mode: bool = False, backspace: bool = False) -> type:
    """TRL's ``GRPOTrainer``, or a subclass of it for an anchor or the step path.

    With ``anchor`` it adds the anchor's supervised loss; with ``step_mode`` it drops TRL's
    eos-based completion metrics (:data:`EOS_METRICS`), which :class:`StepRollout` replaces;
    with ``backspace`` (step path) it scores episodes through their 4D masks
    (:func:`~.grpo_backspace.backspace_trainer_class`).
    """
    from trl import GRPOTrainer

    from backtrack_gym.train.grpo_backspace import backspace_trainer_class

    base = GRPOTrainer
    if backspace:
        if not step_mode:
            raise ValueError("backspace applies to the step path (episode.interaction='step')")
        base = backspace_trainer_class(base)
    if step_mode:

        class StepGRPOTrainer(base):
            def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
                for metrics in self._metrics.values():
                    for key in EOS_METRICS:
                        metrics.pop(key, None)
                super().log(logs, start_time)

        base = StepGRPOTrainer
    if anchor is None:
        return base

    class AnchoredGRPOTrainer(base):
        def compute_loss(
            self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            accumulation = self.current_gradient_accumulation_steps
            batch = anchor.batch(self.state.global_step, self._step % accumulation, self.accelerator.process_index)
            sft_loss = model(**{key: value.to(loss.device) for key, value in batch.items()}).loss
            self._metrics["train"]["sft_loss"].append(self.accelerator.gather(sft_loss.detach()).mean().item())
            # TRL scales its loss to one accumulation window; the supervised term matches it.
            return loss + anchor.config.sft_coef * sft_loss / accumulation

    return AnchoredGRPOTrainer


class CompletionLog:
    """Keeps the last batch a reward function scored, and writes a few of them to TensorBoard."""

    def __init__(self, reward_func: Any, count: int):
        self.reward_func = reward_func
        self.count = count
        self.latest: list[tuple[str, str, float]] = []
        self.__name__ = reward_func.__name__

    def __call__(self, prompts: Any = None, completions: Any = (), **columns: Any) -> list[float]:
        from backtrack_gym.rewards import completion_text

        rewards = self.reward_func(prompts=prompts, completions=completions, **columns)
        # In the step path the episodes say which prompt each played (resampling may swap them).
        prompts = columns.get(EPISODE_PROMPT_COLUMN, prompts)
        prompts = prompts if prompts is not None else [""] * len(completions)
        self.latest = [(str(p), completion_text(c), r) for p, c, r in zip(prompts, completions, rewards, strict=True)][
            : self.count
        ]
        return rewards

    def text(self) -> str:
        blocks = [
            f"reward {r:g}\n\n    {p.strip()}\n    {c.strip()}".replace("\n", "\n    ") for p, c, r in self.latest
        ]
        return "\n\n---\n\n".join(blocks)


def _samples_callback(log: CompletionLog, tensorboard: Any) -> Any:
    from transformers import TrainerCallback

    class SampleText(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if log.latest:
                tensorboard.add_text(state, "completions", log.text())

    return SampleText()


def _curriculum_callback(curriculum: Any) -> Any:
    """Keeps the curriculum's level and window in each checkpoint's ``trainer_state.json``.

    The Trainer writes that file last, as the mark of a complete checkpoint, so a complete
    checkpoint always holds the curriculum of its step (a separate file could be missing
    after a kill between the two writes).
    """
    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState

    class CurriculumState(TrainerCallback, ExportableState):
        def state(self) -> dict[str, Any]:
            return {"args": {}, "attributes": {"curriculum": curriculum.state()}}

    return CurriculumState()


def saved_curriculum(checkpoint: str | Path) -> dict[str, Any]:
    """The curriculum state a checkpoint holds (see :func:`_curriculum_callback`)."""
    saved = json.loads((Path(checkpoint) / TRAINER_STATE).read_text()).get("stateful_callbacks", {})
    if "CurriculumState" not in saved:
        raise ValueError(f"{checkpoint} holds no curriculum state: it was saved by a run without the curriculum")
    return saved["CurriculumState"]["attributes"]["curriculum"]


def grpo_model_card(config: GRPORunConfig) -> str:
    """The model card of a GRPO run: the model it started from, trained on which episodes."""
    hub_id = None if Path(config.model).exists() else config.model
    origin = f"`{config.model}` trained further on `{config.episode.interaction}`-mode episodes"
    return model_card("GRPO", origin, config, base_model=hub_id)


def run_grpo(config: GRPORunConfig) -> Path:
    """Train and save the model (with its tokenizer) to ``<output_dir>/final``; returns that path."""
    trainer, checkpoint = grpo_trainer(config)
    train_from_checkpoint(trainer, checkpoint)
    return save_final(trainer, trainer.model, trainer.processing_class, Path(config.output_dir), config)


def grpo_trainer(config: GRPORunConfig) -> tuple[Any, str | None]:
    """The GRPO trainer of ``config``, ready to train, and the checkpoint it resumes from (None: a fresh run)."""
    from trl import GRPOConfig

    from backtrack_gym.envs import TextEnv
    from backtrack_gym.rewards import METRICS, episode_reward_functions, trl_reward_functions
    from backtrack_gym.train.models import load_pretrained

    config.validate()
    output = Path(config.output_dir)
    task = config.task.build(seed=config.seed)
    tokenizer, model = load_pretrained(config.model)
    dataset = prompt_dataset(task, config.n_prompts, first_index=config.first_index)
    step_mode = config.episode.interaction == "step"
    settings = episode_settings(config)
    if step_mode:
        # The rollout's envs' own weights (an invalid penalty folded in), so a reward is their return.
        env_weights = TextEnv(task, interaction="step", **settings).reward_weights
        funcs = episode_reward_functions(task.name, env_weights, info_column=INFO_COLUMN, metrics=True)
        rollout = StepRollout(config, tokenizer, task, dict(zip(dataset["prompt"], dataset["problem"], strict=True)))
    else:
        funcs = trl_reward_functions(task, **settings, metrics=True)
        rollout = None
    terms = len(funcs) - len(METRICS)
    weights = [1.0] * terms + [0.0] * len(METRICS)
    samples = CompletionLog(funcs[0], config.samples_to_log)
    funcs[0] = samples
    checkpoint = last_checkpoint(output) if config.trainer.resume else None
    tensorboard = tensorboard_callback(output, checkpoint_step(checkpoint))
    callbacks = [tensorboard, _samples_callback(samples, tensorboard)]
    if rollout is not None and rollout.curriculum is not None:
        if checkpoint is not None:
            rollout.curriculum.load_state(saved_curriculum(checkpoint))
        callbacks.append(_curriculum_callback(rollout.curriculum))
    args = GRPOConfig(**grpo_arguments(config, output_dir=str(output), reward_weights=weights))
    anchor = SFTAnchor(config, tokenizer, task) if config.sft_coef else None
    trainer_class = with_model_card(grpo_trainer_class(anchor, step_mode, config.backspace), grpo_model_card(config))
    trainer = trainer_class(
        model=model,
        reward_funcs=funcs,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
        rollout_func=rollout,
    )
    return trainer, checkpoint
