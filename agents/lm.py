"""A token-level agent that lets a Hugging Face causal LM act in a batch of backtrack-gym envs.

:class:`LMAgent` decodes for a batch of envs at once with one KV cache, in both
interaction modes:

- ``step``: each turn every live env gets one line; the env's new observation is
  appended to the context in one forward pass (only the new tokens are encoded) and
  the next line is written after it.
- ``completion``: the whole output is one action, sent when the model writes eos or
  runs out of tokens.

Backspace. When the model samples ``<bksp>`` the last kept token of the action being
written (the line in step mode, the whole output in completion mode) is deleted by
attention masking, nothing is re-encoded: the deleted token gets attention mask 0,
and the ``<bksp>`` slot is fed the last kept token again at its own position (its
earlier copy is masked too). That is one ordinary decode step against the cache, and
the next-token logits are those of a fresh encode of the kept tokens; the position
ids then continue from the kept length. A ``<bksp>`` with nothing to delete deletes
nothing. ``<backtrack>`` is an ordinary token: its line goes to the env like any step.

Log-probabilities are those of the model's full softmax at the sampling temperature,
``log_softmax(logits / temperature)``, taken before top-k, top-p, eos suppression and
any ``logits_processor`` (what TRL's GRPO computes for its ratio). Because a deleted
token was visible to the tokens written before its deletion and not after, one
forward pass reproduces them only with a per-query (4D) attention mask, which
:attr:`LMEpisode.masked_from` describes. The KV cache and the sampler are those of
:mod:`backtrack_gym.agents.decoding`; the envs are batched by
:class:`~backtrack_gym.agents.env_batch.EnvBatch`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gymnasium as gym

from backtrack_gym.agents.decoding import KVCacheDecoder, sample
from backtrack_gym.agents.env_batch import EnvBatch
from backtrack_gym.config import check_at_least
from backtrack_gym.envs.core import BKSP, action_token_ids
from backtrack_gym.settings import SamplingConfig

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# (batch indices of the scored rows, their model tokens so far, scores [rows, vocab]) -> scores
LogitsProcessor = Callable[[list[int], list[list[int]], "torch.Tensor"], "torch.Tensor"]
NEVER = 1 << 62  # masked_from of a slot that stays visible


@dataclass
class DecodeConfig(SamplingConfig):
    """How :class:`LMAgent` decodes: the shared sampling settings and the agent's own.

    Attributes:
        greedy: take the most likely token instead of sampling (log-probabilities
            are still those of the temperature-scaled softmax).
        max_line_tokens: model tokens (``<bksp>`` included) a step-mode line may
            take; a line that reaches it is sent as it is.
        stop_at_eos: eos ends the episode (a pending line is sent first). When
            False, eos is never sampled (as ``min_new_tokens`` does in ``generate``).
        seed: seeds the sampler's generator; None draws from torch's default one.
        share_prefill: encode the envs' identical first observations once and copy the
            KV cache to each of their rows (a GRPO group's). Episodes are the same up to
            float rounding in the log-probabilities.
    """

    greedy: bool = False
    max_line_tokens: int = 64
    stop_at_eos: bool = True
    seed: int | None = None
    share_prefill: bool = False

    def check(self) -> None:
        super().check()
        check_at_least(self, 1, "max_line_tokens")
        check_at_least(self, 0, "seed")


@dataclass
class LMEpisode:
    """One episode played by :class:`LMAgent`: everything RL needs.

    The sequence is ``prompt_ids + completion_ids``; the per-slot lists
    ``input_ids``, ``position_ids``, ``attention_mask`` and ``masked_from`` cover it
    whole, the per-token lists ``logprobs`` and ``model_mask`` cover the completion.

    Attributes:
        prompt_ids: the tokens of the first observation.
        completion_ids: every token after the prompt in order: the model's (``<bksp>``
            and ``<backtrack>`` included) and the env's observation tokens.
        logprobs: per completion token, its log-probability under the model's
            temperature-scaled softmax when it was sampled; 0.0 for env tokens.
        model_mask: per completion token, 1 for a model token, 0 for an env token.
        input_ids: what the model was fed at each slot: the token itself, except at a
            ``<bksp>`` slot, which holds the re-fed last kept token.
        position_ids: the position of each slot (backspaces do not advance it).
        attention_mask: 1 for the slots still visible at the end (deleted tokens and
            superseded copies are 0): the kept sequence.
        masked_from: per slot, the first slot that no longer sees it (a huge number
            when every later slot does); with causality this is the 4D mask.
        lines: the text sent to the env at each step (backspaces applied).
        rewards: the env's reward at each step.
        info: the env's last ``info``.
        terminated: the env terminated the episode.
        truncated: the env truncated it.
        stop_reason: ``"env"`` (the env ended it), ``"eos"`` or ``"max_tokens"``.
    """

    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    model_mask: list[int]
    input_ids: list[int]
    position_ids: list[int]
    attention_mask: list[int]
    masked_from: list[int]
    lines: list[str]
    rewards: list[float]
    info: dict[str, Any]
    terminated: bool
    truncated: bool
    stop_reason: str

    @property
    def ret(self) -> float:
        """The episode's return (sum of rewards)."""
        return float(sum(self.rewards))

    def kept_ids(self) -> list[int]:
        """The tokens still visible at the end, in order (what a fresh encode would see)."""
        return [t for t, m in zip(self.input_ids, self.attention_mask, strict=True) if m]


