"""The one KV-cache decoder and sampler that every model-driven agent decodes with.

:class:`KVCacheDecoder` holds a batch's KV cache and an attention mask over every
cache column. Each :meth:`~KVCacheDecoder.forward` feeds each row its new tokens at
the positions it is given, left-padded into one block, and returns the logits of the
block's last column only (``logits_to_keep=1``). :meth:`~KVCacheDecoder.hide` masks
a column for every later query: that is how a ``<bksp>`` deletes a token without
re-encoding anything (see :mod:`backtrack_gym.agents.lm`).

:func:`sample` draws one token per row: temperature, an optional logits processor,
top-k, top-p, or greedy. The log-probability it returns is that of the model's full
softmax at the sampling temperature, ``log_softmax(logits / temperature)``, taken
before any processor, top-k or top-p (what TRL's GRPO computes for its ratio).

:func:`sample_continuations` is the plain loop over both: left-padded prompts, each
continued until it writes a stop token or the token budget is spent. The
self-backtracking search's expander and the verifiable-backtracking sampler use it;
:class:`~backtrack_gym.agents.lm.LMAgent` drives the decoder itself, since it feeds
the env's observations and backspaces between samples.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from backtrack_gym.settings import SamplingConfig


class KVCacheDecoder:
    """One batch's KV cache and its attention mask over every cache column.

    Args:
        model: a causal LM taking a ``cache`` (the KV cache), a 2D ``attention_mask``,
            ``position_ids`` and ``logits_to_keep`` (every HF decoder does).
        pad_id: the token fed where a row has nothing to feed (masked).
        size: rows in the batch.
    """

    def __init__(self, model: PreTrainedModel, pad_id: int, size: int):
        import torch

        self.model = model
        self.pad_id = pad_id
        self.device = next(model.parameters()).device
        self.mask = torch.zeros((size, 64), dtype=torch.long, device=self.device)  # doubled as needed
        self.length = 0
        self.cache = None

    def hide(self, row: int, column: int) -> None:
        """Mask cache column ``column`` of ``row`` for every query from now on."""
        self.mask[row, column] = 0

    def forward(
        self,
        tokens: Sequence[Sequence[int]],
        positions: Sequence[Sequence[int]],
        pad_positions: Sequence[int],
        *,
        share_rows: bool = False,
    ) -> tuple[list[int], torch.Tensor]:
        """Feed each row its ``tokens`` at ``positions``, left-padded into one block.

        A row's pads sit at its ``pad_positions`` entry (any position: they are masked).
        Returns the cache column of each row's first new token and the logits of the
        block's last column, float32 ``[rows, vocab]``.

        With ``share_rows``, on the first forward (an empty cache), rows fed the same
        tokens at the same positions are computed once and their KV cache and logits
        copied to each of them: a GRPO group's generations share one prompt. The result
        is the same up to float rounding (the matmuls see fewer rows).
        """
        import torch

        if share_rows and self.cache is None:
            return self._forward_shared(tokens, positions, pad_positions)
        width = max(len(row) for row in tokens)
        ids, position_ids, new_mask, starts = [], [], [], []
        for row, row_positions, pad_position in zip(tokens, positions, pad_positions, strict=True):
            pads = width - len(row)
            ids.append([self.pad_id] * pads + list(row))
            position_ids.append([pad_position] * pads + list(row_positions))
            new_mask.append([0] * pads + [1] * len(row))
            starts.append(self.length + pads)
        end = self.length + width
        if end > self.mask.shape[1]:
            grown = torch.zeros((len(tokens), 2 * end), dtype=self.mask.dtype, device=self.device)
            grown[:, : self.length] = self.mask[:, : self.length]
            self.mask = grown
        self.mask[:, self.length : end] = torch.tensor(new_mask, device=self.device)
        self.length = end
        out = self.model(
            input_ids=torch.tensor(ids, device=self.device),
            attention_mask=self.mask[:, :end],
            position_ids=torch.tensor(position_ids, device=self.device),
            cache=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.cache = out.cache
        return starts, out.logits[:, -1].float()

    def _forward_shared(
        self, tokens: Sequence[Sequence[int]], positions: Sequence[Sequence[int]], pad_positions: Sequence[int]
    ) -> tuple[list[int], torch.Tensor]:
        import torch

        firsts: dict[tuple, int] = {}  # (tokens, positions, pad position) -> index among the distinct rows
        source = [
            firsts.setdefault((tuple(row), tuple(at), pad), len(firsts))
            for row, at, pad in zip(tokens, positions, pad_positions, strict=True)
        ]
        if len(firsts) == len(tokens):
            return self.forward(tokens, positions, pad_positions)
        distinct = list(firsts)
        # The distinct rows decode as a batch of their own, then every row takes its source's cache.
        self.mask = self.mask[[source.index(k) for k in range(len(distinct))]]
        starts, logits = self.forward([d[0] for d in distinct], [d[1] for d in distinct], [d[2] for d in distinct])
        rows = torch.tensor(source, device=self.device)
        self.cache.batch_select_indices(rows)
        self.mask = self.mask[rows]
        return [starts[k] for k in source], logits[rows]


def sample(
    logits: torch.Tensor,
    sampling: SamplingConfig,
    *,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    logits_processor: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row of ``logits`` (``[rows, vocab]``) and its log-probability.

    The log-probability is ``log_softmax(logits / temperature)`` at the token. The
    ``logits_processor`` gets the temperature-scaled scores (it may change them in
    place) before top-k and top-p; ``greedy`` takes the argmax of what it returns
    (top-k and top-p never change the argmax). ``generator`` drives the draw (None:
    torch's default one).
    """
    import torch

    scores = logits / sampling.temperature
    logprobs = torch.log_softmax(scores, dim=-1)
    if logits_processor is not None:
        scores = logits_processor(scores)
    if greedy:
        tokens = scores.argmax(dim=-1)
    else:
        scores = top_k_top_p(scores, sampling.top_k, sampling.top_p)
        tokens = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator).squeeze(1)
    return tokens, logprobs.gather(1, tokens[:, None]).squeeze(1)


