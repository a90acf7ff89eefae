"""One training forward pass that sees what the backspacing sampler saw: the per-query (4D) mask.

A token a ``<bksp>`` deleted was visible to the slots written before its deletion and
to none after (see :mod:`backtrack_gym.agents.lm`), so a training pass reproduces the
sampler's logits only with a per-query attention mask. Each slot ``j`` of a sequence
has a ``masked_from[j]``: the first slot that no longer sees it (the sequence length
when every later slot does). :func:`per_query_mask` turns rows of ``masked_from`` into
that mask; it is the one builder both users share:

- :func:`replay_batch` batches finished :class:`~backtrack_gym.agents.lm.LMEpisode`
  records (the agent's replay: RL on its own episodes, the tests' check of its
  log-probabilities);
- the backspace-augmented SFT collator (:mod:`backtrack_gym.train.backspace`) batches
  token sequences, whose slots :func:`backspace_slots` lays out as the agent would
  have fed them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from backtrack_gym.agents.lm import LMEpisode


def per_query_mask(masked_from: Sequence[Sequence[int]], width: int) -> torch.Tensor:
    """The float attention mask ``(rows, 1, width, width)`` of rows of ``masked_from``, right-padded.

    Query ``q`` sees key ``k`` when ``k <= q < masked_from[k]`` (causal, and a deleted
    token only up to its deletion): 0 there, the float32 minimum elsewhere. A padding
    slot sees only itself, so no row of the mask is empty.
    """
    import torch

    visible = torch.zeros((len(masked_from), width, width), dtype=torch.bool)
    steps = torch.arange(width)
    for i, row in enumerate(masked_from):
        size = len(row)
        until = torch.tensor(list(row), dtype=torch.long)  # key k is seen by queries k .. masked_from[k] - 1
        query, key = steps[:size, None], steps[None, :size]
        visible[i, :size, :size] = (key <= query) & (query < until[None, :])
        visible[i, size:, size:] = torch.eye(width - size, dtype=torch.bool)
    mask = torch.zeros((len(masked_from), 1, width, width), dtype=torch.float32)
    return mask.masked_fill(~visible[:, None], torch.finfo(torch.float32).min)


def backspace_slots(tokens: Sequence[int], bksp_id: int) -> tuple[list[int], list[int], list[int]]:
    """What :class:`~backtrack_gym.agents.lm.LMAgent` feeds for the token sequence ``tokens``.

    Returns ``(input_ids, position_ids, masked_from)``, one entry per token. Every
    ``<bksp>`` deletes the last kept token, which the agent does when that token belongs
    to the action being written (always so in backspace-augmented data: the wrong token
    sits right before its ``<bksp>``): the deleted token and the last kept token before
    it are masked from the ``<bksp>`` slot on, the slot is fed that kept token again at
    its position, and the positions then continue from the kept length. A ``<bksp>``
    with fewer than two kept tokens before it is a ``ValueError`` (the agent would
    delete nothing there).
    """
    size = len(tokens)
    fed: list[int] = []
    position: list[int] = []
    masked_from: list[int] = []
    visible: list[int] = []  # kept slots, in order
    next_position = 0
    for slot, token in enumerate(tokens):
        if token == bksp_id:
            if len(visible) < 2:
                raise ValueError(f"tokens: the <bksp> at {slot} has no kept token to delete and none to re-feed")
            masked_from[visible.pop()] = slot
            last = visible.pop()
            masked_from[last] = slot
            fed.append(fed[last])
            position.append(position[last])
            next_position = position[last] + 1
        else:
            fed.append(token)
            position.append(next_position)
            next_position += 1
        masked_from.append(size)
        visible.append(slot)
    return fed, position, masked_from


def replay_batch(episodes: Sequence[LMEpisode], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Batch ``episodes`` for one training forward pass that sees what the sampler saw.

    Returns ``input_ids``, ``position_ids`` and the float ``attention_mask`` of
    :func:`per_query_mask` (``(batch, 1, T, T)``), right-padded to the longest; plus
    ``labels`` (prompt and completion ids, pad where padded), ``model_mask`` (1 on
    model tokens) and ``logprobs`` (the sampler's), aligned with ``labels``. Logits at
    slot ``t`` predict ``labels[t + 1]``.
    """
    import torch

    n, width = len(episodes), max(len(e.input_ids) for e in episodes)
    out = {
        "input_ids": torch.full((n, width), pad_token_id, dtype=torch.long),
        "position_ids": torch.zeros((n, width), dtype=torch.long),
        "labels": torch.full((n, width), pad_token_id, dtype=torch.long),
        "model_mask": torch.zeros((n, width), dtype=torch.long),
        "logprobs": torch.zeros((n, width), dtype=torch.float32),
    }
    for i, e in enumerate(episodes):
        size, start = len(e.input_ids), len(e.prompt_ids)
        out["input_ids"][i, :size] = torch.tensor(e.input_ids)
        out["position_ids"][i, :size] = torch.tensor(e.position_ids)
        out["labels"][i, :size] = torch.tensor(e.prompt_ids + e.completion_ids)
        out["model_mask"][i, start:size] = torch.tensor(e.model_mask)
        out["logprobs"][i, start:size] = torch.tensor(e.logprobs)
    out["attention_mask"] = per_query_mask([e.masked_from for e in episodes], width)
    return out