@dataclass
class _Row:
    """The growing sequence of one env of the batch (record indices, not cache columns)."""

    index: int
    fed: list[int] = field(default_factory=list)
    emitted: list[int] = field(default_factory=list)
    position: list[int] = field(default_factory=list)
    column: list[int] = field(default_factory=list)  # cache column of each fed slot
    masked_from: list[int] = field(default_factory=list)
    logprob: list[float] = field(default_factory=list)
    is_model: list[int] = field(default_factory=list)
    visible: list[int] = field(default_factory=list)  # slots visible now, in order
    action: list[int] = field(default_factory=list)  # kept model slots of the action being written
    queue: list[int] = field(default_factory=list)  # slots to feed in the next forward pass
    model_tokens: list[int] = field(default_factory=list)  # emitted model token ids (for logits processors)
    next_position: int = 0
    line_tokens: int = 0
    n_prompt: int = 0
    writing: bool = True
    active: bool = True
    lines: list[str] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    terminated: bool = False
    truncated: bool = False
    stop_reason: str | None = None  # set when the episode ends

    def add(self, token: int, *, model: bool, logprob: float = 0.0, fed: int | None = None, position: int = -1) -> int:
        """Append a slot; a model token joins the pending action. Returns its index."""
        slot = len(self.fed)
        self.fed.append(token if fed is None else fed)
        self.emitted.append(token)
        self.position.append(self.next_position if position < 0 else position)
        if position < 0:
            self.next_position += 1
        self.column.append(-1)
        self.masked_from.append(NEVER)
        self.logprob.append(logprob)
        self.is_model.append(int(model))
        self.visible.append(slot)
        self.queue.append(slot)
        return slot


