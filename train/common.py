"""What the trainers share: devices, atomic model saving, checkpoints, TensorBoard."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

TENSORBOARD_DIR = "tensorboard"
FINAL_DIR = "final"


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def device_arguments(bf16: bool = False) -> dict[str, Any]:
    """Training-argument fields for this machine: the CPU (fp32) unless a GPU is there."""
    gpu = on_gpu()
    return {"use_cpu": not gpu, "bf16": bool(bf16 and gpu)}


def atomic_save_dir(target: str | os.PathLike, save: Callable[[Path], None]) -> Path:
    """Call ``save(tmp_dir)`` then swap the directory into place, so ``target`` is never half written."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        save(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def last_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest complete ``checkpoint-N`` in ``output_dir``, or None."""
    from transformers.trainer_utils import get_last_checkpoint

    path = Path(output_dir)
    return get_last_checkpoint(str(path)) if path.is_dir() else None


def checkpoint_step(checkpoint: str | None) -> int:
    return int(Path(checkpoint).name.rsplit("-", 1)[1]) if checkpoint else 0


def tensorboard_callback(output_dir: str | os.PathLike, resume_step: int) -> Any:
    """A TensorBoard callback writing to ``<output_dir>/tensorboard``.

    One fixed directory keeps a resumed run on the same curve; ``purge_step`` makes
    TensorBoard drop what the killed run logged after its last checkpoint's step, so each
    step appears once.
    """
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    log_dir = Path(output_dir) / TENSORBOARD_DIR
    # The checkpoint holds step ``resume_step``; anything logged for a later step is stale.
    writer = SummaryWriter(log_dir=str(log_dir), purge_step=resume_step + 1 if resume_step else None)
    return TensorBoardCallback(tb_writer=writer)


def save_final(trainer: Any, model: Any, tokenizer: Any, output_dir: str | os.PathLike, config: Any) -> Path:
    """Write ``model``, ``tokenizer`` and ``config`` (a dataclass, as JSON) to ``<output_dir>/final`` atomically.

    Under ``accelerate`` every process trains and the main one writes.
    """
    import dataclasses
    import json

    def save(path: Path) -> None:
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        text = json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True)
        (path / f"{type(config).__name__}.json").write_text(text)

    final_dir = Path(output_dir) / FINAL_DIR
    if trainer.is_world_process_zero():
        atomic_save_dir(final_dir, save)
    trainer.accelerator.wait_for_everyone()
    return final_dir
