"""Self-backtracking search at inference (Yang et al. 2025, "Step Back to Leap Forward").

A model trained on ``prefix, wrong step, <backtrack>`` examples and optimal paths
(:func:`backtrack_gym.agents.traces.countdown.self_backtrack`) searches by itself. The
paper's search is ``SelfBackTrackingDecoder.decode`` in LAMDASZ-ML/Self-Backtracking
``src/decoder/decoders.py`` (the authors' last version, commit c6ce624); the defaults
of :class:`SearchConfig` are its defaults (``n=32``, ``b=1``, ``temperature=0.7``):

1. *Expand*: sample N continuations of each frontier state (a text prefix written
   after the prompt; the first round expands the root ``""``). A continuation stops
   at eos (a finished answer), at ``<backtrack>`` or at ``max_new_tokens`` (dropped).
   ``b`` counts the rounds after the first, as the paper's loop
   ``for t in range(b+1)`` does: b + 1 rounds in all.
2. *Backtrack*: a continuation that writes ``<backtrack>`` is cut back to before its
   last step (the paper's cut drops the last line; a step the task writes on several
   lines goes whole). At most ``isqrt(N)`` distinct states, never one already expanded,
   taken across the whole round, are the next frontier (``frontier`` says which).
3. *Select*: finished answers are grouped and the group with the largest summed
   score wins (``vote`` says how). The env's verdict is only reported (``solved``),
   never used to select.

Scores are mean token log-probs of the path's model-written kept tokens (the kept
prefix and the continuation, its eos included) under the model's own softmax
(temperature 1), as the paper scores them with a separate forward pass. Where this
search differs from the paper's code (independent samples for its beam sampling, its
frontier size) is listed in ``docs/self-backtracking.md``.

Problems are searched together, each with its own frontier: each round is one
:meth:`Expander.expand` call over every frontier state of every problem.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from backtrack_gym.agents.decoding import Sampled, sample_continuations
from backtrack_gym.config import Config, check_choice
from backtrack_gym.envs.core import BACKTRACK, Episode, Task
from backtrack_gym.settings import SamplingConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

STOPS = ("eos", "backtrack", "length")
FRONTIERS = ("expansion_order", "round_best")
VOTES = ("sum_logprob", "exp_mean_logprob")
AnswerKey = Callable[[Task, Any], str]  # (task, final state) -> the answer it stands for


@dataclass
class SearchConfig(Config):
    """How :func:`self_backtracking_search` searches; the defaults are the paper's.

    Attributes:
        expansions: continuations sampled per expanded state (N; the paper's ``n=32``).
        rounds: backtrack rounds after the first expansion (b; the paper's ``b=1``);
            0 is plain sampling of N answers.
        max_frontier: most states expanded per round after the first; None means
            ``isqrt(expansions)``, the paper's √N. (The authors' last code takes
            ``int(sqrt(b))``, 1 at b = 1: ``max_frontier=1``.)
        sampling: how continuations are sampled (the paper's temperature 0.7, no top-k
            or top-p). Scores use the model's own log-probs whatever it is.
        frontier: how the next frontier is taken from the round's cut states:

            - ``"expansion_order"`` (the paper's): the round's expansions in frontier
              order, each one's continuations best first (by mean log-prob, as the
              paper's beam sampling returns them); the first distinct fresh states.
            - ``"round_best"``: the distinct fresh states with the highest mean
              log-prob over their kept tokens, wherever in the round they came from
              (this project's earlier rule: no state is preferred for coming from
              an earlier expansion).
        vote: how finished answers are grouped and scored:

            - ``"sum_logprob"`` (the paper's ``agg``): grouped by their text, each
              answer scoring its mean token log-prob. Log-probs are negative, so
              answers that several samples agree on sum lower: the rule picks the
              best-scoring distinct text unless duplicates are near-certain.
            - ``"exp_mean_logprob"``: grouped by final state (an answer with a line
              the rules reject by its text), each scoring ``exp(mean log-prob)`` in
              (0, 1], so that agreement adds votes, as majority voting does.
        seed: seeds every round's sampling; non-negative.
    """

    expansions: int = 32
    rounds: int = 1
    max_frontier: int | None = None
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.7))
    frontier: str = "expansion_order"
    vote: str = "sum_logprob"
    seed: int = 0

    @property
    def frontier_size(self) -> int:
        """``max_frontier``, or ``isqrt(expansions)`` when it is None."""
        return math.isqrt(self.expansions) if self.max_frontier is None else self.max_frontier

    def check(self) -> None:
        minimums = {"expansions": 1, "rounds": 0, "seed": 0}
        if self.max_frontier is not None:
            minimums["max_frontier"] = 1
        for name, minimum in minimums.items():
            _check_integer(name, getattr(self, name), minimum)
        check_choice("frontier", self.frontier, FRONTIERS)
        check_choice("vote", self.vote, VOTES)


@dataclass
class Continuation:
    """One sampled continuation of a prompt.

    Attributes:
        token_ids: the generated tokens, the stopping eos or ``<backtrack>`` included.
        pieces: each token's text (eos writes ``""``; ``"".join(pieces)`` is the text).
        logprobs: each token's log-probability under the temperature-scaled softmax it
            was sampled from.
        stop: ``"eos"``, ``"backtrack"`` (the last token is ``<backtrack>``) or
            ``"length"`` (``max_new_tokens`` reached).
        prompt_tokens: tokens of the prompt it continues (for compute accounting).
        model_logprobs: each token's log-probability under the model's own softmax
            (temperature 1), which scores use; None: the same as ``logprobs``.
    """

    token_ids: list[int]
    pieces: list[str]
    logprobs: list[float]
    stop: str
    prompt_tokens: int
    model_logprobs: list[float] | None = None

    def __post_init__(self) -> None:
        if not len(self.token_ids) == len(self.pieces) == len(self.logprobs) > 0:
            raise ValueError("token_ids, pieces and logprobs must be non-empty and of one length")
        if self.model_logprobs is not None and len(self.model_logprobs) != len(self.logprobs):
            raise ValueError("model_logprobs must have one entry per token")
        if self.stop not in STOPS:
            raise ValueError(f"stop must be one of {STOPS}, got {self.stop!r}")

    @property
    def scoring_logprobs(self) -> list[float]:
        """The log-probs scores use: ``model_logprobs``, or ``logprobs`` when there are none."""
        return self.logprobs if self.model_logprobs is None else self.model_logprobs


class Expander(Protocol):
    """Samples continuations: the model behind the search."""

    def expand(
        self, prompts: Sequence[str], n: int, *, max_new_tokens: int, sampling: SamplingConfig, seed: int
    ) -> list[list[Continuation]]:
        """``n`` continuations of each prompt, one list per prompt, deterministic given ``seed``."""
        ...


@dataclass
class Candidate:
    """A finished answer.

    Attributes:
        key: the answer its vote counts for: its text (``vote="sum_logprob"``), or its
            final state's ``answer_key`` (its text when a line was rejected).
        text: the completion after the prompt (kept prefix and continuation).
        score: what the vote sums: the mean token log-prob of the path's model-written
            kept tokens, its eos included (``"sum_logprob"``), or its exp
            (``"exp_mean_logprob"``).
        solved: whether its final state solves the problem (reported, never used to select).
    """

    key: str
    text: str
    score: float
    solved: bool


@dataclass
class SearchResult:
    """The search of one problem.

    Attributes:
        answer: the selected answer's key, None when no continuation finished.
        solved: the selected answer solves the problem.
        text: the highest-scoring completion with the selected answer.
        candidates: every finished answer, in the order found.
        sequences: ``(prompt tokens, generated tokens)`` of every sampled continuation.
    """

    answer: str | None = None
    solved: bool = False
    text: str | None = None
    candidates: list[Candidate] = field(default_factory=list)
    sequences: list[tuple[int, int]] = field(default_factory=list)

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens fed over all continuations."""
        return sum(prompt for prompt, _ in self.sequences)

    @property
    def generated_tokens(self) -> int:
        """Tokens generated over all continuations."""
        return sum(generated for _, generated in self.sequences)

    def votes(self) -> dict[str, float]:
        """Summed score of each answer key (see :attr:`SearchConfig.vote`)."""
        votes: dict[str, float] = {}
        for candidate in self.candidates:
            votes[candidate.key] = votes.get(candidate.key, 0.0) + candidate.score
        return votes


def state_key(task: Task, state: Any) -> str:
    """The default answer key of ``vote="exp_mean_logprob"``: the final state's ``state_info`` as sorted JSON.

    ``state_info`` is the task's full view of a state (``state_from_info`` inverts
    it), so distinct states get distinct keys; ``render`` is a display that may
    abridge (Math shows only the last lines).
    """
    return json.dumps(task.state_info(state), sort_keys=True, default=str)


@dataclass(frozen=True)
class _Path:
    """A frontier state: the model-written tokens kept after the prompt, with their scoring log-probs."""

    pieces: tuple[str, ...] = ()
    logprobs: tuple[float, ...] = ()

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def self_backtracking_search(
    task: Task,
    problems: Sequence[Any],
    expander: Expander,
    config: SearchConfig | None = None,
    *,
    max_new_tokens: int = 128,
    env_steps: int = 64,
    answer_key: AnswerKey = state_key,
) -> list[SearchResult]:
    """Search every problem (objects, dicts or JSON) at once; one :class:`SearchResult` each.

    The prompt of a problem is ``task.prompt(problem) + "\\n"`` (the SFT data's
    prompt); a state is expanded from prompt + state text. A continuation may take
    ``max_new_tokens`` tokens (one that reaches it without eos or ``<backtrack>`` is
    dropped); ``env_steps`` is the step budget of the :class:`Episode` that replays
    an answer. With
    ``vote="exp_mean_logprob"``, ``answer_key(task, state)`` groups finished answers
    by final state (default :func:`state_key`; e.g. pass one that keeps only
    ``state.answer`` for Math, whose state also holds the lines); an answer with a
    line the rules reject is keyed by its text instead.
    """
    config = (config or SearchConfig()).validate()
    _check_integer("max_new_tokens", max_new_tokens, 1)
    _check_integer("env_steps", env_steps, 1)
    problems = [task.coerce_problem(problem) for problem in problems]
    prompts = [task.prompt(problem) + "\n" for problem in problems]
    results = [SearchResult() for _ in problems]
    frontiers = [[_Path()] for _ in problems]
    expanded: list[set[str]] = [set() for _ in problems]
    for round_ in range(config.rounds + 1):
        jobs = [(i, path) for i, frontier in enumerate(frontiers) for path in frontier]
        if not jobs:
            break
        outputs = expander.expand(
            [prompts[i] + path.text for i, path in jobs],
            config.expansions,
            max_new_tokens=max_new_tokens,
            sampling=config.sampling,
            seed=int(np.random.SeedSequence([config.seed, round_]).generate_state(1)[0]),
        )
        cut_states: list[list[_Path]] = [[] for _ in problems]  # each problem's, in the order the frontier rule reads
        for (i, path), continuations in zip(jobs, outputs, strict=True):
            expanded[i].add(path.text)
            for c in continuations:
                results[i].sequences.append((c.prompt_tokens, len(c.token_ids)))
                if c.stop == "eos":
                    candidate = _finish(task, problems[i], path, c, config.vote, env_steps, answer_key)
                    results[i].candidates.append(candidate)
            backtracked = [c for c in continuations if c.stop == "backtrack"]
            if config.frontier == "expansion_order":
                backtracked.sort(key=lambda c: -_mean(c.scoring_logprobs))  # stable: ties keep sampling order
            cut_states[i] += [_cut(task, problems[i], path, c) for c in backtracked]
        frontiers = [_frontier(cut_states[i], expanded[i], config) for i in range(len(problems))]
    for result in results:
        votes = result.votes()
        if votes:
            result.answer = max(votes, key=votes.__getitem__)  # ties: the answer found first
            best = max((c for c in result.candidates if c.key == result.answer), key=lambda c: c.score)
            result.text, result.solved = best.text, best.solved
    return results


def _check_integer(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _finish(
    task: Task, problem: Any, path: _Path, c: Continuation, vote: str, env_steps: int, answer_key: AnswerKey
) -> Candidate:
    """Replay a finished path in an :class:`Episode` and score it."""
    text = path.text + "".join(c.pieces)
    episode = Episode(task, problem, backtrack=True)
    episode.run(text, max_steps=env_steps)
    solved = task.is_solved(problem, episode.state)
    mean_logprob = _mean(path.logprobs + tuple(c.scoring_logprobs))
    if vote == "sum_logprob":
        return Candidate(text, text, mean_logprob, solved)
    # A line the rules reject leaves the state as it was, so broken answers would all share
    # a state and outvote real ones; such an answer is only identical to the same text.
    rejected = episode.stats.malformed + episode.stats.illegal
    key = text if rejected else answer_key(task, episode.state)
    return Candidate(key, text, math.exp(mean_logprob), solved)


def _cut(task: Task, problem: Any, path: _Path, c: Continuation) -> _Path:
    """The state a backtrack returns to: the path before ``<backtrack>`` less its last step line.

    The paper's ``backtrack`` drops the last line; here the last line the task reads
    as a step (valid or not) goes, with any lines after it that it reads as no step,
    so that a step written on several lines (CountDown's research format: the
    operation, then node and state lines) goes whole. For one-line steps the two agree.
    Tokens are kept whole: a token that spans the cut is dropped with the line.
    """
    pieces = path.pieces + tuple(c.pieces[:-1])
    episode = Episode(task, problem, backtrack=True)
    start = offset = 0  # start of the last counted line (0: none, the root)
    for line in "".join(pieces).splitlines(keepends=True):
        if episode.step(line).counted:
            start = offset
        offset += len(line)
    kept = length = 0
    while kept < len(pieces) and length + len(pieces[kept]) <= start:
        length += len(pieces[kept])
        kept += 1
    return _Path(pieces[:kept], (path.logprobs + tuple(c.scoring_logprobs[:-1]))[:kept])


def _frontier(states: list[_Path], expanded: set[str], config: SearchConfig) -> list[_Path]:
    """Up to ``frontier_size`` distinct states not yet expanded, in the order ``config.frontier`` reads them."""
    fresh = [state for state in states if state.text not in expanded]  # the root "" is always expanded
    if config.frontier == "round_best":
        fresh.sort(key=lambda state: -_mean(state.logprobs))  # stable: ties keep the round's order
    chosen: dict[str, _Path] = {}
    for state in fresh:
        if len(chosen) == config.frontier_size:
            break
        chosen.setdefault(state.text, state)
    return list(chosen.values())


class HFExpander:
    """An :class:`Expander` over a Hugging Face causal LM, batched with one KV cache per batch.

    Prompts are left-padded and each is repeated ``n`` times; decoding stops when
    every row has written eos or ``<backtrack>`` or ``max_new_tokens`` is reached
    (:func:`~backtrack_gym.agents.decoding.sample_continuations`). Log-probs are
    ``log_softmax(logits / temperature)`` of the sampled token (the full softmax, as
    :class:`~backtrack_gym.agents.lm.LMAgent` documents), and model log-probs
    ``log_softmax(logits)``; sampling uses a ``torch.Generator`` seeded per call, so
    a call is deterministic.

    Args:
        model: a causal LM taking a ``cache`` (the KV cache), a 2D ``attention_mask``,
            ``position_ids`` and ``logits_to_keep``.
        tokenizer: its tokenizer, with ``<backtrack>``, eos and pad tokens.
        max_batch: most sequences decoded at once (prompts are chunked to fit).
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, max_batch: int = 256):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if BACKTRACK not in tokenizer.get_vocab() or tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError(f"the tokenizer needs {BACKTRACK}, eos and pad tokens")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.backtrack_id = tokenizer.convert_tokens_to_ids(BACKTRACK)
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id
        self.device = next(model.parameters()).device

    def expand(
        self, prompts: Sequence[str], n: int, *, max_new_tokens: int, sampling: SamplingConfig, seed: int
    ) -> list[list[Continuation]]:
        """``n`` sampled continuations of each prompt (see :class:`Expander`)."""
        import torch

        generator = torch.Generator(device=self.device).manual_seed(seed)
        encoded = [self.tokenizer(prompt)["input_ids"] for prompt in prompts]
        per_batch = max(1, self.max_batch // n)
        out: list[list[Continuation]] = []
        for start in range(0, len(encoded), per_batch):
            chunk = encoded[start : start + per_batch]
            repeated = [ids for ids in chunk for _ in range(n)]
            rows = sample_continuations(
                self.model,
                repeated,
                pad_id=self.pad_id,
                stop_ids=(self.eos_id, self.backtrack_id),
                max_new_tokens=max_new_tokens,
                sampling=sampling,
                generator=generator,
            )
            continuations = [self._continuation(row, len(ids)) for row, ids in zip(rows, repeated, strict=True)]
            out += [continuations[k * n : (k + 1) * n] for k in range(len(chunk))]
        return out

    def _continuation(self, row: Sampled, prompt_tokens: int) -> Continuation:
        """A :class:`Continuation` of a sampled row, named by how it stopped."""
        stop = {self.eos_id: "eos", self.backtrack_id: "backtrack"}.get(row.token_ids[-1], "length")
        pieces = self.tokenizer.batch_decode([[token] for token in row.token_ids], skip_special_tokens=True)
        return Continuation(row.token_ids, pieces, row.logprobs, stop, prompt_tokens, row.model_logprobs)
