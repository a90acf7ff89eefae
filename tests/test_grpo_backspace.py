"""Step-mode GRPO with ``<bksp>``: TRL's loss sees the log-probabilities the agent sampled with.

A tiny model biased to write ``<bksp>`` and newlines (:func:`biased_model`) plays
real rollouts through :class:`~backtrack_gym.train.grpo_rollout.StepRollout`; the
trainer of :mod:`backtrack_gym.train.grpo_backspace` must score them, for the old, the
reference and the policy model, as the agent did, while TRL's own 2D-mask path must not.
"""

import inspect
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from backtrack_gym.config import build_config  # noqa: E402
from backtrack_gym.envs.core import BKSP  # noqa: E402
from backtrack_gym.train.grpo_config import GRPORunConfig  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TASK_CONFIG = {"num_count": 3, "number_max": 9, "target_min": 10, "target_max": 40}


def grpo_config(**values) -> GRPORunConfig:
    return build_config(GRPORunConfig, {"task": {"config": TASK_CONFIG}, **values})


def biased_model(path: Path) -> tuple[Path, object]:
    """A freshly initialised tiny model that writes ``<bksp>`` (about 1 token in 10) and newlines often.

    Every embedding gets a large first component, so the final norm's output has a nearly
    constant one; ``<bksp>``'s and newline's are a little larger, which (the embeddings are
    tied to the LM head) adds a nearly constant bonus to their logits. Saved with its tokenizer.
    """
    from backtrack_gym.envs import make_task
    from backtrack_gym.train import build_model, build_tokenizer

    tokenizer = build_tokenizer(make_task("countdown", **TASK_CONFIG))
    model = build_model("tiny", tokenizer, seed=0)
    assert model.config.tie_word_embeddings
    bksp, newline = tokenizer.convert_tokens_to_ids([BKSP, "\n"])
    with torch.no_grad():
        embeddings = model.get_input_embeddings().weight
        embeddings[:, 0] = 1.0
        embeddings[bksp, 0] += 0.5
        embeddings[newline, 0] += 0.4
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, tokenizer


def step_config(start: Path, output: Path, **values) -> GRPORunConfig:
    return grpo_config(
        model=str(start),
        output_dir=str(output),
        episode={"interaction": "step", "max_new_tokens": 32, "env_steps": 4},
        n_prompts=4,
        prompts_per_step=2,
        num_generations=2,
        backspace=True,
        **values,
    )


# --- config ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"backspace": True}, r"backspace applies to the step path \(episode.interaction='step'\)"),
        ({"backspace": "maybe", "episode": {"interaction": "step"}}, "backspace: cannot read"),
    ],
)
def test_grpo_config_rejects_bad_backspace_values(fields, message):
    with pytest.raises(ValueError, match=message):
        grpo_config(**fields).validate()


def test_backspace_is_off_by_default_and_needs_the_step_trainer():
    from backtrack_gym.train.grpo import grpo_trainer_class

    assert grpo_config().backspace is False
    assert grpo_config(backspace=True, episode={"interaction": "step"}).backspace is True
    with pytest.raises(ValueError, match="backspace applies to the step path"):
        grpo_trainer_class(None, step_mode=False, backspace=True)
    assert grpo_trainer_class(None, step_mode=True, backspace=False).__name__ == "StepGRPOTrainer"


# --- the TRL methods overridden ------------------------------------------------------------


def test_the_overridden_trl_methods_are_still_those_of_trl_1_16():
    """Fails on a TRL whose private methods or their call sites differ from what the override relies on."""
    from trl import GRPOTrainer

    from backtrack_gym.train.grpo_backspace import PINNED

    version = trl.__version__
    assert version.split(".")[:2] == ["1", "16"], f"re-check train/grpo_backspace.py against TRL {version}"
    for name, parameters in PINNED.items():
        assert tuple(inspect.signature(getattr(GRPOTrainer, name)).parameters) == parameters, name
    score = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    # The rollout runs first, then old and reference log-probabilities, all in this method.
    assert score.index("self._generate(prompts)") < score.index("self._get_per_token_logps_and_entropies(")
    assert score.count("self._get_per_token_logps_and_entropies(") == 3  # old, reference, PEFT reference
    assert "output = self.rollout_func(prompts, self)" in inspect.getsource(GRPOTrainer._generate)
    assert "return self._compute_loss(model, inputs)" in inspect.getsource(GRPOTrainer.compute_loss)
    assert "self._get_per_token_logps_and_entropies(" in inspect.getsource(GRPOTrainer._compute_loss)
    # The override rebuilds TRL's labels and calls TRL's fused LM head the same way.
    logps = inspect.getsource(GRPOTrainer._get_per_token_logps_and_entropies)
    assert "labels = input_ids_batch.masked_fill(attention_mask_batch == 0, -100)" in logps
    assert "labels[:, :-logits_to_keep] = -100" in logps
    assert "outputs = model(**model_inputs, labels=labels, fused_lm_head=True)" in logps
    assert "outputs.log_probs[:, -logits_to_keep:]" in logps and "outputs.entropy[:, -logits_to_keep:]" in logps
    # The batch dict is shuffled and split row-wise, so the slot_* tensors travel with their rows.
    prepare = inspect.getsource(GRPOTrainer._prepare_inputs)
    assert "shuffle_sequence_dict(generation_batch)" in prepare and "split_tensor_dict(" in prepare


# --- log-probabilities -------------------------------------------------------------------