def top_k_top_p(scores: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """``scores`` with every token outside the top-k and the top-p nucleus set to -inf."""
    import torch

    if 0 < top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, -torch.inf)
    if top_p < 1.0:
        ordered, order = torch.sort(scores, dim=-1, descending=True)
        cumulative = torch.softmax(ordered, dim=-1).cumsum(dim=-1)
        # Drop a token when the ones before it already reach top_p (the first always stays).
        drop = cumulative - torch.softmax(ordered, dim=-1) >= top_p
        scores = scores.masked_fill(drop.scatter(1, order, drop), -torch.inf)
    return scores


@dataclass
class Sampled:
    """One continuation from :func:`sample_continuations`.

    Attributes:
        token_ids: the sampled tokens, up to and including the first stop token (if any).
        logprobs: each token's log-probability under the temperature-scaled softmax.
        model_logprobs: each token's log-probability under the model's own softmax
            (temperature 1).
    """

    token_ids: list[int]
    logprobs: list[float]
    model_logprobs: list[float]


def sample_continuations(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    *,
    pad_id: int,
    stop_ids: Collection[int],
    max_new_tokens: int,
    sampling: SamplingConfig,
    generator: torch.Generator,
) -> list[Sampled]:
    """Continue every prompt (token ids) in one batch; one :class:`Sampled` per prompt.

    A continuation ends at its first token in ``stop_ids`` or at ``max_new_tokens``.
    Every row is sampled until the last one stops (the tokens after a row's stop are
    dropped), as ``generate`` does, so each row's draws depend only on the generator's
    state and the batch, not on when the other rows stopped.
    """
    import torch

    if max_new_tokens < 1 or not all(prompts):
        raise ValueError("sample_continuations needs max_new_tokens >= 1 and a token in every prompt")
    decoder = KVCacheDecoder(model, pad_id, len(prompts))
    stops = torch.tensor(sorted(stop_ids), device=decoder.device)
    stopped = torch.zeros(len(prompts), dtype=torch.bool, device=decoder.device)
    tokens = [list(prompt) for prompt in prompts]
    positions = [list(range(len(prompt))) for prompt in prompts]
    steps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            _, logits = decoder.forward(tokens, positions, [0] * len(prompts))
            token, logprob = sample(logits, sampling, generator=generator)
            model_logprob = torch.log_softmax(logits, dim=-1).gather(1, token[:, None]).squeeze(1)
            steps.append((token, logprob, model_logprob))
            stopped |= torch.isin(token, stops)
            if bool(stopped.all()):
                break
            tokens = [[t] for t in token.tolist()]
            positions = [[row[-1] + 1] for row in positions]
    token_rows, logprob_rows, model_rows = (torch.stack(column, 1).tolist() for column in zip(*steps, strict=True))
    out = []
    for row_tokens, row_logprobs, row_model in zip(token_rows, logprob_rows, model_rows, strict=True):
        end = next((k + 1 for k, token in enumerate(row_tokens) if token in stop_ids), len(row_tokens))
        out.append(Sampled(row_tokens[:end], row_logprobs[:end], row_model[:end]))
    return out
