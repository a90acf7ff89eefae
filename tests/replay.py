"""One forward pass over finished LM-agent episodes (:class:`~backtrack_gym.agents.lm.LMEpisode`), for the tests.

A token a ``<bksp>`` deleted was visible to the tokens written before its deletion and
not after, so one training forward pass sees what the sampler saw only with a
per-query (4D) attention mask: :func:`~backtrack_gym.agents.replay.replay_batch` builds it
from the episodes' ``masked_from`` (the one mask builder SFT shares) and
:func:`replay_logprobs` runs that pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from backtrack_gym.agents.replay import replay_batch

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from backtrack_gym.agents.lm import LMEpisode

__all__ = ["replay_batch", "replay_logprobs"]


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
