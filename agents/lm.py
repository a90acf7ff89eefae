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
forward pass reproduces them only with a per-query (4D) attention mask:
:func:`replay_batch` builds it and :func:`replay_logprobs` runs that pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gymnasium as gym

from backtrack_gym.agents.base import info_at

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# (batch indices of the scored rows, their model tokens so far, scores [rows, vocab]) -> scores
LogitsProcessor = Callable[[list[int], list[list[int]], "torch.Tensor"], "torch.Tensor"]
NEVER = 1 << 62  # masked_from of a slot that stays visible


@dataclass
class SamplingConfig:
    """How :class:`LMAgent` samples.

    Attributes:
        temperature: logits are divided by it before sampling and for the
            returned log-probabilities; must be positive.
        top_k: sample among the ``top_k`` most likely tokens; 0 means all.
        top_p: sample from the smallest set of tokens whose probability reaches
            ``top_p`` (nucleus sampling); 1.0 means all.
        greedy: take the most likely token instead of sampling (log-probabilities
            are still those of the temperature-scaled softmax).
        max_line_tokens: model tokens (``<bksp>`` included) a step-mode line may
            take; a line that reaches it is sent as it is.
        max_episode_tokens: model tokens an episode may take; the pending line (the
            whole output in completion mode) is then sent and the episode stops.
        stop_at_eos: eos ends the episode (a pending line is sent first). When
            False, eos is never sampled (as ``min_new_tokens`` does in ``generate``).
        seed: seeds the sampler's generator; None draws from torch's default one.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False
    max_line_tokens: int = 64
    max_episode_tokens: int = 512
    stop_at_eos: bool = True
    seed: int | None = None

    def validate(self) -> SamplingConfig:
        """Check every field; returns ``self``; raises ``ValueError`` on a bad value."""
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_line_tokens < 1:
            raise ValueError(f"max_line_tokens must be at least 1, got {self.max_line_tokens}")
        if self.max_episode_tokens < 1:
            raise ValueError(f"max_episode_tokens must be at least 1, got {self.max_episode_tokens}")
        return self


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


class _EnvBatch:
    """A list of envs or a Gymnasium vector env behind one interface."""

    def __init__(self, envs: gym.vector.VectorEnv | Sequence[gym.Env]):
        self.vector = envs if isinstance(envs, gym.vector.VectorEnv) else None
        if self.vector is not None:
            mode = self.vector.metadata.get("autoreset_mode")
            mode = getattr(mode, "value", mode)
            if mode not in ("NextStep", "SameStep"):
                raise ValueError(f"a vector env must autoreset in NextStep or SameStep mode, got {mode!r}")
            self.same_step = mode == "SameStep"
            self.size = self.vector.num_envs
        else:
            self.envs = list(envs)
            if not self.envs:
                raise ValueError("no envs given")
            self.size = len(self.envs)
        self.interaction = self._attribute("interaction")

    def _attribute(self, name: str) -> Any:
        if self.vector is not None:
            values = self.vector.get_attr(name)
        else:
            values = [env.get_wrapper_attr(name) for env in self.envs]
        if len(set(values)) != 1:
            raise ValueError(f"all envs must share one {name}, got {values}")
        return values[0]

    def reset(
        self, seed: int | Sequence[int] | None, options: dict[str, Any] | Sequence[dict[str, Any]] | None
    ) -> tuple[list[str], list[dict[str, Any]]]:
        if self.vector is not None:
            if options is not None and not isinstance(options, dict):
                raise ValueError("a vector env takes one options dict for all its envs")
            observations, infos = self.vector.reset(seed=seed, options=options)
            return list(observations), [info_at(infos, i) for i in range(self.size)]
        seeds = (
            [None if seed is None else seed + i for i in range(self.size)] if not isinstance(seed, Sequence) else seed
        )
        per_env = options if isinstance(options, Sequence) else [options] * self.size
        if len(seeds) != self.size or len(per_env) != self.size:
            raise ValueError(f"give one seed and one options dict per env ({self.size})")
        results = [env.reset(seed=s, options=o) for env, s, o in zip(self.envs, seeds, per_env, strict=True)]
        return [r[0] for r in results], [r[1] for r in results]

    def step(self, actions: dict[int, str]) -> dict[int, tuple[str, float, bool, bool, dict[str, Any]]]:
        """Step the envs in ``actions``; a vector env steps the others with an ignored empty action."""
        if self.vector is None:
            return {i: self.envs[i].step(action) for i, action in actions.items()}
        observations, rewards, terminated, truncated, infos = self.vector.step(
            [actions.get(i, "") for i in range(self.size)]
        )
        out = {}
        for i in actions:
            done = bool(terminated[i] or truncated[i])
            # SameStep has already reset a finished env: its episode's last info is in final_info.
            info = info_at(infos["final_info"], i) if done and self.same_step else info_at(infos, i)
            out[i] = (observations[i], float(rewards[i]), bool(terminated[i]), bool(truncated[i]), info)
        return out


class LMAgent:
    """A Hugging Face causal LM as a policy over a batch of backtrack-gym envs.

    Args:
        model: any causal LM taking a ``cache`` (the KV cache), a 2D ``attention_mask``,
            ``position_ids`` and ``logits_to_keep`` (every HF decoder does).
        tokenizer: its tokenizer; must have ``<bksp>``, ``<backtrack>``, eos and pad
            (see :mod:`backtrack_gym.train.tokenizer`).
        sampling: sampling controls (:class:`SamplingConfig`).
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
        sampling: SamplingConfig | None = None,
        *,
        prompt_format: Callable[[str], str] | None = None,
        observation_format: Callable[[str], str] | None = None,
        logits_processor: LogitsProcessor | None = None,
    ):
        import torch

        from backtrack_gym.envs.core import BKSP
        from backtrack_gym.train.tokenizer import action_token_ids

        self.model = model
        self.tokenizer = tokenizer
        self.sampling = (sampling or SamplingConfig()).validate()
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
        self.device = next(model.parameters()).device
        self.generator = torch.Generator(device=self.device)
        if self.sampling.seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(self.sampling.seed)

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

        batch = _EnvBatch(envs)
        observations, infos = batch.reset(seed, options)
        rows = [_Row(i) for i in range(batch.size)]
        for row, observation, info in zip(rows, observations, infos, strict=True):
            for token in self._encode(self.prompt_format(observation), special=True):
                row.add(token, model=False)
            row.n_prompt = len(row.fed)
            row.info = info
        decoder = _Decoder(self.model, self.pad_id, batch.size, self.device)
        completion = batch.interaction == "completion"
        with torch.inference_mode():
            while any(row.active for row in rows):
                scores = decoder.forward(rows)
                writing = [i for i, row in enumerate(rows) if row.writing]
                if writing:
                    tokens, logprobs = self._sample(scores, writing, rows)
                    for i, token, logprob in zip(writing, tokens, logprobs, strict=True):
                        self._write(rows[i], token, logprob, completion, decoder)
                if not any(row.writing for row in rows):
                    self._end_turn(batch, rows, completion)
        return [self._episode(row) for row in rows]

    # --- one token ---------------------------------------------------------------

    def _sample(self, scores: torch.Tensor, writing: list[int], rows: list[_Row]) -> tuple[list[int], list[float]]:
        import torch

        cfg = self.sampling
        if len(writing) < len(rows):
            scores = scores[torch.tensor(writing, device=scores.device)]
        scores = scores / cfg.temperature
        logprobs = torch.log_softmax(scores, dim=-1)
        if not cfg.stop_at_eos:
            scores[:, self.eos_id] = -torch.inf
        if self.logits_processor is not None:
            scores = self.logits_processor(writing, [rows[i].model_tokens for i in writing], scores)
        if cfg.greedy:
            tokens = scores.argmax(dim=-1)
        else:
            scores = _top_k_top_p(scores, cfg.top_k, cfg.top_p)
            tokens = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=self.generator).squeeze(1)
        picked = logprobs.gather(1, tokens[:, None]).squeeze(1)
        return tokens.tolist(), picked.tolist()

    def _write(self, row: _Row, token: int, logprob: float, completion: bool, decoder: _Decoder) -> None:
        """Apply one sampled token to ``row``: backspace, end of line or a plain token."""
        cfg = self.sampling
        row.model_tokens.append(token)
        row.line_tokens += 1
        if token == self.bksp_id:
            slot = len(row.fed)
            if row.action:
                deleted = row.action.pop()
                row.visible.pop()  # the action's kept tokens are the last visible ones
                decoder.hide(row, deleted, slot)
            last = row.visible.pop()
            decoder.hide(row, last, slot)
            refed = row.add(token, model=True, logprob=logprob, fed=row.fed[last], position=row.position[last])
            row.next_position = row.position[last] + 1
            if row.action and row.action[-1] == last:
                row.action[-1] = refed
        else:
            slot = row.add(token, model=True, logprob=logprob)
            ends_line = token in self.newline_ids and not completion
            if token != self.eos_id and not ends_line:
                row.action.append(slot)
        out_of_tokens = len(row.model_tokens) >= cfg.max_episode_tokens
        if token == self.eos_id or out_of_tokens:
            row.stop_reason = "eos" if token == self.eos_id else "max_tokens"
            row.writing = False
        elif not completion and (token in self.newline_ids or row.line_tokens >= cfg.max_line_tokens):
            row.writing = False

    # --- end of a turn -------------------------------------------------------------

    def _end_turn(self, batch: _EnvBatch, rows: list[_Row], completion: bool) -> None:
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


