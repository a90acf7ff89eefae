"""GRPO with TRL's ``GRPOTrainer``, starting from an SFT checkpoint.

Two paths:

- ``interaction="completion"`` (single turn): TRL samples whole completions and the
  reward functions of :mod:`backtrack_gym.rewards` replay each one against the
  problem, which travels as a data set column.
- ``interaction="step"`` (multi turn): a ``rollout_func`` plays the LM agent against
  the envs line by line; the env's observation tokens are attended to but carry no
  loss (``env_mask``), and rewards are scored from each episode's final ``info``.
  TRL recomputes log-probabilities with a 2D attention mask, which cannot express a
  deleted token, so this path samples no ``<bksp>``; ``<backtrack>`` lines are kept.

Every generation of a group sees the same problem: TRL repeats each prompt
``num_generations`` times and the rollout pins each env to its prompt's problem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from backtrack_gym.config import (
    check_at_least,
    check_choice,
    check_fraction,
    check_positive,
    check_style,
    check_task,
)
from backtrack_gym.envs import TASK_ENV_IDS
from backtrack_gym.envs.core import check_interaction
from backtrack_gym.train.common import (
    checkpoint_step,
    device_arguments,
    last_checkpoint,
    model_card,
    save_final,
    tensorboard_callback,
    train_from_checkpoint,
    with_model_card,
)

# The losses of TRL's GRPOTrainer at token-level importance sampling (its ``luspo`` needs sequence level).
LOSS_TYPES = ("bnpo", "cispo", "dapo", "dr_grpo", "grpo", "sapo", "vespo")
# The transformers schedules that need no extra arguments (a test checks each is a ``SchedulerType``);
# listed here because importing transformers to ask would add seconds to every validation.
LR_SCHEDULERS = ("linear", "constant", "constant_with_warmup", "cosine", "cosine_with_restarts", "polynomial")
INFO_COLUMN = "episode_info"
# TRL's metrics of completions that end in eos; step-mode episodes end by the env instead, and
# StepRollout logs ``episodes/...`` in their place.
EOS_METRICS = tuple(
    f"completions/{name}"
    for name in ("clipped_ratio", "mean_terminated_length", "min_terminated_length", "max_terminated_length")
)
EPISODE_PROMPT_COLUMN = "episode_prompt"  # the prompt each episode played, after resampling


@dataclass
class GRPORunConfig:
    """GRPO from an SFT checkpoint on generated problems, rewarded by the env's verifier.

    Attributes:
        task: task name (``countdown``, ``sudoku``, ``math``).
        task_config: task config fields, e.g. ``{num_count: 3, target_max: 50}``.
        model: path of the starting model (an SFT ``final/`` directory).
        output_dir: where checkpoints, TensorBoard logs and ``final/`` go.
        interaction: ``completion`` (single turn) or ``step`` (multi turn through the LM agent).
        backtrack: whether ``<backtrack>`` lines undo steps in the envs.
        reward_weights: weights of the reward terms (``correct``, ``progress``, ``format``,
            ``validity``, ``length``, ``backtrack``): the whole training reward, which is the
            env's return (see :func:`episode_settings`; invalid steps cost only through
            ``format`` and ``validity``).
        n_prompts: training problems (train split).
        first_index: index of the first training problem; start past the SFT data so
            GRPO practises on problems the model has not memorised.
        seed: seed of the problems, sampling and training.
        max_steps: optimiser steps.
        prompts_per_step: distinct problems per step.
        num_generations: completions per problem (the group size G).
        max_completion_length: most tokens a completion may take.
        max_env_steps: step budget of an episode in the env.
        temperature: sampling temperature.
        learning_rate: peak learning rate.
        lr_scheduler: learning-rate schedule after the peak, one of :data:`LR_SCHEDULERS`
            (``linear`` decay to 0, ``constant``, ``cosine``, ...).
        warmup_ratio: share of the steps spent warming the learning rate up from 0; it
            keeps a fresh optimiser's first, noisy steps from undoing what SFT taught.
        beta: KL coefficient against the starting model (0 drops the reference model).
        loss_type: TRL loss, one of :data:`LOSS_TYPES` (``dapo``, ``grpo``, ``dr_grpo``, ...).
        num_iterations: optimiser passes over each generated batch (the μ of GRPO); above 1
            the policy ratio is clipped, and each rollout buys more updates.
        steps_per_generation: optimiser steps per generated batch; each generation samples
            ``steps_per_generation * prompts_per_step`` problems and splits them into steps.
        epsilon_high: upper clipping bound of the policy ratio (DAPO's clip-higher, e.g.
            0.28); ``None`` clips symmetrically at 0.2. It matters only where the policy
            has moved since generation (``num_iterations`` or ``steps_per_generation`` above 1).
        top_entropy_quantile: share of completion tokens, those of highest entropy, that
            carry the policy loss (1 keeps all; the "80/20" paper uses 0.2). It keeps the
            gradient on the forks where the policy chooses, not on tokens it is sure of.
        entropy_coef: weight of an entropy bonus in the loss (0 turns it off).
        resample_rounds: DAPO's dynamic sampling (step path): a group whose episodes all
            score alike has zero advantage and gives no gradient, so up to this many times
            a step each such group is replaced by a fresh training problem and played
            again (0 turns it off). Replacements come from past the data set's problems.
        sft_coef: weight of a supervised loss on fresh oracle traces of training problems,
            added to every step's loss (InstructGPT's PPO-ptx). It anchors the policy to
            the skills SFT taught while GRPO moves it (0 turns it off); logged as ``sft_loss``.
        sft_style: trace style of those traces (as in the SFT data).
        sft_batch_size: traces in each step's supervised batch.
        logging_steps: steps between logged metrics.
        save_steps: steps between checkpoints.
        save_total_limit: checkpoints kept.
        samples_to_log: completions written to TensorBoard at each log.
        resume: continue from the newest checkpoint in ``output_dir``.
        use_vllm: generate with vLLM (GPU only; single-turn path).
        bf16: use bfloat16 on a GPU (ignored on the CPU).
        gradient_checkpointing: recompute activations in the backward pass, which saves
            memory on large models at about a third more compute (TRL's default is on,
            which only slows the small presets).
    """

    task: str = "countdown"
    task_config: dict[str, Any] = field(default_factory=dict)
    model: str = "runs/sft/final"
    output_dir: str = "runs/grpo"
    interaction: str = "completion"
    backtrack: bool = True
    reward_weights: dict[str, float] = field(default_factory=lambda: {"correct": 1.0})
    n_prompts: int = 2000
    first_index: int = 0
    seed: int = 0
    max_steps: int = 100
    prompts_per_step: int = 8
    num_generations: int = 8
    max_completion_length: int = 128
    max_env_steps: int = 32
    temperature: float = 1.0
    learning_rate: float = 5e-5
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.0
    beta: float = 0.0
    loss_type: str = "dapo"
    num_iterations: int = 1
    steps_per_generation: int = 1
    epsilon_high: float | None = None
    top_entropy_quantile: float = 1.0
    entropy_coef: float = 0.0
    resample_rounds: int = 0
    sft_coef: float = 0.0
    sft_style: str = "direct"
    sft_batch_size: int = 32
    logging_steps: int = 5
    save_steps: int = 50
    save_total_limit: int = 2
    samples_to_log: int = 4
    resume: bool = False
    use_vllm: bool = False
    bf16: bool = False
    gradient_checkpointing: bool = False

    def validate(self) -> GRPORunConfig:
        from backtrack_gym.rewards import check_weights
        from backtrack_gym.train.models import check_model_source

        check_interaction(self.interaction)
        task = check_task(self.task, self.task_config)
        if self.num_generations < 2:
            raise ValueError("num_generations must be at least 2 (GRPO compares completions within a group)")
        check_at_least(self, 1, "n_prompts", "max_steps", "prompts_per_step", "max_completion_length")
        check_at_least(self, 1, "max_env_steps", "num_iterations", "steps_per_generation", "sft_batch_size")
        check_at_least(self, 1, "logging_steps", "save_steps", "save_total_limit")
        check_at_least(self, 0, "first_index", "seed", "resample_rounds", "samples_to_log")
        check_at_least(self, 0, "beta", "entropy_coef", "sft_coef")
        check_positive(self, "temperature", "learning_rate", "epsilon_high")
        check_fraction(self, "warmup_ratio")
        check_fraction(self, "top_entropy_quantile", include_one=True)
        check_choice("loss_type", self.loss_type, LOSS_TYPES)
        check_choice("lr_scheduler", self.lr_scheduler, LR_SCHEDULERS)
        check_style("sft_style", self.sft_style, task)
        if self.resample_rounds and self.interaction != "step":
            raise ValueError("resample_rounds applies to the step path (interaction='step')")
        if self.use_vllm and self.interaction == "step":
            raise ValueError("use_vllm applies to the single-turn path (interaction='completion')")
        try:
            check_weights(self.reward_weights)
        except ValueError as err:
            raise ValueError(f"reward_weights: {err}") from None
        check_model_source(self.model)
        return self


def episode_settings(config: GRPORunConfig) -> dict[str, Any]:
    """The env settings both paths play and score episodes with, so a training reward is the env's return.

    ``invalid_policy="ignore"``: the reward is ``reward_weights`` alone (weight ``format`` and
    ``validity`` to charge for invalid steps), and an invalid step does not end the episode.
    """
    return {
        "backtrack": config.backtrack,
        "max_steps": config.max_env_steps,
        "invalid_policy": "ignore",
        "reward_weights": config.reward_weights,
    }


def prompt_dataset(task: Any, n: int, split: str = "train", first_index: int = 0) -> Any:
    """Rows ``prompt`` (what the model sees, as in SFT) and ``problem`` (JSON) for ``n`` items from ``first_index``."""
    import datasets

    return datasets.Dataset.from_list([prompt_row(task, index, split) for index in range(first_index, first_index + n)])


def prompt_row(task: Any, index: int, split: str = "train") -> dict[str, str]:
    """Problem ``index`` of ``split`` as a GRPO data set row (``prompt`` and ``problem``)."""
    problem = task.generate(index, split)
    return {"prompt": task.prompt(problem) + "\n", "problem": json.dumps(task.problem_to_dict(problem))}


class StepRollout:
    """A TRL ``rollout_func`` that plays the LM agent in step mode, one env per prompt entry.

    With ``resample_rounds`` it also does DAPO's dynamic sampling: groups whose episodes
    all score alike are replaced by fresh problems and played again, and the number
    replaced is logged as ``resampled_groups``. How the episodes ended is logged too
    (:func:`episode_metrics`). Sampling seeds and fresh problems are numbered by the
    trainer's global step, so a resumed run plays what the killed one would have
    played; fresh problems come from past the data set's (``first_index + n_prompts``
    on), a separate block for each step, round and process.
    """

    def __init__(self, config: GRPORunConfig, tokenizer: Any, task: Any, problems: dict[str, str]):
        self.config = config
        self.tokenizer = tokenizer
        self.task = task
        self.problems = problems

    def __call__(self, prompts: list[str], trainer: Any) -> dict[str, list[Any]]:
        config = self.config
        size = config.num_generations
        step = trainer.state.global_step
        prompts = list(prompts)
        model = trainer.accelerator.unwrap_model(trainer.model)
        was_training = model.training
        model.eval()
        try:
            # One sampling stream per (step, round, process); process 0's are the single-process streams.
            stream = step * (config.resample_rounds + 1) + (trainer.accelerator.process_index << 40)
            episodes = self._play(model, [self.problems[p] for p in prompts], stream)
            resampled = 0
            for round_ in range(config.resample_rounds):
                stale = self._uniform_groups(prompts, episodes)
                if not stale:
                    break
                resampled += len(stale)
                fresh = self._fresh_rows(trainer, round_, len(stale), groups=len(prompts) // size)
                replay = self._play(
                    model,
                    [row["problem"] for row in fresh for _ in range(size)],
                    stream + round_ + 1,
                )
                for k, start in enumerate(stale):
                    episodes[start : start + size] = replay[k * size : (k + 1) * size]
                    prompts[start : start + size] = [fresh[k]["prompt"]] * size
        finally:
            model.train(was_training)
        if config.resample_rounds:
            trainer._log_metric("resampled_groups", float(resampled))
        for name, value in episode_metrics(episodes).items():
            trainer._log_metric(name, value)
        return {
            "prompt_ids": [e.prompt_ids for e in episodes],
            "completion_ids": [e.completion_ids for e in episodes],
            "logprobs": [e.logprobs for e in episodes],
            "env_mask": [e.model_mask for e in episodes],
            INFO_COLUMN: [_plain_info(e.info) for e in episodes],
            EPISODE_PROMPT_COLUMN: prompts,
        }

    def _play(self, model: Any, problems: list[str], stream: int) -> list[Any]:
        import gymnasium as gym

        from backtrack_gym.agents.lm import LMAgent, SamplingConfig
        from backtrack_gym.envs.core import BKSP
        from backtrack_gym.train.tokenizer import action_token_ids

        config = self.config
        bksp = action_token_ids(self.tokenizer)[BKSP]

        def no_backspace(rows: list[int], tokens: list[list[int]], scores: Any) -> Any:
            scores[:, bksp] = float("-inf")
            return scores

        sampling = SamplingConfig(
            temperature=config.temperature,
            max_episode_tokens=config.max_completion_length,
            seed=config.seed * 1_000_003 + stream,
        )
        env_args = {"interaction": "step", **episode_settings(config), **config.task_config}
        envs = [gym.make(TASK_ENV_IDS[config.task], **env_args) for _ in problems]
        try:
            agent = LMAgent(model, self.tokenizer, sampling, logits_processor=no_backspace)
            return agent.rollout(envs, options=[{"problem": problem} for problem in problems])
        finally:
            for env in envs:
                env.close()

    def _fresh_rows(self, trainer: Any, round_: int, count: int, groups: int) -> list[dict[str, str]]:
        """``count`` problems past the data set's, a block of ``groups`` per (step, round, process)."""
        accelerator = trainer.accelerator
        block = (trainer.state.global_step * self.config.resample_rounds + round_) * accelerator.num_processes
        first = self.config.first_index + self.config.n_prompts + (block + accelerator.process_index) * groups
        return [prompt_row(self.task, first + k) for k in range(count)]

    def _uniform_groups(self, prompts: list[str], episodes: list[Any]) -> list[int]:
        """Start indices of the groups whose episodes all earn the same reward."""
        from backtrack_gym.rewards import score, stats_from_info

        size = self.config.num_generations
        starts = range(0, len(prompts), size)
        if len(prompts) % size or any(len(set(prompts[i : i + size])) != 1 for i in starts):
            raise ValueError(
                f"resample_rounds needs whole groups of {size} identical prompts in each rollout; "
                "run on one process or make each process's batch a multiple of num_generations"
            )
        weights = self.config.reward_weights
        return [
            i for i in starts if len({score(stats_from_info(e.info), weights) for e in episodes[i : i + size]}) == 1
        ]


