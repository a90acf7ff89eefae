"""One training forward pass that sees what the backspacing sampler saw: the per-query (4D) mask.

A token a ``<bksp>`` deleted was visible to the slots written before its deletion and
to none after (see :mod:`backtrack_gym.agents.lm`), so a training pass reproduces the
sampler's logits only with a per-query attention mask. Each slot ``j`` of a sequence
has a ``masked_from[j]``: the first slot that no longer sees it (the sequence length
when every later slot does). :func:`per_query_mask` turns rows of ``masked_from`` into
that mask; it is the one builder both users share:

- :func:`slot_batch` pads rows of agent slots (an episode's ``input_ids``,
  ``position_ids`` and ``masked_from``), left-padded where a row starts late: step-mode
  GRPO's training forward (:mod:`backtrack_gym.train.grpo_backspace`), which lays each
  episode out in TRL's left-padded prompt, right-padded completion frame;
- :func:`replay_batch` batches finished :class:`~backtrack_gym.agents.lm.LMEpisode`
  records through it (the agent's replay: the tests' check of its log-probabilities);
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


def slot_batch(
    rows: Sequence[tuple[Sequence[int], Sequence[int], Sequence[int]]],
    width: int,
    pad_token_id: int,
    offsets: Sequence[int] | None = None,
) -> dict[str, torch.Tensor]:
    """``input_ids``, ``position_ids`` and the 4D ``attention_mask`` of rows of agent slots, padded to ``width``.

    Each row is ``(input_ids, position_ids, masked_from)`` of one sequence, as
    :class:`~backtrack_gym.agents.lm.LMEpisode` records them (``masked_from`` capped at the
    sequence's length). Row ``i`` starts at slot ``offsets[i]`` (0 by default): the slots
    before it are left padding, which, like the right padding after it, is fed
    ``pad_token_id`` at position 0 and seen by itself only, so the sequence's own slots
    see exactly what they saw unpadded. The mask is :func:`per_query_mask`'s.
    """
    import torch

    offsets = [0] * len(rows) if offsets is None else list(offsets)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    masked_from = []
    for i, ((fed, positions, until), offset) in enumerate(zip(rows, offsets, strict=True)):
        size = len(fed)
        if offset < 0 or offset + size > width:
            raise ValueError(f"row {i}: {size} slots from offset {offset} do not fit in width {width}")
        input_ids[i, offset : offset + size] = torch.tensor(list(fed), dtype=torch.long)
        position_ids[i, offset : offset + size] = torch.tensor(list(positions), dtype=torch.long)
        # A left-padding slot k is seen by query k alone (masked from k + 1 on).
        masked_from.append(list(range(1, offset + 1)) + [m + offset for m in until])
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "attention_mask": per_query_mask(masked_from, width),
    }


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
    out = slot_batch([(e.input_ids, e.position_ids, e.masked_from) for e in episodes], width, pad_token_id)
    out["labels"] = torch.full((n, width), pad_token_id, dtype=torch.long)
    out["model_mask"] = torch.zeros((n, width), dtype=torch.long)
    out["logprobs"] = torch.zeros((n, width), dtype=torch.float32)
    for i, e in enumerate(episodes):
        size, start = len(e.input_ids), len(e.prompt_ids)
        out["labels"][i, :size] = torch.tensor(e.prompt_ids + e.completion_ids)
        out["model_mask"][i, start:size] = torch.tensor(e.model_mask)
        out["logprobs"][i, start:size] = torch.tensor(e.logprobs)
    return out