class _Decoder:
    """The batch's KV cache and its attention mask over every cache column."""

    def __init__(self, model: PreTrainedModel, pad_id: int, size: int, device: torch.device):
        import torch

        self.model = model
        self.pad_id = pad_id
        self.device = device
        self.mask = torch.zeros((size, 64), dtype=torch.long, device=device)  # doubled as needed
        self.length = 0
        self.cache = None

    def hide(self, row: _Row, slot: int, at: int) -> None:
        """Mask ``slot`` of ``row`` for every slot from ``at`` on."""
        row.masked_from[slot] = at
        self.mask[row.index, row.column[slot]] = 0

    def forward(self, rows: list[_Row]) -> torch.Tensor:
        """Feed every row's queued slots (left-padded into one block); the last column's logits, float32."""
        import torch

        width = max(len(row.queue) for row in rows)
        ids = [[self.pad_id] * width for _ in rows]
        positions = [[0] * width for _ in rows]
        new_mask = [[0] * width for _ in rows]
        for i, row in enumerate(rows):
            offset = width - len(row.queue)
            positions[i] = [row.next_position] * width  # pads: any position, they are masked
            for j, slot in enumerate(row.queue, start=offset):
                ids[i][j], positions[i][j], new_mask[i][j] = row.fed[slot], row.position[slot], 1
                row.column[slot] = self.length + j
            row.queue = []
        end = self.length + width
        if end > self.mask.shape[1]:
            grown = torch.zeros((len(rows), 2 * end), dtype=self.mask.dtype, device=self.device)
            grown[:, : self.length] = self.mask[:, : self.length]
            self.mask = grown
        self.mask[:, self.length : end] = torch.tensor(new_mask, device=self.device)
        self.length = end
        out = self.model(
            input_ids=torch.tensor(ids, device=self.device),
            attention_mask=self.mask[:, :end],
            position_ids=torch.tensor(positions, device=self.device),
            cache=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.cache = out.cache
        return out.logits[:, -1].float()


def _with_newline(text: str) -> str:
    return text + "\n"


def _top_k_top_p(scores: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
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


def replay_batch(episodes: Sequence[LMEpisode], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Batch ``episodes`` for one training forward pass that sees what the sampler saw.

    Returns ``input_ids``, ``position_ids`` and a float ``attention_mask`` of shape
    ``(batch, 1, T, T)`` (0 where a query sees a key, the dtype's minimum elsewhere:
    causal, and a deleted token only up to its deletion), right-padded to the
    longest; plus ``labels`` (prompt and completion ids, pad where padded),
    ``model_mask`` (1 on model tokens) and ``logprobs`` (the sampler's), aligned with
    ``labels``. Logits at slot ``t`` predict ``labels[t + 1]``.
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
    import torch

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