class LMAgent:
    """A Hugging Face causal LM as a policy over a batch of backtrack-gym envs.

    Args:
        model: any causal LM taking a ``cache`` (the KV cache), a 2D ``attention_mask``,
            ``position_ids`` and ``logits_to_keep`` (every HF decoder does).
        tokenizer: its tokenizer; must have ``<bksp>``, ``<backtrack>``, eos and pad
            (see :mod:`backtrack_gym.train.tokenizer`).
        decoding: sampling and decoding controls (:class:`DecodeConfig`).
        max_new_tokens: model tokens an episode may take; the pending line (the whole
            output in completion mode) is then sent and the episode stops.
        prompt_format: the prompt text from the first observation (default: the
            observation and a newline).
        observation_format: in step mode, the text appended after each line from
            the env's new observation (default: the observation and a newline).
        logits_processor: optional ``f(rows, model_tokens, scores) -> scores`` applied
            to the temperature-scaled scores of the rows being sampled (their batch
            indices and the model tokens each has emitted so far in its episode)
            before top-k/top-p; e.g. to force tokens.

    A line ends at a token whose text contains a newline (step mode), at eos, or
    at ``max_line_tokens``. Vector envs must autoreset in ``NextStep`` or
    ``SameStep`` mode (the default is fine): an env whose episode has ended gets
    empty actions whose outcome is ignored until every env of the batch is done.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        decoding: DecodeConfig | None = None,
        *,
        max_new_tokens: int = 512,
        prompt_format: Callable[[str], str] | None = None,
        observation_format: Callable[[str], str] | None = None,
        logits_processor: LogitsProcessor | None = None,
    ):
        import torch

        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        self.model = model
        self.tokenizer = tokenizer
        self.decoding = (decoding or DecodeConfig()).validate()
        self.max_new_tokens = max_new_tokens
        self.prompt_format = prompt_format or _with_newline
        self.observation_format = observation_format or _with_newline
        self.logits_processor = logits_processor
        self.bksp_id = action_token_ids(tokenizer)[BKSP]
        if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs an eos and a pad token")
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        self.newline_ids = frozenset(i for i, text in enumerate(texts) if "\n" in text)
        self.generator = torch.Generator(device=next(model.parameters()).device)
        if self.decoding.seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(self.decoding.seed)

    def rollout(
        self,
        envs: gym.vector.VectorEnv | Sequence[gym.Env],
        *,
        seed: int | Sequence[int] | None = None,
        options: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
    ) -> list[LMEpisode]:
        """Play one episode in each env, all in one batch; returns one :class:`LMEpisode` per env.

        ``seed`` and ``options`` go to the envs' ``reset`` (an int seed gives env ``i``
        ``seed + i``, as vector envs do); ``options={"problem": p}`` pins one problem
        for every env (a GRPO group). A list of envs also takes one options dict per env.
        """
        import torch

        batch = EnvBatch(envs)
        observations, infos = batch.reset(seed, options)
        rows = [_Row(i) for i in range(batch.size)]
        for row, observation, info in zip(rows, observations, infos, strict=True):
            for token in self._encode(self.prompt_format(observation), special=True):
                row.add(token, model=False)
            row.n_prompt = len(row.fed)
            row.info = info
        decoder = KVCacheDecoder(self.model, self.pad_id, batch.size)
        completion = batch.interaction == "completion"
        with torch.inference_mode():
            while any(row.active for row in rows):
                scores = self._feed(decoder, rows, share_rows=self.decoding.share_prefill)
                writing = [i for i, row in enumerate(rows) if row.writing]
                if writing:
                    tokens, logprobs = self._sample(scores, writing, rows)
                    for i, token, logprob in zip(writing, tokens, logprobs, strict=True):
                        self._write(rows[i], token, logprob, completion, decoder)
                if not any(row.writing for row in rows):
                    self._end_turn(batch, rows, completion)
        return [self._episode(row) for row in rows]

    # --- one token ---------------------------------------------------------------

    @staticmethod
    def _feed(decoder: KVCacheDecoder, rows: list[_Row], share_rows: bool = False) -> torch.Tensor:
        """Feed every row's queued slots in one forward pass; the next-token logits of each row."""
        starts, logits = decoder.forward(
            [[row.fed[slot] for slot in row.queue] for row in rows],
            [[row.position[slot] for slot in row.queue] for row in rows],
            [row.next_position for row in rows],
            share_rows=share_rows,
        )
        for row, start in zip(rows, starts, strict=True):
            for column, slot in enumerate(row.queue, start=start):
                row.column[slot] = column
            row.queue = []
        return logits

    def _sample(self, scores: torch.Tensor, writing: list[int], rows: list[_Row]) -> tuple[list[int], list[float]]:
        import torch

        cfg = self.decoding
        if len(writing) < len(rows):
            scores = scores[torch.tensor(writing, device=scores.device)]

        def process(scaled: torch.Tensor) -> torch.Tensor:
            if not cfg.stop_at_eos:
                scaled[:, self.eos_id] = -torch.inf
            if self.logits_processor is not None:
                scaled = self.logits_processor(writing, [rows[i].model_tokens for i in writing], scaled)
            return scaled

        tokens, logprobs = sample(scores, cfg, greedy=cfg.greedy, generator=self.generator, logits_processor=process)
        return tokens.tolist(), logprobs.tolist()

    def _write(self, row: _Row, token: int, logprob: float, completion: bool, decoder: KVCacheDecoder) -> None:
        """Apply one sampled token to ``row``: backspace, end of line or a plain token."""
        row.model_tokens.append(token)
        row.line_tokens += 1
        if token == self.bksp_id:
            slot = len(row.fed)
            if row.action:
                deleted = row.action.pop()
                row.visible.pop()  # the action's kept tokens are the last visible ones
                _hide(decoder, row, deleted, slot)
            last = row.visible.pop()
            _hide(decoder, row, last, slot)
            refed = row.add(token, model=True, logprob=logprob, fed=row.fed[last], position=row.position[last])
            row.next_position = row.position[last] + 1
            if row.action and row.action[-1] == last:
                row.action[-1] = refed
        else:
            slot = row.add(token, model=True, logprob=logprob)
            ends_line = token in self.newline_ids and not completion
            if token != self.eos_id and not ends_line:
                row.action.append(slot)
        out_of_tokens = len(row.model_tokens) >= self.max_new_tokens
        if token == self.eos_id or out_of_tokens:
            row.stop_reason = "eos" if token == self.eos_id else "max_tokens"
            row.writing = False
        elif not completion and (token in self.newline_ids or row.line_tokens >= self.decoding.max_line_tokens):
            row.writing = False

    # --- end of a turn -------------------------------------------------------------

    def _end_turn(self, batch: EnvBatch, rows: list[_Row], completion: bool) -> None:
        """Send every pending action, then queue the new observations of the envs that go on."""
        actions = {}
        for i, row in enumerate(rows):
            if not row.active:
                continue
            text = self._action_text(row, completion)
            # An empty line at eos or at the token budget is no action: the episode just stops.
            if text or completion or row.stop_reason is None:
                actions[i] = text
            else:
                row.active, row.queue = False, []
        results = batch.step(actions) if actions else {}
        for i, (observation, reward, terminated, truncated, info) in results.items():
            row = rows[i]
            row.lines.append(actions[i])
            row.rewards.append(reward)
            row.info, row.terminated, row.truncated = info, terminated, truncated
            if terminated or truncated:
                row.stop_reason = "env"
            if row.stop_reason is not None:
                row.active, row.queue = False, []
                continue
            ended_with_newline = row.emitted[-1] in self.newline_ids
            chunk = ("" if ended_with_newline else "\n") + self.observation_format(observation)
            tokens = self._encode(chunk, special=False)
            if not tokens:
                raise ValueError("observation_format gave text that encodes to no tokens")
            for token in tokens:
                row.add(token, model=False)
            row.action, row.line_tokens, row.writing = [], 0, True

    def _action_text(self, row: _Row, completion: bool) -> str:
        text = self.tokenizer.decode([row.fed[s] for s in row.action], skip_special_tokens=True)
        if not completion and row.emitted[-1] in self.newline_ids:
            # A token that ends a line may carry text before its newline (BPE merges like ".\n").
            text += self.tokenizer.decode([row.emitted[-1]], skip_special_tokens=True).split("\n", 1)[0]
        return text

    def _encode(self, text: str, *, special: bool) -> list[int]:
        return self.tokenizer(text, add_special_tokens=special)["input_ids"]

    def _episode(self, row: _Row) -> LMEpisode:
        n = row.n_prompt
        size = len(row.fed)
        return LMEpisode(
            prompt_ids=row.emitted[:n],
            completion_ids=row.emitted[n:],
            logprobs=row.logprob[n:],
            model_mask=row.is_model[n:],
            input_ids=list(row.fed),
            position_ids=list(row.position),
            attention_mask=[int(m >= size) for m in row.masked_from],
            masked_from=[min(m, size) for m in row.masked_from],
            lines=row.lines,
            rewards=row.rewards,
            info=row.info,
            terminated=row.terminated,
            truncated=row.truncated,
            stop_reason=row.stop_reason,
        )


def _hide(decoder: KVCacheDecoder, row: _Row, slot: int, at: int) -> None:
    """Mask ``slot`` of ``row`` for every slot from ``at`` on."""
    row.masked_from[slot] = at
    decoder.hide(row.index, row.column[slot])


def _with_newline(text: str) -> str:
    return text + "\n"