class SFTAnchor:
    """Supervised batches of fresh oracle traces of training problems, for ``sft_coef``.

    Each batch is drawn from ``(seed, step, micro-step, process)``, so a resumed run sees
    the batches the killed one would have seen.
    """

    def __init__(self, config: GRPORunConfig, tokenizer: Any, task: Any):
        from backtrack_gym.train.data import trace_row

        self.config = config
        self.tokenizer = tokenizer
        self.make_row = partial(trace_row, task, config.sft_style, "train", config.seed, {}, config.interaction)
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


def grpo_trainer_class(anchor: SFTAnchor | None, step_mode: bool = False) -> type:
    """TRL's ``GRPOTrainer``, or a subclass of it for an anchor or the step path.

    With ``anchor`` it adds the anchor's supervised loss; with ``step_mode`` it drops TRL's
    eos-based completion metrics (:data:`EOS_METRICS`), which :class:`StepRollout` replaces.
    """
    from trl import GRPOTrainer

    base = GRPOTrainer
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


def episode_metrics(episodes: list[Any]) -> dict[str, float]:
    """How step-mode episodes ended, in place of TRL's eos-based completion metrics.

    ``episodes/clipped_ratio``: the share cut by the token budget (``max_completion_length``)
    before the env ended them; ``episodes/step_limit_ratio``: the share the env truncated
    at its step budget (``max_env_steps``); ``episodes/mean_terminated_length``: the mean
    completion tokens (the model's and the env's) of the episodes not clipped, left out
    when every episode was.
    """
    clipped = [e.stop_reason == "max_tokens" for e in episodes]
    metrics = {
        "episodes/clipped_ratio": sum(clipped) / len(episodes),
        "episodes/step_limit_ratio": sum(e.truncated for e in episodes) / len(episodes),
    }
    ended = [len(e.completion_ids) for e, cut in zip(episodes, clipped, strict=True) if not cut]
    if ended:
        metrics["episodes/mean_terminated_length"] = sum(ended) / len(ended)
    return metrics


