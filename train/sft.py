"""SFT warm-up on oracle traces with TRL's ``SFTTrainer``.

The data set is tokenized here: the prompt and every masked span of the completion
(the wrong steps of self-backtracking traces) get label -100, so the loss covers
only what the model should learn to write, and TRL takes the ``input_ids`` /
``labels`` columns as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backtrack_gym.config import Config, check_at_least, check_positive, check_style
from backtrack_gym.settings import EpisodeConfig, TaskConfig
from backtrack_gym.train.backspace import BackspaceConfig, SFTLossConfig
from backtrack_gym.train.common import (
    TrainerConfig,
    checkpoint_step,
    last_checkpoint,
    model_card,
    save_final,
    tensorboard_callback,
    train_from_checkpoint,
    with_model_card,
)
from backtrack_gym.train.models import check_model_source

IGNORE = -100


def sft_trainer_defaults() -> TrainerConfig:
    """SFT's optimiser: cosine decay after a 5% warm-up, with weight decay."""
    return TrainerConfig(learning_rate=1e-3, lr_scheduler="cosine", warmup_ratio=0.05, weight_decay=0.01)


@dataclass
class SFTSettings(Config):
    """SFT's own settings: the traces and how they are trained on.

    Attributes:
        style: trace style of the training data (``direct``, ``dfs``, ``mix``, ...).
        trace_options: options of the trace writer, e.g. ``{wrong_step_rate: 0.5}``
            for CountDown ``self_backtrack``.
        n_train: training traces.
        epochs: passes over the data (when ``trainer.optimizer_steps`` is 0).
        batch_size: sequences per optimiser step.
        max_length: longest sequence in tokens; longer traces are dropped (and counted).
        lora: train LoRA adapters (peft) instead of all weights.
        lora_rank: LoRA rank.
        workers: processes writing the traces.
        backspace: backspace augmentation (a wrong token, then ``<bksp>``; docs/backspace.md).
        loss: the objective: ``bc`` or ``sequencematch_chi2`` (docs/backspace.md).
        trainer: the optimiser and checkpoints.
    """

    style: str = "dfs"
    trace_options: dict[str, Any] = field(default_factory=dict)
    n_train: int = 5000
    epochs: float = 1.0
    batch_size: int = 32
    max_length: int = 512
    lora: bool = False
    lora_rank: int = 16
    workers: int = 2
    backspace: BackspaceConfig = field(default_factory=BackspaceConfig)
    loss: SFTLossConfig = field(default_factory=SFTLossConfig)
    trainer: TrainerConfig = field(default_factory=sft_trainer_defaults)

    def check(self) -> None:
        check_at_least(self, 1, "n_train", "batch_size", "max_length", "workers", "lora_rank")
        check_positive(self, "epochs")


@dataclass
class SFTRunConfig(SFTSettings):
    """SFT warm-up: build trace data, then train a model from scratch (or a HF model) on it.

    Attributes:
        task: the task whose traces are trained on.
        episode: the episodes the model is trained to play: ``interaction`` sets the trace
            form (``step`` traces carry the env's observation after each line, masked from
            the loss); the budgets are recorded for evaluation.
        model: a preset size (``tiny``, ``1M``, ``3M``, ``17M``, ``38M``, ``144M``)
            trained from scratch, or a local path / hub name of a pretrained model.
        output_dir: where checkpoints, TensorBoard logs and ``final/`` go.
        seed: seed of the data, the model's initial weights and the training order.
    """

    task: TaskConfig = field(default_factory=TaskConfig)
    episode: EpisodeConfig = field(default_factory=EpisodeConfig)
    model: str = "1M"
    output_dir: str = "runs/sft"
    seed: int = 0

    def check(self) -> None:
        super().check()
        check_at_least(self, 0, "seed")
        check_style("style", self.style, self.task.build())
        check_model_source(self.model, presets=True)


def tokenize_row(tokenizer: Any, prompt: str, completion: str, mask_spans: list[list[int]]) -> dict[str, list[int]]:
    """``input_ids`` of prompt + completion + eos, and ``labels`` with the prompt and masked spans at -100."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    labels = [IGNORE] * len(ids)
    cursor = 0
    # Tokenize the completion piece by piece at span edges (line boundaries), so a span maps to whole tokens.
    for start, end in [*mask_spans, [len(completion), len(completion)]]:
        for text, masked in ((completion[cursor:start], False), (completion[start:end], True)):
            if text:
                piece = tokenizer(text, add_special_tokens=False)["input_ids"]
                ids += piece
                labels += [IGNORE] * len(piece) if masked else piece
        cursor = end
    ids.append(tokenizer.eos_token_id)
    labels.append(tokenizer.eos_token_id)
    return {"input_ids": ids, "labels": labels}


def tokenize_dataset(dataset: Any, tokenizer: Any, max_length: int) -> tuple[Any, int]:
    """The tokenized data set and how many rows were dropped for exceeding ``max_length``."""
    tokenized = dataset.map(
        lambda row: tokenize_row(tokenizer, row["prompt"], row["completion"], row["mask_spans"]),
        remove_columns=dataset.column_names,
    )
    kept = tokenized.filter(lambda row: len(row["input_ids"]) <= max_length)
    return kept, len(tokenized) - len(kept)


def load_tokenizer_and_model(model: str, task: Any, seed: int) -> tuple[Any, Any]:
    """The task's character tokenizer and a fresh preset, or a pretrained model with its tokenizer."""
    from transformers import AutoTokenizer

    from backtrack_gym.train.models import PRESETS, build_model, hub_errors
    from backtrack_gym.train.tokenizer import build_tokenizer

    if model in PRESETS:
        tokenizer = build_tokenizer(task)
    else:
        check_model_source(model)
        with hub_errors(model):
            tokenizer = AutoTokenizer.from_pretrained(model)
    return tokenizer, build_model(model, tokenizer, seed=seed)


