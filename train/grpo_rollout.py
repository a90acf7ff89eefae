"""GRPO's rollouts: the prompt data set, and the step-mode ``rollout_func`` that plays the LM agent in the envs.

Every generation of a group sees the same problem: TRL repeats each prompt
``num_generations`` times and the rollout pins each env to its prompt's problem.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from backtrack_gym.envs import TASK_ENV_IDS
from backtrack_gym.envs.terms import SEARCH_COUNTS
from backtrack_gym.train.grpo_config import GRPORunConfig, episode_settings

INFO_COLUMN = "episode_info"
EPISODE_PROMPT_COLUMN = "episode_prompt"  # the prompt each episode played, after resampling
# With ``backspace``: each episode's slots as the agent fed them (LMEpisode's fields of these names),
# which the trainer needs to recompute log-probabilities through the per-query mask.
SLOT_COLUMNS = ("input_ids", "position_ids", "masked_from")


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

    With ``curriculum.enabled`` each group plays a fresh problem of the curriculum's level
    instead of its data set row (a block of ``groups`` per step and process from
    ``first_index``, in the level's own stream), and every episode's outcome moves the
    level by :class:`~backtrack_gym.envs.curriculum.Curriculum`'s rule; ``curriculum/level``
    and ``curriculum/solve_rate`` are logged. Its state is :attr:`curriculum`, saved with
    each checkpoint (see :mod:`.grpo`).

    ``<bksp>`` is never sampled unless ``backspace`` is on; then the output also holds each
    episode's slots (:data:`SLOT_COLUMNS`, as ``slot_<name>``) for
    :mod:`.grpo_backspace`'s trainer, and ``episodes/bksp_rate`` (the share of the model's
    tokens that are ``<bksp>``) is logged.
    """

    def __init__(self, config: GRPORunConfig, tokenizer: Any, task: Any, problems: dict[str, str]):
        from backtrack_gym.envs.core import BKSP, action_token_ids
        from backtrack_gym.envs.curriculum import Curriculum

        self.config = config
        self.tokenizer = tokenizer
        self.bksp_id = action_token_ids(tokenizer)[BKSP]
        self.task = task
        self.problems = problems
        self.curriculum = None
        if config.curriculum.enabled:
            settings = config.curriculum.build()
            self.ladder = settings.ladder(config.task.name)
            self.level_tasks = config.level_tasks()
            self.curriculum = Curriculum(settings, len(self.ladder))

    def __call__(self, prompts: list[str], trainer: Any) -> dict[str, list[Any]]:
        config = self.config
        size = config.num_generations
        step = trainer.state.global_step
        prompts = list(prompts)
        # The rollout decodes uncompiled: torch_compile is for the training forward's fixed shapes.
        model = trainer.accelerator.unwrap_model(trainer.model, keep_torch_compile=False)
        was_training = model.training
        model.eval()
        level = None
        if self.curriculum is not None:
            if trainer.accelerator.num_processes > 1:
                # Each process would move its own level on its own episodes.
                raise ValueError("curriculum runs on one process (its level is not shared across processes)")
            level = self.curriculum.level
            rows = self._level_rows(trainer, len(prompts) // size)
            prompts = [row["prompt"] for row in rows for _ in range(size)]
            problems = [row["problem"] for row in rows for _ in range(size)]
        else:
            problems = [self.problems[p] for p in prompts]
        try:
            # One sampling stream per (step, round, process); process 0's are the single-process streams.
            stream = step * (config.resample_rounds + 1) + (trainer.accelerator.process_index << 40)
            episodes = self._play(model, problems, stream)
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
        metrics = episode_metrics(episodes)
        if config.backspace:
            metrics["episodes/bksp_rate"] = bksp_rate(episodes, self.bksp_id)
        for name, value in metrics.items():
            trainer._log_metric(name, value)
        if self.curriculum is not None:
            self.curriculum.record_many([bool(e.info["solved"]) for e in episodes])
            trainer._log_metric("curriculum/level", float(level))
            trainer._log_metric("curriculum/solve_rate", float(self.curriculum.last_rate))
        return {
            **episode_columns(episodes, slots=config.backspace),
            INFO_COLUMN: [_plain_info(e.info) for e in episodes],
            EPISODE_PROMPT_COLUMN: prompts,
        }

    def _play(self, model: Any, problems: list[str], stream: int) -> list[Any]:
        import gymnasium as gym

        from backtrack_gym.agents.lm import DecodeConfig, LMAgent

        config = self.config
        bksp = self.bksp_id

        def no_backspace(rows: list[int], tokens: list[list[int]], scores: Any) -> Any:
            scores[:, bksp] = float("-inf")
            return scores

        decoding = DecodeConfig(
            **dataclasses.asdict(config.sampling),
            seed=config.seed * 1_000_003 + stream,
            share_prefill=config.share_prefill,
        )
        level = {} if self.curriculum is None else self.ladder[self.curriculum.level]
        env_args = {"interaction": "step", **episode_settings(config), **config.task.config, **level}
        envs = [gym.make(TASK_ENV_IDS[config.task.name], **env_args) for _ in problems]
        try:
            agent = LMAgent(
                model,
                self.tokenizer,
                decoding,
                max_new_tokens=config.episode.max_new_tokens,
                logits_processor=None if config.backspace else no_backspace,
            )
            return agent.rollout(envs, options=[{"problem": problem} for problem in problems])
        finally:
            for env in envs:
                env.close()

    def _fresh_rows(self, trainer: Any, round_: int, count: int, groups: int) -> list[dict[str, str]]:
        """``count`` problems past the data set's, a block of ``groups`` per (step, round, process)."""
        accelerator = trainer.accelerator
        block = (trainer.state.global_step * self.config.resample_rounds + round_) * accelerator.num_processes
        first = self.config.first_index + self.config.n_prompts + (block + accelerator.process_index) * groups
        return [prompt_row(self._level_task(), first + k) for k in range(count)]

    def _level_task(self) -> Any:
        return self.task if self.curriculum is None else self.level_tasks[self.curriculum.level]

    def _level_rows(self, trainer: Any, groups: int) -> list[dict[str, str]]:
        """A problem of the current level for each of ``groups`` groups, a block per (step, process)."""
        accelerator = trainer.accelerator
        block = trainer.state.global_step * accelerator.num_processes + accelerator.process_index
        first = self.config.first_index + block * groups
        return [prompt_row(self._level_task(), first + k) for k in range(groups)]

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


def episode_metrics(episodes: list[Any]) -> dict[str, float]:
    """How step-mode episodes ended, in place of TRL's eos-based completion metrics.

    ``episodes/clipped_ratio``: the share cut by the token budget (``episode.max_new_tokens``)
    before the env ended them; ``episodes/step_limit_ratio``: the share the env truncated
    at its step budget (``episode.env_steps``); ``episodes/mean_terminated_length``: the mean
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


def episode_columns(episodes: list[Any], slots: bool = False) -> dict[str, list[Any]]:
    """The ``rollout_func`` output TRL reads of ``episodes`` (:class:`~backtrack_gym.agents.lm.LMEpisode`).

    ``prompt_ids``, ``completion_ids`` and ``logprobs`` (TRL's required keys) and
    ``env_mask`` (1 on the model's tokens: TRL attends to the env's but puts no loss on
    them); with ``slots`` also ``slot_input_ids``, ``slot_position_ids`` and
    ``slot_masked_from`` (:data:`SLOT_COLUMNS`), which the backspace trainer
    (:mod:`.grpo_backspace`) takes out before TRL scores the batch.
    """
    columns = {
        "prompt_ids": [e.prompt_ids for e in episodes],
        "completion_ids": [e.completion_ids for e in episodes],
        "logprobs": [e.logprobs for e in episodes],
        "env_mask": [e.model_mask for e in episodes],
    }
    if slots:
        columns |= {f"slot_{name}": [getattr(e, name) for e in episodes] for name in SLOT_COLUMNS}
    return columns


def bksp_rate(episodes: list[Any], bksp_id: int) -> float:
    """The share of the episodes' model tokens that are ``<bksp>`` (0 when they wrote none)."""
    written = [t for e in episodes for t, m in zip(e.completion_ids, e.model_mask, strict=True) if m]
    return written.count(bksp_id) / len(written) if written else 0.0


def _plain_info(info: dict[str, Any]) -> dict[str, Any]:
    keys = ("steps", "valid_steps", "malformed_steps", "illegal_steps", "backtracks", "solved", "progress")
    # The dead-end counts too (the process reward term is scored from them); 0 where an info has none.
    return {key: info[key] for key in keys} | {name: info.get(name, 0) for name in SEARCH_COUNTS}