def _plain_info(info: dict[str, Any]) -> dict[str, Any]:
    keys = ("steps", "valid_steps", "malformed_steps", "illegal_steps", "backtracks", "solved", "progress")
    return {key: info[key] for key in keys}


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


def grpo_model_card(config: GRPORunConfig) -> str:
    """The model card of a GRPO run: the model it started from, trained on which episodes."""
    hub_id = None if Path(config.model).exists() else config.model
    origin = f"`{config.model}` trained further on `{config.interaction}`-mode episodes"
    return model_card("GRPO", origin, config, base_model=hub_id)


def run_grpo(config: GRPORunConfig) -> Path:
    """Train and save the model (with its tokenizer) to ``<output_dir>/final``; returns that path."""
    from trl import GRPOConfig

    from backtrack_gym.envs import TextEnv, make_task
    from backtrack_gym.rewards import METRICS, episode_reward_functions, trl_reward_functions
    from backtrack_gym.train.models import load_pretrained

    config.validate()
    output = Path(config.output_dir)
    task = make_task(config.task, **{**config.task_config, "seed": config.seed})
    tokenizer, model = load_pretrained(config.model)
    dataset = prompt_dataset(task, config.n_prompts, first_index=config.first_index)
    step_mode = config.interaction == "step"
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
    checkpoint = last_checkpoint(output) if config.resume else None
    tensorboard = tensorboard_callback(output, checkpoint_step(checkpoint))
    args = GRPOConfig(
        output_dir=str(output),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.prompts_per_step * config.num_generations,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a share of the steps
        beta=config.beta,
        loss_type=config.loss_type,
        num_iterations=config.num_iterations,
        steps_per_generation=config.steps_per_generation,
        epsilon_high=config.epsilon_high,
        top_entropy_quantile=config.top_entropy_quantile,
        entropy_coef=config.entropy_coef,
        reward_weights=weights,
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        report_to=[],
        use_vllm=config.use_vllm,
        dataloader_num_workers=0,
        activation_checkpointing=config.gradient_checkpointing,
        **device_arguments(config.bf16),
    )
    anchor = SFTAnchor(config, tokenizer, task) if config.sft_coef else None
    trainer_class = with_model_card(grpo_trainer_class(anchor, step_mode), grpo_model_card(config))
    trainer = trainer_class(
        model=model,
        reward_funcs=funcs,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[tensorboard, _samples_callback(samples, tensorboard)],
        rollout_func=rollout,
    )
    train_from_checkpoint(trainer, checkpoint)

    return save_final(trainer, trainer.model, tokenizer, output, config)