def test_trainer_log_probabilities_equal_the_agents_on_episodes_with_deletions(tmp_path):
    from trl import GRPOTrainer
    from trl.trainer.utils import shuffle_sequence_dict

    from backtrack_gym.train.grpo import grpo_trainer

    start, tokenizer = biased_model(tmp_path / "start")
    bksp = tokenizer.convert_tokens_to_ids(BKSP)
    # beta > 0: reference log-probabilities; num_iterations 2: old ones.
    config = step_config(start, tmp_path / "grpo", beta=0.04, num_iterations=2, trainer={"optimizer_steps": 1})
    trainer, _ = grpo_trainer(config)
    calls = []
    override = trainer._get_per_token_logps_and_entropies

    def spy(model, *args, **kwargs):
        result = override(model, *args, **kwargs)
        calls.append((model, result[0].detach()))
        return result

    trainer._get_per_token_logps_and_entropies = spy
    trainer.model.train()
    rows = [trainer.train_dataset[i] for i in range(config.prompts_per_step) for _ in range(config.num_generations)]
    batch = trainer._generate_and_score_completions(rows)

    mask = (batch["completion_mask"] * batch["tool_mask"]).bool()
    sampled = batch["sampling_per_token_logps"]
    written = batch["completion_ids"][mask]
    assert (written == bksp).sum() >= 5, "the biased model should delete several tokens"
    assert (batch["tool_mask"] == 0).any()  # env observations sit between the lines
    assert [model for model, _ in calls] == [trainer.model, trainer.ref_model]
    for name in ("old_per_token_logps", "ref_per_token_logps"):
        assert torch.allclose(batch[name][mask], sampled[mask], atol=1e-4), name

    # TRL's own path (a 2D mask, every slot fed its emitted token) does not see what the agent saw.
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    plain, _, _ = GRPOTrainer._get_per_token_logps_and_entropies(trainer, trainer.model, ids, attention, mask.size(1))
    assert (plain[mask] - sampled[mask]).abs().max() > 1e-2

    # The policy's, in the loss, on a shuffled batch as TRL trains on it.
    shuffled = shuffle_sequence_dict(batch)
    trainer.current_gradient_accumulation_steps = 1  # the training loop's, which this test does not run
    trainer.compute_loss(trainer.model, shuffled)
    assert len(calls) == 3 and calls[2][0] is trainer.model
    shuffled_mask = (shuffled["completion_mask"] * shuffled["tool_mask"]).bool()
    policy = calls[2][1]
    assert torch.allclose(policy[shuffled_mask], shuffled["sampling_per_token_logps"][shuffled_mask], atol=1e-4)

    # Slots that do not belong to their rows are refused, not scored.
    swapped = {**shuffled, **{key: value.flip(0) for key, value in shuffled.items() if key.startswith("slot_")}}
    with pytest.raises(RuntimeError, match="slots do not match"):
        trainer.compute_loss(trainer.model, swapped)


def test_slot_batch_left_pads_without_changing_what_a_slot_sees():
    from backtrack_gym.agents.replay import per_query_mask, slot_batch

    # Two kept tokens, a deleted one, then its <bksp> slot (fed the kept token 20 again at position 1).
    row = ([10, 20, 30, 20], [0, 1, 2, 1], [4, 3, 3, 4])
    batch = slot_batch([row, row], width=7, pad_token_id=0, offsets=[0, 2])
    assert batch["input_ids"].tolist() == [[10, 20, 30, 20, 0, 0, 0], [0, 0, 10, 20, 30, 20, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 1, 0, 0, 0], [0, 0, 0, 1, 2, 1, 0]]
    plain = per_query_mask([row[2]], 4)[0, 0]
    assert torch.equal(batch["attention_mask"][0, 0, :4, :4], plain)
    assert torch.equal(batch["attention_mask"][1, 0, 2:6, 2:6], plain)
    seen = batch["attention_mask"][1, 0] == 0
    assert seen[:2].tolist() == [[True] + [False] * 6, [False, True] + [False] * 5]  # left pads see themselves
    assert not seen[2:, :2].any()  # and nothing sees them
    with pytest.raises(ValueError, match="do not fit in width"):
        slot_batch([row], width=5, pad_token_id=0, offsets=[2])


# --- a run --------------------------------------------------------------------------------


@pytest.mark.slow
def test_step_grpo_with_backspace_samples_bksp_and_trains(tmp_path):
    from backtrack_gym.train import build_model
    from backtrack_gym.train.grpo import run_grpo

    start, tokenizer = biased_model(tmp_path / "start")
    output = tmp_path / "grpo"
    final = run_grpo(
        step_config(
            start,
            output,
            # Rewards that differ within a group (an untrained model solves nothing), so there is a gradient.
            reward_weights={"correct": 1.0, "format": 1.0, "validity": 1.0},
            beta=0.04,
            trainer={"optimizer_steps": 2, "learning_rate": 1e-3, "lr_scheduler": "constant", "logging_steps": 1},
        )
    )
    events = EventAccumulator(str(output / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    rates = events.Scalars("train/episodes/bksp_rate")
    assert [e.step for e in rates] == [1, 2] and all(0 < e.value < 1 for e in rates)
    assert all(torch.isfinite(torch.tensor(e.value)) for e in events.Scalars("train/loss"))
    trained = torch.cat([p.flatten() for p in build_model(str(final), tokenizer).parameters()])
    initial = torch.cat([p.flatten() for p in build_model(str(start), tokenizer).parameters()])
    assert not torch.equal(trained, initial)
