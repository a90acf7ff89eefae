"""What the trainers share: their optimiser settings, devices, atomic model saving, checkpoints, TensorBoard."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backtrack_gym.config import Config, check_at_least, check_choice, check_fraction, check_positive

TENSORBOARD_DIR = "tensorboard"
FINAL_DIR = "final"
MODEL_CARD = "README.md"
TRAINER_STATE = "trainer_state.json"  # the Trainer's, written last in a checkpoint
CHECKPOINT_NAME = re.compile(r"checkpoint-[0-9]+")
# The transformers schedules that need no extra arguments (a test checks each is a ``SchedulerType``);
# listed here because importing transformers to ask would add seconds to every validation.
LR_SCHEDULERS = ("linear", "constant", "constant_with_warmup", "cosine", "cosine_with_restarts", "polynomial")


@dataclass
class TrainerConfig(Config):
    """How a trainer (SFT's or GRPO's) optimises and checkpoints.

    Attributes:
        optimizer_steps: optimiser steps; 0 leaves the count to the trainer (SFT: ``epochs``
            over its data).
        learning_rate: peak learning rate.
        lr_scheduler: the schedule after warm-up, one of :data:`LR_SCHEDULERS` (``linear``
            decay to 0, ``constant``, ``cosine``, ...).
        warmup_ratio: share of the steps spent warming the learning rate up from 0.
        weight_decay: AdamW weight decay.
        logging_steps: steps between logged metrics.
        save_steps: steps between checkpoints.
        save_total_limit: checkpoints kept.
        resume: continue from the newest complete checkpoint in the output directory.
        bf16: train in bfloat16 on a GPU (ignored on the CPU).
        gradient_checkpointing: recompute activations in the backward pass, which saves
            memory on large models at about a third more compute (TRL's default is on,
            which only slows the small presets).
    """

    optimizer_steps: int = 0
    learning_rate: float = 1e-3
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    logging_steps: int = 10
    save_steps: int = 200
    save_total_limit: int = 2
    resume: bool = False
    bf16: bool = False
    gradient_checkpointing: bool = False

    def check(self) -> None:
        check_at_least(self, 0, "optimizer_steps", "weight_decay")
        check_at_least(self, 1, "logging_steps", "save_steps", "save_total_limit")
        check_positive(self, "learning_rate")
        check_fraction(self, "warmup_ratio")
        check_choice("lr_scheduler", self.lr_scheduler, LR_SCHEDULERS)

    def training_arguments(self) -> dict[str, Any]:
        """These settings as fields of transformers' ``TrainingArguments`` (TRL's configs derive from it)."""
        return {
            "max_steps": self.optimizer_steps or -1,
            "learning_rate": self.learning_rate,
            "lr_scheduler_type": self.lr_scheduler,
            "warmup_steps": self.warmup_ratio,  # a float below 1 is a share of the steps
            "weight_decay": self.weight_decay,
            "logging_steps": self.logging_steps,
            "save_steps": self.save_steps,
            "save_total_limit": self.save_total_limit,
            "activation_checkpointing": self.gradient_checkpointing,
            "report_to": [],
            "dataloader_num_workers": 0,
            **device_arguments(self.bf16),
        }


# The packages whose versions decide a run's numbers (a run's JSON records them beside its seed).
RECORDED_PACKAGES = (
    "torch",
    "transformers",
    "trl",
    "peft",
    "datasets",
    "accelerate",
    "tokenizers",
    "numpy",
    "gymnasium",
)


def run_environment() -> dict[str, Any]:
    """What a result was measured with: Python, the versions of :data:`RECORDED_PACKAGES`, torch's thread count."""
    import importlib.metadata
    import platform

    import torch

    versions = {}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "packages": versions, "torch_threads": torch.get_num_threads()}


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def device_arguments(bf16: bool = False) -> dict[str, Any]:
    """Training-argument fields for this machine: the CPU (fp32) unless a GPU is there."""
    gpu = on_gpu()
    return {"use_cpu": not gpu, "bf16": bool(bf16 and gpu)}


