"""Backspace-augmented SFT data and the SequenceMatch-chi^2 loss (Cundy & Ermon, ICLR 2024, arXiv 2306.05426).

SequenceMatch treats generation as imitation learning with a backspace action, so a
model can revert a token that took it out of distribution. Its training data are
expert sequences in which a wrong token is followed at once by ``<bksp>``; here:

- :func:`augment_tokens` inserts, before each labelled expert token with probability
  ``rate``, a wrong token and a ``<bksp>``. The wrong token has label -100 (it is never
  taught), the ``<bksp>`` is labelled (it is). The wrong token comes from uniform noise
  over the task's alphabet (:func:`wrong_token_candidates`) or from a given model's
  next-token distribution at that prefix, the expert token excluded (the model's own
  errors, as the paper does); the draws are deterministic per (seed, row).
- :class:`BackspaceCollator` lays each sequence out as the LM agent feeds it
  (:func:`~backtrack_gym.agents.replay.backspace_slots`) and builds its 4D mask with
  :func:`~backtrack_gym.agents.replay.per_query_mask`, the function the agent's replay
  uses: a deleted token is visible to the slots before its deletion and to none after,
  so training sees exactly what generation sees.
- :func:`sft_loss` is the plain masked behaviour-cloning loss (the default) or the
  SequenceMatch-chi^2 objective (:func:`sequencematch_chi2_terms`); docs/backspace.md
  gives the objective and what differs from the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backtrack_gym.config import Config, check_choice, check_fraction, check_positive
from backtrack_gym.envs.core import BKSP, action_token_ids

if TYPE_CHECKING:
    import numpy as np
    import torch

IGNORE = -100
SOURCES = ("noise", "model")
LOSSES = ("bc", "sequencematch_chi2")
AUGMENT_STREAM = 7  # extra seed key of the augmentation's draws (apart from the traces' streams)
LOSS_KEYS = ("action_ids", "data_action", "wrong_action", "next_state")


@dataclass
class BackspaceConfig(Config):
    """Backspace augmentation of the SFT data (SequenceMatch's wrong token, then ``<bksp>``).

    Attributes:
        rate: probability, before each labelled expert token, of inserting a wrong token
            and a ``<bksp>`` (0 turns the augmentation off).
        source: where the wrong token comes from: ``noise`` (uniform over the task's
            alphabet) or ``model`` (sampled from ``model``'s next-token distribution at
            that prefix, the expert token excluded).
        model: the model directory or hub id of the ``model`` source.
    """

    rate: float = 0.0
    source: str = "noise"
    model: str = ""

    def check(self) -> None:
        check_fraction(self, "rate")
        check_choice("source", self.source, SOURCES)
        if self.source == "model" and self.rate > 0:
            if not self.model:
                raise ValueError("model: the model source needs a model (a directory or a hub id)")
            from backtrack_gym.train.models import check_model_source

            check_model_source(self.model)


@dataclass
class SFTLossConfig(Config):
    """The SFT objective.

    Attributes:
        name: ``bc`` (masked behaviour cloning: the mean negative log-likelihood of the
            labelled tokens) or ``sequencematch_chi2`` (SequenceMatch's chi^2-mixture
            objective, docs/backspace.md).
        alpha: the chi^2 term's scale: the loss adds ``E[r^2] / (4 alpha)``.
        gamma: the discount of the next state's value in the implied reward.
        mix: the weight of the off-data (wrong-token) transitions in the mixture the
            chi^2 term averages over (the data's weight is ``1 - mix``).
    """

    name: str = "bc"
    alpha: float = 0.5
    gamma: float = 0.99
    mix: float = 0.5

    def check(self) -> None:
        check_choice("name", self.name, LOSSES)
        check_positive(self, "alpha")
        check_fraction(self, "gamma", "mix", include_one=True)


# --- the data ------------------------------------------------------------------------


def wrong_token_candidates(tokenizer: Any, interaction: str = "completion") -> list[int]:
    """The ids a wrong token is drawn from: the vocabulary without special and action tokens.

    For the character tokenizers that is the task's alphabet. In ``step`` mode tokens
    holding a newline are left out too: the agent sends a line at its newline, so a
    newline cannot be backspaced.
    """
    excluded = set(tokenizer.all_special_ids) | set(action_token_ids(tokenizer).values())
    ids = sorted(set(tokenizer.get_vocab().values()) - excluded)
    if interaction == "step":
        texts = tokenizer.batch_decode([[i] for i in ids])
        ids = [i for i, text in zip(ids, texts, strict=True) if "\n" not in text]
    if len(ids) < 2:
        raise ValueError("the tokenizer has fewer than two tokens to draw wrong tokens from")
    return ids


def augment_tokens(
    input_ids: Sequence[int],
    labels: Sequence[int],
    *,
    rate: float,
    rng: np.random.Generator,
    candidates: Sequence[int],
    bksp_id: int,
    probs: np.ndarray | None = None,
) -> tuple[list[int], list[int], int]:
    """``input_ids`` and ``labels`` with wrong tokens and ``<bksp>`` inserted; also how many were.

    Before each labelled token ``i`` (``labels[i] != -100``, ``i >= 1``) one uniform draw
    decides, with probability ``rate``, to insert a wrong token (label -100) and a
    ``<bksp>`` (labelled). The wrong token is drawn from ``candidates`` without the
    expert token ``input_ids[i]``: uniformly, or, with ``probs`` (row ``i``: the model's
    next-token probabilities given ``input_ids[:i]``), in proportion to them.
    """
    import numpy as np

    pool = np.asarray(candidates)
    ids: list[int] = []
    out_labels: list[int] = []
    inserted = 0
    for i, (token, label) in enumerate(zip(input_ids, labels, strict=True)):
        if label != IGNORE and i >= 1 and rng.random() < rate:
            allowed = pool[pool != token]
            weights = None
            if probs is not None:
                weights = np.asarray(probs[i], dtype=np.float64)[allowed]
                total = weights.sum()
                weights = weights / total if total > 0 else None
            wrong = int(rng.choice(allowed, p=weights))
            ids += [wrong, bksp_id]
            out_labels += [IGNORE, bksp_id]
            inserted += 1
        ids.append(token)
        out_labels.append(label)
    return ids, out_labels, inserted


def next_token_probs(model: Any, input_ids: Sequence[int]) -> np.ndarray:
    """Row ``i``: ``model``'s next-token probabilities given ``input_ids[:i]`` (row 0 is unused, zeros)."""
    import numpy as np
    import torch

    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([list(input_ids)], device=device)).logits[0].float()
    probs = torch.softmax(logits, dim=-1).cpu().numpy()
    return np.concatenate([np.zeros_like(probs[:1]), probs[:-1]])


def augment_dataset(
    dataset: Any, tokenizer: Any, config: BackspaceConfig, seed: int, *, interaction: str, model: Any = None
) -> tuple[Any, int, int]:
    """The tokenized ``dataset`` (``input_ids``, ``labels``) augmented by ``config``.

    Row ``k`` draws from ``numpy.random.default_rng([seed, k, AUGMENT_STREAM])``, so the
    result is the same per seed. ``model`` is the sampler of the ``model`` source.
    Returns the data set, the insertions and the labelled tokens they were drawn over.
    """
    import numpy as np

    if config.source == "model" and model is None:
        raise ValueError("model: the model source needs the sampling model")
    candidates = wrong_token_candidates(tokenizer, interaction)
    bksp_id = action_token_ids(tokenizer)[BKSP]

    def augment(row: dict[str, Any], index: int) -> dict[str, Any]:
        rng = np.random.default_rng([seed, index, AUGMENT_STREAM])
        probs = next_token_probs(model, row["input_ids"]) if config.source == "model" else None
        ids, labels, inserted = augment_tokens(
            row["input_ids"],
            row["labels"],
            rate=config.rate,
            rng=rng,
            candidates=candidates,
            bksp_id=bksp_id,
            probs=probs,
        )
        eligible = sum(1 for i, label in enumerate(row["labels"]) if label != IGNORE and i >= 1)
        return {"input_ids": ids, "labels": labels, "inserted": inserted, "eligible": eligible}

    out = dataset.map(augment, with_indices=True)
    inserted, eligible = sum(out["inserted"]), sum(out["eligible"])
    return out.remove_columns(["inserted", "eligible"]), inserted, eligible


# --- the batches ---------------------------------------------------------------------


def transitions(tokens: Sequence[int], labels: Sequence[int], bksp_id: int) -> dict[str, list[int]]:
    """Per slot ``t``: the action taken from the state the slot ends, for the loss.

    ``action_ids[t]`` is the token written after slot ``t`` when it is the policy's
    (``data_action``: labelled; ``wrong_action``: a wrong token, the one right before a
    ``<bksp>``), else 0. ``next_state[t]`` is the slot of the next state the policy acts
    in (env tokens between are skipped), -1 at the end of the sequence.
    """
    n = len(tokens)
    data = [int(t + 1 < n and labels[t + 1] != IGNORE) for t in range(n)]
    wrong = [int(t + 2 < n and labels[t + 1] == IGNORE and tokens[t + 2] == bksp_id) for t in range(n)]
    acting = [d or w for d, w in zip(data, wrong, strict=True)]
    next_state = [-1] * n
    following = -1
    for t in range(n - 1, -1, -1):
        next_state[t] = following if acting[t] else -1
        if acting[t]:
            following = t
    actions = [tokens[t + 1] if acting[t] else 0 for t in range(n)]
    return {"action_ids": actions, "data_action": data, "wrong_action": wrong, "next_state": next_state}


class BackspaceCollator:
    """Right-padded batches of (augmented) token sequences with the agent's per-query 4D mask.

    Each row's ``input_ids`` are the tokens as written (wrong tokens and ``<bksp>``
    included); the batch holds what the agent feeds for them (``input_ids``,
    ``position_ids``, the float ``attention_mask`` ``(rows, 1, T, T)``), the ``labels``
    as given, and the loss's per-slot :func:`transitions`.
    """

    def __init__(self, pad_id: int, bksp_id: int):
        self.pad_id = pad_id
        self.bksp_id = bksp_id

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        import torch

        from backtrack_gym.agents.replay import backspace_slots, per_query_mask

        width = max(len(row["input_ids"]) for row in rows)
        columns: dict[str, list[list[int]]] = {key: [] for key in ("input_ids", "position_ids", "labels", *LOSS_KEYS)}
        masked_from = []
        for row in rows:
            tokens, labels = list(row["input_ids"]), list(row["labels"])
            fed, positions, until = backspace_slots(tokens, self.bksp_id)
            pad = width - len(tokens)
            masked_from.append(until)
            columns["input_ids"].append(fed + [self.pad_id] * pad)
            columns["position_ids"].append(positions + [0] * pad)
            columns["labels"].append(labels + [IGNORE] * pad)
            fill = {"action_ids": 0, "data_action": 0, "wrong_action": 0, "next_state": -1}
            for key, values in transitions(tokens, labels, self.bksp_id).items():
                columns[key].append(values + [fill[key]] * pad)
        batch = {key: torch.tensor(values) for key, values in columns.items()}
        batch["data_action"] = batch["data_action"].bool()
        batch["wrong_action"] = batch["wrong_action"].bool()
        batch["attention_mask"] = per_query_mask(masked_from, width)
        return batch


# --- the loss ------------------------------------------------------------------------


def sequencematch_chi2_terms(
    logits: torch.Tensor,
    action_ids: torch.Tensor,
    data_action: torch.Tensor,
    wrong_action: torch.Tensor,
    next_state: torch.Tensor,
    *,
    alpha: float,
    gamma: float,
    mix: float,
) -> dict[str, torch.Tensor]:
    """The SequenceMatch-chi^2 loss and its parts, from the logits ``[B, T, V]`` as Q-values.

    SequenceMatch (Cundy & Ermon 2024) takes the logits as a soft Q-function,
    ``Q(s, a) = logits[s, a]``, with ``V(s) = logsumexp_a Q(s, a)`` and the policy
    ``softmax(Q)`` (so ``Q(s, a) - V(s) = log pi(a | s)``), and minimises IQ-Learn's
    objective (Garg et al. 2021) with the chi^2 divergence, ``phi(r) = r - r^2 / (4 alpha)``
    on the implied reward ``r = Q(s, a) - gamma V(s')`` (``V`` of the end state is 0)::

        loss = -E_data[phi(r)] + E_data[V(s) - gamma V(s')] + (chi^2 on the mixture)
             = E_data[-log pi(a | s)] + (1 / (4 alpha)) ((1 - mix) E_data[r^2] + mix E_off[r^2])

    where the chi^2 term averages over the mixture of the data's occupancy and the
    off-data one (SequenceMatch's chi^2-mixture divergence), here the wrong-token
    transitions of the augmented data (``E_off``; none: the data only). The value term
    ``E[V(s) - gamma V(s')]`` is sampled on the data's states (IQ-Learn's offline
    ``value_expert`` choice), which makes the first part exactly the BC loss. The
    paper's equation numbers could not be checked here; see docs/backspace.md for what
    is assumed and what differs (on-policy samples).
    """
    import torch

    values = torch.logsumexp(logits, dim=-1)  # V(s) at every slot
    q = logits.gather(-1, action_ids.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    after = values.gather(-1, next_state.clamp(min=0)) * (next_state >= 0)
    reward = q - gamma * after
    logp = q - values
    data = data_action.float()
    off = wrong_action.float()
    bc = -(logp * data).sum() / data.sum().clamp(min=1)
    data_sq = (reward.square() * data).sum() / data.sum().clamp(min=1)
    if bool(off.sum() > 0):
        off_sq = (reward.square() * off).sum() / off.sum()
        chi2 = (1 - mix) * data_sq + mix * off_sq
    else:
        chi2 = data_sq
    return {"loss": bc + chi2 / (4 * alpha), "bc": bc, "chi2": chi2}


def sft_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor], config: SFTLossConfig) -> torch.Tensor:
    """The loss ``config`` names on a :class:`BackspaceCollator` batch (``bc``: the mean NLL of the labelled tokens)."""
    terms = sequencematch_chi2_terms(
        logits.float(),
        batch["action_ids"],
        batch["data_action"],
        batch["wrong_action"],
        batch["next_state"],
        alpha=config.alpha,
        gamma=config.gamma,
        mix=config.mix,
    )
    return terms["bc"] if config.name == "bc" else terms["loss"]


def backspace_trainer_class(base: type, config: SFTLossConfig) -> type:
    """``base`` (TRL's ``SFTTrainer``) with a forward pass through the 4D mask and :func:`sft_loss`.

    The loss is the mean over each micro-batch's tokens (TRL's token-count weighting
    across gradient-accumulation steps is not applied).
    """

    class BackspaceSFTTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001, ANN202
            dtype = next(model.parameters()).dtype
            outputs = model(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"].to(dtype),
                position_ids=inputs["position_ids"],
                use_cache=False,
            )
            loss = sft_loss(outputs.logits, inputs, config)
            return (loss, outputs) if return_outputs else loss

    return BackspaceSFTTrainer


__all__ = [
    "BackspaceCollator",
    "BackspaceConfig",
    "SFTLossConfig",
    "augment_dataset",
    "augment_tokens",
    "backspace_trainer_class",
    "sequencematch_chi2_terms",
    "sft_loss",
    "transitions",
    "wrong_token_candidates",
]
