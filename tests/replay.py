"""One forward pass over finished LM-agent episodes (:class:`~backtrack_gym.agents.lm.LMEpisode`), for the tests.

A token a ``<bksp>`` deleted was visible to the tokens written before its deletion and
not after, so one training forward pass sees what the sampler saw only with a
per-query (4D) attention mask: :func:`replay_batch` builds it from the episodes'
``masked_from`` and :func:`replay_logprobs` runs that pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from backtrack_gym.agents.lm import LMEpisode


def replay_batch(episodes: Sequence[LMEpisode], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Batch ``episodes`` for one training forward pass that sees what the sampler saw.

    Returns ``input_ids``, ``position_ids`` and a float ``attention_mask`` of shape
    ``(batch, 1, T, T)`` (0 where a query sees a key, the dtype's minimum elsewhere:
    causal, and a deleted token only up to its deletion), right-padded to the
    longest; plus ``labels`` (prompt and completion ids, pad where padded),
    ``model_mask`` (1 on model tokens) and ``logprobs`` (the sampler's), aligned with
    ``labels``. Logits at slot ``t`` predict ``labels[t + 1]``.
    """
    n, width = len(episodes), max(len(e.input_ids) for e in episodes)
    out = {
        "input_ids": torch.full((n, width), pad_token_id, dtype=torch.long),
        "position_ids": torch.zeros((n, width), dtype=torch.long),
        "labels": torch.full((n, width), pad_token_id, dtype=torch.long),
        "model_mask": torch.zeros((n, width), dtype=torch.long),
        "logprobs": torch.zeros((n, width), dtype=torch.float32),
    }
    visible = torch.zeros((n, width, width), dtype=torch.bool)
    steps = torch.arange(width)
    for i, e in enumerate(episodes):
        size, start = len(e.input_ids), len(e.prompt_ids)
        out["input_ids"][i, :size] = torch.tensor(e.input_ids)
        out["position_ids"][i, :size] = torch.tensor(e.position_ids)
        out["labels"][i, :size] = torch.tensor(e.prompt_ids + e.completion_ids)
        out["model_mask"][i, start:size] = torch.tensor(e.model_mask)
        out["logprobs"][i, start:size] = torch.tensor(e.logprobs)
        until = torch.tensor(e.masked_from)  # key j is seen by queries j .. masked_from[j] - 1
        query, key = steps[:size, None], steps[None, :size]
        visible[i, :size, :size] = (key <= query) & (query < until[None, :])
        visible[i, size:, size:] = torch.eye(width - size, dtype=torch.bool)  # padding sees itself: no empty row
    mask = torch.zeros((n, 1, width, width), dtype=torch.float32)
    out["attention_mask"] = mask.masked_fill(~visible[:, None], torch.finfo(torch.float32).min)
    return out


def replay_logprobs(
    model: PreTrainedModel, episodes: Sequence[LMEpisode], *, temperature: float = 1.0
) -> list[list[float]]:
    """Each episode's completion log-probabilities recomputed in one forward pass (0.0 on env tokens).

    They equal :attr:`LMEpisode.logprobs` up to float error: the check that a
    trainer's forward pass sees what the sampler saw.
    """
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    batch = replay_batch(episodes, pad)
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device=device, dtype=model.dtype),
            position_ids=batch["position_ids"].to(device),
        ).logits.float()
    logprobs = torch.log_softmax(logits[:, :-1] / temperature, dim=-1)
    picked = logprobs.gather(2, batch["labels"][:, 1:, None].to(device)).squeeze(2).cpu()
    picked = picked * batch["model_mask"][:, 1:]
    return [picked[i, len(e.prompt_ids) - 1 : len(e.input_ids) - 1].tolist() for i, e in enumerate(episodes)]