def atomic_save_dir(target: str | os.PathLike, save: Callable[[Path], None]) -> Path:
    """Call ``save(tmp_dir)`` then swap the directory into place, so ``target`` is never half written.

    The temporary directories are named as :func:`~backtrack_gym.train.data.atomic_write`'s
    files, and those a killed process left are removed first, but only while ``target``
    exists: a kill between the two renames of the swap leaves the only copies in them.
    """
    from backtrack_gym.train.data import remove_stale_temps, temp_prefix

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        remove_stale_temps(target)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target), suffix=".tmp", dir=target.parent))
    try:
        save(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=temp_prefix(target) + "old-", suffix=".tmp", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def checkpoint_is_complete(checkpoint: str | os.PathLike) -> bool:
    """Whether the Trainer finished writing ``checkpoint``.

    The Trainer writes ``trainer_state.json`` last, so a checkpoint is complete when
    that file reads back with the directory's step; a run killed while saving leaves
    it missing or cut short.
    """
    path = Path(checkpoint)
    try:
        state = json.loads((path / TRAINER_STATE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("global_step") == checkpoint_step(path)


def last_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest complete ``checkpoint-N`` in ``output_dir``, or None.

    Prints the one it takes and each incomplete newer one it skips (a resumed run
    writes those again when it reaches their step).
    """
    path = Path(output_dir)
    if not path.is_dir():
        return None
    checkpoints = [p for p in path.iterdir() if CHECKPOINT_NAME.fullmatch(p.name) and p.is_dir()]
    for checkpoint in sorted(checkpoints, key=checkpoint_step, reverse=True):
        if checkpoint_is_complete(checkpoint):
            print(f"resuming from {checkpoint}")
            return str(checkpoint)
        print(f"skipping {checkpoint}: incomplete (its {TRAINER_STATE} is missing or unreadable)")
    return None


def checkpoint_step(checkpoint: str | os.PathLike | None) -> int:
    """The step in a ``checkpoint-N`` directory's name; 0 for None."""
    return int(Path(checkpoint).name.rsplit("-", 1)[1]) if checkpoint else 0


def train_from_checkpoint(trainer: Any, checkpoint: str | None) -> None:
    """``trainer.train(resume_from_checkpoint=checkpoint)``, except that a checkpoint of the last step is only loaded.

    Resumed from its last step the Trainer would train one step more (it checks for
    the end after a step), so a run killed after its last checkpoint would not end
    with the uninterrupted run's weights.
    """
    if checkpoint is not None:
        state = json.loads((Path(checkpoint) / TRAINER_STATE).read_text())
        max_steps = trainer.args.max_steps if trainer.args.max_steps > 0 else state["max_steps"]
        if state["global_step"] >= max_steps:
            print(f"{checkpoint} is the last step's: loading it")
            trainer._load_from_checkpoint(checkpoint)
            return
    with warnings.catch_warnings():
        # TRL reads transformers' deprecated alias at every generation; nothing of ours uses it.
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        trainer.train(resume_from_checkpoint=checkpoint)


def tensorboard_callback(output_dir: str | os.PathLike, resume_step: int) -> Any:
    """A TensorBoard callback writing to ``<output_dir>/tensorboard``, so that each step shows once.

    One fixed directory keeps a resumed run on the same curve. Every run's events
    file opens with a restart marker (``SessionLog.START``) at the first step it may
    log: 0 for a fresh run, ``resume_step + 1`` after the checkpoint of step
    ``resume_step``. TensorBoard then drops what earlier runs logged from that step
    on (the UI's loader ignores a directory's first marker, so the fresh run needs
    one too); a resumed run does not write the arguments and model config again.
    Within a run each tag is written once per step (the Trainer logs ``epoch`` again
    in its end-of-training summary). Only the main process writes, and every write is
    flushed at once, so what was logged before a checkpoint survives a kill.
    """
    from transformers.integrations import TensorBoardCallback

    log_dir = Path(output_dir) / TENSORBOARD_DIR
    purge_step = resume_step + 1 if resume_step else 0

    class ResumableTensorBoardCallback(TensorBoardCallback):
        def __init__(self) -> None:
            super().__init__()
            self.last_step: dict[str, int] = {}

        def _init_summary_writer(self, args: Any) -> None:
            self.tb_writer = self._SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not state.is_world_process_zero:
                return
            if resume_step:  # the first run wrote the arguments and model config at step 0
                if self.tb_writer is None:
                    self._init_summary_writer(args)
            else:
                super().on_train_begin(args, state, control, **kwargs)
            self.tb_writer.flush()

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            fresh = {key: value for key, value in (logs or {}).items() if self.first_write(key, state.global_step)}
            super().on_log(args, state, control, logs=fresh, **kwargs)

        def add_text(self, state: Any, tag: str, text: str) -> None:
            """Write ``text`` under ``tag`` at the current step (main process, once per step)."""
            if state.is_world_process_zero and self.tb_writer is not None and self.first_write(tag, state.global_step):
                self.tb_writer.add_text(tag, text, state.global_step)
                self.tb_writer.flush()

        def first_write(self, tag: str, step: int) -> bool:
            """Whether ``tag`` is not yet written at ``step``, noting that it now is."""
            if self.last_step.get(tag) == step:
                return False
            self.last_step[tag] = step
            return True

    return ResumableTensorBoardCallback()


def with_model_card(trainer_class: type, card: str) -> type:
    """``trainer_class`` writing ``card`` where TRL writes its model card (``<output_dir>/README.md``).

    TRL's card is a Hub model's: it names the base model by the config's hub id (None
    for a preset built from a config or a model loaded from a local directory) and
    its quick start runs a chat pipeline on ``hub_model_id``.
    """

    from backtrack_gym.train.data import atomic_write

    class CardTrainer(trainer_class):
        def create_model_card(self, *args: Any, **kwargs: Any) -> None:
            if self.is_world_process_zero():  # at every checkpoint: whole, even when a kill comes mid-write
                atomic_write(Path(self.args.output_dir) / MODEL_CARD, lambda path: path.write_text(card))

    CardTrainer.__name__ = CardTrainer.__qualname__ = trainer_class.__name__
    return CardTrainer


def model_card(trainer_name: str, origin: str, config: Any, base_model: str | None = None) -> str:
    """The model card of a run of ``config`` (a run config dataclass): what was trained from what, and how to load it.

    ``origin`` says where the weights started (a phrase); ``base_model`` is the Hub id
    of a pretrained starting model, if there was one.
    """
    metadata = "library_name: transformers\ntags:\n- backtrack-gym\n- trl\n- " + trainer_name.lower()
    if base_model:
        metadata += f"\nbase_model: {base_model}"
    return f"""---
{metadata}
---

# {Path(config.output_dir).name}

A backtrack-gym `{config.task}` model: {origin}, trained with {trainer_name} (TRL).
`{FINAL_DIR}/` holds the model, its tokenizer and the run's settings (`{type(config).__name__}.json`);
`{TENSORBOARD_DIR}/` holds the training curves.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{FINAL_DIR}")
tokenizer = AutoTokenizer.from_pretrained("{FINAL_DIR}")
```
"""


def save_final(trainer: Any, model: Any, tokenizer: Any, output_dir: str | os.PathLike, config: Any) -> Path:
    """Write ``model``, ``tokenizer`` and ``config`` (a dataclass, as JSON) to ``<output_dir>/final`` atomically.

    The tokenizer is saved so that ``AutoTokenizer`` loads it as it is
    (:func:`~backtrack_gym.train.tokenizer.save_tokenizer`). Under ``accelerate``
    every process trains and the main one writes.
    """
    from backtrack_gym.train.tokenizer import save_tokenizer

    def save(path: Path) -> None:
        model.save_pretrained(path)
        save_tokenizer(tokenizer, path)
        text = json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True)
        (path / f"{type(config).__name__}.json").write_text(text)

    final_dir = Path(output_dir) / FINAL_DIR
    if trainer.is_world_process_zero():
        atomic_save_dir(final_dir, save)
    trainer.accelerator.wait_for_everyone()
    return final_dir