def sft_model_card(config: SFTRunConfig) -> str:
    """The model card of an SFT run: a preset trained from scratch, or the pretrained model it started from."""
    from backtrack_gym.train.models import PRESETS

    if config.model in PRESETS:
        return model_card("SFT", f"a `{config.model}` preset trained from scratch on `{config.style}` traces", config)
    hub_id = None if Path(config.model).exists() else config.model
    return model_card("SFT", f"`{config.model}` fine-tuned on `{config.style}` traces", config, base_model=hub_id)


def token_count_callback(trainer: Any) -> Any:
    """A callback that keeps TRL's count of trained tokens (the ``num_tokens`` curve) in each checkpoint.

    ``SFTTrainer`` counts them in memory only, so a resumed run's curve would start
    again from 0; the count travels in ``trainer_state.json`` and is put back when a
    resumed run begins.
    """
    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState

    class SFTTokenCount(TrainerCallback, ExportableState):
        def state(self) -> dict[str, Any]:
            return {"args": {}, "attributes": {"tokens": trainer._total_train_tokens}}

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            saved = state.stateful_callbacks.get(type(self).__name__)
            if saved:
                trainer._total_train_tokens = saved["attributes"]["tokens"]

    return SFTTokenCount()


def backspace_setup(config: SFTRunConfig, tokenizer: Any, train_set: Any, base: type) -> tuple[Any, Any, type]:
    """The augmented data set, its collator (the agent's 4D mask) and the trainer class of ``config.loss``."""
    from backtrack_gym.envs.core import BKSP, action_token_ids
    from backtrack_gym.train.backspace import BackspaceCollator, augment_dataset, backspace_trainer_class

    if config.backspace.rate > 0:
        sampler = None
        if config.backspace.source == "model":
            from backtrack_gym.train.models import load_pretrained

            sampler = load_pretrained(config.backspace.model)[1].eval()
            if sampler.get_output_embeddings().weight.shape[0] < len(tokenizer):
                raise ValueError(f"backspace.model: {config.backspace.model} does not share the run's tokenizer")
        train_set, inserted, eligible = augment_dataset(
            train_set, tokenizer, config.backspace, config.seed, interaction=config.episode.interaction, model=sampler
        )
        print(f"backspace: {inserted} wrong tokens and <bksp> inserted before {eligible} labelled tokens")
        size = len(train_set)
        train_set = train_set.filter(lambda row: len(row["input_ids"]) <= config.max_length)
        if len(train_set) < size:
            print(f"dropped {size - len(train_set)} augmented traces longer than {config.max_length} tokens")
    collator = BackspaceCollator(tokenizer.pad_token_id, action_token_ids(tokenizer)[BKSP])
    return train_set, collator, backspace_trainer_class(base, config.loss)


def run_sft(config: SFTRunConfig) -> Path:
    """Train and save the model (with its tokenizer) to ``<output_dir>/final``; returns that path."""
    from trl import SFTConfig, SFTTrainer

    from backtrack_gym.train.data import build_sft_dataset

    config.validate()
    output = Path(config.output_dir)
    task = config.task.build(seed=config.seed)
    tokenizer, model = load_tokenizer_and_model(config.model, task, config.seed)
    if config.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model, LoraConfig(r=config.lora_rank, lora_alpha=2 * config.lora_rank, target_modules="all-linear")
        )
    dataset = build_sft_dataset(
        task,
        config.style,
        config.n_train,
        config.seed,
        "train",
        workers=config.workers,
        progress=True,
        trace_options=config.trace_options,
        interaction=config.episode.interaction,
    )
    train_set, dropped = tokenize_dataset(dataset, tokenizer, config.max_length)
    if dropped:
        print(f"dropped {dropped} of {len(dataset)} traces longer than {config.max_length} tokens")
    collator, trainer_class = None, SFTTrainer
    if config.backspace.rate > 0 or config.loss.name != "bc":
        train_set, collator, trainer_class = backspace_setup(config, tokenizer, train_set, SFTTrainer)
    checkpoint = last_checkpoint(output) if config.trainer.resume else None
    args = SFTConfig(
        output_dir=str(output),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        max_length=config.max_length,
        seed=config.seed,
        **config.trainer.training_arguments(),
    )
    trainer = with_model_card(trainer_class, sft_model_card(config))(
        model=model,
        args=args,
        train_dataset=train_set,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[tensorboard_callback(output, checkpoint_step(checkpoint))],
    )
    trainer.add_callback(token_count_callback(trainer))
    train_from_checkpoint(trainer, checkpoint)
    final = trainer.model.merge_and_unload() if config.lora else trainer.model

    return save_final(trainer, final, tokenizer, output, config)
