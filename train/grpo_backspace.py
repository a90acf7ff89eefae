"""Step-mode GRPO with ``<bksp>``: TRL's log-probabilities through each episode's per-query (4D) mask.

TRL's ``GRPOTrainer`` (1.16) scores a batch as one row per completion, the prompt
left-padded and the completion right-padded, with a 2D attention mask, in
``_get_per_token_logps_and_entropies``: for the policy in ``_compute_loss``, and for the
old and the reference model in ``_generate_and_score_completions``. A 2D mask cannot say
that a token a ``<bksp>`` deleted is seen by the slots before its deletion and by none
after, nor that the ``<bksp>`` slot is fed the last kept token again at its position
(:mod:`backtrack_gym.agents.lm`). :func:`backspace_trainer_class` therefore

- takes each episode's slots (``input_ids``, ``position_ids``, ``masked_from``) out of the
  ``rollout_func``'s output (:class:`~.grpo_rollout.StepRollout` returns them as extra
  keys, TRL's documented way to pass per-completion data) before TRL scores the batch;
- carries them, as ``slot_*`` tensors, in the batch dict ``_generate_and_score_completions``
  returns, which TRL shuffles and splits row-wise like its own tensors;
- overrides ``_get_per_token_logps_and_entropies`` to lay each row out in TRL's frame with
  :func:`~backtrack_gym.agents.replay.slot_batch` (the one builder of the mask) and run the
  forward through TRL's fused LM head (``fused_lm_head=True``) with that 4D mask and the
  position ids; the labels are TRL's (the emitted tokens, ``<bksp>`` included), so the
  log-probabilities are those the agent sampled with.

Which tokens carry loss is unchanged: TRL's ``completion_mask * env_mask``, where
``env_mask`` is :attr:`~backtrack_gym.agents.lm.LMEpisode.model_mask`, 1 on every token
the model sampled: a token later deleted and the ``<bksp>`` that deleted it included. Both
were actions of the policy: with ``<bksp>`` as an action (SequenceMatch's MDP, Cundy &
Ermon 2024), an episode's probability is the product over every sampled token, so each
one's log-probability is a term of the policy gradient; the env's observation tokens are
attended to but are no action (TRL's ``env_mask``).

The two private methods overridden, and the fused head's call, are pinned by
``tests/test_grpo_backspace.py`` (:data:`PINNED`), which fails on a TRL whose signatures
or call sites differ.
"""

from __future__ import annotations

from typing import Any

# The batch dict's extra keys: each episode's slots, padded to the longest, and its lengths.
SLOT_KEYS = ("slot_input_ids", "slot_position_ids", "slot_masked_from", "slot_prompt_length", "slot_length")
# Attention implementations that take a 4D float mask as given.
MASK_ATTENTION = ("sdpa", "eager")
# TRL 1.16's private GRPOTrainer methods overridden here, with their parameters.
PINNED = {
    "_get_per_token_logps_and_entropies": (
        "self", "model", "input_ids", "attention_mask", "logits_to_keep", "batch_size", "compute_entropy",
        "compute_aux_loss", "pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask",
        "spatial_shapes", "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids",
    ),
    "_generate_and_score_completions": ("self", "inputs"),
}  # fmt: skip


def slot_tensors(output: dict[str, Any], device: Any) -> dict[str, Any]:
    """Take the ``slot_*`` lists out of a ``rollout_func`` ``output``: :data:`SLOT_KEYS` tensors on ``device``."""
    import torch

    from backtrack_gym.train.grpo_rollout import SLOT_COLUMNS

    rows = {name: output.pop(f"slot_{name}", None) for name in SLOT_COLUMNS}
    if any(value is None for value in rows.values()):
        raise ValueError("backspace: the rollout_func returned no slot_* columns (StepRollout with backspace on)")
    lengths = [len(fed) for fed in rows["input_ids"]]
    prompts = [len(ids) for ids in output["prompt_ids"]]
    for i, (size, prompt, completion) in enumerate(zip(lengths, prompts, output["completion_ids"], strict=True)):
        if size != prompt + len(completion):
            raise ValueError(f"backspace: episode {i} has {size} slots for {prompt + len(completion)} tokens")
    width = max(lengths)

    def padded(values: list[list[int]]) -> Any:
        return torch.tensor([list(v) + [0] * (width - len(v)) for v in values], dtype=torch.long, device=device)

    return {
        "slot_input_ids": padded(rows["input_ids"]),
        "slot_position_ids": padded(rows["position_ids"]),
        "slot_masked_from": padded(rows["masked_from"]),
        "slot_prompt_length": torch.tensor(prompts, dtype=torch.long, device=device),
        "slot_length": torch.tensor(lengths, dtype=torch.long, device=device),
    }


