"""GRPO's settings, and how they map onto TRL's ``GRPOConfig``.

:class:`GRPOSettings` are GRPO's own (an experiment's ``grpo:`` section);
:class:`GRPORunConfig` adds what a run of the ``grpo`` command needs besides (the task,
the episodes, the starting model). :func:`grpo_arguments` builds TRL's config from
them: fields of the same meaning pass by the names in :data:`TRL_FIELDS`, the rest
come from the sections (:class:`~backtrack_gym.train.common.TrainerConfig`,
:class:`~backtrack_gym.settings.SamplingConfig`, the episode's token budget).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from backtrack_gym.config import (
    Config,
    check_at_least,
    check_choice,
    check_fraction,
    check_positive,
    check_style,
)
from backtrack_gym.settings import EpisodeConfig, SamplingConfig, TaskConfig
from backtrack_gym.train.common import TrainerConfig

# The losses of TRL's GRPOTrainer at token-level importance sampling (its ``luspo`` needs sequence level).
LOSS_TYPES = ("bnpo", "cispo", "dapo", "dr_grpo", "grpo", "sapo", "vespo")
# The GRPOSettings fields that are TRL GRPOConfig fields of the same name and meaning.
TRL_FIELDS = (
    "num_generations",
    "beta",
    "loss_type",
    "num_iterations",
    "steps_per_generation",
    "epsilon_high",
    "top_entropy_quantile",
    "entropy_coef",
    "use_vllm",
    "torch_compile",
)


def grpo_trainer_defaults() -> TrainerConfig:
    """GRPO's optimiser: 100 steps at a learning rate that keeps the SFT model's skills, checkpoints often."""
    return TrainerConfig(optimizer_steps=100, learning_rate=5e-5, logging_steps=5, save_steps=50)


@dataclass
class CurriculumSettings(Config):
    """GRPO's adaptive curriculum (step path; the rule is :mod:`backtrack_gym.envs.curriculum`'s).

    The data set's rows then only count the groups: each group plays a fresh training
    problem of the current level, and every episode's outcome is scored in the window.
    Logged as ``curriculum/level`` (the level a step played) and ``curriculum/solve_rate``.

    Attributes:
        enabled: turn the curriculum on.
        levels: the ladder, easiest first, each a mapping of the task's config fields laid
            over ``task.config``; empty: the task's default ladder.
        start_level: the level of the first step.
        window: episodes the solve rate is taken over (reasoning-gym's ``last_k``).
        success_threshold: up one level above this rate (reasoning-gym: 0.70).
        failure_threshold: down one level below this rate (reasoning-gym: 0.10).
    """

    enabled: bool = False
    levels: list[dict[str, Any]] = field(default_factory=list)
    start_level: int = 0
    window: int = 64
    success_threshold: float = 0.7
    failure_threshold: float = 0.1

    def build(self) -> Any:
        """These settings as a :class:`~backtrack_gym.envs.curriculum.CurriculumConfig`."""
        from backtrack_gym.envs.curriculum import CurriculumConfig

        # Every field but ``enabled`` is CurriculumConfig's, under its name.
        return CurriculumConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(CurriculumConfig)})


@dataclass
class GRPOSettings(Config):
    """GRPO's own settings: the groups, the loss and the reward.

    Attributes:
        trainer: the optimiser and checkpoints; ``optimizer_steps`` is the number of GRPO steps.
        sampling: how the rollouts sample.
        reward_weights: weights of the reward terms (``correct``, ``progress``, ``format``,
            ``validity``, ``length``, ``backtrack``, ``process``): the whole training reward, which is the
            env's return (see :func:`episode_settings`; invalid steps cost only through
            ``format`` and ``validity``).
        n_prompts: training problems (train split).
        prompts_per_step: distinct problems per step.
        num_generations: completions per problem (the group size G).
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
        samples_to_log: completions written to TensorBoard at each log.
        curriculum: an adaptive curriculum over the task's difficulty (step path).
        use_vllm: generate with vLLM (GPU only; single-turn path).
        torch_compile: compile the policy's and the reference model's training forward and
            backward with ``torch.compile`` (the rollout decodes uncompiled). Log-probs are
            the same up to float rounding, but the first steps pay for compiling (see
            ``bench/grpo_step_bench.py``), so it is off by default.
        reference_bf16: run the reference model, which the KL term is measured against, in
            bfloat16 instead of the policy's dtype: half its memory and, on CPUs with bf16
            matrix units (AMX) or GPUs, less time, but the KL is rounded. Only with ``beta``
            above 0.
        share_prefill: step path: encode each group's shared prompt once and copy its KV
            cache to the group's rows (the prompt is a third of a rollout's tokens). The
            episodes are the same up to float rounding.
        backspace: step path: let the rollout sample ``<bksp>`` (off: its score is set to
            -inf, the research default). The policy's, old and reference log-probabilities
            of TRL's loss are then recomputed through each episode's per-query (4D) mask
            and position ids, so they are those the agent sampled with; every model token
            carries loss, a deleted one and the ``<bksp>`` included (see
            :mod:`backtrack_gym.train.grpo_backspace` and docs/backspace.md). Needs a model
            with ``sdpa`` or ``eager`` attention; logged as ``episodes/bksp_rate``.
    """

    trainer: TrainerConfig = field(default_factory=grpo_trainer_defaults)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    reward_weights: dict[str, float] = field(default_factory=lambda: {"correct": 1.0})
    n_prompts: int = 2000
    prompts_per_step: int = 8
    num_generations: int = 8
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
    samples_to_log: int = 4
    curriculum: CurriculumSettings = field(default_factory=CurriculumSettings)
    use_vllm: bool = False
    torch_compile: bool = False
    reference_bf16: bool = False
    share_prefill: bool = True
    backspace: bool = False

    def check(self) -> None:
        from backtrack_gym.rewards import check_weights

        if self.num_generations < 2:
            raise ValueError("num_generations must be at least 2 (GRPO compares completions within a group)")
        check_at_least(self, 1, "n_prompts", "prompts_per_step", "num_iterations", "steps_per_generation")
        check_at_least(self, 1, "sft_batch_size")
        check_at_least(self, 0, "resample_rounds", "samples_to_log", "beta", "entropy_coef", "sft_coef")
        check_positive(self, "epsilon_high")
        check_fraction(self, "top_entropy_quantile", include_one=True)
        check_choice("loss_type", self.loss_type, LOSS_TYPES)
        if self.reference_bf16 and self.beta == 0:
            raise ValueError("reference_bf16 applies only with beta above 0 (beta 0 drops the reference model)")
        try:
            check_weights(self.reward_weights)
        except ValueError as err:
            raise ValueError(f"reward_weights: {err}") from None


@dataclass
class GRPORunConfig(GRPOSettings):
    """GRPO from an SFT checkpoint on generated problems, rewarded by the env's verifier.

    Attributes:
        task: the task of the training problems.
        episode: how the rollouts play: ``completion`` (TRL samples whole completions) or
            ``step`` (multi turn through the LM agent); ``max_new_tokens`` is TRL's
            ``max_completion_length``.
        model: path of the starting model (an SFT ``final/`` directory).
        output_dir: where checkpoints, TensorBoard logs and ``final/`` go.
        seed: seed of the problems, sampling and training.
        first_index: index of the first training problem; start past the SFT data so
            GRPO practises on problems the model has not memorised.
    """

    task: TaskConfig = field(default_factory=TaskConfig)
    episode: EpisodeConfig = field(default_factory=lambda: EpisodeConfig(env_steps=32, max_new_tokens=128))
    model: str = "runs/sft/final"
    output_dir: str = "runs/grpo"
    seed: int = 0
    first_index: int = 0

    def check(self) -> None:
        from backtrack_gym.train.models import check_model_source

        super().check()
        check_at_least(self, 0, "first_index", "seed")
        if self.trainer.optimizer_steps < 1:
            raise ValueError(f"trainer.optimizer_steps must be at least 1, got {self.trainer.optimizer_steps}")
        check_style("sft_style", self.sft_style, self.task.build())
        step_mode = self.episode.interaction == "step"
        if self.resample_rounds and not step_mode:
            raise ValueError("resample_rounds applies to the step path (episode.interaction='step')")
        if self.use_vllm and step_mode:
            raise ValueError("use_vllm applies to the single-turn path (episode.interaction='completion')")
        if self.backspace and not step_mode:
            raise ValueError("backspace applies to the step path (episode.interaction='step')")
        if self.curriculum.enabled:
            self.check_curriculum(step_mode)
        check_model_source(self.model)

    def check_curriculum(self, step_mode: bool) -> None:
        # TRL draws the single-turn path's prompts from the data set itself, so only the
        # step path's rollout can choose the problems a step plays.
        if not step_mode:
            raise ValueError("curriculum: applies to the step path (episode.interaction='step')")
        try:
            self.level_tasks()
        except ValueError as err:
            raise ValueError(f"curriculum: {err}") from None

    def level_tasks(self) -> list[Any]:
        """The task of each curriculum level: ``task.config`` with the level laid over it.

        A level's fields win over ``task.config``'s, which then stay the final difficulty
        evaluation scores (the curriculum experiment's ladder climbs to it).
        """
        ladder = self.curriculum.build().validate(self.task.name).ladder(self.task.name)
        tasks = []
        for number, level in enumerate(ladder):
            try:
                tasks.append(self.task.build(seed=self.seed, **level))
            except ValueError as err:
                raise ValueError(f"level {number} ({dict(level)}): {err}") from None
        return tasks


def episode_settings(config: GRPORunConfig) -> dict[str, Any]:
    """The env settings both paths play and score episodes with, so a training reward is the env's return.

    ``invalid_policy="ignore"``: the reward is ``reward_weights`` alone (weight ``format`` and
    ``validity`` to charge for invalid steps), and an invalid step does not end the episode.
    """
    return {
        **config.episode.env_settings(),
        "invalid_policy": "ignore",
        "reward_weights": config.reward_weights,
    }


def grpo_arguments(config: GRPORunConfig, **fields: Any) -> dict[str, Any]:
    """TRL ``GRPOConfig`` fields for ``config``, plus ``fields`` (what the run adds: ``output_dir``, ...)."""
    # TRL builds the reference with ``model_init_kwargs`` (the policy comes built), by default in the policy's dtype.
    reference = {"model_init_kwargs": {"dtype": "bfloat16"}} if config.reference_bf16 else {}
    return {
        **{name: getattr(config, name) for name in TRL_FIELDS},
        **dataclasses.asdict(config.sampling),
        **config.trainer.training_arguments(),
        "per_device_train_batch_size": config.prompts_per_step * config.num_generations,
        "max_completion_length": config.episode.max_new_tokens,
        "seed": config.seed,
        **reference,
        **fields,
    }