def backspace_trainer_class(base: type) -> type:
    """``base`` (TRL's ``GRPOTrainer`` or a subclass) scoring step-mode episodes through their 4D masks."""

    class BackspaceGRPOTrainer(base):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            attention = getattr(self.model.config, "_attn_implementation", None)
            if attention not in MASK_ATTENTION:
                raise ValueError(f"backspace needs sdpa or eager attention (a 4D mask), the model has {attention}")
            if self.rollout_func is None:
                raise ValueError("backspace applies to the step path (a rollout_func)")
            from backtrack_gym.envs.core import BKSP, action_token_ids

            self._bksp_id = action_token_ids(self.processing_class)[BKSP]
            self._slots: dict[str, Any] | None = None
            rollout = self.rollout_func

            def rollout_keeping_slots(prompts: list[Any], trainer: Any) -> dict[str, Any]:
                output = dict(rollout(prompts, trainer))
                # TRL scores the batch (old and reference log-probabilities) before it returns it.
                self._slots = slot_tensors(output, self.accelerator.device)
                return output

            self.rollout_func = rollout_keeping_slots

        def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
            try:
                output = super()._generate_and_score_completions(inputs)
                if self._slots is None:
                    raise RuntimeError("backspace: the batch was scored without its rollout's slots")
                return {**output, **self._slots}
            finally:
                self._slots = None

        def compute_loss(
            self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            self._slots = {key: inputs[key] for key in SLOT_KEYS}
            try:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            finally:
                self._slots = None

        def _get_per_token_logps_and_entropies(
            self,
            model: Any,
            input_ids: Any,
            attention_mask: Any,
            logits_to_keep: int,
            batch_size: int | None = None,
            compute_entropy: bool = False,
            compute_aux_loss: bool = False,
            **media: Any,
        ) -> tuple[Any, Any, Any]:
            import torch

            from backtrack_gym.agents.replay import slot_batch

            if any(value is not None for value in media.values()):
                raise ValueError("backspace: multimodal inputs are not supported")
            if self._slots is None:
                raise RuntimeError("backspace: log-probabilities asked for outside a rollout's batch")
            slots = {key: value.tolist() for key, value in self._slots.items()}
            episodes = len(slots["slot_length"])
            if episodes != input_ids.size(0):
                raise RuntimeError(f"backspace: {episodes} episodes' slots for {input_ids.size(0)} rows")
            width = input_ids.size(1)
            prompt_width = width - logits_to_keep
            pad = self.processing_class.pad_token_id
            dtype = next(model.parameters()).dtype
            batch_size = batch_size or input_ids.size(0)
            all_logps, all_entropies, all_aux_losses = [], [], []
            for start in range(0, input_ids.size(0), batch_size):
                end = min(start + batch_size, input_ids.size(0))
                rows = [
                    tuple(slots[key][i][: slots["slot_length"][i]] for key in SLOT_KEYS[:3]) for i in range(start, end)
                ]
                offsets = [prompt_width - slots["slot_prompt_length"][i] for i in range(start, end)]
                batch = slot_batch(rows, width, pad, offsets)
                batch = {key: value.to(input_ids.device) for key, value in batch.items()}
                ids = input_ids[start:end]
                # The slots must be TRL's rows: the same tokens wherever no <bksp> re-feeds one.
                if not ((batch["input_ids"] == ids) | (ids == self._bksp_id)).all():
                    raise RuntimeError("backspace: the episodes' slots do not match the batch's rows")
                # TRL's labels: the emitted tokens of the completion (a <bksp> slot's label is <bksp>).
                labels = ids.masked_fill(attention_mask[start:end] == 0, -100)
                labels[:, :-logits_to_keep] = -100
                extra = {"output_router_logits": True} if compute_aux_loss else {}
                with self.accelerator.autocast():
                    outputs = model(
                        input_ids=batch["input_ids"],
                        attention_mask=batch["attention_mask"].to(dtype),
                        position_ids=batch["position_ids"],
                        labels=labels,
                        fused_lm_head=True,
                        **extra,
                    )
                all_logps.append(outputs.log_probs[:, -logits_to_keep:])
                if compute_entropy:
                    all_entropies.append(outputs.entropy[:, -logits_to_keep:])
                if compute_aux_loss:
                    all_aux_losses.append(outputs.aux_loss)
            logps = torch.cat(all_logps, dim=0)
            entropies = torch.cat(all_entropies, dim=0) if compute_entropy else None
            aux_loss = torch.stack(all_aux_losses).mean() if compute_aux_loss else None
            return logps, entropies, aux_loss

    return BackspaceGRPOTrainer
